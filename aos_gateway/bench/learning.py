"""``aos bench learning``: the learning curve of the live gateway, from success/failure alone.

Setup (on the running local stack and worker):

- one simulator agent per MetaTool agent (``agents.jsonl``: same id, name, description), whose
  hidden skill follows ``train.jsonl``: it succeeds (p = ``skill``) on the training tasks labelled
  with it and fails otherwise (p = ``1 - skill`` of succeeding by luck is ``noise``);
- the learned state is reset at the start (a reset marker: learning forgets older evidence).

Then, at each checkpoint (0, 1k, 5k, 10k experiences by default):

1. a learning pass over the experience history (the worker timer's code:
   :class:`aos_gateway.streams.learner.PeriodicLearner`) publishes the learned states, which the
   worker hot-reloads;
2. the dev tasks are submitted through the pipeline with ``reply_to`` a bench topic — their plans
   are not executed, so no dev label leaks into experience — and top-1 = the plan's first agent is
   the gold one;
3. training tasks (shuffled, repeated as needed) are streamed through the whole pipeline at
   ``rate`` tasks/s until the next checkpoint's number of executions is on the experience topic:
   each is perceived, matched, planned, executed by the simulators, and recorded.

An *experience* is one executed task (its EXECUTION record). Reported: top-1 per checkpoint,
experiences ingested per second while streaming (executions recorded / wall time), learning-pass
time. The run replaces the learned state of the stack it runs on (``aos experience reset`` after).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aos_gateway import topics
from aos_gateway.client import new_task
from aos_gateway.contracts.records import EXECUTION_RESULT, EXPERIENCE, PLAN, TASK_REQUEST
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import StackError
from aos_gateway.matching.dataset import Example, read_examples
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import consumer_config, ensure_topics, make_producer, poll_batch
from aos_gateway.topics import TopicSpec

TENANT = "bench-learning"
EVAL_TOPIC = TopicSpec("aos.bench.learning.plans", PLAN, partitions=4, retention_ms=24 * 3600 * 1000)


@contextlib.contextmanager
def simulator_agents(
    settings: Settings,
    spec: dict[str, Any],
    log_name: str,
    concurrency: int,
    keep_registered: bool,
    stop_timeout_s: float,
    progress: Callable[[str], None],
) -> Iterator[subprocess.Popen[bytes]]:
    """The simulator agents of ``spec`` running in a child ``aos agents run`` (log in the stack's
    home), alive before the body runs; stopped (TERM, then KILL after ``stop_timeout_s``) after."""
    from aos_gateway.cli.demo import wait_alive

    spec_file = Path(tempfile.mkstemp(prefix="aos-sim-", suffix=".json")[1])
    spec_file.write_text(json.dumps(spec), encoding="utf-8")
    env = {**os.environ, "AOS_AGENTS__SIMULATOR_FILE": str(spec_file), "AOS_AGENTS__CONCURRENCY": str(concurrency)}
    log_path = settings.stack.home.resolve() / log_name
    progress(f"starting {len(spec['agents'])} simulator agents (log {log_path})")
    argv = [sys.executable, "-m", "aos_gateway.cli.main", "agents", "run", "aos_gateway.agents.simulator:agents"]
    sim = subprocess.Popen(
        argv + (["--keep-registered"] if keep_registered else []),
        env=env,
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        wait_alive(settings, [a["agent_id"] for a in spec["agents"][:3]], 180, progress)
        yield sim
    finally:
        sim.terminate()
        try:
            sim.wait(stop_timeout_s)
        except subprocess.TimeoutExpired:
            sim.kill()
        spec_file.unlink(missing_ok=True)


def simulator_spec(agents_file: Path, train: list[Example], skill: float, noise: float, seed: int) -> dict[str, Any]:
    cards = [json.loads(line) for line in agents_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = {e.text.strip(): e.gold[0] for e in train}
    return {
        "seed": seed,
        "labels": labels,
        "agents": [
            {
                "agent_id": c["agent_id"],
                "name": c.get("name", c["agent_id"]),
                "description": c.get("description", ""),
                "capabilities": c.get("capabilities", []),
                "latency_ms": {"median": 20, "p95": 60},
                "success": {"default": noise, "by_type": {c["agent_id"]: skill}},
            }
            for c in cards
        ],
    }


class ExperienceCounter:
    """Counts this run's EXECUTION records on the experience topic, and its final results (every
    task has one, executed or not: a NO_MATCH or REJECTED plan has no execution), from the end at
    start."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        from confluent_kafka import OFFSET_END, Consumer, TopicPartition

        self.codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name)
        self.result_codec = codec_for(EXECUTION_RESULT, topics.RESULTS.name)
        self.consumer = Consumer(consumer_config(settings.kafka))
        assign = []
        for name in (topics.EXPERIENCE.name, topics.RESULTS.name):
            md = self.consumer.list_topics(name, timeout=10)
            assign += [TopicPartition(name, p, OFFSET_END) for p in sorted(md.topics[name].partitions)]
        self.consumer.assign(assign)
        self.run_id = run_id
        self.executions: set[str] = set()
        self.finished: set[str] = set()
        self.succeeded = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            for m in poll_batch(self.consumer, 1000, 0.2):
                if m.error() is not None or m.value() is None:
                    continue
                if m.topic() == topics.RESULTS.name:
                    res = self.result_codec.decode(m.value())
                    if res["task_id"].startswith(self.run_id):
                        self.finished.add(res["task_id"])
                    continue
                rec = self.codec.decode(m.value())
                tid = rec["task_id"]
                if rec["kind"] == "EXECUTION" and tid.startswith(self.run_id) and tid not in self.executions:
                    self.executions.add(tid)
                    self.succeeded += rec["outcome"] == "SUCCEEDED"
        self.consumer.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)


def evaluate(settings: Settings, dev: list[Example], run_id: str, tag: str, timeout: float) -> dict[str, Any]:
    """Top-1 of the live pipeline's plans on the dev tasks (plans to the bench topic: not executed)."""
    from aos_gateway.client import ResultReader

    reader = ResultReader(settings, EVAL_TOPIC.name)
    producer = make_producer(settings.kafka)
    codec = codec_for(TASK_REQUEST, topics.TASKS.name)
    ids = {}
    t0 = time.time()
    for i, ex in enumerate(dev):
        tid = f"{run_id}-eval{tag}-{i:05d}"
        req = new_task(ex.text.strip('"'), task_id=tid, tenant=TENANT, reply_to=EVAL_TOPIC.name)
        producer.produce(topics.TASKS.name, key=tid.encode(), value=codec.encode(req))
        producer.poll(0)
        ids[tid] = ex
        if i % 50 == 49:
            time.sleep(0.5)  # keep the worker's queue short: the training stream waits meanwhile
    producer.flush(30)
    got: dict[str, Any] = {}
    deadline = time.time() + timeout
    while len(got) < len(ids) and time.time() < deadline:
        for plan in reader.next_batch(1.0):
            if plan["task_id"] in ids:
                got[plan["task_id"]] = plan
    reader.close()
    right = sum(
        1 for tid, plan in got.items() if plan["status"] == "PLANNED" and plan["steps"][0]["agent_id"] in ids[tid].gold
    )
    return {
        "tasks": len(ids),
        "planned": len(got),
        "top1": round(right / max(1, len(ids)), 4),
        "seconds": round(time.time() - t0, 1),
    }


def run(
    settings: Settings,
    data: Path,
    checkpoints: list[int],
    dev_limit: int | None,
    rate: float,
    skill: float,
    noise: float,
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    from aos_gateway.cli import worker_proc
    from aos_gateway.streams.learner import PeriodicLearner, reset

    if worker_proc.running_pid(settings) is None:
        raise StackError("no worker is running: `aos dev up` and `aos worker --detach` first")
    agents_file, train_file, dev_file = data / "agents.jsonl", data / "train.jsonl", data / "dev.jsonl"
    train = read_examples(train_file)
    dev = read_examples(dev_file, dev_limit)
    rng = random.Random(seed)
    ensure_topics(settings.kafka, [*topics.CATALOG, EVAL_TOPIC])
    run_id = f"bl{int(time.time())}"

    spec = simulator_spec(agents_file, train, skill, noise, seed)
    with (
        simulator_agents(settings, spec, "bench-learning-agents.log", 16, True, 30.0, progress),
        contextlib.ExitStack() as stack,
    ):
        reset(settings, f"aos bench learning {run_id}")
        learner = PeriodicLearner(settings)
        counter = ExperienceCounter(settings, run_id)
        stack.callback(counter.close)  # before the simulators stop
        producer = make_producer(settings.kafka)
        codec = codec_for(TASK_REQUEST, topics.TASKS.name)
        order: list[Example] = []
        sent = 0
        last_report = 0
        stream_s = 0.0
        curve: list[dict[str, Any]] = []
        for target in sorted(checkpoints):
            t_stream = time.time()
            before = (len(counter.executions), counter.succeeded)
            while len(counter.executions) < target:
                if sent - len(counter.finished) < rate * 5:  # at most ~5 s of tasks in flight
                    if not order:
                        order = train[:]
                        rng.shuffle(order)
                    ex = order.pop()
                    tid = f"{run_id}-{sent:06d}"
                    req = new_task(ex.text.strip('"'), task_id=tid, tenant=TENANT)
                    producer.produce(topics.TASKS.name, key=tid.encode(), value=codec.encode(req))
                    producer.poll(0)
                    sent += 1
                    time.sleep(1.0 / rate)
                else:
                    time.sleep(0.05)
                if sent % 500 == 0 and sent and sent != last_report:
                    last_report = sent
                    done, ran = len(counter.finished), len(counter.executions)
                    progress(f"bench: {sent} sent, {done} finished, {ran} executed")
            producer.flush(30)
            stream_s += time.time() - t_stream
            t_learn = time.perf_counter()
            learner.run_once()
            learn_s = time.perf_counter() - t_learn
            time.sleep(5)  # the worker's weights view picks the new states up
            res = evaluate(settings, dev, run_id, str(target), timeout=600)
            seg = len(counter.executions) - before[0]
            point = {
                "experiences": len(counter.executions),
                # the live success rate of the executions streamed since the previous checkpoint
                "stream_success": None if not seg else round((counter.succeeded - before[1]) / seg, 4),
                **res,
                "learn_s": round(learn_s, 1),
            }
            curve.append(point)
            progress(f"bench: after {point['experiences']} experiences: dev top-1 {point['top1']:.3f}")
        executed = len(counter.executions)
        return {
            "run_id": run_id,
            "agents": len(spec["agents"]),
            "train_tasks": len(train),
            "dev_tasks": len(dev),
            "skill": skill,
            "noise": noise,
            "rate": rate,
            "curve": curve,
            "experiences": executed,
            "finished_not_executed": len(counter.finished) - executed,  # NO_MATCH / REJECTED plans
            "ingest_per_s": round(executed / max(stream_s, 1e-9), 1),
        }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"learning curve: {r['agents']} simulated agents (skill {r['skill']}, luck {r['noise']}), "
        f"{r['dev_tasks']} dev tasks, training tasks at {r['rate']:g}/s",
        f"{'experiences':>12} {'dev top-1':>10} {'live success':>13} {'learn s':>8} {'eval s':>7}",
    ]
    for p in r["curve"]:
        live = "-" if p["stream_success"] is None else f"{p['stream_success']:.3f}"
        lines.append(f"{p['experiences']:>12} {p['top1']:>10.3f} {live:>13} {p['learn_s']:>8} {p['seconds']:>7}")
    lines.append(f"experiences ingested: {r['ingest_per_s']}/s while streaming ({r['experiences']} in all)")
    return "\n".join(lines)


def ingest(settings: Settings, n: int, progress: Callable[[str], None]) -> dict[str, Any]:
    """How fast the worker's projections take in experience: ``n`` STEP records (with a 384-dim
    task vector, a fresh tenant) produced at once, then the time until each store holds all of
    them — agent statistics (PostgreSQL), the hot store (QuestDB/InfluxDB API), the Parquet
    cold store. Records/s = n / that time (the producer's own time included)."""
    import uuid

    import numpy as np

    from aos_gateway.contracts.records import ExperienceRecord
    from aos_gateway.experience.cold import ColdStore
    from aos_gateway.experience.hot import HotStore
    from aos_gateway.experience.stats import read_stats
    from aos_gateway.perception.vectors import pack
    from aos_gateway.registry import store

    tenant = f"bench-ingest-{uuid.uuid4().hex[:8]}"
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((64, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name)
    producer = make_producer(settings.kafka)
    progress(f"bench: producing {n} experience records (tenant {tenant})")
    t0 = time.time()
    for i in range(n):
        rec = ExperienceRecord(
            experience_id=str(uuid.uuid4()),
            task_id=f"{tenant}-{i}",
            tenant=tenant,
            kind="STEP",
            plan_id=None,
            agent_id=f"agent-{i % 50}",
            agent_ids=[f"agent-{i % 50}"],
            outcome="SUCCEEDED" if i % 4 else "FAILED",
            latency_ms=int(rng.integers(5, 500)),
            cost=0.01,
            task_vector=pack("fused", vecs[i % 64], "FLOAT16", "bench"),
            error=None,
            feedback_score=None,
            occurred_at=int(t0 * 1000) + i,
            trace_id=None,
            metadata={"step_id": "s1", "role": "", "attempts": "1", "fallback": "false"},
        )
        while True:
            try:
                producer.produce(topics.EXPERIENCE.name, key=rec["task_id"].encode(), value=codec.encode(rec))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(60)
    produced_s = time.time() - t0
    done: dict[str, float] = {}
    hot = HotStore.from_settings(settings)
    cold = ColdStore(settings.experience.cold_dir)
    conn = store.connect(settings.postgres.conninfo())
    deadline = time.time() + 600
    while len(done) < 3 and time.time() < deadline:
        if "stats" not in done and sum(r.calls for r in read_stats(conn, tenant)) >= n:
            done["stats"] = time.time() - t0
        if "hot" not in done and hot.query_counts((), tenant=tenant).get((), 0) >= n:
            done["hot"] = time.time() - t0
        if "cold" not in done:
            table = cold.read(since_ms=int(t0 * 1000))
            if table.num_rows and int(sum(1 for t in table.column("tenant").to_pylist() if t == tenant)) >= n:
                done["cold"] = time.time() - t0
        time.sleep(0.5)
    conn.close()
    hot.close()
    return {
        "records": n,
        "produce_s": round(produced_s, 1),
        "seconds": {k: round(v, 1) for k, v in done.items()},
        "per_s": {k: round(n / v, 1) for k, v in done.items()},
        "incomplete": sorted({"stats", "hot", "cold"} - set(done)),
    }
