"""Agent statistics in the real PostgreSQL: a redelivered experience record never counts twice."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from aos_gateway.experience.stats import UNCLUSTERED, apply, prune_applied, read_stats, reset
from aos_gateway.registry.store import connect, migrate
from aos_gateway.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_714_521_600_000


@pytest.fixture
def conn(settings: Settings) -> Iterator[psycopg.Connection[Any]]:
    migrate(settings.postgres.conninfo())
    with connect(settings.postgres.conninfo()) as c:
        yield c


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"  # tests (and reruns) never see each other's rows


def _step(tenant: str, eid: str, agent: str, outcome: str = "SUCCEEDED", **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": f"{tenant}-{eid}",
        "task_id": f"task-{eid}",
        "tenant": tenant,
        "kind": "STEP",
        "plan_id": "p",
        "agent_id": agent,
        "agent_ids": [agent],
        "outcome": outcome,
        "latency_ms": 100,
        "cost": 0.5,
        "task_vector": None,
        "error": None,
        "feedback_score": None,
        "occurred_at": T0,
        "trace_id": None,
        "metadata": {},
    }
    rec.update(over)
    return rec


def _batch(tenant: str) -> list[Any]:
    return [
        _step(tenant, "1", "a1", latency_ms=100, occurred_at=T0 + 1000),
        _step(tenant, "2", "a1", "FAILED", latency_ms=300, metadata={"cluster": "2"}),
        _step(tenant, "3", "a1", "TIMED_OUT", latency_ms=900),
        _step(tenant, "4", "a2", "PARTIAL", latency_ms=50, feedback_score=None),
        _step(tenant, "5", "a2", "FAILED", latency_ms=70, feedback_score=0.9),
        {**_step(tenant, "x", "a1"), "kind": "EXECUTION", "agent_id": None, "agent_ids": ["a1", "a2"]},
    ]


def _cluster(rec: Any) -> int | None:
    raw = rec["metadata"].get("cluster")
    return int(raw) if raw is not None else None


def _summary(conn: psycopg.Connection[Any], tenant: str) -> dict[tuple[str, int], tuple[int, ...]]:
    return {
        (s.agent_id, s.cluster): (s.calls, s.successes, s.partials, s.failures, s.timeouts, s.latency_ms_sum)
        for s in read_stats(conn, tenant)
    }


EXPECTED = {
    ("a1", UNCLUSTERED): (2, 1, 0, 0, 1, 1000),
    ("a1", 2): (1, 0, 0, 1, 0, 300),
    ("a2", UNCLUSTERED): (2, 1, 1, 0, 0, 120),
}


def test_a_batch_applied_twice_counts_once(conn: psycopg.Connection[Any], tenant: str) -> None:
    assert apply(conn, _batch(tenant), _cluster) == 5
    assert _summary(conn, tenant) == EXPECTED
    assert apply(conn, _batch(tenant), _cluster) == 0
    assert _summary(conn, tenant) == EXPECTED
    a1 = next(s for s in read_stats(conn, tenant) if (s.agent_id, s.cluster) == ("a1", UNCLUSTERED))
    assert a1.latency_ms_max == 900
    assert a1.cost_sum == pytest.approx(1.0)
    assert int(a1.last_at.timestamp() * 1000) == T0 + 1000
    assert int(a1.first_at.timestamp() * 1000) == T0
    a2 = next(s for s in read_stats(conn, tenant) if s.agent_id == "a2")
    assert a2.mean_feedback == pytest.approx(0.9)


def test_an_overlapping_batch_counts_only_the_new_records(conn: psycopg.Connection[Any], tenant: str) -> None:
    batch = _batch(tenant)
    assert apply(conn, batch[:3], _cluster) == 3
    more = [*batch[1:], _step(tenant, "6", "a1", latency_ms=10, occurred_at=T0 + 5000)]
    assert apply(conn, more, _cluster) == 3  # 4, 5 and 6; 2 and 3 were counted already
    got = _summary(conn, tenant)
    assert got[("a1", UNCLUSTERED)] == (3, 2, 0, 0, 1, 1010)
    assert got[("a1", 2)] == EXPECTED[("a1", 2)]
    assert got[("a2", UNCLUSTERED)] == EXPECTED[("a2", UNCLUSTERED)]
    a1 = next(s for s in read_stats(conn, tenant) if (s.agent_id, s.cluster) == ("a1", UNCLUSTERED))
    assert a1.latency_ms_max == 900
    assert int(a1.last_at.timestamp() * 1000) == T0 + 5000


def test_concurrent_workers_count_a_record_once(settings: Settings, conn: psycopg.Connection[Any], tenant: str) -> None:
    batch = [_step(tenant, str(i), f"a{i % 3}", latency_ms=i) for i in range(200)]
    counted: list[int] = []

    def work(recs: list[Any]) -> None:
        with connect(settings.postgres.conninfo()) as c:
            counted.append(apply(c, recs, lambda r: None))

    threads = [threading.Thread(target=work, args=(recs,)) for recs in (batch, list(reversed(batch)), batch[50:150])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(counted) == 200
    stats = read_stats(conn, tenant)
    assert sum(s.calls for s in stats) == 200
    assert sum(s.latency_ms_sum for s in stats) == sum(range(200))


def test_reset_forgets_one_tenant_and_replay_rebuilds(conn: psycopg.Connection[Any], tenant: str) -> None:
    other = f"{tenant}-other"
    apply(conn, _batch(tenant), _cluster)
    apply(conn, _batch(other), _cluster)
    assert reset(conn, tenant) == 3
    assert read_stats(conn, tenant) == []
    assert _summary(conn, other) == EXPECTED
    assert apply(conn, _batch(tenant), _cluster) == 5  # a replay after the reset counts again
    assert _summary(conn, tenant) == EXPECTED
    assert {s.tenant for s in read_stats(conn)} >= {tenant, other}


def test_prune_applied_keeps_recent_ids(conn: psycopg.Connection[Any], tenant: str) -> None:
    from datetime import UTC, datetime, timedelta

    apply(conn, _batch(tenant), _cluster)
    prune_applied(conn, datetime.now(UTC) - timedelta(days=1))
    assert apply(conn, _batch(tenant), _cluster) == 0  # ids of just now survive a one-day prune
