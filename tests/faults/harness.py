"""The fault suite's machinery: processes it kills, a steady load, topic tallies and the checks.

A scenario runs tasks at a steady rate under a tenant of its own, injects its fault, stops the
load, waits for the pipeline to drain, then checks the invariants of ``docs/reliability.md``:
every submitted task has exactly one final result (a duplicate *record* of the same result is
allowed after a crash and counted apart), no experience record is lost from or counted twice in
any store, and state recovers. It measures the time to recover and returns one report row.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aos_gateway import topics
from aos_gateway.client import new_task
from aos_gateway.contracts.records import DEAD_LETTER, EXECUTION_RESULT, EXPERIENCE, PLAN, TASK_REQUEST
from aos_gateway.contracts.wire import codec_for
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import consumer_config, make_producer, poll_batch


def now_ms() -> int:
    return int(time.time() * 1000)


def say(msg: str) -> None:
    print(f"[faults {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- processes ------------------------------------------------------------------------------------


class Proc:
    """A subprocess the suite starts, kills with SIGKILL and restarts (same argv, env and log)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name, self.argv, self.env, self.log, self.cwd = name, argv, env, log, cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is running"
        with self.log.open("ab") as out:
            out.write(f"\n===== start #{self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            out.flush()
            self.proc = subprocess.Popen(
                self.argv, env=self.env, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.starts += 1
        say(f"{self.name}: started pid {self.proc.pid}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        assert self.proc is not None and self.alive, f"{self.name} is not running"
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)
        say(f"{self.name}: killed pid {self.proc.pid} with SIGKILL")

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_log(self, text: str, timeout: float) -> None:
        """Wait until ``text`` appears in the log after the latest start."""
        deadline = time.monotonic() + timeout
        while True:
            log = self.log.read_text(errors="replace")
            if text in log[log.rfind("===== start #") :]:
                return
            assert self.alive, f"{self.name} exited; log:\n{self.tail()}"
            assert time.monotonic() < deadline, f"{self.name}: no {text!r} within {timeout:g}s; log:\n{self.tail()}"
            time.sleep(0.2)


# -- reading topics -------------------------------------------------------------------------------


class Tally:
    """Reads a topic from its beginning in a thread and keeps the decoded records ``keep`` accepts,
    each with the wall-clock time (ms) it was read."""

    def __init__(self, settings: Settings, topic: str, record: str, keep: Callable[[dict[str, Any]], bool]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        self._codec = codec_for(record, topic, settings.schema_registry)
        self._keep = keep
        self._consumer = Consumer(consumer_config(settings.kafka))
        md = self._consumer.list_topics(topic, timeout=30)
        parts = sorted(md.topics[topic].partitions)
        self._consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        self._lock = threading.Lock()
        self._records: list[tuple[int, dict[str, Any]]] = []
        self._stop = threading.Event()
        self.undecodable = 0
        self._thread = threading.Thread(target=self._run, name=f"tally-{topic}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = poll_batch(self._consumer, 500, 0.2)
            got: list[tuple[int, dict[str, Any]]] = []
            t = now_ms()
            for m in msgs:
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    rec = self._codec.decode(m.value())
                except Exception:
                    self.undecodable += 1
                    continue
                if self._keep(rec):
                    got.append((t, rec))
            if got:
                with self._lock:
                    self._records.extend(got)
        self._consumer.close()

    def records(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for _, r in self._records]

    def timed(self) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            return list(self._records)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)


# -- load -----------------------------------------------------------------------------------------


# The load's texts. Each of its 9,604 (a, b in 2..99) is at least 0.27 similar to both calculators'
# cards (min 0.320 / 0.275, measured 2026-12-06), clear of min_similarity and the fallback's
# threshold (both 0.2): every plan has its match and its fallback, so a FAILED dispatched task is a
# fallback that did not serve. "What is {a} * {b}?" was not: 20 of its texts have one card below 0.2,
# which fails the agent scenario whenever one of them lands in the 20 s the first agent is down.
TASK_TEXT = "Evaluate the arithmetic {a} * {b}"


class Load:
    """Submits arithmetic tasks ("Evaluate the arithmetic 3 * 17") at a steady rate from a thread.

    A task counts as submitted once the broker acknowledged it (the producer retries through a
    broker restart); ``submitted`` maps task id -> the wall-clock ms it was handed to the producer.
    """

    def __init__(self, settings: Settings, tenant: str, rate: float) -> None:
        self.tenant, self.rate = tenant, rate
        self._producer = make_producer(settings.kafka)
        self._codec = codec_for(TASK_REQUEST, topics.TASKS.name, settings.schema_registry)
        self._sent: dict[str, int] = {}
        self.submitted: dict[str, int] = {}
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._rng = random.Random(tenant)
        self._thread = threading.Thread(target=self._run, name=f"load-{tenant}", daemon=True)

    def _delivered(self, err: Any, msg: Any) -> None:
        tid = msg.key().decode()
        if err is None:
            self.submitted[tid] = self._sent[tid]
        else:
            self.failed.append(f"{tid}: {err}")

    def _run(self) -> None:
        period = 1.0 / self.rate
        nxt = time.monotonic()
        i = 0
        while not self._stop.is_set():
            a, b = self._rng.randint(2, 99), self._rng.randint(2, 99)
            tid = f"{self.tenant}-{i:05d}-{uuid.uuid4().hex[:6]}"
            req = new_task(TASK_TEXT.format(a=a, b=b), task_id=tid, tenant=self.tenant)
            self._sent[tid] = now_ms()
            self._producer.produce(
                topics.TASKS.name, key=tid.encode(), value=self._codec.encode(req), on_delivery=self._delivered
            )
            i += 1
            nxt += period
            while not self._stop.is_set():
                self._producer.poll(max(0.0, min(0.05, nxt - time.monotonic())))
                if time.monotonic() >= nxt:
                    break

    def start(self) -> None:
        self._thread.start()

    def stop(self, flush_s: float = 180.0) -> None:
        self._stop.set()
        self._thread.join(10)
        left = self._producer.flush(flush_s)
        assert left == 0, f"{left} tasks still not acknowledged by the broker after {flush_s:g}s"


def send_poison(settings: Settings, prefix: str, count: int, partition: int = 0) -> list[str]:
    """Garbage on one partition of the task topic: random bytes, a forged single-object header, a
    record of another schema, empty values and broken UTF-8; returns the keys sent."""
    rng = random.Random(prefix)
    exp_codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
    other = exp_codec.encode(
        {
            "experience_id": "x",
            "task_id": "x",
            "tenant": "x",
            "kind": "EXECUTION",
            "plan_id": None,
            "agent_id": None,
            "agent_ids": [],
            "outcome": "SUCCEEDED",
            "latency_ms": 1,
            "cost": 0.0,
            "task_vector": None,
            "error": None,
            "feedback_score": None,
            "occurred_at": now_ms(),
            "trace_id": None,
            "metadata": {},
        }
    )
    shapes: list[Callable[[], bytes]] = [
        lambda: rng.randbytes(rng.randint(1, 300)),
        lambda: b"\xc3\x01" + rng.randbytes(8) + rng.randbytes(rng.randint(0, 64)),
        lambda: other,
        lambda: b"",
        lambda: b"\xff\xfe{not json \xed\xa0\x80",
    ]
    prod = make_producer(settings.kafka)
    keys = []
    for i in range(count):
        key = f"{prefix}-{i:04d}"
        prod.produce(topics.TASKS.name, key=key.encode(), value=shapes[i % len(shapes)](), partition=partition)
        prod.poll(0)
        keys.append(key)
    assert prod.flush(60) == 0
    return keys


# -- the stores -----------------------------------------------------------------------------------


def stats_of(settings: Settings, tenant: str) -> tuple[int, set[str]]:
    """(calls counted in ``agent_stats``, the experience ids in ``agent_stats_applied``) of a tenant."""
    from aos_gateway.experience import stats
    from aos_gateway.registry import store

    with store.connect(settings.postgres.conninfo()) as conn:
        calls = sum(r.calls for r in stats.read_stats(conn, tenant))
        applied = {
            str(r[0])
            for r in conn.execute("SELECT experience_id FROM agent_stats_applied WHERE tenant = %s", (tenant,))
        }
    return calls, applied


def cold_ids(settings: Settings, tenant: str) -> Counter[str]:
    """Experience ids of a tenant in the Parquet cold store, as it reads them (deduplicated)."""
    import pyarrow.compute as pc

    from aos_gateway.experience.cold import ColdStore

    table = ColdStore(settings.experience.cold_dir).read(opened=False)
    mine = table.filter(pc.equal(table.column("tenant"), tenant))
    return Counter(str(x) for x in mine.column("experience_id").to_pylist())


def hot_rows(settings: Settings, tenant: str, until_ms: int | None = None) -> int:
    """Rows of a tenant in the QuestDB hot store."""
    from aos_gateway.experience.hot import HotStore

    hot = HotStore.from_settings(settings)
    try:
        return hot.query_counts((), tenant=tenant, until_ms=until_ms).get((), 0)
    finally:
        hot.close()


def sink_result_rows(settings: Settings, tenant: str) -> tuple[int, set[str]]:
    """(rows, distinct task ids) of a tenant in the dashboards' ``sink_results`` table."""
    import psycopg

    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        try:
            rows = conn.execute("SELECT task_id FROM sink_results WHERE tenant = %s", (tenant,)).fetchall()
        except psycopg.errors.UndefinedTable:
            return 0, set()
    return len(rows), {str(r[0]) for r in rows}


def wait_until(what: str, check: Callable[[], bool], timeout: float, every: float = 0.5) -> float:
    """Poll ``check`` until true; returns the seconds it took (raises AssertionError on timeout)."""
    t0 = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - t0
        except Exception as exc:  # a store still coming back: ask again
            say(f"{what}: {type(exc).__name__}: {str(exc)[:200]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"{what}: not within {timeout:g}s")
        time.sleep(every)


# -- a scenario -----------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the report table."""

    fault: str
    submitted: int
    final_results: int
    lost: int
    duplicate_result_records: int
    duplicated_effects: int
    dead_letters: str
    recovery_s: float | None
    recovery_what: str
    details: dict[str, Any] = field(default_factory=dict)

    HEADER = (
        "| fault | tasks submitted | final results | lost | duplicate result records | duplicated effects "
        "| dead letters | recovery time s |"
    )
    RULE = "|---|---:|---:|---:|---:|---:|---:|---:|"

    def line(self) -> str:
        rec = "n/a" if self.recovery_s is None else f"{self.recovery_s:.1f} ({self.recovery_what})"
        return (
            f"| {self.fault} | {self.submitted} | {self.final_results} | {self.lost} | "
            f"{self.duplicate_result_records} | {self.duplicated_effects} | {self.dead_letters} | {rec} |"
        )


@dataclass
class Scenario:
    """One fault under load: ``with s.load(): ...inject...``, then :meth:`verify`."""

    settings: Settings
    fault: str
    tenant: str
    rate: float
    expected_agent: str
    weights_label: str | None
    hot_store: bool = True
    fault_start_ms: int | None = None
    fault_end_ms: int | None = None
    poison_keys: list[str] = field(default_factory=list)
    _load: Load | None = None
    _results: Tally | None = None
    _experience: Tally | None = None
    dead_letter_counts: dict[str, int] = field(default_factory=dict)
    final_details: dict[str, Any] = field(default_factory=dict)
    """What :meth:`verify` counted last (statuses, failures dispatched and not, losses, ...)."""

    @contextmanager
    def load(self) -> Iterator[None]:
        tenant = self.tenant
        self._results = Tally(self.settings, topics.RESULTS.name, EXECUTION_RESULT, lambda r: r["tenant"] == tenant)
        self._experience = Tally(self.settings, topics.EXPERIENCE.name, EXPERIENCE, lambda r: r["tenant"] == tenant)
        self._load = Load(self.settings, tenant, self.rate)
        self._load.start()
        say(f"{self.fault}: load started ({self.rate:g} tasks/s, tenant {tenant})")
        try:
            yield
        finally:
            self._load.stop()
            say(f"{self.fault}: load stopped, {len(self._load.submitted)} tasks submitted")

    def fault_started(self) -> None:
        self.fault_start_ms = now_ms()

    def fault_ended(self) -> None:
        self.fault_end_ms = now_ms()
        assert self.fault_start_ms is not None
        say(f"{self.fault}: fault over after {(self.fault_end_ms - self.fault_start_ms) / 1000:.1f}s")

    @property
    def results(self) -> Tally:
        assert self._results is not None
        return self._results

    @property
    def experience(self) -> Tally:
        assert self._experience is not None
        return self._experience

    @property
    def submitted(self) -> dict[str, int]:
        assert self._load is not None
        return dict(self._load.submitted)

    def result_ids(self) -> set[str]:
        return {r["task_id"] for r in self.results.records()}

    # -- recovery ---------------------------------------------------------------------------------

    def first_result_after_end(
        self, pred: Callable[[dict[str, Any]], bool] | None = None, timeout: float = 240.0
    ) -> float:
        """Seconds from the fault's end to the first final result (``pred`` accepts) finished after it."""
        end = self._end()

        def after() -> list[int]:
            return [
                r["finished_at"]
                for r in self.results.records()
                if r["finished_at"] >= end and (pred is None or pred(r))
            ]

        wait_until(f"{self.fault}: a final result after the fault", lambda: bool(after()), timeout)
        return (min(after()) - end) / 1000

    def backlog_drained(self, timeout: float = 240.0) -> float:
        """Seconds from the fault's end until every task submitted before it has its final result
        (the time it was read from the result topic)."""
        end = self._end()
        before = {t for t, at in self.submitted.items() if at < end}
        wait_until(f"{self.fault}: the backlog", lambda: before <= self.result_ids(), timeout)
        read = {r["task_id"]: t for t, r in reversed(self.results.timed())}
        return max(0, max((read[t] for t in before), default=end) - end) / 1000

    def store_caught_up(self, store: str, timeout: float = 240.0) -> float:
        """Seconds from the fault's end until ``store`` ("stats" or "hot") holds every experience
        record that occurred before it."""
        end = self._end()

        def before() -> list[dict[str, Any]]:
            return [r for r in self.experience.records() if r["occurred_at"] < end]

        def ok() -> bool:
            recs = before()
            if store == "stats":
                steps = {r["experience_id"] for r in recs if r["kind"] == "STEP"}
                return steps <= stats_of(self.settings, self.tenant)[1]
            return hot_rows(self.settings, self.tenant, until_ms=end) >= len({r["experience_id"] for r in recs})

        wait_until(f"{self.fault}: the {store} store", ok, timeout)
        return (now_ms() - end) / 1000

    def _end(self) -> int:
        assert self.fault_end_ms is not None, "fault_ended() was not called"
        return self.fault_end_ms

    # -- the invariants ---------------------------------------------------------------------------

    def verify(self, recovery_s: float | None, recovery_what: str, drain_s: float = 240.0) -> Row:
        """Wait for results and stores to settle, then count losses and double counts."""
        submitted = self.submitted
        ids = set(submitted)
        wait_until(f"{self.fault}: every task's final result", lambda: ids <= self.result_ids(), drain_s, every=1.0)
        say(f"{self.fault}: every submitted task has a final result; waiting for the stores")

        def snapshot() -> dict[str, Any]:
            return self._count(ids)

        last: dict[str, Any] = {}

        def settled() -> bool:
            nonlocal last
            last = snapshot()
            return bool(last["lost"] == 0 and last["duplicated_effects"] == 0)

        try:
            wait_until(f"{self.fault}: the stores", settled, 120.0, every=2.0)
        except AssertionError:
            say(f"{self.fault}: the stores did not settle: {last}")
        time.sleep(3.0)  # anything late (a duplicate re-sent after a crash) shows now
        final = snapshot()
        self.final_details = final
        self.results.close()
        self.experience.close()
        final["dead_letters"] = self.dead_letter_counts = self._dead_letters()
        dls = str(final["dead_letters"]["of_tenant"])
        if self.poison_keys:
            dls = f"{final['dead_letters']['distinct']} of {len(self.poison_keys)} poison"
        row = Row(
            fault=self.fault,
            submitted=len(ids),
            final_results=len(self.result_ids() & ids),
            lost=final["lost"],
            duplicate_result_records=final["duplicate_result_records"],
            duplicated_effects=final["duplicated_effects"],
            dead_letters=dls,
            recovery_s=recovery_s,
            recovery_what=recovery_what,
            details=final,
        )
        say(f"{self.fault}: {row.line()}")
        say(f"{self.fault}: details {final}")
        return row

    def verify_dead_letters(self) -> dict[str, int]:
        """The poison messages' dead letters, as :meth:`verify` counted them."""
        return self.dead_letter_counts

    def _count(self, ids: set[str]) -> dict[str, Any]:
        results = [r for r in self.results.records() if r["task_id"] in ids]
        per_task = Counter(r["task_id"] for r in results)
        bad_status = [r["task_id"] for r in results if r["status"] not in ("SUCCEEDED", "PARTIAL", "FAILED")]
        no_reason = [r["task_id"] for r in results if r["status"] == "FAILED" and not r["reason"]]
        executed = {r["task_id"] for r in results if r["steps"]}
        plans_per_task = {t: len({r["plan_id"] for r in results if r["task_id"] == t}) for t in per_task}
        finals = {r["task_id"]: r for r in results}
        statuses = Counter(r["status"] for r in finals.values())

        exp = [r for r in self.experience.records() if r["task_id"] in ids]
        exp_ids = {r["experience_id"] for r in exp}
        execution_ids: dict[str, set[str]] = {}
        for r in exp:
            if r["kind"] == "EXECUTION":
                execution_ids.setdefault(r["task_id"], set()).add(r["experience_id"])
        step_ids = {r["experience_id"] for r in exp if r["kind"] == "STEP"}

        calls, applied = stats_of(self.settings, self.tenant)
        cold = cold_ids(self.settings, self.tenant)
        hot = hot_rows(self.settings, self.tenant) if self.hot_store else len(exp_ids)
        sink_rows, sink_tasks = sink_result_rows(self.settings, self.tenant)

        lost = {
            "tasks without a final result": len(ids - set(per_task)),
            # a NO_MATCH / REJECTED plan's task is not executed: its FAILED result has no steps, no experience
            "executed tasks without an EXECUTION record": len(executed - set(execution_ids)),
            "STEP records not counted in agent_stats": len(step_ids - applied),
            "calls missing in agent_stats": max(0, len(step_ids) - calls),
            "records missing in the cold store": len(exp_ids - set(cold)),
            "records missing in the hot store": max(0, len(exp_ids) - hot),
            "tasks missing in sink_results": len(ids - sink_tasks),
        }
        dup = {
            "tasks with two results of different plans": sum(1 for n in plans_per_task.values() if n > 1),
            "tasks with two EXECUTION records": sum(1 for s in execution_ids.values() if len(s) > 1),
            "calls counted twice in agent_stats": max(0, calls - len(step_ids)),
            "records twice in the cold store": sum(n - 1 for n in cold.values()),
            "unknown records in the cold store": len(set(cold) - exp_ids),
            "rows twice in the hot store": max(0, hot - len(exp_ids)),
            "rows twice in sink_results": sink_rows - len(sink_tasks),
        }
        return {
            "lost": sum(lost.values()) + len(bad_status) + len(no_reason),
            "duplicated_effects": sum(dup.values()),
            "duplicate_result_records": sum(n - 1 for n in per_task.values()),
            "duplicate_experience_records": len(exp) - len(exp_ids),
            "statuses": dict(statuses),
            "not_executed": len(set(per_task) - executed),
            "failed_dispatched": sum(1 for r in finals.values() if r["status"] == "FAILED" and r["steps"]),
            "failed_undispatched": [r["reason"] for r in finals.values() if r["status"] == "FAILED" and not r["steps"]],
            "finished_on_a_fallback": sum(1 for r in finals.values() if any(st["fallback_used"] for st in r["steps"])),
            "lost_by_kind": {k: v for k, v in lost.items() if v},
            "dup_by_kind": {k: v for k, v in dup.items() if v},
            "not_succeeded": [
                (r["status"], r["reason"], [(st["agent_id"], st["status"], st["attempts"]) for st in r["steps"]])
                for r in {r["task_id"]: r for r in results}.values()
                if r["status"] != "SUCCEEDED"
            ][:3],
            "bad_status": bad_status[:5],
            "failed_without_reason": no_reason[:5],
            "experience_records": len(exp_ids),
            "step_records": len(step_ids),
            "stats_calls": calls,
        }

    def _dead_letters(self) -> dict[str, int]:
        from aos_gateway.streams.kafka import read_to_end

        codec = codec_for(DEAD_LETTER, topics.DEADLETTER.name, self.settings.schema_registry)
        keys = set(self.poison_keys)
        mine = []
        of_tenant = 0
        for m in read_to_end(self.settings.kafka, topics.DEADLETTER.name, timeout=60):
            dl = codec.decode(m.value())
            of_tenant += dl["tenant"] == self.tenant
            if dl["key"] is not None and dl["key"].decode(errors="replace") in keys:
                mine.append(dl)
        return {
            "of_tenant": of_tenant,  # the tasks' own: a dead-lettered good task would have no result
            "records": len(mine),
            "distinct": len({dl["key"] for dl in mine}),
            "from_tasks_topic": sum(1 for dl in mine if dl["source_topic"] == topics.TASKS.name),
        }

    def plans_after(self, since_ms: int) -> list[dict[str, Any]]:
        """This tenant's plans created at or after ``since_ms``."""
        from aos_gateway.streams.kafka import read_to_end

        codec = codec_for(PLAN, topics.PLANS.name, self.settings.schema_registry)
        out = []
        for m in read_to_end(self.settings.kafka, topics.PLANS.name, timeout=60):
            p = codec.decode(m.value())
            if p["tenant"] == self.tenant and p["created_at"] >= since_ms:
                out.append(p)
        return out

    def check_state(self, since_ms: int) -> None:
        """State recovered: plans made after the fault route to the calculator (the index is back)
        under the learned matching state in force before it (the weights are back)."""
        plans = self.plans_after(since_ms)
        assert plans, f"{self.fault}: no plans after the fault"
        routed = Counter(p["steps"][0]["agent_id"] if p["steps"] else p["status"] for p in plans)
        labels = Counter(p["weights"].get("matching.ranker") for p in plans)
        where = f"{self.fault}: plans after the fault: {routed}, under {labels}"
        assert routed[self.expected_agent] >= 0.9 * len(plans), where
        if self.weights_label is not None:
            assert set(labels) == {self.weights_label}, where
