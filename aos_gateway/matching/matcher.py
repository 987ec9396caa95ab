"""The matcher: search the capability index, filter by the task's constraints, rank, abstain."""

from __future__ import annotations

from dataclasses import dataclass

from aos_gateway.contracts.records import AgentCard, Candidate, MatchedTask, PerceivedTask
from aos_gateway.matching.index import ExactIndex
from aos_gateway.perception.vectors import unpack

USABLE = ("ACTIVE", "DEGRADED")


@dataclass(frozen=True)
class TaskConstraints:
    """What an agent must satisfy to be considered for a task."""

    tenant: str
    required_capabilities: frozenset[str]
    max_cost: float | None
    max_latency_ms: int | None

    @classmethod
    def of(cls, task: PerceivedTask) -> TaskConstraints:
        return cls(
            tenant=task["tenant"],
            required_capabilities=frozenset(task["required_capabilities"]),
            max_cost=task["max_cost"],
            max_latency_ms=task["max_latency_ms"],
        )

    def allows(self, card: AgentCard) -> bool:
        if card["status"] not in USABLE:
            return False
        if card["tenant"] not in ("public", self.tenant):
            return False
        if not self.required_capabilities <= set(card["capabilities"]):
            return False
        if self.max_cost is not None and card["cost"] > self.max_cost:
            return False
        return self.max_latency_ms is None or card["p95_latency_ms"] <= self.max_latency_ms


class Matcher:
    """Ranks agents for perceived tasks; abstains when the best is below ``min_score``."""

    def __init__(self, index: ExactIndex, top_k: int = 5, min_score: float = 0.2) -> None:
        self.index = index
        self.top_k = top_k
        self.min_score = min_score

    def match(self, tasks: list[PerceivedTask], now_ms: int) -> list[MatchedTask]:
        """One MatchedTask per perceived task, in order."""
        if not tasks:
            return []
        import numpy as np

        queries = np.stack([unpack(t["fused"]) for t in tasks])
        out: list[MatchedTask] = []
        for task, query in zip(tasks, queries, strict=True):
            k = task["top_k"] or self.top_k
            cons = TaskConstraints.of(task)
            hits = self.index.search(query, k, keep=cons.allows)[0]
            cands = [
                Candidate(
                    agent_id=h.agent.card["agent_id"],
                    name=h.agent.card["name"],
                    score=h.similarity,
                    similarity=h.similarity,
                    quality=None,
                    card_version=h.agent.version,
                    cost=h.agent.card["cost"],
                    p95_latency_ms=h.agent.card["p95_latency_ms"],
                )
                for h in hits
            ]
            reason = None
            if not cands:
                reason = (
                    "no agent is registered" if len(self.index) == 0 else "no agent satisfies the task's constraints"
                )
            elif cands[0]["score"] < self.min_score:
                reason = f"best agent score {cands[0]['score']:.3f} is below the threshold {self.min_score}"
            out.append(
                MatchedTask(
                    task_id=task["task_id"],
                    tenant=task["tenant"],
                    submitted_at=task["submitted_at"],
                    text=task["text"],
                    fused=task["fused"],
                    candidates=cands,
                    abstained=reason is not None,
                    reason=reason,
                    index_size=len(self.index),
                    reply_to=task["reply_to"],
                    trace_id=task["trace_id"],
                    notes=list(task["notes"]),
                    timings={**task["timings"], "matched": now_ms},
                )
            )
        return out
