"""A scan of the agents a selective filter passes, over int8 codes of their vectors (beside a graph index).

Why: an HNSW walk under a filter that passes few agents loses their true neighbours; at 1M agents,
filters passing under 7% of them kept recall@10 at 0.26-0.29 with ACORN (docs/benchmarks.md), and
qdrant's own exact scan of such a filter costs 0.5-2.3 µs per passing agent. Here every agent's
vector is kept as int8 codes with a per-vector scale (384 bytes a row at 384 dims) beside the
filter columns of :class:`~aos_gateway.matching.index.FilterColumns`; a search lists the agents the
filter passes (from the rarest required capability's members when there is one) and scores each by
the dot product of its codes with the query in one compiled loop (numba), ~0.1 µs per agent when
the rows are not in cache (measured). The codes give the order to within ~1e-3 of the cosine; the
caller rescores the best few with the exact vectors.
"""

from __future__ import annotations

from typing import Any, cast

import numba
import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import AgentCard
from aos_gateway.matching.filters import TaskConstraints
from aos_gateway.matching.index import FilterColumns
from aos_gateway.perception.vectors import FloatArray

CODE_MAX = 127
_NO_ROWS = np.zeros(0, dtype=np.int64)
_NO_LIMIT = int(np.iinfo(np.int64).max)


@numba.njit(fastmath=True, nogil=True, cache=False)
def _scores(codes: Any, scales: Any, rows: Any, q: Any, out: Any) -> None:  # pragma: no cover - compiled
    """out[j] = scales[rows[j]] * (codes[rows[j]] · q); four rows at a time (their loads overlap)."""
    d = codes.shape[1]
    m = rows.shape[0]
    j = 0
    while j + 4 <= m:
        r0 = codes[rows[j]]
        r1 = codes[rows[j + 1]]
        r2 = codes[rows[j + 2]]
        r3 = codes[rows[j + 3]]
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        for i in range(d):
            qi = q[i]
            a0 += np.float32(r0[i]) * qi
            a1 += np.float32(r1[i]) * qi
            a2 += np.float32(r2[i]) * qi
            a3 += np.float32(r3[i]) * qi
        out[j] = a0 * scales[rows[j]]
        out[j + 1] = a1 * scales[rows[j + 1]]
        out[j + 2] = a2 * scales[rows[j + 2]]
        out[j + 3] = a3 * scales[rows[j + 3]]
        j += 4
    while j < m:
        r = codes[rows[j]]
        acc = np.float32(0.0)
        for i in range(d):
            acc += np.float32(r[i]) * q[i]
        out[j] = acc * scales[rows[j]]
        j += 1


@numba.njit(fastmath=True, nogil=True, cache=False)
def _filter_and_score(
    rows: Any,
    all_n: int,
    live: Any,
    usable: Any,
    tenant: Any,
    t0: int,
    t1: int,
    cost: Any,
    max_cost: float,
    latency: Any,
    max_latency: int,
    codes: Any,
    scales: Any,
    q: Any,
    keep: Any,
    sims: Any,
) -> int:  # pragma: no cover - compiled
    """Keep the candidate slots (``rows``, or the first ``all_n`` slots if ``all_n`` >= 0) whose columns
    pass, in ``keep``, and score them into ``sims``; how many passed."""
    m = 0
    count = all_n if all_n >= 0 else rows.shape[0]
    for j in range(count):
        r = j if all_n >= 0 else rows[j]
        if (
            live[r]
            and usable[r]
            and (tenant[r] == t0 or tenant[r] == t1)
            and cost[r] <= max_cost
            and latency[r] <= max_latency
        ):
            keep[m] = r
            m += 1
    _scores(codes, scales, keep[:m], q, sims[:m])
    return m


def quantize(rows: FloatArray) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.float32]]:
    """int8 codes of each row and the scale that maps them back (``codes * scale ≈ row``)."""
    m = np.atleast_2d(np.asarray(rows, dtype=np.float32))
    top = np.max(np.abs(m), axis=1)
    scale = np.where(top > 0, top / CODE_MAX, 1.0).astype(np.float32)
    return np.round(m / scale[:, None]).astype(np.int8), scale


def warm() -> None:
    """Compile the scan's loops now (~1 s, once per process) rather than in the first search."""
    scan = CodeScan(4)
    fields = {"agent_id": "warm", "status": "ACTIVE", "tenant": "public", "capabilities": ["x"], "modalities": []}
    scan.put([cast(AgentCard, {**fields, "cost": 0.0, "p95_latency_ms": 1})], np.ones(4, np.float32))
    for cons in (TaskConstraints("public", frozenset(), None, None), TaskConstraints("public", frozenset("x"), 1.0, 9)):
        scan.top(np.ones(4, np.float32), cons, 1)


class CodeScan(FilterColumns):
    """int8 codes of every agent's vector beside the filter columns; not locked (the owner serialises).

    Holds no cards: a search returns agent ids with approximate similarities, which the owner
    confirms and rescores from its own store.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self._codes: npt.NDArray[np.int8] = np.zeros((0, dim), dtype=np.int8)
        self._scale: npt.NDArray[np.float32] = np.zeros(0, dtype=np.float32)

    def __len__(self) -> int:
        return len(self._rows)

    def _grow_more(self, cap: int, used: int) -> None:
        self._codes = self._grown(self._codes, cap, used)
        self._scale = self._grown(self._scale, cap, used)

    def put(self, cards: list[AgentCard], vecs: FloatArray) -> None:
        """Add or replace the cards' agents (``vecs``: their unit vectors, one row each)."""
        rows = [self._place(card) for card in cards]
        self._codes[rows], self._scale[rows] = quantize(vecs)

    def remove(self, agent_id: str) -> None:
        """Drop an agent (nothing if it is not there)."""
        row = self._vacate(agent_id)
        if row is not None:
            self._codes[row] = 0

    def top(self, q: FloatArray, cons: TaskConstraints, limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` agents ``cons`` passes, by approximate similarity to the unit vector ``q``."""
        found = self.candidates(cons)
        pair = self._tenant_pair(cons)
        if pair is None or (found is not None and not found.size):
            return []
        count = len(self._slots) if found is None else found.size
        keep = np.empty(count, dtype=np.int64)
        sims = np.empty(count, dtype=np.float32)
        m = _filter_and_score(
            _NO_ROWS if found is None else found,
            count if found is None else -1,
            self._live,
            self._usable,
            self._tenant,
            pair[0],
            pair[1],
            self._cost,
            np.inf if cons.max_cost is None else float(cons.max_cost),
            self._latency,
            _NO_LIMIT if cons.max_latency_ms is None else int(cons.max_latency_ms),
            self._codes,
            self._scale,
            np.ascontiguousarray(q, dtype=np.float32),
            keep,
            sims,
        )
        rows, sims = keep[:m], sims[:m]
        if not m:
            return []
        best = np.argpartition(-sims, limit - 1)[:limit] if m > limit else np.arange(m)
        best = best[np.argsort(-sims[best], kind="stable")]
        out: list[tuple[str, float]] = []
        for j in best:
            aid = self._slots[int(rows[j])]
            if aid is not None:
                out.append((aid, float(sims[j])))
        return out
