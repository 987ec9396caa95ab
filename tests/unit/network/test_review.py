"""The human-review rule."""

from __future__ import annotations

from typing import Any

from aos_gateway.network.review import review_reason


def plan(status: str = "PLANNED", scores: tuple[float, ...] = (0.9,), quality: float | None = 0.8) -> Any:
    steps = [{"agent_name": f"a{i}", "score": s} for i, s in enumerate(scores)]
    return {"status": status, "reason": "because", "steps": steps, "predicted_quality": quality}


def test_confident_plans_are_not_reviewed() -> None:
    assert review_reason(plan(), 0.3) is None
    assert review_reason(plan(quality=None), 0.3) is None


def test_unsure_decisions_are() -> None:
    assert review_reason(plan("NO_MATCH", ()), 0.3) == "no suitable agent: because"
    assert (review_reason(plan("REJECTED", ()), 0.3) or "").startswith("network rejected")
    assert review_reason(plan(scores=(0.9, 0.2, 0.25)), 0.3) == "low confidence: a1 scored 0.200 (< 0.3)"
    assert review_reason(plan(quality=0.1), 0.3) == "low predicted quality 0.100 (< 0.3)"
