"""Plans run with real agents over the real broker: the SDK, the dispatcher, results and experience.

Agents run in this process (threads of an AgentRunner) and, for the kill test, in a separate
``aos agents run`` process that is killed with SIGKILL mid-plan.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_gateway import topics
from aos_gateway.agents.reference import calculator, keyword_extractor
from aos_gateway.agents.sdk import Agent, AgentRunner
from aos_gateway.client import ResultReader
from aos_gateway.contracts.records import EXECUTION_RESULT, EXPERIENCE, PLAN, Plan, PlanStep
from aos_gateway.contracts.wire import codec_for
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import make_producer, read_range, read_to_end
from tests.integration.conftest import run_aos

pytestmark = pytest.mark.integration

SUFFIX = uuid.uuid4().hex[:8]
TENANT = f"it-exec-{SUFFIX}"
ROOT = Path(__file__).resolve().parents[2]


def _clone(a: Agent, agent_id: str) -> Agent:
    return Agent(
        agent_id=agent_id,
        name=a.name,
        description=a.description,
        capabilities=a.capabilities,
        examples=a.examples,
        tenant=TENANT,
        cost=0.01,
        p95_latency_ms=a.p95_latency_ms,
        handler=a.handler,
    )


CALC = f"it-calc-{SUFFIX}"
KEYS = f"it-keys-{SUFFIX}"
SLOW = f"it-slow-{SUFFIX}"


@pytest.fixture(scope="module")
def agents(settings: Settings, worker: subprocess.Popen[bytes]) -> Iterator[AgentRunner]:
    runner = AgentRunner([_clone(calculator, CALC), _clone(keyword_extractor, KEYS)], settings)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture(scope="module", autouse=True)
def forget_what_was_learned(settings: Settings) -> Iterator[None]:
    """Learned states are global: the ones this module publishes must not steer later modules."""
    yield
    from aos_gateway.streams.learner import reset

    reset(settings, "end of test_execution")
    time.sleep(3)  # the worker loads the cleared states


@pytest.fixture(scope="module")
def results(settings: Settings) -> Iterator[ResultReader]:
    reader = ResultReader(settings, topics.RESULTS.name, record=EXECUTION_RESULT)
    try:
        yield reader
    finally:
        reader.close()


def step(sid: str, agent: str, deps: list[str] | None = None, **kw: Any) -> PlanStep:
    return PlanStep(
        step_id=sid,
        stage=0 if not deps else 1,
        agent_id=agent,
        agent_name=agent,
        score=0.9,
        depends_on=deps or [],
        timeout_ms=kw.get("timeout_ms", 5_000),
        retries=kw.get("retries", 1),
        fallback_agent_id=kw.get("fallback"),
        expected_latency_ms=100,
        role=kw.get("role"),
    )


def send_plan(
    settings: Settings, text: str, steps: list[PlanStep], est_ms: int = 2_000, copies: int = 1, created_ago_ms: int = 0
) -> Plan:
    tid = f"it-exec-{uuid.uuid4().hex[:12]}"
    now = int(time.time() * 1000) - created_ago_ms
    plan = Plan(
        plan_id=str(uuid.uuid4()),
        task_id=tid,
        tenant=TENANT,
        submitted_at=now,
        created_at=now,
        status="PLANNED",
        reason=None,
        planner="network",
        steps=steps,
        predicted_quality=0.9,
        estimated_duration_ms=est_ms,
        trace_id=None,
        transcript=None,
        modalities=["text"],
        notes=[],
        timings={},
        text=text,
        task_vector=None,
    )
    prod = make_producer(settings.kafka)
    value = codec_for(PLAN, topics.PLANS.name).encode(plan)
    for _ in range(copies):
        prod.produce(topics.PLANS.name, key=tid.encode(), value=value)
    assert prod.flush(10) == 0
    return plan


def all_records(settings: Settings, topic: str, record: str) -> list[Any]:
    """Every record on a topic now, decoded."""
    codec = codec_for(record, topic)
    return [codec.decode(m.value()) for m in read_to_end(settings.kafka, topic)]


def records_of(settings: Settings, topic: str, record: str, task_id: str) -> list[Any]:
    return [r for r in all_records(settings, topic, record) if r["task_id"] == task_id]


def test_two_step_plan_runs_in_order_and_records_experience(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    plan = send_plan(
        settings,
        "what is 12 * (3 + 4)? then list the key terms",
        [step("s1", CALC), step("s2", KEYS, ["s1"])],
        copies=2,  # a duplicated plan must run once
    )
    res = results.wait(plan["task_id"], 60)
    assert res["status"] == "SUCCEEDED", res["reason"]
    by = {s["step_id"]: s for s in res["steps"]}
    assert by["s1"]["output"] == "12 * (3 + 4) = 84"
    assert by["s2"]["agent_id"] == KEYS and by["s2"]["output"]
    assert res["output"] == by["s2"]["output"]  # the last stage's output is the answer
    assert res["cost"] == pytest.approx(0.02)
    time.sleep(2)
    assert len(records_of(settings, topics.RESULTS.name, EXECUTION_RESULT, plan["task_id"])) == 1
    exp = records_of(settings, topics.EXPERIENCE.name, EXPERIENCE, plan["task_id"])
    kinds = sorted((r["kind"], r["agent_id"] or "", r["outcome"]) for r in exp)
    assert kinds == [("EXECUTION", "", "SUCCEEDED"), ("STEP", CALC, "SUCCEEDED"), ("STEP", KEYS, "SUCCEEDED")]
    (ex,) = [r for r in exp if r["kind"] == "EXECUTION"]
    assert ex["metadata"]["edges"] == f'[["{CALC}", "{KEYS}"]]'


def test_failing_step_falls_back_and_dependents_are_skipped(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    # the calculator refuses text without arithmetic (a permanent error: no retry on it)
    plan = send_plan(
        settings,
        "no numbers here at all",
        [step("s1", CALC, fallback=KEYS), step("s2", CALC, ["s1"])],
    )
    res = results.wait(plan["task_id"], 60)
    by = {s["step_id"]: s for s in res["steps"]}
    assert by["s1"]["status"] == "SUCCEEDED" and by["s1"]["fallback_used"] and by["s1"]["agent_id"] == KEYS
    assert by["s1"]["attempts"] == 2  # one on the calculator (not retried: permanent), one on the fallback
    assert by["s2"]["status"] == "FAILED" and "no arithmetic" in (by["s2"]["error"] or "")
    assert res["status"] == "PARTIAL"


def test_agent_without_a_consumer_fails_at_once(settings: Settings, agents: AgentRunner, results: ResultReader) -> None:
    ghost = f"it-ghost-{SUFFIX}"  # never ran: no heartbeat and no invocation topic
    plan = send_plan(settings, "anything", [step("s1", ghost)], est_ms=100)
    res = results.wait(plan["task_id"], 60)
    assert res["status"] == "FAILED" and "agent is not running" in (res["reason"] or "")
    assert res["steps"][0]["attempts"] == 0


def test_silent_agent_times_out_within_the_deadline(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    from aos_gateway.streams.kafka import ensure_topics

    mute = f"it-mute-{SUFFIX}"  # its topic exists (someone could consume it) but no one answers
    ensure_topics(settings.kafka, [topics.invocation_spec(mute)])
    time.sleep(11)  # the dispatcher lists topics every 10 s
    plan = send_plan(settings, "anything", [step("s1", mute, timeout_ms=1_000, retries=1)], est_ms=100)
    res = results.wait(plan["task_id"], 60)
    assert res["status"] == "FAILED"
    (s1,) = res["steps"]
    assert s1["status"] == "TIMED_OUT" and s1["attempts"] == 2
    assert res["finished_at"] <= res["deadline_at"] + 1_000  # the tick's granularity


def test_stale_plan_expires(settings: Settings, agents: AgentRunner, results: ResultReader) -> None:
    plan = send_plan(settings, "what is 1 + 1", [step("s1", CALC)], created_ago_ms=3_600_000)
    res = results.wait(plan["task_id"], 60)
    assert res["status"] == "FAILED" and (res["reason"] or "").startswith("REJECTED: expired")


def test_killed_agent_mid_plan_fails_over_to_its_fallback(
    settings: Settings, stack_env: dict[str, str], agents: AgentRunner, results: ResultReader, tmp_path: Path
) -> None:
    env = {**os.environ, **stack_env, "AOS_TEST_SUFFIX": SUFFIX, "PYTHONPATH": str(ROOT)}
    log = (tmp_path / "agent.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aos_gateway.cli.main", "agents", "run", f"{__package__}.agents_for_tests:slow_agents"],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while "serving" not in (tmp_path / "agent.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "agent.log").read_text()
            time.sleep(0.2)
        with_fallback = send_plan(
            settings,
            "what is 6 * 7",
            [step("s1", SLOW, fallback=CALC, timeout_ms=3_000, retries=0)],
            est_ms=5_000,
        )
        without = send_plan(
            settings,
            "what is 6 * 7",
            [step("a", SLOW, timeout_ms=3_000, retries=0), step("b", CALC)],
            est_ms=2_000,
        )
        time.sleep(1.5)  # both invocations are in the slow agent's hands
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        res = results.wait(with_fallback["task_id"], 60)
        assert res["status"] == "SUCCEEDED", res["reason"]
        (s1,) = res["steps"]
        assert s1["fallback_used"] and s1["agent_id"] == CALC and s1["output"] == "6 * 7 = 42"
        res2 = results.wait(without["task_id"], 60)
        assert res2["status"] == "PARTIAL"
        by = {s["step_id"]: s for s in res2["steps"]}
        assert by["a"]["status"] == "TIMED_OUT" and by["b"]["status"] == "SUCCEEDED"
        assert res2["finished_at"] <= res2["deadline_at"] + 1_000
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()


def test_a_submitted_task_is_planned_and_executed(
    settings: Settings, stack_env: dict[str, str], agents: AgentRunner
) -> None:
    from aos_gateway.client import GatewayClient

    deadline = time.monotonic() + 60
    with GatewayClient(settings) as client:
        client.listen(executions=True)
        while True:  # until the matcher has indexed the runner's cards
            tid = client.submit("what is 1500 divided by 12", tenant=TENANT)
            plan = client.wait(tid, 30)
            if plan["status"] == "PLANNED" and plan["steps"][0]["agent_id"] == CALC:
                break
            assert time.monotonic() < deadline, plan
            time.sleep(1)
        res = client.wait_execution(tid, 60)
    assert res["status"] == "SUCCEEDED" and res["output"] == "1500 / 12 = 125"


def test_agents_list_says_which_agents_are_running(stack_env: dict[str, str], agents: AgentRunner) -> None:
    out = run_aos(stack_env, "agents", "list").stdout
    line = next(row for row in out.splitlines() if row.startswith(CALC))
    assert "running (1 process, last beat" in line, out
    assert " running, " in out.splitlines()[-1], out


def test_experience_reaches_the_cold_store_and_feedback_joins_it(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    from aos_gateway.contracts.records import FEEDBACK, Feedback
    from aos_gateway.experience.cold import ColdStore, to_records
    from aos_gateway.experience.feedback import join_feedback

    plan = send_plan(settings, "what is 2 + 2", [step("s1", CALC)])
    assert results.wait(plan["task_id"], 60)["status"] == "SUCCEEDED"
    fb = Feedback(
        feedback_id=str(uuid.uuid4()),
        task_id=plan["task_id"],
        tenant=TENANT,
        success=False,
        rating=None,
        correct_agent_id=KEYS,
        comment="wrong tool",
        created_at=int(time.time() * 1000),
    )
    prod = make_producer(settings.kafka)
    prod.produce(
        topics.FEEDBACK.name, key=fb["task_id"].encode(), value=codec_for(FEEDBACK, topics.FEEDBACK.name).encode(fb)
    )
    assert prod.flush(10) == 0
    cold = ColdStore(settings.experience.cold_dir)
    deadline = time.monotonic() + 30
    while True:
        mine = [r for r in to_records(cold.read()) if r["task_id"] == plan["task_id"]]
        if len(mine) == 3:  # execution, step, feedback
            break
        assert time.monotonic() < deadline, mine
        time.sleep(0.5)
    joined = join_feedback(mine)
    (stepr,) = [r for r in joined if r["kind"] == "STEP" and r["agent_id"] == CALC]
    assert stepr["feedback_score"] == 0.0

    # the hot store (QuestDB through the InfluxDB v2 API) holds each of this tenant's records once
    from aos_gateway.experience.hot import HotStore

    hot = HotStore.from_settings(settings)
    deadline = time.monotonic() + 30
    while True:
        want = len(_distinct_of_tenant(settings))
        got = hot.query_counts((), tenant=TENANT).get((), 0)
        if got == want:
            break
        assert time.monotonic() < deadline, (got, want)
        time.sleep(0.5)
    hot.close()

    # the agent statistics projection counted this tenant's calculator steps (each once)
    from aos_gateway.experience import stats
    from aos_gateway.registry import store

    with store.connect(settings.postgres.conninfo()) as conn:
        deadline = time.monotonic() + 30
        while True:
            rows = [r for r in stats.read_stats(conn, TENANT) if r.agent_id == CALC]
            calls = sum(r.calls for r in rows)
            expected = _calc_steps(settings)
            if calls == expected:
                break
            assert time.monotonic() < deadline, (calls, expected)
            time.sleep(0.5)


def test_replay_reaches_the_same_weights_as_the_live_learner(
    settings: Settings, stack_env: dict[str, str], agents: AgentRunner, results: ResultReader
) -> None:
    import json

    from aos_gateway.experience import learning
    from aos_gateway.streams.learner import PeriodicLearner, latest_weights

    from .conftest import run_aos

    for text in ("what is 3 * 3", "no numbers"):  # a success and a failure of the calculator
        plan = send_plan(settings, text, [step("s1", CALC)])
        results.wait(plan["task_id"], 60)
    time.sleep(1)  # the experience records follow the result
    live = PeriodicLearner(settings)
    sent = live.run_once()  # what the worker's timer does
    assert {"network.quality", learning.ANOMALIES} <= set(sent)
    assert live.run_once() == {}  # nothing new: nothing published again
    held = latest_weights(settings)
    assert held["network.quality"]["version"] == sent["network.quality"]
    out = run_aos(stack_env, "experience", "replay", "--no-publish", "--json", timeout=300)
    replayed = json.loads(out.stdout)
    assert replayed["published"] == {}
    live_fps = {name: rec["metadata"]["fingerprint"] for name, rec in held.items() if name in sent}
    assert live_fps and all(replayed["fingerprints"][k] == v for k, v in live_fps.items())


def test_beyond_its_window_the_learning_pass_reads_only_what_is_new(
    settings: Settings, agents: AgentRunner, results: ResultReader, tmp_path: Path
) -> None:
    from aos_gateway.streams.learner import PeriodicLearner, learn_from_history

    small = settings.model_copy(
        update={
            "experience": settings.experience.model_copy(update={"learn_window": 1}),
            "worker": settings.worker.model_copy(update={"data_dir": tmp_path}),
        }
    )
    results.wait(send_plan(settings, "what is 2 * 21", [step("s1", CALC)])["task_id"], 60)
    time.sleep(1)  # the experience records follow the result
    live = PeriodicLearner(small)
    live.run_once()
    assert live.last_pass["kind"] == "full"  # no checkpoint yet
    everything = live.last_pass["read"]
    for text in ("what is 6 * 7", "what is 9 - 2"):
        results.wait(send_plan(settings, text, [step("s1", CALC)])["task_id"], 60)
    time.sleep(1)
    sent = live.run_once()
    assert live.last_pass["kind"] == "incremental", live.last_pass
    assert live.last_pass["new"] >= 4  # two plans: a STEP and an EXECUTION record each
    _, marks = read_range(settings.kafka, topics.EXPERIENCE.name, lambda _m: {})
    # the new records and the window (the latest record of each partition), not the history
    assert live.last_pass["read"] <= live.last_pass["new"] + len(marks)
    assert sum(high - low for low, high in marks.values()) >= everything + live.last_pass["new"]
    assert "network.quality" in sent  # two more steps counted
    full = learn_from_history(settings)  # what a replay of the whole history learns
    assert live.last_pass["records"] == full.records
    held = (tmp_path / "learner-checkpoint.npz").stat().st_size
    assert held > 0
    assert live.run_once() == {}  # nothing new: nothing read but the window, nothing published


def _calc_steps(settings: Settings) -> int:
    """Distinct STEP records of the calculator on the experience topic now."""
    experience = all_records(settings, topics.EXPERIENCE.name, EXPERIENCE)
    return len({r["experience_id"] for r in experience if r["kind"] == "STEP" and r["agent_id"] == CALC})


def _distinct_of_tenant(settings: Settings) -> set[str]:
    return {
        r["experience_id"] for r in all_records(settings, topics.EXPERIENCE.name, EXPERIENCE) if r["tenant"] == TENANT
    }


def test_no_match_gets_a_failed_result_and_goes_to_review(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    from aos_gateway.client import GatewayClient

    with GatewayClient(settings) as client:
        tid = client.submit("what is 2 + 2", tenant=TENANT, required_capabilities=["no.such.capability"])
        plan = client.wait(tid, 60)
    assert plan["status"] == "NO_MATCH"
    res = results.wait(tid, 60)
    assert res["status"] == "FAILED" and (res["reason"] or "").startswith("NO_MATCH: ")
    (reviewed,) = records_of(settings, topics.REVIEW.name, PLAN, tid)
    assert any(n.startswith("review: no suitable agent") for n in reviewed["notes"])


def test_a_new_matcher_state_is_rolled_out_by_ab_test_then_promoted(
    settings: Settings, agents: AgentRunner, results: ResultReader
) -> None:
    from aos_gateway.client import GatewayClient
    from aos_gateway.contracts.records import ExperienceRecord
    from aos_gateway.experience import learning
    from aos_gateway.experience.abtest import KEY
    from aos_gateway.streams import learner

    ab = settings.model_copy(
        update={"experience": settings.experience.model_copy(update={"ab_share": 0.5, "ab_min_samples": 20})}
    )
    with GatewayClient(settings) as client:
        client.listen(executions=True)

        def run(text: str) -> Any:
            tid = client.submit(text, tenant=TENANT)
            plan = client.wait(tid, 60)
            client.wait_execution(tid, 60)
            return plan

        run("what is 5 * 5")  # evidence with a task vector: the matcher has something to learn
        time.sleep(1)
        learner.publish(settings, learner.learn_from_history(settings))  # the control in force
        run("what is 7 * 8")  # new evidence: the next learned state differs
        time.sleep(1)
        live = learner.PeriodicLearner(ab)
        sent = live.run_once()
        assert learning.CANDIDATE in sent and "matching.ranker" not in sent  # not put in force directly
        cand_version = sent[learning.CANDIDATE]
        time.sleep(3)  # the worker loads the candidate
        arms = {run(f"what is {i} * 3")["weights"]["matching.ranker"].split(":")[0] for i in range(12)}
    assert arms == {"control", "candidate"}  # half the tasks each, by task id
    time.sleep(1)
    sent = live.run_once()
    assert learning.CANDIDATE not in sent and "matching.ranker" not in sent  # still under test
    assert live.last_verdict is not None and live.last_verdict.action == "wait", live.last_verdict

    # outcomes as a clearly better candidate would have them
    now = int(time.time() * 1000) + 1_000
    recs = [
        ExperienceRecord(
            experience_id=str(uuid.uuid4()),
            task_id=f"it-ab-{i}",
            tenant=TENANT,
            kind="EXECUTION",
            plan_id=None,
            agent_id=None,
            agent_ids=[CALC],
            outcome="SUCCEEDED" if arm == "candidate" or i % 2 else "FAILED",
            latency_ms=5,
            cost=0.0,
            task_vector=None,
            error=None,
            feedback_score=None,
            occurred_at=now,
            trace_id=None,
            metadata={KEY: f"{arm}:v{cand_version}" if arm == "candidate" else "control:v1"},
        )
        for i in range(60)
        for arm in ("candidate", "control")
    ]
    prod = make_producer(settings.kafka)
    codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name)
    for r in recs:
        prod.produce(topics.EXPERIENCE.name, key=r["task_id"].encode(), value=codec.encode(r))
    assert prod.flush(10) == 0
    sent = live.run_once()
    assert live.last_verdict is not None and live.last_verdict.action == "promote", live.last_verdict
    assert {"matching.ranker", learning.CANDIDATE} <= set(sent)
    held = learner.latest_weights(settings)
    assert held["matching.ranker"]["metadata"]["promoted"].startswith("better")
    assert held[learning.CANDIDATE]["metadata"]["retired"] == "true"
