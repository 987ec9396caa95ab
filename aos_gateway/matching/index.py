"""The capability index: agent cards with their vectors, searched by exact cosine similarity.

Exact search is right below a few hundred thousand agents on CPU; the matching issue adds an
HNSW backend behind the same methods. Thread-safe: the registry consumer updates it from one
thread while stages search it from another.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from aos_gateway.contracts.records import AgentCard
from aos_gateway.perception.vectors import FloatArray, l2_normalize


@dataclass(frozen=True)
class IndexedAgent:
    """One agent in the index: its latest card and how many versions were seen."""

    card: AgentCard
    version: int


@dataclass(frozen=True)
class Hit:
    agent: IndexedAgent
    similarity: float


class ExactIndex:
    """Agent vectors in one matrix; search = one matrix-vector product + filter."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._agents: dict[str, IndexedAgent] = {}
        self._vectors: dict[str, FloatArray] = {}
        self._ids: list[str] = []
        self._matrix: FloatArray = np.zeros((0, dim), dtype=np.float32)
        self._dirty = False

    def __len__(self) -> int:
        return len(self._agents)

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        """Add or replace an agent; the version counts card changes seen."""
        vec = l2_normalize(np.asarray(vector, dtype=np.float32).reshape(-1))
        if vec.shape[0] != self.dim:
            raise ValueError(f"vector has {vec.shape[0]} dims, index has {self.dim}")
        with self._lock:
            old = self._agents.get(card["agent_id"])
            version = 1 if old is None else old.version + (old.card != card)
            entry = IndexedAgent(card=card, version=version)
            self._agents[card["agent_id"]] = entry
            self._vectors[card["agent_id"]] = vec
            self._dirty = True
        return entry

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            found = self._agents.pop(agent_id, None) is not None
            self._vectors.pop(agent_id, None)
            self._dirty = self._dirty or found
        return found

    def get(self, agent_id: str) -> IndexedAgent | None:
        return self._agents.get(agent_id)

    def agents(self) -> list[IndexedAgent]:
        with self._lock:
            return list(self._agents.values())

    def _snapshot(self) -> tuple[list[str], FloatArray, dict[str, IndexedAgent]]:
        with self._lock:
            if self._dirty:
                self._ids = list(self._vectors)
                self._matrix = (
                    np.stack([self._vectors[i] for i in self._ids])
                    if self._ids
                    else np.zeros((0, self.dim), dtype=np.float32)
                )
                self._dirty = False
            return self._ids, self._matrix, self._agents

    def search(self, queries: FloatArray, k: int, keep: Callable[[AgentCard], bool] | None = None) -> list[list[Hit]]:
        """For each query row, the k most similar agents that pass ``keep``."""
        ids, matrix, agents = self._snapshot()
        q = l2_normalize(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        if not ids:
            return [[] for _ in range(q.shape[0])]
        sims = q @ matrix.T
        out: list[list[Hit]] = []
        for row in sims:
            hits: list[Hit] = []
            for j in np.argsort(-row):
                agent = agents.get(ids[j])
                if agent is None or (keep is not None and not keep(agent.card)):
                    continue
                hits.append(Hit(agent=agent, similarity=float(row[j])))
                if len(hits) >= k:
                    break
            out.append(hits)
        return out
