"""``aos demo``: the whole pipeline on the local stack, start to finish."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

from aos_gateway.settings import Settings

SAMPLE_TASKS = (
    "What's the weather in Paris tomorrow?",
    "Turn 'all customers who ordered more than three times last month' into a SQL query.",
    "What is the latest news about Tesla's stock price?",
    "Find me a cheap flight and a hotel for a weekend in Lisbon.",
    "Make a word cloud from the comments on my blog post.",
    "Teach my five-year-old the alphabet with a fun game.",
    "Show me the weather for the next 10 days in Paris and convert it into a PDF file.",
    "What is the latest news about Tesla, and how has its stock price moved this week?",
)


def default_agents_file() -> Path | None:
    here = Path(__file__).resolve()
    for base in (Path.cwd(), *here.parents):
        cand = base.parent / "shared" / "datasets" / "metatool" / "agents.jsonl"
        if cand.is_file():
            return cand
        cand = base / "shared" / "datasets" / "metatool" / "agents.jsonl"
        if cand.is_file():
            return cand
    return None


def run(settings: Settings, agents: Path | None, timeout: float, progress: Callable[[str], None]) -> int:
    from aos_gateway.cli import registry_cmds, worker_proc
    from aos_gateway.cli.main import format_plan
    from aos_gateway.client import GatewayClient
    from aos_gateway.devstack import LocalStack
    from aos_gateway.errors import AosError
    from aos_gateway.streams.kafka import ensure_topics

    agents = agents or default_agents_file()
    if agents is None:
        raise AosError("no agents file: pass --agents FILE (e.g. ../shared/datasets/metatool/agents.jsonl)")
    progress("demo: starting the local stack")
    stack = LocalStack(settings)
    stack.up(progress)
    ensure_topics(settings.kafka, partitions=settings.worker.topic_partitions)
    if stack.with_connect:
        from aos_gateway.cli import connect_cmds

        connect_cmds.apply(settings, None, timeout, progress)
    worker_proc.start_detached(settings, "warn", progress)
    if not worker_proc.wait_ready(settings, timeout, progress):
        progress(f"demo: the worker's consumer group is not stable after {timeout:.0f}s; submitting anyway")
    progress(f"demo: registering the agents in {agents}")
    reg_args = argparse.Namespace(action="register", file=agents, tenant=None, wait=True, timeout=timeout)
    registry_cmds.run(reg_args, settings, progress)
    progress(f"demo: submitting {len(SAMPLE_TASKS)} tasks")
    t0 = time.monotonic()
    with GatewayClient(settings) as client:
        ids = [client.submit(text) for text in SAMPLE_TASKS]
        client.flush()
        for text, tid in zip(SAMPLE_TASKS, ids, strict=True):
            plan = client.wait(tid, timeout)
            print(f"\n> {text}\n{format_plan(plan)}")
    progress(f"\ndemo: {len(ids)} plans in {time.monotonic() - t0:.1f}s")
    run_reference_agents(settings, timeout, progress)
    if stack.with_connect and settings.connect.sinks:
        landed(settings, ids, timeout, progress)
    progress(
        "\ndemo: the stack, the worker and the reference agents keep running "
        "(`aos submit --text ... --result`, `aos results --executions`, `aos dashboard` for the page, "
        "`aos dev down` to stop)"
    )
    return 0


def landed(settings: Settings, task_ids: list[str], timeout: float, progress: Callable[[str], None]) -> None:
    """Wait until the tasks' decisions and results are rows of the dashboards' tables (Kafka Connect)."""
    import psycopg

    t0 = time.monotonic()
    seen = (0, 0)
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() - t0 < timeout:
            try:
                row = conn.execute(
                    "SELECT (SELECT count(*) FROM sink_decisions WHERE task_id = ANY(%(ids)s)), "
                    "(SELECT count(*) FROM sink_results WHERE task_id = ANY(%(ids)s))",
                    {"ids": task_ids},
                ).fetchone()
                seen = (int(row[0]), int(row[1])) if row else seen
            except psycopg.errors.UndefinedTable:
                pass
            if seen == (len(task_ids), len(task_ids)):
                break
            time.sleep(0.25)
    d = settings.dashboard
    progress(
        f"\ndemo: dashboards' tables (Kafka Connect -> PostgreSQL): {seen[0]}/{len(task_ids)} decisions and "
        f"{seen[1]}/{len(task_ids)} results of the MetaTool tasks; `aos dashboard` serves them on "
        f"http://{d.host}:{d.port}/"
    )


REFERENCE_TASKS = ("What is 12 * (3 + 4)?", "What is 1500 divided by 12?")


def run_reference_agents(settings: Settings, timeout: float, progress: Callable[[str], None]) -> None:
    """Start the reference agents and run tasks with them: through the whole pipeline, and a two-step
    plan (the calculator's answer handed to the keyword extractor) sent straight to the dispatcher."""
    import sys
    import uuid

    from aos_gateway import topics
    from aos_gateway.cli import worker_proc
    from aos_gateway.cli.main import format_plan, format_result
    from aos_gateway.client import GatewayClient, ResultReader
    from aos_gateway.contracts.records import EXECUTION_RESULT, PLAN, Plan, PlanStep
    from aos_gateway.contracts.wire import codec_for
    from aos_gateway.errors import AosError
    from aos_gateway.streams.kafka import make_producer

    progress("\ndemo: starting the reference agents (calculator, keywords, summarizer, embedder, transcriber)")
    target = "aos_gateway.agents.reference:all_agents"
    argv = [sys.executable, "-m", "aos_gateway.cli.main", "agents", "run", target]
    worker_proc.start_detached(settings, "", progress, name="agents", argv=argv)
    wait_alive(settings, ["ref-calculator", "ref-keywords"], timeout, progress)
    with GatewayClient(settings) as client:
        client.listen(executions=True)
        for text in REFERENCE_TASKS:
            tid = client.submit(text)
            plan = client.wait(tid, timeout)
            print(f"\n> {text}\n{format_plan(plan)}")
            print(format_result(client.wait_execution(tid, timeout)))
    now = int(time.time() * 1000)
    text = "Compute 1500 divided by 12 and list the key terms of the answer."
    steps = [
        PlanStep(
            step_id="s1",
            stage=0,
            agent_id="ref-calculator",
            agent_name="Calculator",
            score=1.0,
            depends_on=[],
            timeout_ms=5_000,
            retries=1,
            fallback_agent_id=None,
            expected_latency_ms=50,
            role="Compute 1500 divided by 12",
        ),
        PlanStep(
            step_id="s2",
            stage=1,
            agent_id="ref-keywords",
            agent_name="KeywordExtractor",
            score=1.0,
            depends_on=["s1"],
            timeout_ms=5_000,
            retries=1,
            fallback_agent_id=None,
            expected_latency_ms=50,
            role="list the key terms of the answer",
        ),
    ]
    tid = f"demo-{uuid.uuid4().hex[:12]}"
    plan = Plan(
        plan_id=str(uuid.uuid4()),
        task_id=tid,
        tenant=settings.tenant,
        submitted_at=now,
        created_at=now,
        status="PLANNED",
        reason=None,
        planner="hand-written",
        steps=steps,
        predicted_quality=None,
        estimated_duration_ms=100,
        trace_id=None,
        transcript=None,
        modalities=["text"],
        notes=[],
        timings={},
        text=text,
        task_vector=None,
    )
    reader = ResultReader(settings, topics.RESULTS.name, record=EXECUTION_RESULT)
    try:
        producer = make_producer(settings.kafka)
        producer.produce(topics.PLANS.name, key=tid.encode(), value=codec_for(PLAN, topics.PLANS.name).encode(plan))
        if producer.flush(10):
            raise AosError("the demo plan was not delivered")
        print(f"\n> {text}\n  (a hand-written two-step plan sent straight to {topics.PLANS.name})")
        print(format_plan(plan))
        print(format_result(reader.wait(tid, timeout)))
    finally:
        reader.close()


def wait_alive(settings: Settings, agent_ids: list[str], timeout: float, progress: Callable[[str], None]) -> None:
    """Until every agent sends heartbeats (the reference agents load a model first)."""
    from aos_gateway.errors import AosError
    from aos_gateway.streams.liveness import read_liveness

    deadline = time.monotonic() + timeout
    said: list[str] = []  # the skipped records are said once, not at every pass

    def warn_once(msg: str) -> None:
        if not said:
            said.append(msg)
            progress(f"demo: {msg}")

    while True:
        live = read_liveness(settings, warn_once)
        if all(live.alive(a) for a in agent_ids):
            progress(f"agents alive: {', '.join(agent_ids)}")
            return
        if time.monotonic() > deadline:
            raise AosError(f"the reference agents sent no heartbeat in {timeout:.0f}s; see .aos/agents.log")
        time.sleep(1)
