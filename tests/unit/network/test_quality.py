from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.network.quality import QualityModel, learn_quality
from aos_gateway.perception.vectors import pack


def _rec(i: int, kind: str, agent: str | None, ok: bool, vec: Any = None, **meta: str) -> Any:
    return {
        "experience_id": f"e{i}",
        "task_id": f"t{i}",
        "tenant": "d",
        "kind": kind,
        "plan_id": None,
        "agent_id": agent,
        "agent_ids": [],
        "outcome": "SUCCEEDED" if ok else "FAILED",
        "latency_ms": 10,
        "cost": 0.0,
        "task_vector": None if vec is None else pack("text", np.asarray(vec, dtype=np.float32), "FLOAT32", "m"),
        "error": None,
        "feedback_score": None,
        "occurred_at": i,
        "trace_id": None,
        "metadata": dict(meta),
    }


def _records() -> list[Any]:
    rng = np.random.default_rng(0)
    recs = []
    for i in range(200):
        near_x = i % 2 == 0
        v = np.array([1.0, 0.0]) if near_x else np.array([0.0, 1.0])
        v = v + rng.normal(0, 0.05, 2)
        v /= np.linalg.norm(v)
        # agent a is good on x-like tasks, bad on y-like ones; b is mediocre everywhere
        recs.append(_rec(i, "STEP", "a", ok=near_x or i % 10 == 1, vec=v))
        recs.append(_rec(1000 + i, "STEP", "b", ok=i % 2 == 0, vec=v))
    return recs


def test_reliability_is_learned_per_agent_and_task_cluster() -> None:
    m = learn_quality(_records(), clusters=2)
    x, y = m.cluster_of(np.array([1.0, 0.0], dtype=np.float32)), m.cluster_of(np.array([0.0, 1.0], dtype=np.float32))
    assert x != y
    assert m.reliability("a", x) > 0.9 and m.reliability("a", y) < 0.3
    assert 0.4 < m.reliability("b") < 0.6
    assert m.reliability("never-seen") == m.prior


def test_duplicated_records_count_once() -> None:
    recs = _records()
    assert np.array_equal(learn_quality(recs + recs, clusters=2).trials, learn_quality(recs, clusters=2).trials)


def test_synergy_of_an_edge_above_expectation_and_neutral_when_unknown() -> None:
    recs = [_rec(i, "STEP", a, True) for i, a in enumerate(["a", "b"] * 20)]
    edge = json.dumps([["a", "b"]])
    recs += [_rec(100 + i, "EXECUTION", None, i % 2 == 0, edges=edge) for i in range(40)]
    m = learn_quality(recs)
    assert m.synergy("a", "b") < 1.0  # half the executions failed where each agent alone never does
    assert m.synergy("b", "a") == 1.0


def test_round_trip_and_bad_bytes() -> None:
    m = learn_quality(_records(), clusters=2)
    back = QualityModel.from_bytes(m.to_bytes())
    assert back.agent_ids == m.agent_ids and np.allclose(back.centroids, m.centroids)
    assert back.reliability("a", 0) == pytest.approx(m.reliability("a", 0))
    with pytest.raises(ValidationError):
        QualityModel.from_bytes(b"nope")


def test_weights_record_round_trip_and_wrong_name() -> None:
    from aos_gateway.network.quality import from_record, to_record

    m = learn_quality(_records(), clusters=2)
    m.version = 42
    rec = to_record(m, 7)
    assert rec["name"] == "network.quality" and rec["metadata"]["clusters"] == "2"
    back = from_record(rec)
    assert back.version == 42 and back.reliability("a", 0) == pytest.approx(m.reliability("a", 0))
    with pytest.raises(ValidationError):
        from_record({**rec, "name": "matching.ranker"})
