"""The execution state machine: ordering, retries, fallbacks, timeouts, deadline, idempotency."""

from __future__ import annotations

import json
from typing import Any

from aos_gateway.contracts.records import InvocationResult, Plan, PlanStep
from aos_gateway.execution import engine
from aos_gateway.execution.engine import Execution, Policy

POLICY = Policy(min_deadline_ms=10_000, max_deadline_ms=60_000, retry_backoff_ms=100)


def step(sid: str, agent: str, deps: list[str] | None = None, fallback: str | None = None, **kw: Any) -> PlanStep:
    return PlanStep(
        step_id=sid,
        stage=0,
        agent_id=agent,
        agent_name=agent,
        score=0.9,
        depends_on=deps or [],
        timeout_ms=kw.get("timeout_ms", 1_000),
        retries=kw.get("retries", 1),
        fallback_agent_id=fallback,
        expected_latency_ms=100,
        role=kw.get("role"),
    )


def plan(*steps: PlanStep, est: int = 1_000) -> Plan:
    return Plan(
        plan_id="p1",
        task_id="t1",
        tenant="acme",
        submitted_at=0,
        created_at=0,
        status="PLANNED",
        reason=None,
        planner="network",
        steps=list(steps),
        predicted_quality=0.8,
        estimated_duration_ms=est,
        trace_id="tr",
        transcript=None,
        modalities=["text"],
        notes=[],
        timings={},
        text="add two numbers then summarise",
        task_vector=None,
    )


def reply(
    inv: Any, status: str = "SUCCEEDED", output: str | None = "ok", finished_at: int = 2**62, **meta: str
) -> InvocationResult:
    """An agent's reply; its ``finished_at`` is later than any test's ``now`` unless given."""
    return InvocationResult(
        invocation_id=inv["invocation_id"],
        task_id=inv["task_id"],
        plan_id=inv["plan_id"],
        step_id=inv["step_id"],
        agent_id=inv["agent_id"],
        status=status,  # type: ignore[typeddict-item]
        output=output if status == "SUCCEEDED" else None,
        error=None if status == "SUCCEEDED" else "boom",
        latency_ms=50,
        cost=0.5,
        finished_at=finished_at,
        source="agent",
        metadata=dict(meta),
    )


def alive(_: str) -> bool | None:
    return True


def test_chain_runs_in_order_and_passes_outputs() -> None:
    ex, acts = engine.start(plan(step("s1", "calc"), step("s2", "sum", ["s1"])), 0, POLICY, alive)
    assert [i["agent_id"] for i in acts.invocations] == ["calc"]
    acts = engine.on_result(ex, reply(acts.invocations[0], output="42"), 100, POLICY, alive)
    (inv2,) = acts.invocations
    assert inv2["agent_id"] == "sum" and inv2["inputs"] == {"s1": "42"}
    assert inv2["text"] == "add two numbers then summarise"
    acts = engine.on_result(ex, reply(inv2, output="the answer is 42"), 200, POLICY, alive)
    assert acts.result is not None and acts.result["status"] == "SUCCEEDED"
    assert acts.result["output"] == "the answer is 42"
    assert acts.result["cost"] == 1.0
    kinds = [(r["kind"], r["agent_id"], r["outcome"]) for r in acts.experience]
    assert kinds == [("EXECUTION", None, "SUCCEEDED"), ("STEP", "calc", "SUCCEEDED"), ("STEP", "sum", "SUCCEEDED")]
    assert json.loads(acts.experience[0]["metadata"]["edges"]) == [["calc", "sum"]]
    assert ex.finished


def test_parallel_steps_start_together() -> None:
    _, acts = engine.start(plan(step("a", "x"), step("b", "y"), step("c", "z", ["a", "b"])), 0, POLICY, alive)
    assert sorted(i["agent_id"] for i in acts.invocations) == ["x", "y"]


def test_duplicate_and_unknown_replies_change_nothing() -> None:
    ex, acts = engine.start(plan(step("s1", "calc"), step("s2", "sum", ["s1"])), 0, POLICY, alive)
    first = reply(acts.invocations[0])
    assert len(engine.on_result(ex, first, 10, POLICY, alive).invocations) == 1
    again = engine.on_result(ex, first, 20, POLICY, alive)
    assert again.invocations == [] and again.result is None
    stranger = {**first, "invocation_id": "not-ours", "step_id": "s2"}
    assert engine.on_result(ex, stranger, 30, POLICY, alive).invocations == []  # type: ignore[arg-type]
    assert ex.steps["s2"].attempts == 1


def test_failure_retries_after_backoff_then_falls_back() -> None:
    ex, acts = engine.start(plan(step("s1", "flaky", fallback="steady", retries=1)), 0, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED"), 10, POLICY, alive)
    assert acts.invocations == []  # waiting out the back-off
    assert engine.on_tick(ex, 50, POLICY, alive).invocations == []
    (retry,) = engine.on_tick(ex, 110, POLICY, alive).invocations
    assert retry["agent_id"] == "flaky" and retry["attempt"] == 2
    assert retry["invocation_id"] != ex.steps["s1"].invocation_ids[0]
    acts = engine.on_result(ex, reply(retry, "FAILED"), 120, POLICY, alive)
    (fb,) = acts.invocations  # tries on flaky used up: the fallback at once
    assert fb["agent_id"] == "steady"
    acts = engine.on_result(ex, reply(fb, output="done"), 200, POLICY, alive)
    assert acts.result is not None and acts.result["status"] == "SUCCEEDED"
    (outcome,) = acts.result["steps"]
    assert outcome["fallback_used"] and outcome["attempts"] == 3 and outcome["agent_id"] == "steady"
    steps = {r["agent_id"]: r for r in acts.experience if r["kind"] == "STEP"}
    assert steps["flaky"]["outcome"] == "FAILED" and steps["flaky"]["metadata"]["attempts"] == "2"
    assert steps["steady"]["outcome"] == "SUCCEEDED" and steps["steady"]["metadata"]["fallback"] == "true"


def test_not_retryable_goes_straight_to_fallback() -> None:
    ex, acts = engine.start(plan(step("s1", "a", fallback="b", retries=3)), 0, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED", retryable="false"), 10, POLICY, alive)
    assert [i["agent_id"] for i in acts.invocations] == ["b"]


def test_timeout_then_fallback_fails_and_dependents_are_skipped() -> None:
    p = plan(step("s1", "slow", fallback="slower", retries=0, timeout_ms=500), step("s2", "sum", ["s1"]))
    ex, acts = engine.start(p, 0, POLICY, alive)
    assert engine.on_tick(ex, 499, POLICY, alive).invocations == []
    (fb,) = engine.on_tick(ex, 500, POLICY, alive).invocations
    assert fb["agent_id"] == "slower"
    acts = engine.on_tick(ex, 1_000, POLICY, alive)
    assert acts.result is not None and acts.result["status"] == "FAILED"
    by_id = {s["step_id"]: s for s in acts.result["steps"]}
    assert by_id["s1"]["status"] == "TIMED_OUT" and by_id["s2"]["status"] == "SKIPPED"
    assert "s1 timed_out" in (acts.result["reason"] or "")
    assert engine.on_tick(ex, 2_000, POLICY, alive).result is None  # finished once


def test_late_reply_of_a_timed_out_attempt_still_counts() -> None:
    ex, acts = engine.start(plan(step("s1", "a", retries=1, timeout_ms=100)), 0, POLICY, alive)
    first = acts.invocations[0]
    (retry,) = engine.on_tick(ex, 100, POLICY, alive).invocations
    acts = engine.on_result(ex, reply(first, output="late but right"), 150, POLICY, alive)
    assert acts.result is not None and acts.result["output"] == "late but right"
    assert engine.on_result(ex, reply(retry), 160, POLICY, alive).result is None


def test_late_failure_of_a_timed_out_attempt_changes_nothing() -> None:
    """Regression: the failure reply of an attempt already timed out (and retried) failed the retry's
    attempt too: the step went to back-off and sent a third invocation while the second ran."""
    ex, acts = engine.start(plan(step("s1", "a", retries=2, timeout_ms=100)), 0, POLICY, alive)
    first = acts.invocations[0]
    (retry,) = engine.on_tick(ex, 100, POLICY, alive).invocations
    for status in ("FAILED", "TIMED_OUT"):
        late = engine.on_result(ex, reply(first, status=status, output=None), 150, POLICY, alive)
        assert late.invocations == [] and late.result is None
        assert engine.on_tick(ex, 199, POLICY, alive).invocations == []  # no back-off retry either
    s1 = ex.steps["s1"]
    assert s1.state == "RUNNING" and s1.current_invocation == retry["invocation_id"]
    assert [a.outcome for a in s1.history] == ["TIMED_OUT"]
    done = engine.on_result(ex, reply(retry), 160, POLICY, alive)
    assert done.result is not None and done.result["status"] == "SUCCEEDED"


def test_deadline_ends_everything_partial() -> None:
    p = plan(step("a", "fast"), step("b", "hang", timeout_ms=100_000), est=1_000)
    ex, acts = engine.start(p, 0, POLICY, alive)
    assert ex.deadline_at == 10_000  # 3 x 1 s, raised to the 10 s minimum
    fast = next(i for i in acts.invocations if i["agent_id"] == "fast")
    engine.on_result(ex, reply(fast), 10, POLICY, alive)
    assert engine.next_due(ex) == 10_000
    acts = engine.on_tick(ex, 10_000, POLICY, alive)
    assert acts.result is not None and acts.result["status"] == "PARTIAL"
    assert (acts.result["reason"] or "").startswith("plan deadline of 10000 ms passed")
    assert acts.result["finished_at"] <= ex.deadline_at


def test_dead_agent_is_skipped_for_its_fallback() -> None:
    def live(agent: str) -> bool | None:
        return {"dead": False, "spare": True}.get(agent)

    ex, acts = engine.start(plan(step("s1", "dead", fallback="spare")), 0, POLICY, live)
    assert [i["agent_id"] for i in acts.invocations] == ["spare"]
    assert ex.steps["s1"].history[0].error == engine.DOWN


def test_a_down_agent_s_record_says_it_was_never_invoked() -> None:
    """The matcher must not learn "wrong agent" from an agent that was down (it never saw the task)."""
    from aos_gateway.matching.experience import memories

    def live(agent: str) -> bool | None:
        return {"dead": False, "spare": True}.get(agent)

    p = plan(step("s1", "dead", fallback="spare"))
    p["task_vector"] = {"name": "fused", "model": "m", "dim": 2, "dtype": "FLOAT32", "scale": 1.0, "data": b"\x00" * 8}
    ex, acts = engine.start(p, 0, POLICY, live)
    done = engine.on_result(ex, reply(acts.invocations[0]), 5, POLICY, live)
    steps = {r["agent_id"]: r for r in done.experience if r["kind"] == "STEP"}
    assert steps["dead"]["outcome"] == "FAILED" and steps["dead"]["metadata"]["invoked"] == "false"
    assert steps["spare"]["outcome"] == "SUCCEEDED" and steps["spare"]["metadata"]["invoked"] == "true"
    mems, skipped = memories(done.experience)
    assert [(m.agent_id, m.success) for m in mems] == [("spare", True)] and skipped["not_invoked"] == 1


def test_dead_agent_without_fallback_fails_at_once() -> None:
    _, acts = engine.start(plan(step("s1", "dead")), 0, POLICY, lambda a: False)
    assert acts.invocations == [] and acts.result is not None
    assert acts.result["status"] == "FAILED" and "the plan has no fallback" in (acts.result["reason"] or "")


def test_dead_agent_with_dead_fallback_names_both() -> None:
    _, acts = engine.start(plan(step("s1", "dead", fallback="gone")), 0, POLICY, lambda a: False)
    assert acts.invocations == [] and acts.result is not None
    assert "dead: agent is not running" in (acts.result["reason"] or "")
    assert "its fallback gone is not running either" in (acts.result["reason"] or "")


def test_the_agent_gets_the_typed_text_and_what_was_heard() -> None:
    """Regression: with text and audio, the invocation carried only the typed text ("please compute")
    and the calculator failed; matching had seen both (perception joins them the same way)."""
    p = plan(step("s1", "calc"))
    p["text"], p["transcript"] = "please compute", "What is 12 times 7?"
    _, acts = engine.start(p, 0, POLICY, alive)
    assert acts.invocations[0]["text"] == "please compute\nWhat is 12 times 7?"
    p["text"] = None
    _, acts = engine.start(p, 0, POLICY, alive)
    assert acts.invocations[0]["text"] == "What is 12 times 7?"


def test_state_survives_json_round_trip() -> None:
    p = plan(step("s1", "calc"), step("s2", "sum", ["s1"]))
    p["task_vector"] = {"name": "fused", "model": "m", "dim": 2, "dtype": "FLOAT32", "scale": 1.0, "data": b"\x00" * 8}
    ex, acts = engine.start(p, 0, POLICY, alive)
    back = Execution.from_json(ex.to_json())
    assert back == ex
    acts = engine.on_result(back, reply(acts.invocations[0]), 10, POLICY, alive)
    assert acts.invocations[0]["step_id"] == "s2"


def test_experience_ids_are_stable() -> None:
    def run() -> list[str]:
        ex, acts = engine.start(plan(step("s1", "calc")), 0, POLICY, alive)
        acts = engine.on_result(ex, reply(acts.invocations[0]), 5, POLICY, alive)
        return [r["experience_id"] for r in acts.experience]

    assert run() == run()


def test_a_reply_consumed_again_after_a_restart_yields_the_same_records() -> None:
    ex, acts = engine.start(plan(step("s1", "calc")), 1_000, POLICY, alive)
    restored = ex.to_json()  # the changelog's state when the worker was killed
    r = reply(acts.invocations[0], finished_at=1_040)
    first = engine.on_result(ex, r, 1_050, POLICY, alive)
    replay = engine.on_result(Execution.from_json(restored), r, 61_050, POLICY, alive)  # a minute later
    assert first.result is not None and first.result["finished_at"] == 1_040
    assert replay.result == first.result
    assert replay.experience == first.experience
    assert {e["occurred_at"] for e in first.experience} == {1_040}


def test_a_reply_time_is_bounded_by_the_attempt_and_now() -> None:
    ex, acts = engine.start(plan(step("s1", "calc")), 1_000, POLICY, alive)
    s1 = ex.steps["s1"]
    assert engine.reply_time(s1, reply(acts.invocations[0], finished_at=900), 1_050) == 1_000  # agent clock behind
    assert engine.reply_time(s1, reply(acts.invocations[0], finished_at=9_000), 1_050) == 1_050  # ahead


def test_a_reply_with_a_nan_or_negative_cost_fails_its_attempt() -> None:
    """A review: a reply cost of NaN reached the result (and stopped the dashboards' rows); -5 lowered
    the task's cost. Such a reply is a contract breach: its attempt fails, the fallback answers."""
    for bad in (float("nan"), -5.0, float("inf")):
        ex, acts = engine.start(plan(step("s1", "a", fallback="b", retries=3)), 0, POLICY, alive)
        res = reply(acts.invocations[0])
        res["cost"] = bad
        acts = engine.on_result(ex, res, 10, POLICY, alive)
        assert [i["agent_id"] for i in acts.invocations] == ["b"]  # not retried on a
        acts = engine.on_result(ex, reply(acts.invocations[0], output="done"), 20, POLICY, alive)
        assert acts.result is not None and acts.result["status"] == "SUCCEEDED" and acts.result["cost"] == 0.5
        (outcome,) = acts.result["steps"]
        assert outcome["error"] is not None and "cost must be a finite number >= 0" in outcome["error"]


def test_a_step_on_its_fallback_reports_the_planned_agent_s_error() -> None:
    """A review: the planned agent's failure was only in the experience store; the result named the
    fallback's outcome alone."""
    ex, acts = engine.start(plan(step("s1", "a", fallback="b", retries=0)), 0, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED"), 10, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], output="done"), 20, POLICY, alive)
    assert acts.result is not None
    (ok,) = acts.result["steps"]
    assert ok["status"] == "SUCCEEDED" and ok["error"] == "answered by the fallback; a: boom"
    ex, acts = engine.start(plan(step("s1", "a", fallback="b", retries=0)), 0, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED"), 10, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED"), 20, POLICY, alive)
    assert acts.result is not None
    (bad,) = acts.result["steps"]
    assert bad["status"] == "FAILED" and bad["error"] == "b: boom; before the fallback, a: boom"
    # without a fallback, the error is the step's own, as before
    ex, acts = engine.start(plan(step("s1", "a", retries=0)), 0, POLICY, alive)
    acts = engine.on_result(ex, reply(acts.invocations[0], "FAILED"), 10, POLICY, alive)
    assert acts.result is not None and acts.result["steps"][0]["error"] == "a: boom"
