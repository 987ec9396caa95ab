"""The simplest useful planner: the best agents as a sequential chain with fallbacks.

Each of the top candidates within ``margin`` of the best score becomes one stage, in rank
order; each step falls back to the next candidate not already in the plan. The network
generator (genetic DAG optimisation) replaces this.
"""

from __future__ import annotations

import uuid

from aos_gateway.contracts.records import MatchedTask, Plan, PlanStep
from aos_gateway.network.problem import CapabilitiesOf, can_stand_in


def base_plan(task: MatchedTask, now_ms: int, planner: str) -> Plan:
    """A plan record for the task with no steps yet (status PLANNED); its id is stable per task."""
    return Plan(
        plan_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"aos-plan:{task['task_id']}")),
        task_id=task["task_id"],
        tenant=task["tenant"],
        submitted_at=task["submitted_at"],
        created_at=now_ms,
        status="PLANNED",
        reason=None,
        planner=planner,
        steps=[],
        predicted_quality=None,
        estimated_duration_ms=0,
        trace_id=task["trace_id"],
        transcript=task["transcript"],
        modalities=list(task["modalities"]),
        notes=list(task["notes"]),
        timings={**task["timings"], "planned": now_ms},
        text=task["text"],
        task_vector=task["fused"],
        weights=dict(task.get("weights") or {}),
    )


def no_match(plan: Plan, task: MatchedTask) -> bool:
    """Mark the plan NO_MATCH, with the matcher's reason, when the task has no candidate to plan with."""
    if task["abstained"] or not task["candidates"]:
        plan["status"] = "NO_MATCH"
        plan["reason"] = task["reason"] or "no candidate agents"
        return True
    return False


def plan_sequential(
    task: MatchedTask,
    now_ms: int,
    max_steps: int = 3,
    margin: float = 0.1,
    step_timeout_ms: int = 30_000,
    retries: int = 1,
    fallback_min_similarity: float = 0.2,
    capabilities: CapabilitiesOf | None = None,
) -> Plan:
    """A plan for a matched task (NO_MATCH with the reason when the matcher abstained); a fallback
    needs a card at least ``fallback_min_similarity`` similar to the task and, with the registry's
    ``capabilities``, a capability in common with its step's agent."""
    base = base_plan(task, now_ms, "sequential")
    if no_match(base, task):
        return base
    cands = task["candidates"]
    best = cands[0]["score"]
    chosen = [c for c in cands[:max_steps] if c["score"] >= best - margin]
    caps = capabilities or (lambda _agent: ())
    spare = [c for c in cands if c not in chosen and c["similarity"] >= fallback_min_similarity]
    steps: list[PlanStep] = []
    for i, c in enumerate(chosen):
        fits = [f for f in spare if can_stand_in(caps(c["agent_id"]), caps(f["agent_id"]))]
        fallback = fits[0]["agent_id"] if fits else None
        if fits:
            spare.remove(fits[0])
        steps.append(
            PlanStep(
                step_id=f"s{i + 1}",
                stage=i,
                agent_id=c["agent_id"],
                agent_name=c["name"],
                score=c["score"],
                depends_on=[f"s{i}"] if i else [],
                timeout_ms=step_timeout_ms,
                retries=retries,
                fallback_agent_id=fallback,
                expected_latency_ms=c["p95_latency_ms"],
            )
        )
    base["steps"] = steps
    base["estimated_duration_ms"] = sum(s["expected_latency_ms"] for s in steps)
    return base
