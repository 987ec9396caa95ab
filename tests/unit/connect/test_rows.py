"""Dashboard rows: records -> Kafka Connect JSON envelopes the JDBC sink understands."""

from __future__ import annotations

import json
from typing import Any

import pytest

from aos_gateway import topics
from aos_gateway.connect import rows
from aos_gateway.errors import ValidationError


def _plan(**over: Any) -> dict[str, Any]:
    step = {"step_id": "s1", "stage": 0, "agent_id": "A", "agent_name": "A", "score": 0.4, "depends_on": []}
    p: dict[str, Any] = {
        "plan_id": "p",
        "task_id": "t",
        "tenant": "acme",
        "submitted_at": 1_000,
        "created_at": 1_090,
        "status": "PLANNED",
        "reason": None,
        "planner": "greedy",
        "steps": [step, {**step, "step_id": "s2", "stage": 1, "agent_id": "B", "score": 0.9}],
        "predicted_quality": 0.7,
        "estimated_duration_ms": 1200,
        "timings": {"submitted": 1_000, "perceived": 1_040, "matched": 1_060, "planned": 1_090},
        "text": "x" * 500,
        "weights": {"matching": "v3"},
    }
    return p | over


def test_decision_row_has_scores_stage_latencies_and_a_short_text() -> None:
    r = rows.decision_row(_plan())  # type: ignore[arg-type]
    assert r["agents"] == "A,B" and r["top_agent"] == "B" and r["top_score"] == 0.9
    assert (r["perceive_ms"], r["match_ms"], r["plan_ms"], r["total_ms"]) == (40, 20, 30, 90)
    assert len(r["text"]) == rows.TEXT_CHARS and r["weights"] == "matching=v3"
    key, value = rows.DECISIONS.encode(r)
    k, v = json.loads(key), json.loads(value)
    assert k["payload"] == {"task_id": "t"} and k["schema"]["fields"][0]["optional"] is False
    assert v["payload"]["top_score"] == 0.9
    ts = next(f for f in v["schema"]["fields"] if f["field"] == "submitted_at")
    assert ts == {"field": "submitted_at", "type": "int64", "optional": True, "name": rows.TIMESTAMP, "version": 1}
    assert {f["type"] for f in v["schema"]["fields"]} <= {"string", "int64", "double", "boolean"}


def test_a_plan_without_steps_or_timings_still_gives_a_row() -> None:
    r = rows.decision_row(_plan(steps=[], timings={}, status="NO_MATCH", text=None, weights={}))  # type: ignore[arg-type]
    assert r["agents"] is None and r["top_agent"] is None and r["total_ms"] is None and r["weights"] is None
    rows.DECISIONS.encode(r)


def test_encode_rejects_what_the_table_cannot_hold() -> None:
    good = rows.result_row(
        {  # type: ignore[typeddict-item]
            "task_id": "t",
            "plan_id": "p",
            "tenant": "x",
            "status": "SUCCEEDED",
            "reason": None,
            "steps": [{"status": "SUCCEEDED"}, {"status": "FAILED"}],
            "started_at": 10,
            "finished_at": 5,
            "cost": 1,
        }
    )
    assert good["duration_ms"] == 0 and good["steps_succeeded"] == 1 and good["steps"] == 2
    _, value = rows.RESULTS.encode(good)
    assert json.loads(value)["payload"]["cost"] == 1.0
    with pytest.raises(ValidationError, match="unknown columns"):
        rows.RESULTS.encode({**good, "extra": 1})
    with pytest.raises(ValidationError, match="may not be null"):
        rows.RESULTS.encode({**good, "task_id": None})
    with pytest.raises(ValidationError, match="is not int"):
        rows.RESULTS.encode({**good, "steps": "two"})
    with pytest.raises(ValidationError, match="is not float"):
        rows.RESULTS.encode({**good, "cost": True})
    # PostgreSQL text cannot hold NUL (one such row stopped the sink task): the row shows U+FFFD
    _, value = rows.RESULTS.encode({**good, "reason": "agent said \x00\x00 and stopped"})
    assert json.loads(value)["payload"]["reason"] == "agent said \ufffd\ufffd and stopped"
    # JSON has no NaN: Connect's converter sent such a row to its own dead-letter topic (a review)
    _, value = rows.RESULTS.encode({**good, "cost": float("nan")})
    assert b"NaN" not in value and json.loads(value)["payload"]["cost"] is None
    with pytest.raises(ValidationError, match="not a finite number"):
        rows.SinkTable("t", "k", rows._cols("k:string! x:float!")).encode({"k": "a", "x": float("inf")})


def test_anomaly_rows_from_the_learned_state() -> None:
    doc = {
        "penalty": 0.5,
        "agents": ["A"],
        "anomalies": [
            {"agent_id": "A", "kind": "failure_rate", "value": 0.6, "baseline": 0.1, "score": 4.2, "reason": "r"}
        ],
    }
    rec = {
        "name": "experience.anomalies",
        "version": 7,
        "payload": json.dumps(doc).encode(),
        "created_at": 99,
        "metadata": {},
    }
    (r,) = rows.anomaly_rows(rec)  # type: ignore[arg-type]
    assert r["anomaly_key"] == "7|A|failure_rate" and r["score"] == 4.2 and r["detected_at"] == 99
    rows.ANOMALIES.encode(r)
    with pytest.raises(ValidationError):
        rows.anomaly_rows({**rec, "payload": b"{"})  # type: ignore[typeddict-item]


def test_agent_stats_row_rates() -> None:
    t = {
        "calls": 4,
        "successes": 2,
        "partials": 1,
        "failures": 1,
        "timeouts": 0,
        "latency_ms_sum": 400,
        "latency_ms_max": 250,
    }
    r = rows.agent_stats_row("acme", "A", t, 5)
    assert r["agent_key"] == "acme|A" and r["success_rate"] == pytest.approx(0.625) and r["mean_latency_ms"] == 100.0
    rows.AGENT_STATS.encode(r)


def test_every_table_has_a_sink_topic_in_the_catalog() -> None:
    names = {t.name for t in topics.SINKS}
    assert names == {t.topic for t in rows.TABLES}
    assert all(t.topic.startswith("aos.sink.") and t.table.startswith("sink_") for t in rows.TABLES)
    assert not names & {t.name for t in topics.CATALOG}
