"""The agent SDK without a broker: handler outcomes, redelivery memory, MODULE:ATTR resolution."""

from __future__ import annotations

import pytest

from aos_gateway import topics
from aos_gateway.agents.sdk import Agent, RecentReplies, Reply, Request, handle_one, resolve
from aos_gateway.contracts.records import Invocation
from aos_gateway.errors import ConfigError, PermanentAgentError
from aos_gateway.settings import Settings


def inv(text: str = "hello", **kw: object) -> Invocation:
    base = Invocation(
        invocation_id="i1",
        task_id="t1",
        plan_id="p1",
        tenant="acme",
        step_id="s1",
        attempt=1,
        agent_id="a",
        role=None,
        text=text,
        inputs={},
        sent_at=0,
        deadline_at=2**62,
        reply_to=topics.INVOCATION_RESULTS.name,
        trace_id=None,
        metadata={},
    )
    return {**base, **kw}  # type: ignore[typeddict-item]


def test_string_reply_succeeds_with_the_card_cost() -> None:
    a = Agent(agent_id="a", name="A", cost=0.25, handler=lambda r: r.text.upper())
    res = handle_one(a, inv())
    assert (res["status"], res["output"], res["cost"], res["error"]) == ("SUCCEEDED", "HELLO", 0.25, None)
    assert res["invocation_id"] == "i1" and res["task_id"] == "t1"


def test_reply_object_sets_cost_and_metadata() -> None:
    a = Agent(agent_id="a", name="A", handler=lambda r: Reply("x", cost=2.0, metadata={"k": "v"}))
    res = handle_one(a, inv())
    assert res["cost"] == 2.0 and res["metadata"] == {"k": "v"}


def test_exceptions_become_failed_replies() -> None:
    def boom(_: Request) -> str:
        raise RuntimeError("disk on fire")

    res = handle_one(Agent(agent_id="a", name="A", handler=boom), inv())
    assert res["status"] == "FAILED" and res["error"] == "RuntimeError: disk on fire"
    assert res["metadata"].get("retryable") is None


def test_permanent_errors_say_not_retryable() -> None:
    def no(_: Request) -> str:
        raise PermanentAgentError("cannot parse")

    res = handle_one(Agent(agent_id="a", name="A", handler=no), inv())
    assert res["status"] == "FAILED" and res["metadata"]["retryable"] == "false"


def test_wrong_return_type_is_a_failure() -> None:
    res = handle_one(Agent(agent_id="a", name="A", handler=lambda r: 42), inv())  # type: ignore[arg-type,return-value]
    assert res["status"] == "FAILED" and "not str or Reply" in (res["error"] or "")


def test_card_names_the_invocation_topic() -> None:
    card = Agent(agent_id="weird id/1", name="W", handler=lambda r: "").card(5)
    assert card["invocation_topic"] == topics.invocation_topic("weird id/1")
    assert card["invocation_topic"].startswith("aos.agents.weird_id_1-")
    assert topics.invocation_topic("weird id/1") != topics.invocation_topic("weird_id_1")


def test_recent_replies_are_bounded() -> None:
    mem = RecentReplies(size=2)
    a = Agent(agent_id="a", name="A", handler=lambda r: r.text)
    for i in range(3):
        mem.put(handle_one(a, inv(invocation_id=f"i{i}")))
    assert mem.get("i0") is None and mem.get("i2") is not None


def test_resolve_forms() -> None:
    s = Settings()
    assert [a.agent_id for a in resolve("aos_gateway.agents.reference:calculator", s)] == ["ref-calculator"]
    assert len(resolve("aos_gateway.agents.reference:all_agents", s)) == 5
    for bad, msg in [
        ("nocolon", "MODULE:ATTRIBUTE"),
        ("no_such_module_xyz:a", "cannot import"),
        ("aos_gateway.agents.reference:nope", "no attribute"),
        ("aos_gateway.agents.reference:calculate", "calling it failed"),
        ("aos_gateway.agents.reference:_OPS", "not an Agent"),
    ]:
        with pytest.raises(ConfigError, match=msg):
            resolve(bad, s)


def test_agent_needs_an_id() -> None:
    with pytest.raises(ConfigError):
        Agent(agent_id=" ", name="x", handler=lambda r: "")
