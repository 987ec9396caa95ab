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


Key = tuple[str, str]
"""A membership a filter can require: ``("c", capability)`` or ``("m", modality)``."""


_NONE: frozenset[Key] = frozenset()


def member_keys(card: AgentCard) -> frozenset[Key]:
    """The capability and modality memberships of a card."""
    return frozenset({("c", c) for c in card["capabilities"]} | {("m", m) for m in card["modalities"]})


class FilterColumns:
    """Agents in numbered slots with the card fields filters read, as columns: what a filter passes.

    Rows are slots: a new agent takes a free slot (or grows the arrays), an update overwrites its
    slot, a removal frees it. Status, tenant code, cost and latency are columns; capabilities and
    modalities are member sets per value, turned into masks and sorted slot lists when a filter
    needs them (cached until a member changes). A subclass keeps its own per-slot arrays (vectors)
    and grows them in :meth:`_grow_more`. Not locked: the subclass serialises writes.
    """

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._slots: list[str | None] = []
        self._free: list[int] = []
        self._keys: list[frozenset[Key]] = []  # per slot, parallel to _slots
        self._shared: dict[frozenset[Key], frozenset[Key]] = {}
        self._live: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._usable: npt.NDArray[np.bool_] = np.zeros(0, dtype=np.bool_)
        self._tenant: npt.NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._cost: npt.NDArray[np.float64] = np.zeros(0, dtype=np.float64)
        self._latency: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        self._tenant_codes: dict[str, int] = {}
        self._members: dict[Key, set[int]] = {}
        self._masks: dict[Key, npt.NDArray[np.bool_]] = {}
        self._lists: dict[Key, npt.NDArray[np.int64]] = {}

    @staticmethod
    def _grown(a: npt.NDArray[Any], cap: int, used: int) -> npt.NDArray[Any]:
        out = np.zeros((cap, *a.shape[1:]), dtype=a.dtype)
        out[:used] = a[:used]
        return out

    def _grow(self) -> None:
        cap = max(16, 2 * self._live.shape[0])
        used = len(self._slots)
        self._live = self._grown(self._live, cap, used)
        self._usable = self._grown(self._usable, cap, used)
        self._tenant = self._grown(self._tenant, cap, used)
        self._cost = self._grown(self._cost, cap, used)
        self._latency = self._grown(self._latency, cap, used)
        self._masks.clear()
        self._grow_more(cap, used)

    def _grow_more(self, cap: int, used: int) -> None:
        """Grow the subclass's per-slot arrays to ``cap`` rows, keeping the first ``used``."""

    def _unlink(self, row: int) -> None:
        keys, self._keys[row] = self._keys[row], _NONE
        for key in keys:
            self._members[key].discard(row)
            self._masks.pop(key, None)
            self._lists.pop(key, None)

    def _place(self, card: AgentCard) -> int:
        """The slot of the card's agent (a new one if needed), its columns and memberships set."""
        aid = card["agent_id"]
        row = self._rows.get(aid)
        if row is None:
            if self._free:
                row = self._free.pop()
                self._slots[row] = aid
            else:
                row = len(self._slots)
                if row >= self._live.shape[0]:
                    self._grow()
                self._slots.append(aid)
                self._keys.append(_NONE)
            self._rows[aid] = row
        else:
            self._unlink(row)
        self._usable[row] = card["status"] in USABLE
        self._tenant[row] = self._tenant_codes.setdefault(card["tenant"], len(self._tenant_codes))
        self._cost[row] = card["cost"]
        self._latency[row] = card["p95_latency_ms"]
        keys = member_keys(card)
        keys = self._shared.setdefault(keys, keys)  # agents with the same memberships share one set
        for key in keys:
            self._members.setdefault(key, set()).add(row)
            self._masks.pop(key, None)
            self._lists.pop(key, None)
        self._keys[row] = keys
        self._live[row] = True
        return row

    def _vacate(self, agent_id: str) -> int | None:
        """Free the agent's slot; its number, or None if the agent was not there."""
        row = self._rows.pop(agent_id, None)
        if row is None:
            return None
        self._unlink(row)
        self._slots[row] = None
        self._live[row] = False
        self._free.append(row)
        return row

    def _mask_of(self, key: Key) -> npt.NDArray[np.bool_]:
        cached = self._masks.get(key)
        if cached is None:
            cached = np.zeros(self._live.shape[0], dtype=np.bool_)
            cached[list(self._members.get(key, ()))] = True
            self._masks[key] = cached
        return cached

    def _tenant_pair(self, cons: TaskConstraints) -> tuple[int, int] | None:
        """The tenant codes visible under ``cons`` (public and the task's own; None: neither is known)."""
        codes = [self._tenant_codes[t] for t in cons.tenants if t in self._tenant_codes]
        return (codes[0], codes[-1]) if codes else None

    def _columns_pass(self, cons: TaskConstraints, at: slice | npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
        """Whether the slots ``at`` (a slice or slot numbers) are live and pass ``cons``'s status,
        tenant, cost and latency rules (not its capabilities and modalities)."""
        ok: npt.NDArray[np.bool_] = self._live[at] & self._usable[at]
        pair = self._tenant_pair(cons)
        if pair is None:
            ok[:] = False
            return ok
        tenant = self._tenant[at]
        ok &= (tenant == pair[0]) | (tenant == pair[1])  # at most two: public and the task's own
        if cons.max_cost is not None:
            ok &= self._cost[at] <= cons.max_cost
        if cons.max_latency_ms is not None:
            ok &= self._latency[at] <= cons.max_latency_ms
        return ok

    def _mask(self, cons: TaskConstraints | None, n: int) -> npt.NDArray[np.bool_]:
        """Slots among the first ``n`` that pass the filter."""
        if cons is None:
            return self._live[:n].copy()
        mask = self._columns_pass(cons, slice(0, n))
        for key in self._required(cons):
            mask &= self._mask_of(key)[:n]
        return mask

    @staticmethod
    def _required(cons: TaskConstraints) -> list[Key]:
        return [("c", c) for c in sorted(cons.required_capabilities)] + [
            ("m", m) for m in sorted(cons.required_modalities)
        ]

    def candidates(self, cons: TaskConstraints) -> npt.NDArray[np.int64] | None:
        """The slots holding every capability and modality ``cons`` requires, ascending (None: it
        requires none, every slot is a candidate); the columns are not checked. Found from the
        rarest one's slots, so the work is in proportion to them, not to the index."""
        required = self._required(cons)
        if not required:
            return None
        required.sort(key=lambda key: len(self._members.get(key, ())))
        rows = self._list_of(required[0])
        for key in required[1:]:  # also a member of each other one (binary search in its sorted slots)
            members = self._list_of(key)
            if not members.size:
                return rows[:0]
            at = np.minimum(np.searchsorted(members, rows), members.size - 1)
            rows = rows[members[at] == rows]
        return rows

    def passing(self, cons: TaskConstraints) -> npt.NDArray[np.int64]:
        """The slots that pass ``cons``, ascending."""
        rows = self.candidates(cons)
        if rows is None:
            return np.flatnonzero(self._mask(cons, len(self._slots))).astype(np.int64)
        return rows[self._columns_pass(cons, rows)]

    def _list_of(self, key: Key) -> npt.NDArray[np.int64]:
        """The slots holding ``key``, ascending (cached until one of them changes)."""
        rows = self._lists.get(key)
        if rows is None:
            rows = np.sort(np.fromiter(self._members.get(key, ()), dtype=np.int64))
            self._lists[key] = rows
        return rows


class ExactIndex(FilterColumns):
    """Agent vectors as rows of one matrix, filter fields as columns beside it; search = one product.

    The filter is evaluated on the columns (:class:`FilterColumns`), then
    ``TaskConstraints.allows`` confirms the k chosen. A search reads the arrays without the lock,
    so a search running while an agent is overwritten may see that one agent half-updated; a
    grown array is a new one, so nothing else moves under a search.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self._lock = threading.Lock()
        self._agents: dict[str, IndexedAgent] = {}
        self._matrix: FloatArray = np.zeros((0, dim), dtype=np.float32)

    def __len__(self) -> int:
        return len(self._agents)

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        """Add or replace an agent; the version counts card changes seen."""
        vec = check_vector(vector, self.dim)
        with self._lock:
            return self._put(card, vec, next_version(self._agents.get(card["agent_id"]), card))

    def _grow_more(self, cap: int, used: int) -> None:
        self._matrix = self._grown(self._matrix, cap, used)

    def _put(self, card: AgentCard, vec: FloatArray, version: int) -> IndexedAgent:
        row = self._place(card)
        self._matrix[row] = vec
        entry = IndexedAgent(card=card, version=version)
        self._agents[card["agent_id"]] = entry
        return entry

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            if self._agents.pop(agent_id, None) is None:
                return False
            row = self._vacate(agent_id)
            if row is not None:
                self._matrix[row] = 0.0
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
        "scan_below": m.index_scan_below,
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
