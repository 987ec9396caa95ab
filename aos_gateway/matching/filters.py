"""What an agent must satisfy to be considered for a task, as data every index backend can translate.

A Python predicate cannot be pushed into an HNSW search: the filter has to reach the engine
as payload conditions, or a selective filter leaves fewer than k hits among the k nearest.
:class:`TaskConstraints` is that structured filter; :meth:`TaskConstraints.allows` is its
reference meaning, and each backend's translation (qdrant payload filters, Weaviate filters)
is checked against it by the index contract tests.

The payload fields it reads are those of the card: ``status``, ``tenant``, ``capabilities``,
``modalities``, ``cost`` and ``p95_latency_ms``.
"""

from __future__ import annotations

from dataclasses import dataclass

from aos_gateway.contracts.records import AgentCard, PerceivedTask

USABLE = ("ACTIVE", "DEGRADED")
"""Statuses of agents that may be routed to."""

PUBLIC_TENANT = "public"
"""Cards of this tenant are visible to every tenant."""


@dataclass(frozen=True)
class TaskConstraints:
    """What an agent must satisfy to be considered for a task.

    Attributes:
        tenant: the task's tenant; agents of this tenant and public agents are visible.
        required_capabilities: every one must be among the card's capabilities.
        max_cost: the card's cost must not exceed it (None: no limit).
        max_latency_ms: the card's p95 latency must not exceed it (None: no limit).
        required_modalities: every one must be among the card's modalities (empty: no rule).
    """

    tenant: str
    required_capabilities: frozenset[str]
    max_cost: float | None
    max_latency_ms: int | None
    required_modalities: frozenset[str] = frozenset()

    @classmethod
    def of(cls, task: PerceivedTask) -> TaskConstraints:
        """The constraints a perceived task states (modalities are not required of agents yet)."""
        return cls(
            tenant=task["tenant"],
            required_capabilities=frozenset(task["required_capabilities"]),
            max_cost=task["max_cost"],
            max_latency_ms=task["max_latency_ms"],
        )

    @property
    def tenants(self) -> tuple[str, ...]:
        """The card tenants visible under these constraints."""
        return (PUBLIC_TENANT,) if self.tenant == PUBLIC_TENANT else (PUBLIC_TENANT, self.tenant)

    def allows(self, card: AgentCard) -> bool:
        """The reference meaning of the filter, which every backend must reproduce."""
        if card["status"] not in USABLE:
            return False
        if card["tenant"] not in self.tenants:
            return False
        if not self.required_capabilities <= set(card["capabilities"]):
            return False
        if self.required_modalities and not self.required_modalities <= set(card["modalities"]):
            return False
        if self.max_cost is not None and card["cost"] > self.max_cost:
            return False
        return self.max_latency_ms is None or card["p95_latency_ms"] <= self.max_latency_ms
