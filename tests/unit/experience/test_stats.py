"""The database-free part of agent statistics (the SQL is tested in tests/integration/test_agent_stats.py)."""

from __future__ import annotations

from typing import Any

import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.experience.stats import UNCLUSTERED, AgentStats, aggregate, countable

T0 = 1_714_521_600_000


def _step(eid: str, agent: str | None = "a1", **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": eid,
        "task_id": "t",
        "tenant": "acme",
        "kind": "STEP",
        "plan_id": "p",
        "agent_id": agent,
        "agent_ids": [agent] if agent else [],
        "outcome": "SUCCEEDED",
        "latency_ms": 100,
        "cost": 0.25,
        "task_vector": None,
        "error": None,
        "feedback_score": None,
        "occurred_at": T0,
        "trace_id": None,
        "metadata": {},
    }
    rec.update(over)
    return rec


def test_only_distinct_step_records_with_an_agent_count() -> None:
    recs = [
        _step("s1"),
        _step("s1"),  # redelivered inside the batch
        _step("s2", agent=None),
        _step("x1", kind="EXECUTION", agent=None, agent_ids=["a1", "a2"]),
        _step("s3", agent="a2"),
    ]
    assert [r["experience_id"] for r in countable(recs)] == ["s1", "s3"]


def test_aggregate_counts_outcomes_latency_cost_and_feedback() -> None:
    recs = [
        _step("s1", latency_ms=100, occurred_at=T0 + 5),
        _step("s2", outcome="PARTIAL", latency_ms=300, occurred_at=T0 + 1),
        _step("s3", outcome="FAILED", latency_ms=50, occurred_at=T0 + 9),
        _step("s4", outcome="TIMED_OUT", latency_ms=1000),
        _step("s5", outcome="FAILED", feedback_score=0.8),  # feedback overrides: a success
        _step("s6", outcome="SUCCEEDED", feedback_score=0.2),  # ... and a failure
    ]
    deltas = aggregate(recs, lambda r: None)
    assert list(deltas) == [("acme", "a1", UNCLUSTERED)]
    d = deltas[("acme", "a1", UNCLUSTERED)]
    assert (d.calls, d.successes, d.partials, d.failures, d.timeouts) == (6, 2, 1, 2, 1)
    assert (d.latency_ms_sum, d.latency_ms_max) == (100 + 300 + 50 + 1000 + 100 + 100, 1000)
    assert d.cost_sum == pytest.approx(1.5)
    assert (d.feedback_sum, d.feedback_count) == (pytest.approx(1.0), 2)
    assert (d.first_ms, d.last_ms) == (T0, T0 + 9)


def test_aggregate_keys_by_tenant_agent_and_cluster() -> None:
    recs = [_step("s1"), _step("s2", tenant="other"), _step("s3", agent="a2"), _step("s4", metadata={"c": "3"})]
    deltas = aggregate(recs, lambda r: int(r["metadata"]["c"]) if "c" in r["metadata"] else None)
    assert sorted(deltas) == [("acme", "a1", -1), ("acme", "a1", 3), ("acme", "a2", -1), ("other", "a1", -1)]
    assert all(d.calls == 1 for d in deltas.values())


@pytest.mark.parametrize("bad", ["1", 1.5, True])
def test_cluster_of_must_return_an_int_or_none(bad: Any) -> None:
    with pytest.raises(ValidationError):
        aggregate([_step("s1")], lambda r: bad)


def test_derived_rates() -> None:
    from datetime import UTC, datetime

    at = datetime(2024, 5, 1, tzinfo=UTC)
    s = AgentStats("acme", "a1", 0, 4, 2, 1, 1, 0, 400, 200, 1.0, 0.0, 0, at, at)
    assert s.success_rate == pytest.approx(2.5 / 4)
    assert s.mean_latency_ms == 100
    assert s.mean_cost == 0.25
    assert s.mean_feedback is None
