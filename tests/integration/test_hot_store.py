"""The hot store against the test stack's real QuestDB: a redelivered batch makes no second row."""

from __future__ import annotations

import time
import uuid
from datetime import UTC
from typing import Any

import psycopg
import pytest

from aos_gateway.devstack import LocalStack
from aos_gateway.experience.hot import MEASUREMENT, HotStore
from aos_gateway.settings import Settings

pytestmark = pytest.mark.integration

OUTCOMES = ("SUCCEEDED", "PARTIAL", "FAILED", "TIMED_OUT")


def _records(tenant: str, n: int, now_ms: int) -> list[Any]:
    out = []
    for i in range(n):
        step = i % 2 == 1
        out.append(
            {
                "experience_id": f"{tenant}-{i}",
                "task_id": f"{tenant}-t{i // 2}",
                "tenant": tenant,
                "kind": "STEP" if step else "EXECUTION",
                "plan_id": f"{tenant}-p{i // 2}",
                "agent_id": f"agent-{i % 5}" if step else None,
                "agent_ids": [f"agent-{i % 5}"],
                "outcome": OUTCOMES[i % 4],
                "latency_ms": 10 + i,
                "cost": 0.001 * i,
                "task_vector": None,
                "error": None,
                "feedback_score": 0.5 if i % 10 == 0 else None,
                # a few records share a millisecond: they must stay apart
                "occurred_at": now_ms - 3_600_000 + (i // 3) * 1000,
                "trace_id": None,
                "metadata": {"step_id": "s1", "role": "r", "attempts": "1", "fallback": "false"} if step else {},
            }
        )
    return out


def _wal_applied(conninfo: str, deadline: float) -> None:
    """Wait until QuestDB has applied every committed WAL transaction of the table (it does so asynchronously)."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "SELECT writerTxn, sequencerTxn, suspended FROM wal_tables() WHERE name = %s", (MEASUREMENT,)
            ).fetchone()
            assert row is not None, f"{MEASUREMENT} is not a WAL table"
            assert not row[2], f"WAL apply of {MEASUREMENT} is suspended"
            if row[0] >= row[1]:
                return
            assert time.monotonic() < deadline, f"WAL not applied in time: writerTxn {row[0]} < sequencerTxn {row[1]}"
            time.sleep(0.2)


def test_a_batch_written_twice_is_read_back_once_with_a_7_day_ttl(settings: Settings) -> None:
    parts = {p.name: p for p in LocalStack(settings).status()}
    assert parts["questdb"].healthy, parts["questdb"]

    tenant = f"it-{uuid.uuid4().hex[:8]}"
    now = int(time.time() * 1000)
    recs = _records(tenant, 1_000, now)
    with HotStore(settings.timeseries, batch_size=300) as store:
        t0 = time.monotonic()
        assert store.write(recs) == 1_000
        first = time.monotonic() - t0
        assert store.write(recs) == 1_000  # the whole batch again, as after a redelivery
        assert store.write(recs[100:250]) == 150  # and part of it once more

        deadline = time.monotonic() + 60
        _wal_applied(settings.timeseries.questdb_pg, deadline)
        # every write is applied: the count is final, not a moment before the duplicates land
        assert store.query_counts((), tenant=tenant) == {(): 1_000}
        assert store.query_counts(("outcome",), tenant=tenant) == {(o,): 250 for o in OUTCOMES}
        by_kind = store.query_counts(("kind",), tenant=tenant)
        assert by_kind == {("EXECUTION",): 500, ("STEP",): 500}
        assert store.query_counts((), tenant=tenant, since_ms=now - 3_600_000 + 100_000) == {(): 1_000 - 300}

        assert store.ttl_days() == 7.0
    print(f"1,000 points written in {first * 1000:.0f} ms (first write includes the schema)")

    with psycopg.connect(settings.timeseries.questdb_pg, autocommit=True) as conn:
        row = conn.execute(
            "SELECT designatedTimestamp, partitionBy, walEnabled, dedup, ttlValue, ttlUnit FROM tables() "
            "WHERE table_name = %s",
            (MEASUREMENT,),
        ).fetchone()
        assert row is not None
        ts, partition_by, wal, dedup, ttl_value, ttl_unit = row
        assert (ts, partition_by, wal, dedup) == ("ts", "DAY", True, True)
        assert (ttl_value, ttl_unit) in ((7, "DAY"), (7, "DAYS"), (1, "WEEK"), (1, "WEEKS"))  # QuestDB shows 1 WEEK
        sample = conn.execute(
            "SELECT agent_id, latency_ms, cost, success, feedback_score, ts FROM aos_experience "
            "WHERE tenant = %s AND experience_id = %s",
            (tenant, f"{tenant}-10"),
        ).fetchall()
    assert len(sample) == 1
    agent_id, latency, cost, success, score, at = sample[0]
    assert (agent_id, latency, success, score) == (None, 20, 0, 0.5)  # record 10: EXECUTION, FAILED
    assert cost == pytest.approx(0.01)
    assert int(at.replace(tzinfo=UTC).timestamp() * 1000) == recs[10]["occurred_at"]  # QuestDB gives naive UTC
