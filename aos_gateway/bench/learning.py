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
time. A checkpoint is reached exactly: the stream never has more tasks in flight than executions
still missing, so none lands after the count (a task with no answer in ``LOST_AFTER_S`` is given
up and reported; should it run after all, the count reached, reported beside the one asked for,
is higher).

The run changes the live gateway (so the CLI asks for ``--yes``): it replaces the learned state
and registers the simulators' cards. At its end — normal, on an error or on Ctrl-C — :func:`undo`
deregisters the simulator cards (a card an id had before the run is put back), deletes the topics
the run created (the simulators' invocation topics, the bench's plans topic) and resets the
learned state again; what was learned before the run is not restored.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aos_gateway import topics
from aos_gateway.client import new_task
from aos_gateway.contracts.records import AGENT_CARD, EXECUTION_RESULT, EXPERIENCE, PLAN, TASK_REQUEST, AgentCard
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import StackError
from aos_gateway.matching.dataset import Example, read_examples
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import admin, consumer_config, ensure_topics, existing_topics, make_producer, poll_batch
from aos_gateway.topics import TopicSpec

TENANT = "bench-learning"
EVAL_TOPIC = TopicSpec("aos.bench.learning.plans", PLAN, partitions=4, retention_ms=24 * 3600 * 1000)
#: a training task with no execution nor final result after this long is given up (counted as lost)
LOST_AFTER_S = 300.0
#: no training task finished for this long while streaming: the pipeline is stuck, the run fails
STALL_S = 600.0


@dataclass
class RunChanges:
    """What a run changes on the live gateway, for :func:`undo`."""

    agent_ids: list[str]  # the simulators' ids
    prior_cards: dict[str, AgentCard]  # the cards some of those ids had before the run
    topics_before: set[str]
    state_replaced: bool = False  # set before the first learned state is published


def snapshot(settings: Settings, agent_ids: list[str]) -> RunChanges:
    """The registry and the topics before the run, so that :func:`undo` puts them back."""
    from aos_gateway.cli import registry_cmds

    cards = registry_cmds.current_cards(settings)
    return RunChanges(agent_ids, {a: cards[a] for a in agent_ids if a in cards}, existing_topics(settings.kafka))


def delete_topics(settings: Settings, names: list[str]) -> list[str]:
    """Delete the topics ``names``: one problem line per topic not deleted."""
    from confluent_kafka import KafkaException

    client = admin(settings.kafka)  # keep a reference: the futures fail if the client is collected
    timeout = settings.kafka.request_timeout_s
    problems = []
    for name, fut in client.delete_topics(names, operation_timeout=timeout, request_timeout=timeout).items():
        try:
            fut.result()
        except KafkaException as exc:
            problems.append(f"topic {name}: {exc.args[0]}")
    return problems


def undo(settings: Settings, changes: RunChanges, progress: Callable[[str], None]) -> dict[str, Any]:
    """Undo what the run changed, each part tried even when another fails: the simulators' cards
    deregistered (tombstones, as ``aos agents deregister``; an id's card from before the run put
    back instead), the learned state reset (if the run replaced it: the state from before is not
    restored), the topics the run created deleted. Returns what was done and ``left``: one line per
    part not done. Call it after the simulators have stopped (they would register again)."""
    from aos_gateway.cli import registry_cmds
    from aos_gateway.streams import learner

    done: dict[str, Any] = {"deregistered": 0, "restored": 0, "learned_state_reset": False, "topics_deleted": []}
    left: list[str] = []

    def registry() -> None:
        now = registry_cmds.current_cards(settings)
        prior = changes.prior_cards
        back = [a for a in changes.agent_ids if a in prior and registry_cmds._differs(now.get(a), prior[a])]
        drop = [a for a in changes.agent_ids if a not in prior and a in now]
        codec = codec_for(AGENT_CARD, topics.AGENTS.name, settings.schema_registry)
        items: list[tuple[str, bytes | None]] = [(a, codec.encode(prior[a])) for a in back]
        items += [(a, None) for a in drop]
        if items:
            registry_cmds._produce(settings, items)
        done["deregistered"], done["restored"] = len(drop), len(back)
        again = f", {len(back)} cards from before the run registered again" if back else ""
        progress(f"bench: cleanup: {len(drop)} simulator agents deregistered{again}")

    def learned_state() -> None:
        if not changes.state_replaced:
            return
        learner.reset(settings, "aos bench learning: end of run")
        done["learned_state_reset"] = True
        progress("bench: cleanup: learned state reset (what was learned before the run is not restored)")

    def topic_list() -> None:
        ours = {topics.invocation_topic(a) for a in changes.agent_ids} | {EVAL_TOPIC.name}
        created = sorted((existing_topics(settings.kafka) & ours) - changes.topics_before)
        if not created:
            return
        problems = delete_topics(settings, created)
        left.extend(problems)
        done["topics_deleted"] = [t for t in created if not any(p.startswith(f"topic {t}:") for p in problems)]
        progress(f"bench: cleanup: {len(done['topics_deleted'])} topics the run created deleted")

    parts: list[tuple[str, Callable[[], None]]] = [
        ("simulator agent cards still registered", registry),
        ("learned state from the run still published (`aos experience reset --yes`)", learned_state),
        ("topics created by the run not deleted", topic_list),
    ]
    progress("bench: cleanup: undoing what the run changed (simulator agents, learned state, topics)")
    for i, (what, part) in enumerate(parts):
        try:
            part()
        except KeyboardInterrupt:
            left.extend(f"{w} (cleanup interrupted)" for w, _p in parts[i:])
            progress(f"bench: cleanup interrupted; left: {'; '.join(left)}")
            raise
        except Exception as exc:  # every part is tried: say what is left, and why
            left.append(f"{what}: {exc}")
    if left:
        progress(f"bench: cleanup incomplete; left: {'; '.join(left)}")
    return {**done, "left": left}


def may_send(in_flight: int, executed: int, target: int, cap: float) -> bool:
    """Whether one more training task may be sent: at most ``cap`` in flight, and never more than
    the executions still missing to ``target`` (each task in flight makes at most one)."""
    return in_flight < cap and executed + in_flight < target


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
        self.unexecuted: set[str] = set()  # finished without an execution (NO_MATCH / REJECTED plan)
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
                        if not res["steps"] and (res["reason"] or "").startswith(("NO_MATCH", "REJECTED")):
                            self.unexecuted.add(res["task_id"])
                    continue
                rec = self.codec.decode(m.value())
                tid = rec["task_id"]
                if rec["kind"] == "EXECUTION" and tid.startswith(self.run_id) and tid not in self.executions:
                    self.executions.add(tid)
                    self.succeeded += rec["outcome"] == "SUCCEEDED"
        self.consumer.close()

    def settled_count(self) -> int:
        """Training tasks that will make no more executions (executed, or finished without one)."""
        return len(self.executions) + len(self.unexecuted)

    def settled(self, task_id: str) -> bool:
        """Whether the task will make no more executions: executed, or finished without one."""
        return task_id in self.executions or task_id in self.unexecuted

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
    """The learning curve at ``checkpoints`` (ascending experience counts); what the run changed on
    the gateway is undone at its end, also on an error or Ctrl-C (:func:`undo`): the report's
    ``cleanup``."""
    from aos_gateway.cli import worker_proc

    if worker_proc.running_pid(settings) is None:
        raise StackError("no worker is running: `aos dev up` and `aos worker --detach` first")
    agents_file, train_file, dev_file = data / "agents.jsonl", data / "train.jsonl", data / "dev.jsonl"
    train = read_examples(train_file)
    dev = read_examples(dev_file, dev_limit)
    spec = simulator_spec(agents_file, train, skill, noise, seed)
    changes = snapshot(settings, [a["agent_id"] for a in spec["agents"]])
    try:
        report = _measure(settings, spec, changes, train, dev, checkpoints, rate, (skill, noise), seed, progress)
    finally:
        cleanup = undo(settings, changes, progress)
    return {**report, "cleanup": cleanup}


def _measure(
    settings: Settings,
    spec: dict[str, Any],
    changes: RunChanges,
    train: list[Example],
    dev: list[Example],
    checkpoints: list[int],
    rate: float,
    skill_noise: tuple[float, float],
    seed: int,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    from aos_gateway.streams.learner import PeriodicLearner, reset

    rng = random.Random(seed)
    ensure_topics(settings.kafka, [*topics.CATALOG, EVAL_TOPIC])
    run_id = f"bl{int(time.time())}"
    # the simulators stay registered when they stop: undo() deregisters them (or restores a prior card)
    with (
        simulator_agents(settings, spec, "bench-learning-agents.log", 16, True, 30.0, progress),
        contextlib.ExitStack() as stack,
    ):
        changes.state_replaced = True
        reset(settings, f"aos bench learning {run_id}")
        learner = PeriodicLearner(settings)
        counter = ExperienceCounter(settings, run_id)
        stack.callback(counter.close)  # before the simulators stop
        producer = make_producer(settings.kafka)
        codec = codec_for(TASK_REQUEST, topics.TASKS.name)
        order: list[Example] = []
        pending: dict[str, float] = {}  # training tasks sent, not settled yet -> when sent
        lost = 0
        sent = 0
        last_report = 0
        stream_s = 0.0
        curve: list[dict[str, Any]] = []
        for target in checkpoints:
            t_stream = time.time()
            before = (len(counter.executions), counter.succeeded)
            last_move, moved = time.monotonic(), counter.settled_count()
            while len(counter.executions) < target:
                now = time.monotonic()
                for tid in [t for t, at in pending.items() if counter.settled(t) or now - at > LOST_AFTER_S]:
                    lost += not counter.settled(tid)
                    del pending[tid]
                if counter.settled_count() != moved:
                    last_move, moved = now, counter.settled_count()
                elif now - last_move > STALL_S:
                    raise StackError(
                        f"no training task finished in {STALL_S:.0f}s ({len(counter.executions)} of {target} "
                        "experiences): is the worker running? (`aos worker --detach`; its log: .aos/worker.log)"
                    )
                if may_send(len(pending), len(counter.executions), target, rate * 5):  # at most ~5 s in flight
                    if not order:
                        order = train[:]
                        rng.shuffle(order)
                    ex = order.pop()
                    tid = f"{run_id}-{sent:06d}"
                    req = new_task(ex.text.strip('"'), task_id=tid, tenant=TENANT)
                    producer.produce(topics.TASKS.name, key=tid.encode(), value=codec.encode(req))
                    producer.poll(0)
                    pending[tid] = time.monotonic()
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
            reached, succeeded = len(counter.executions), counter.succeeded  # = target, unless a lost task ran
            t_learn = time.perf_counter()
            learner.run_once()
            learn_s = time.perf_counter() - t_learn
            time.sleep(5)  # the worker's weights view picks the new states up
            res = evaluate(settings, dev, run_id, str(target), timeout=600)
            seg = reached - before[0]
            point = {
                "requested": target,
                "experiences": reached,
                # the live success rate of the executions streamed since the previous checkpoint
                "stream_success": None if not seg else round((succeeded - before[1]) / seg, 4),
                **res,
                "learn_s": round(learn_s, 1),
            }
            curve.append(point)
            at = f"{target}" if reached == target else f"{target} (reached {reached})"
            progress(f"bench: after {at} experiences: dev top-1 {point['top1']:.3f}")
        executed = len(counter.executions)
        return {
            "run_id": run_id,
            "agents": len(spec["agents"]),
            "train_tasks": len(train),
            "dev_tasks": len(dev),
            "skill": skill_noise[0],
            "noise": skill_noise[1],
            "rate": rate,
            "curve": curve,
            "experiences": executed,
            "finished_not_executed": len(counter.unexecuted),  # NO_MATCH / REJECTED plans
            "lost_tasks": lost,  # given up after LOST_AFTER_S with no execution nor result
            "ingest_per_s": round(executed / max(stream_s, 1e-9), 1),
        }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        f"learning curve: {r['agents']} simulated agents (skill {r['skill']}, luck {r['noise']}), "
        f"{r['dev_tasks']} dev tasks, training tasks at {r['rate']:g}/s",
        f"{'requested':>10} {'experiences':>12} {'dev top-1':>10} {'live success':>13} {'learn s':>8} {'eval s':>7}",
    ]
    for p in r["curve"]:
        live = "-" if p["stream_success"] is None else f"{p['stream_success']:.3f}"
        lines.append(
            f"{p['requested']:>10} {p['experiences']:>12} {p['top1']:>10.3f} {live:>13} {p['learn_s']:>8} "
            f"{p['seconds']:>7}"
        )
    lines.append(f"experiences ingested: {r['ingest_per_s']}/s while streaming ({r['experiences']} in all)")
    if r["lost_tasks"]:
        lines.append(f"{r['lost_tasks']} training tasks given up (no execution nor result in {LOST_AFTER_S:.0f}s)")
    c = r["cleanup"]
    again = f", {c['restored']} prior cards registered again" if c["restored"] else ""
    lines.append(
        f"cleanup: {c['deregistered']} simulator agents deregistered{again}, "
        f"{len(c['topics_deleted'])} topics deleted, learned state "
        + ("reset (the state from before the run is not restored)" if c["learned_state_reset"] else "untouched")
    )
    lines += [f"left after the run: {what}" for what in c["left"]]
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
