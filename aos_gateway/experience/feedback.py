"""User feedback joined into experience by task id.

A :class:`~aos_gateway.contracts.records.Feedback` on ``aos.feedback.v1`` becomes an experience
record of its own (:func:`feedback_record`, produced to ``aos.experience.v1`` by the worker, so
the experience topic stays the one replayable history). Learners then join by task id
(:func:`join_feedback`): the latest feedback on a task sets ``feedback_score`` on that task's
records — which overrides the outcome when learning — and when the feedback names the agent that
should have handled the task, the task's vector becomes a success memory for that agent (and a
failure for the agent that ran the step instead).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from aos_gateway.contracts.records import ExperienceRecord, Feedback, Outcome

FEEDBACK_KIND = "feedback"


def feedback_record(fb: Feedback) -> ExperienceRecord:
    """The experience record of one piece of feedback (its id is derived from the feedback id)."""
    score = fb["rating"] if fb["rating"] is not None else (None if fb["success"] is None else float(fb["success"]))
    outcome: Outcome = "SUCCEEDED" if score is not None and score >= 0.5 else "FAILED"
    meta = {"source": FEEDBACK_KIND, "feedback_id": fb["feedback_id"]}
    if fb["correct_agent_id"]:
        meta["correct_agent_id"] = fb["correct_agent_id"]
    if fb["comment"]:
        meta["comment"] = fb["comment"][:1000]
    return ExperienceRecord(
        experience_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"aos-feedback:{fb['feedback_id']}")),
        task_id=fb["task_id"],
        tenant=fb["tenant"],
        kind="EXECUTION",
        plan_id=None,
        agent_id=None,
        agent_ids=[],
        outcome=outcome,
        latency_ms=0,
        cost=0.0,
        task_vector=None,
        error=None,
        feedback_score=score,
        occurred_at=fb["created_at"],
        trace_id=None,
        metadata=meta,
    )


def is_feedback(rec: ExperienceRecord) -> bool:
    return rec["metadata"].get("source") == FEEDBACK_KIND


def join_feedback(records: Iterable[ExperienceRecord]) -> list[ExperienceRecord]:
    """The records with feedback applied (feedback records themselves are consumed).

    For each task, the latest feedback (by ``occurred_at``) sets ``feedback_score`` on the task's
    other records when it has a score; a named correct agent adds a SUCCEEDED STEP record for it
    (with the task's vector) and scores the task's STEP records of other agents 0.
    """
    recs = list(records)
    latest: dict[str, ExperienceRecord] = {}
    for r in recs:
        if is_feedback(r):
            cur = latest.get(r["task_id"])
            if cur is None or r["occurred_at"] >= cur["occurred_at"]:
                latest[r["task_id"]] = r
    out: list[ExperienceRecord] = []
    added: set[str] = set()
    for r in recs:
        if is_feedback(r):
            continue
        fb = latest.get(r["task_id"])
        if fb is None:
            out.append(r)
            continue
        r = ExperienceRecord(**r)
        correct = fb["metadata"].get("correct_agent_id")
        if fb["feedback_score"] is not None:
            r["feedback_score"] = fb["feedback_score"]
        if correct and r["kind"] == "STEP" and r["agent_id"] != correct:
            r["feedback_score"] = 0.0
        out.append(r)
        if correct and r["task_vector"] is not None and r["task_id"] not in added:
            added.add(r["task_id"])
            out.append(
                ExperienceRecord(
                    **{
                        **r,
                        "experience_id": f"{fb['experience_id']}:{correct}",
                        "kind": "STEP",
                        "agent_id": correct,
                        "agent_ids": [correct],
                        "outcome": "SUCCEEDED",
                        "feedback_score": 1.0,
                        "metadata": {"source": FEEDBACK_KIND, "step_id": "", "role": ""},
                    }
                )
            )
    return out
