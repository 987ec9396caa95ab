"""``aos bench sink``: how long a result takes from its topic to a row the dashboards can read.

Execution results (Avro, as the dispatcher writes them) are produced to ``aos.results.v1`` at a
set rate; the running worker projects each into ``aos.sink.results.v1`` and Kafka Connect's JDBC
sink upserts it into ``sink_results``. A poller queries PostgreSQL every few milliseconds for the
results still missing and records when each row first appears. Lag = first seen − acknowledged by
the broker (the same clock). Needs the stack (`aos dev up`, which applies the sink) and a worker.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np

from aos_gateway import topics
from aos_gateway.contracts.records import EXECUTION_RESULT, ExecutionResult
from aos_gateway.contracts.wire import codec_for
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import make_producer

POLL_S = 0.005


def _result(tenant: str, i: int, now_ms: int) -> ExecutionResult:
    return ExecutionResult(
        task_id=f"{tenant}-{i}",
        plan_id=f"{tenant}-plan-{i}",
        tenant=tenant,
        status="SUCCEEDED",
        reason=None,
        output="ok",
        steps=[],
        started_at=now_ms - 20,
        finished_at=now_ms,
        deadline_at=now_ms + 60_000,
        cost=0.0,
        trace_id=None,
    )


def run(
    settings: Settings, n: int, rate: float, progress: Callable[[str], None], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Produce ``n`` results at ``rate``/s and measure each one's lag to its row in ``sink_results``."""
    import psycopg

    tenant = f"bench-sink-{uuid.uuid4().hex[:8]}"
    progress(
        f"bench: writes {n} synthetic execution results of tenant {tenant} to {topics.RESULTS.name} (and so to "
        "the dashboards' sink_results table): they stay there, marked by that tenant"
    )
    codec = codec_for(EXECUTION_RESULT, topics.RESULTS.name)
    producer = make_producer(settings.kafka, **{"linger.ms": 0})
    acked: dict[str, float] = {}
    seen: dict[str, float] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def poll() -> None:
        with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
            while not stop.is_set():
                with lock:
                    pending = [t for t in acked if t not in seen]
                if pending:
                    try:
                        rows = conn.execute(
                            "SELECT task_id FROM sink_results WHERE task_id = ANY(%s)", (pending,)
                        ).fetchall()
                    except psycopg.errors.UndefinedTable:
                        rows = []
                    now = time.monotonic()
                    with lock:
                        for (tid,) in rows:
                            seen.setdefault(tid, now)
                time.sleep(POLL_S)

    poller = threading.Thread(target=poll, name="bench-sink-poll", daemon=True)
    poller.start()

    def on_delivery(tid: str) -> Callable[[Any, Any], None]:
        def cb(err: Any, _msg: Any) -> None:
            if err is None:
                with lock:
                    acked[tid] = time.monotonic()

        return cb

    progress(f"bench: {n} results at {rate:g}/s to {topics.RESULTS.name} (tenant {tenant})")
    t0 = time.monotonic()
    for i in range(n):
        due = t0 + i / rate
        while (wait := due - time.monotonic()) > 0:
            producer.poll(min(wait, 0.01))
        r = _result(tenant, i, int(time.time() * 1000))
        producer.produce(
            topics.RESULTS.name, key=r["task_id"].encode(), value=codec.encode(r), on_delivery=on_delivery(r["task_id"])
        )
        producer.poll(0)
    producer.flush(30)
    sent_s = time.monotonic() - t0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with lock:
            if len(seen) >= len(acked):
                break
        time.sleep(0.05)
    stop.set()
    poller.join(5)
    with lock:
        lags = np.array([1000 * (seen[t] - acked[t]) for t in seen if t in acked])
        missing = len(acked) - len(seen)
    pct = (lambda q: round(float(np.percentile(lags, q)), 1)) if len(lags) else (lambda q: None)
    return {
        "results": n,
        "rate": rate,
        "achieved_rate": round(n / sent_s, 1),
        "acked": len(acked),
        "rows_seen": len(seen),
        "missing": missing,
        "lag_ms": {
            "p50": pct(50),
            "p95": pct(95),
            "p99": pct(99),
            "max": round(float(lags.max()), 1) if len(lags) else None,
        },
        "poll_ms": POLL_S * 1000,
    }


def format_report(r: dict[str, Any]) -> str:
    lag = r["lag_ms"]
    return (
        f"{r['results']} results at {r['rate']:g}/s (achieved {r['achieved_rate']}/s): "
        f"{r['rows_seen']}/{r['acked']} rows visible, missing {r['missing']}; "
        f"lag result acked -> row visible p50 {lag['p50']} ms, p95 {lag['p95']} ms, p99 {lag['p99']} ms, "
        f"max {lag['max']} ms (PostgreSQL polled every {r['poll_ms']:g} ms)"
    )
