"""The capability index: agent cards with their vectors, searched under the task's constraints.

Every backend implements :class:`CapabilityIndex`; :func:`make_index` picks one from the settings:

- :class:`ExactIndex` (here): one matrix, exact cosine similarity; right for a few ten thousand agents.
- ``QdrantIndex`` (``qdrant_index``): qdrant-edge in process, HNSW + payload indexes, optional persistence.
- ``HybridIndex`` (``qdrant_index``, the default ``auto``): exact below a size threshold, qdrant above.
- ``WeaviateIndex`` (``weaviate_index``): a Weaviate server, for an index shared between matchers.

Filters are :class:`~aos_gateway.matching.filters.TaskConstraints`, which every backend translates
into its own filter language (a Python predicate cannot be pushed into an HNSW search). The
contract tests in ``tests/unit/matching/test_index_contract.py`` hold every backend to the same
results. Thread-safe: the registry consumer updates an index from one thread while stages search
it from another.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError, ValidationError
from aos_gateway.matching.filters import USABLE, TaskConstraints
from aos_gateway.perception.vectors import FloatArray, l2_normalize

if TYPE_CHECKING:
    from aos_gateway.settings import Settings


@dataclass(frozen=True)
class IndexedAgent:
    """One agent in the index: its latest card and how many versions were seen."""

    card: AgentCard
    version: int


@dataclass(frozen=True)
class Hit:
    agent: IndexedAgent
    similarity: float


@runtime_checkable
class CapabilityIndex(Protocol):
    """What the matcher needs of an index; every backend passes the same contract tests."""

    dim: int

    def __len__(self) -> int:
        """How many agents are indexed."""
        ...

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        """Add or replace an agent; the version counts card changes seen (same card: same version)."""
        ...

    def remove(self, agent_id: str) -> bool:
        """Drop an agent; False if it was not there."""
        ...

    def get(self, agent_id: str) -> IndexedAgent | None: ...

    def agents(self) -> list[IndexedAgent]: ...

    def search(self, queries: FloatArray, k: int, constraints: TaskConstraints | None = None) -> list[list[Hit]]:
        """For each query row, up to k agents that satisfy ``constraints``, most similar first."""
        ...

    def close(self) -> None:
        """Release files, processes and connections (an index is not used after)."""
        ...


def check_vector(vector: FloatArray, dim: int) -> FloatArray:
    """One vector as a unit-length float32 row, or a ValidationError naming the dimensions."""
    vec = l2_normalize(np.asarray(vector, dtype=np.float32).reshape(-1))
    if vec.shape[0] != dim:
        raise ValidationError(f"vector has {vec.shape[0]} dims, index has {dim}")
    return vec


def check_queries(queries: FloatArray, k: int, dim: int) -> FloatArray:
    """Query rows as unit-length float32, or a ValidationError for a bad shape or k."""
    if k < 1:
        raise ValidationError(f"k must be at least 1, got {k}")
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    if q.ndim != 2 or q.shape[1] != dim:
        raise ValidationError(f"queries have shape {q.shape}, index has {dim} dims")
    return l2_normalize(q)


def next_version(old: IndexedAgent | None, card: AgentCard) -> int:
    """1 for a new agent; +1 when the card changed; the same version for the same card."""
    return 1 if old is None else old.version + (old.card != card)


class ExactIndex:
    """Agent vectors as rows of one matrix, filter fields as columns beside it; search = one product.

    Rows are slots: a new agent takes a free slot (or grows the arrays), an update overwrites its
    slot, a removal frees it. The filter is evaluated on the columns (status, tenant code, cost,
    latency) and on cached masks of the agents holding each capability or modality, then
    ``TaskConstraints.allows`` confirms the k chosen. A search reads the arrays without the lock,
    so a search running while an agent is overwritten may see that one agent half-updated; a
    grown array is a new one, so nothing else moves under a search.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._lock = threading.Lock()
        self._agents: dict[str, IndexedAgent] = {}
        self._rows: dict[str, int] = {}
        self._slots: list[str | None] = []
        self._free: list[int] = []
        self._matrix: FloatArray = np.zeros((0, dim), dtype=np.float32)
        self._live: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._usable: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._tenant: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._cost: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        self._latency: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._tenant_codes: dict[str, int] = {}
        self._members: dict[tuple[str, str], set[int]] = {}  # ("c", capability) / ("m", modality) -> slots
        self._masks: dict[tuple[str, str], npt.NDArray[np.bool_]] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        """Add or replace an agent; the version counts card changes seen."""
        vec = check_vector(vector, self.dim)
        with self._lock:
            return self._put(card, vec, next_version(self._agents.get(card["agent_id"]), card))

    def _grow(self) -> None:
        cap = max(16, 2 * self._matrix.shape[0])
        used = len(self._slots)

        def grown(a: npt.NDArray[Any], shape: tuple[int, ...]) -> npt.NDArray[Any]:
            out = np.zeros(shape, dtype=a.dtype)
            out[:used] = a[:used]
            return out

        self._matrix = grown(self._matrix, (cap, self.dim))
        self._live = grown(self._live, (cap,))
        self._usable = grown(self._usable, (cap,))
        self._tenant = grown(self._tenant, (cap,))
        self._cost = grown(self._cost, (cap,))
        self._latency = grown(self._latency, (cap,))
        self._masks.clear()

    def _members_of(self, card: AgentCard) -> set[tuple[str, str]]:
        return {("c", c) for c in card["capabilities"]} | {("m", m) for m in card["modalities"]}

    def _unlink(self, row: int, card: AgentCard) -> None:
        for key in self._members_of(card):
            self._members[key].discard(row)
            self._masks.pop(key, None)

    def _put(self, card: AgentCard, vec: FloatArray, version: int) -> IndexedAgent:
        aid = card["agent_id"]
        row = self._rows.get(aid)
        if row is None:
            if self._free:
                row = self._free.pop()
                self._slots[row] = aid
            else:
                row = len(self._slots)
                if row >= self._matrix.shape[0]:
                    self._grow()
                self._slots.append(aid)
            self._rows[aid] = row
        else:
            self._unlink(row, self._agents[aid].card)
        self._matrix[row] = vec
        self._usable[row] = card["status"] in USABLE
        self._tenant[row] = self._tenant_codes.setdefault(card["tenant"], len(self._tenant_codes))
        self._cost[row] = card["cost"]
        self._latency[row] = card["p95_latency_ms"]
        for key in self._members_of(card):
            self._members.setdefault(key, set()).add(row)
            self._masks.pop(key, None)
        self._live[row] = True
        entry = IndexedAgent(card=card, version=version)
        self._agents[aid] = entry
        return entry

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            old = self._agents.pop(agent_id, None)
            if old is None:
                return False
            row = self._rows.pop(agent_id)
            self._unlink(row, old.card)
            self._slots[row] = None
            self._live[row] = False
            self._matrix[row] = 0.0
            self._free.append(row)
            return True

    def get(self, agent_id: str) -> IndexedAgent | None:
        return self._agents.get(agent_id)

    def agents(self) -> list[IndexedAgent]:
        with self._lock:
            return list(self._agents.values())

    def entries(self) -> Iterator[tuple[IndexedAgent, FloatArray]]:
        """Every agent with its (normalised) vector: what another backend is filled from."""
        with self._lock:
            items = [(self._agents[aid], self._matrix[row].copy()) for aid, row in self._rows.items()]
        yield from items

    def _mask(self, cons: TaskConstraints | None, n: int) -> npt.NDArray[np.bool_]:
        """Slots that pass the filter (called under the lock)."""
        mask = self._live[:n].copy()
        if cons is None:
            return mask
        mask &= self._usable[:n]
        codes = [self._tenant_codes[t] for t in cons.tenants if t in self._tenant_codes]
        tenant = self._tenant[:n]
        if codes:  # at most two: public and the task's own
            mask &= (tenant == codes[0]) | (tenant == codes[-1])
        else:
            mask[:] = False
        if cons.max_cost is not None:
            mask &= self._cost[:n] <= cons.max_cost
        if cons.max_latency_ms is not None:
            mask &= self._latency[:n] <= cons.max_latency_ms
        keys = [("c", c) for c in cons.required_capabilities] + [("m", m) for m in cons.required_modalities]
        for key in keys:
            cached = self._masks.get(key)
            if cached is None:
                cached = np.zeros(self._matrix.shape[0], dtype=np.bool_)
                cached[list(self._members.get(key, ()))] = True
                self._masks[key] = cached
            mask &= cached[:n]
        return mask

    def search(self, queries: FloatArray, k: int, constraints: TaskConstraints | None = None) -> list[list[Hit]]:
        """For each query row, the k most similar agents that ``constraints`` allow."""
        q = check_queries(queries, k, self.dim)
        with self._lock:
            n = len(self._slots)
            matrix = self._matrix[:n]
            mask = self._mask(constraints, n)
        if not n:
            return [[] for _ in range(q.shape[0])]
        sims = q @ matrix.T
        allowed = int(mask.sum())
        out: list[list[Hit]] = []
        for row in sims:
            kk = min(k, allowed)
            if kk == 0:
                out.append([])
                continue
            row = np.where(mask, row, -np.inf)
            top = np.argpartition(-row, kk - 1)[:kk]
            hits: list[Hit] = []
            for j in top[np.argsort(-row[top], kind="stable")]:
                aid = self._slots[j]
                agent = self._agents.get(aid) if aid is not None else None
                # the columns chose; the reference meaning confirms (and drops a slot reused meanwhile)
                if agent is not None and (constraints is None or constraints.allows(agent.card)):
                    hits.append(Hit(agent=agent, similarity=float(row[j])))
            out.append(hits)
        return out

    def close(self) -> None:
        """Nothing to release: the index lives in memory."""


def hnsw_options(settings: Settings) -> dict[str, Any]:
    """The qdrant index's graph and search options from the settings (``AOS_MATCHING__*``)."""
    m = settings.matching
    return {
        "m": m.hnsw_m,
        "ef_construct": m.hnsw_ef_construct,
        "ef": m.hnsw_ef,
        "acorn_ef": m.acorn_ef,
        "acorn_selectivity": m.acorn_selectivity,
        "search_threads": m.index_search_threads,
        "calibrate": m.index_calibrate,
        "target_recall": m.index_target_recall,
        "budget_ms": m.index_budget_ms,
        "max_ef": m.index_max_ef,
    }


def make_index(settings: Settings, dim: int) -> CapabilityIndex:
    """The index backend the settings name (``AOS_MATCHING__INDEX_BACKEND``), for vectors of ``dim``.

    ``auto`` is exact search below ``exact_threshold`` agents and qdrant-edge HNSW above it;
    ``weaviate`` needs ``AOS_WEAVIATE__URL``.
    """
    m = settings.matching
    if m.index_backend == "exact":
        return ExactIndex(dim)
    if m.index_backend == "weaviate":
        from aos_gateway.matching.weaviate_index import WeaviateIndex

        return WeaviateIndex.connect(settings.weaviate, dim, m.hnsw_m, m.hnsw_ef_construct, m.hnsw_ef)
    from aos_gateway.matching.qdrant_index import HybridIndex, QdrantIndex

    hnsw = hnsw_options(settings)
    if m.index_backend == "qdrant":
        return QdrantIndex(dim, m.index_path, exact_below=m.exact_threshold, **hnsw)
    if m.index_backend == "auto":
        return HybridIndex(dim, m.exact_threshold, m.index_path, **hnsw)
    raise ConfigError(f"unknown index backend {m.index_backend!r}: use auto, exact, qdrant or weaviate")
