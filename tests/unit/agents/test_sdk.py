"""The agent SDK without a broker: handler outcomes, reply and card checks, redelivery memory, MODULE:ATTR."""

from __future__ import annotations

import pytest

from aos_gateway import topics
from aos_gateway.agents.sdk import (
    MAX_OUTPUT_BYTES,
    Agent,
    RecentReplies,
    Reply,
    Request,
    handle_one,
    parse_target,
    resolve,
)
from aos_gateway.contracts.records import Invocation
from aos_gateway.errors import ConfigError, PermanentAgentError, ValidationError
from aos_gateway.matching.cards import card_from_json
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


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (Reply(output=None), "TypeError: Reply.output must be str, got NoneType"),  # type: ignore[arg-type]
        (Reply("x", metadata={"k": 0.9}), "TypeError: Reply.metadata must map str to str; 'k' maps to float"),  # type: ignore[dict-item]
        (Reply("x", metadata=[("k", "v")]), "TypeError: Reply.metadata must be a dict"),  # type: ignore[arg-type]
        (Reply("x", cost=float("nan")), "ValueError: Reply.cost must be a finite number >= 0, got nan"),
        (Reply("x", cost=float("inf")), "ValueError: Reply.cost must be a finite number >= 0, got inf"),
        (Reply("x", cost=-5.0), "ValueError: Reply.cost must be a finite number >= 0, got -5.0"),
        (Reply("x", cost="2"), "TypeError: Reply.cost must be a number or None, got str"),  # type: ignore[arg-type]
        ("x" * 5_000_000, f"ValueError: output too large: 5000000 bytes > {MAX_OUTPUT_BYTES}"),
        (Reply("é" * 600_000), f"ValueError: output too large: 1200000 bytes > {MAX_OUTPUT_BYTES}"),
        ("\ud800", "UnicodeEncodeError"),
    ],
)
def test_a_reply_that_cannot_be_sent_is_a_failure(reply: Reply | str, why: str) -> None:
    """Regression (S3, S4): these were SUCCEEDED replies that crashed the runner (or the dashboards' sink)."""
    res = handle_one(Agent(agent_id="a", name="A", cost=0.5, handler=lambda r: reply), inv())
    assert res["status"] == "FAILED" and (res["error"] or "").startswith(why), res["error"]
    assert res["output"] is None and res["metadata"] == {} and res["cost"] == 0.5


def test_the_output_limit_is_a_parameter_and_the_default_fits_a_kafka_message() -> None:
    a = Agent(agent_id="a", name="A", handler=lambda r: "abcd")
    assert handle_one(a, inv(), max_output_bytes=4)["status"] == "SUCCEEDED"
    assert handle_one(a, inv(), max_output_bytes=3)["error"] == "ValueError: output too large: 4 bytes > 3"
    assert MAX_OUTPUT_BYTES < 1_000_000  # librdkafka's default message.max.bytes, with room for the rest
    ok = handle_one(Agent(agent_id="a", name="A", handler=lambda r: Reply("x", cost=0)), inv())
    assert ok["status"] == "SUCCEEDED" and ok["cost"] == 0.0


@pytest.mark.parametrize(
    ("kw", "why"),
    [
        ({"cost": -3}, "'cost' and 'p95_latency_ms' must not be negative"),
        ({"cost": float("nan")}, "'cost' must be a finite number >= 0, got nan"),
        ({"p95_latency_ms": -5}, "must not be negative"),
        ({"p95_latency_ms": 2**31}, "'p95_latency_ms' must be between 0 and"),
        ({"modalities": ["smell"]}, "'modalities' must be among text, image, audio; unknown: smell"),
        ({"description": "a\x00b"}, "'description' contains a NUL character"),
        ({"cost": "3"}, "'cost' must be a number, got '3'"),
    ],
)
def test_an_agent_with_a_card_register_would_refuse_is_refused(kw: dict[str, object], why: str) -> None:
    """Regression (M5): the SDK published these cards; the registry dead-lettered some, stored others."""
    with pytest.raises(ValidationError, match=r"^agent 'a': ") as err:
        Agent(agent_id="a", name="A", handler=lambda r: "", **kw)  # type: ignore[arg-type]
    assert why in str(err.value)
    if not isinstance(kw.get("cost"), str):  # the same words as `aos agents register`
        with pytest.raises(ValidationError) as reg:
            card_from_json({"agent_id": "a", **kw})
        assert str(reg.value) in str(err.value)


def test_agent_ids_register_accepts_are_accepted_and_padded_ones_are_not() -> None:
    card = Agent(agent_id="bad id/!", name="B", handler=lambda r: "").card(7)
    assert card["agent_id"] == "bad id/!" and card["updated_at"] == 7 and card["status"] == "ACTIVE"
    assert card_from_json({"agent_id": "bad id/!"})["agent_id"] == "bad id/!"  # register takes it too
    with pytest.raises(ValidationError, match="whitespace"):
        Agent(agent_id=" a", name="A", handler=lambda r: "")


def test_unknown_card_fields_are_refused_and_named() -> None:
    """Regression (M6): `aos agents register` dropped "colour" (or a typo like "capabilites") silently."""
    with pytest.raises(ValidationError, match=r"unknown card fields 'colour', 'capabilites' \(known: agent_id, name"):
        card_from_json({"agent_id": "unk", "colour": "blue", "capabilites": ["x"]})
    with pytest.raises(ValidationError, match=r"unknown card field 'x' \("):
        card_from_json({"agent_id": "unk", "x": 1})
    # an evaluation file's extra columns are not an error (eval, learn and bench read without strict)
    assert card_from_json({"agent_id": "unk", "category": "travel"}, strict=False)["agent_id"] == "unk"
    whole = Agent(agent_id="a", name="A", handler=lambda r: "").card(1)  # what `aos agents list --json` prints
    assert card_from_json(dict(whole)) == {**whole, "updated_at": card_from_json(dict(whole))["updated_at"]}


@pytest.mark.parametrize("target", ["nocolon", "mod:", ":attr", "my-mod:a", "mod:a.b", "mod:a b"])
def test_parse_target_refuses_what_is_not_module_colon_attribute(target: str) -> None:
    with pytest.raises(ConfigError, match="MODULE:ATTRIBUTE"):
        parse_target(target)
    assert parse_target("pkg.mod:agents") == ("pkg.mod", "agents")


def test_a_module_not_found_hints_at_the_folder_and_pythonpath() -> None:
    with pytest.raises(ConfigError, match=r"cannot import no_such_module_xyz: .*add that folder to PYTHONPATH"):
        resolve("no_such_module_xyz:a", Settings())
