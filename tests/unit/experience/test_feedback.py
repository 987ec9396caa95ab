"""Feedback joined into experience by task id."""

from __future__ import annotations

from aos_gateway.contracts.records import ExperienceRecord, Feedback
from aos_gateway.experience.feedback import feedback_record, join_feedback
from aos_gateway.matching.experience import memories

VEC = {"name": "fused", "model": "m", "dim": 2, "dtype": "FLOAT32", "scale": 1.0, "data": b"\x00\x00\x80?" * 2}


def rec(eid: str, kind: str, agent: str | None, outcome: str = "SUCCEEDED", task: str = "t1") -> ExperienceRecord:
    return ExperienceRecord(
        experience_id=eid,
        task_id=task,
        tenant="x",
        kind=kind,  # type: ignore[typeddict-item]
        plan_id="p",
        agent_id=agent,
        agent_ids=[agent] if agent else ["a"],
        outcome=outcome,  # type: ignore[typeddict-item]
        latency_ms=5,
        cost=0.0,
        task_vector=VEC,  # type: ignore[typeddict-item]
        error=None,
        feedback_score=None,
        occurred_at=10,
        trace_id=None,
        metadata={},
    )


def fb(
    fid: str, at: int, success: bool | None = None, rating: float | None = None, correct: str | None = None
) -> Feedback:
    return Feedback(
        feedback_id=fid,
        task_id="t1",
        tenant="x",
        success=success,
        rating=rating,
        correct_agent_id=correct,
        comment=None,
        created_at=at,
    )


def test_feedback_record_scores() -> None:
    assert feedback_record(fb("f", 1, success=False))["feedback_score"] == 0.0
    assert feedback_record(fb("f", 1, rating=0.8))["outcome"] == "SUCCEEDED"
    assert feedback_record(fb("f", 1))["feedback_score"] is None
    assert feedback_record(fb("f", 1))["experience_id"] == feedback_record(fb("f", 2))["experience_id"]


def test_latest_feedback_overrides_the_outcome() -> None:
    records = [
        rec("e", "EXECUTION", None),
        rec("s", "STEP", "a"),
        feedback_record(fb("old", 1, success=True)),
        feedback_record(fb("new", 2, success=False)),
        rec("other", "STEP", "b", task="t2"),
    ]
    out = join_feedback(records)
    assert [r["experience_id"] for r in out] == ["e", "s", "other"]
    assert out[1]["feedback_score"] == 0.0 and out[2]["feedback_score"] is None
    mems, _ = memories(out)
    assert [(m.agent_id, m.success) for m in mems] == [("a", False), ("b", True)]


def test_correct_agent_becomes_a_success_memory() -> None:
    out = join_feedback([rec("s", "STEP", "a"), feedback_record(fb("f", 3, success=False, correct="b"))])
    mems, _ = memories(out)
    assert [(m.agent_id, m.success) for m in mems] == [("a", False), ("b", True)]
