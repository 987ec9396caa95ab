"""Which decisions a person should look at: the human-review topic's rule.

A plan goes to ``aos.review.v1`` (as well as to its result topic) when the gateway was unsure:
it found no suitable agent (NO_MATCH), rejected its best network (REJECTED), or planned with a
step whose matching score, or a network whose predicted quality, is below
``experience.review_threshold``. The reason is added to the plan's notes.
"""

from __future__ import annotations

from aos_gateway.contracts.records import Plan


def review_reason(plan: Plan, threshold: float) -> str | None:
    """Why this plan needs a person's eye, or None."""
    if plan["status"] == "NO_MATCH":
        return f"no suitable agent: {plan['reason']}"
    if plan["status"] == "REJECTED":
        return f"network rejected: {plan['reason']}"
    low = [s for s in plan["steps"] if s["score"] < threshold]
    if low:
        worst = min(low, key=lambda s: s["score"])
        return f"low confidence: {worst['agent_name']} scored {worst['score']:.3f} (< {threshold:g})"
    q = plan["predicted_quality"]
    if q is not None and q < threshold:
        return f"low predicted quality {q:.3f} (< {threshold:g})"
    return None
