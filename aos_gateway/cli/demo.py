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
    LocalStack(settings).up(progress)
    ensure_topics(settings.kafka, partitions=settings.worker.topic_partitions)
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
    progress(
        f"\ndemo: {len(ids)} plans in {time.monotonic() - t0:.1f}s; the stack and worker keep running "
        "(`aos submit --text ... --wait`, `aos dev down` to stop)"
    )
    return 0
