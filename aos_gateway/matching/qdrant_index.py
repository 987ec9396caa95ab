"""The capability index on qdrant-edge (``qdrant-edge-py``): HNSW, payload indexes, persistence.

An Edge shard is qdrant's engine inside this process. Two things about it shape this module:

- **HNSW is built only by ``optimize()``, and ``optimize()`` holds the GIL** for its whole run
  (measured: a 10,000-point build froze every other Python thread for 14 s). So the graph is
  built in a child process on a copy of the shard, and the copy replaces the live shard when it
  is done; writes made meanwhile are replayed on it. Searches go on all the while. Points not
  yet in a graph are still found, by a plain scan of their (small) appendable segment.
- **Filters are payload conditions**, so a selective filter still yields k hits. Each filter
  field of the card has a payload index; the card itself rides along as JSON.
- **A filter that passes few agents is not searched in the graph**: the walk loses their true
  neighbours when the filter cuts the graph apart (at 1M agents, recall@10 0.26-0.29 for filters
  passing < 7% of them). Those are scanned instead, over int8 codes of every vector kept beside
  the shard (:mod:`~aos_gateway.matching.codescan`), and the best few are rescored with the
  shard's exact vectors.

Layout of a persisted index: ``<path>/CURRENT`` names the live generation ``<path>/gen-NNNNNN``
(a qdrant shard directory). Without a path the shard lives in a temporary directory that
:meth:`QdrantIndex.close` removes.

:class:`HybridIndex` (the ``auto`` backend) starts as an :class:`ExactIndex` and moves to a
:class:`QdrantIndex` when it grows past the threshold; the qdrant index then still searches
exactly while it holds fewer agents than the threshold.
"""

from __future__ import annotations

import inspect
import json
import logging
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import Any, cast

import numpy as np
import qdrant_edge as qe

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError, IndexBackendError
from aos_gateway.matching.codescan import CodeScan, warm
from aos_gateway.matching.filters import USABLE, TaskConstraints
from aos_gateway.matching.index import (
    CapabilityIndex,
    ExactIndex,
    Hit,
    IndexedAgent,
    check_queries,
    check_vector,
    next_version,
)
from aos_gateway.perception.vectors import FloatArray

log = logging.getLogger(__name__)

VECTOR = "text"
"""The named vector agents are searched by (the text space; an image space can join it)."""

_NAMESPACE = uuid.UUID("8f4b7a52-2d43-4c55-9a38-6c0b0e7f3a11")
_BATCH = 512
_EF_LADDER = (16, 32, 64, 96, 128, 192, 256, 384, 512)
_CALIBRATION = "calibration.json"
_KEYWORDS = ("tenant", "status", "capabilities", "modalities")
_FILTER_FIELDS = ["agent_id", *_KEYWORDS, "cost", "p95_latency_ms"]
_RESCORE = 2
"""A scan-served search rescores ``_RESCORE * k`` agents (at least 20) with their exact vectors."""
_SCAN_SHARE = 0.8
"""The code scan takes a filter it can scan within this share of the search budget (``budget_ms``)."""
_OPTIMIZE = (
    "import sys\n"
    "from qdrant_edge import EdgeShard\n"
    "shard = EdgeShard.load(sys.argv[1])\n"
    "shard.optimize()\n"
    "shard.flush()\n"
    "shard.close()\n"
)


def _copy_tree(src: Path, dst: Path) -> None:
    """A copy that keeps sparse files sparse (a fresh shard is ~140 MB of holes): GNU cp, else shutil."""
    cp = shutil.which("cp")
    if cp is not None:
        proc = subprocess.run([cp, "-a", "--sparse=always", str(src), str(dst)], capture_output=True, text=True)
        if proc.returncode == 0:
            return
        shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst)


def point_id(agent_id: str) -> str:
    """Qdrant ids are integers or UUIDs: an agent's is a UUID derived from its id."""
    return str(uuid.uuid5(_NAMESPACE, agent_id))


def to_filter(cons: TaskConstraints) -> qe.Filter:
    """The constraints as a qdrant payload filter (the same rules as ``TaskConstraints.allows``)."""
    must: list[qe.FieldCondition] = [
        qe.FieldCondition("status", match=qe.MatchAny(list(USABLE))),
        qe.FieldCondition("tenant", match=qe.MatchAny(list(cons.tenants))),
    ]
    # an array field matches a value when any element does: one condition per required value
    must += [qe.FieldCondition("capabilities", match=qe.MatchValue(c)) for c in sorted(cons.required_capabilities)]
    must += [qe.FieldCondition("modalities", match=qe.MatchValue(m)) for m in sorted(cons.required_modalities)]
    if cons.max_cost is not None:
        must.append(qe.FieldCondition("cost", range=qe.RangeFloat(lte=float(cons.max_cost))))
    if cons.max_latency_ms is not None:
        must.append(qe.FieldCondition("p95_latency_ms", range=qe.RangeFloat(lte=float(cons.max_latency_ms))))
    return qe.Filter(must=list(must))


def _payload(card: AgentCard, version: int) -> dict[str, Any]:
    return {
        "agent_id": card["agent_id"],
        "version": version,
        "card": json.dumps(card, separators=(",", ":")),
        "tenant": card["tenant"],
        "status": card["status"],
        "capabilities": list(card["capabilities"]),
        "modalities": list(card["modalities"]),
        "cost": float(card["cost"]),
        "p95_latency_ms": int(card["p95_latency_ms"]),
    }


def _walk(way: str, ef: int, k: int) -> qe.SearchParams:
    """Search parameters of a graph walk: ``acorn`` (looks two hops past rejected agents) or plain."""
    if way == "acorn":
        return qe.SearchParams(hnsw_ef=max(ef, k), acorn=qe.AcornSearchParams(enable=True, max_selectivity=1.0))
    return qe.SearchParams(hnsw_ef=max(ef, k))


def _agent(payload: dict[str, Any] | None) -> IndexedAgent:
    if payload is None or "card" not in payload:
        raise IndexBackendError("a qdrant point has no agent card in its payload")
    card: AgentCard = json.loads(payload["card"])
    return IndexedAgent(card=card, version=int(payload["version"]))


class QdrantIndex:
    """Agents in a qdrant-edge shard: HNSW over the text vectors, payload indexes on the filter fields.

    Args:
        dim: vector dimensions (a persisted shard of other dimensions is a ConfigError).
        path: directory to persist in; None = a temporary directory removed by :meth:`close`.
        m, ef_construct: HNSW graph parameters; ef: candidates per search (at least k).
        exact_below: scan exactly (no graph) while fewer agents than this are indexed.
        reindex_after: after this many writes, or a tenth of the index if more (once at least
            ``exact_below`` agents are indexed), build the graph again in the background, so new
            points leave the plain-scanned segment; growing with the index keeps a bulk load from
            rebuilding a large graph every few thousand writes.
        indexing_threads: threads the child uses to build the graph (0: one per core).
        acorn_ef, acorn_selectivity: a filtered search whose filter the shard estimates to pass at
            most ``acorn_selectivity`` of the agents runs ACORN (the graph walk looks two hops
            past agents the filter rejects) with ``acorn_ef`` candidates; a broader filter runs
            the plain filtered walk with ``ef``. Plain HNSW loses the true neighbours when a filter
            cuts the graph apart (recall@10 0.14-0.56 for filters passing 7-30% of 100k agents),
            ACORN keeps them but costs more per candidate, so it gets fewer (measured in
            docs/benchmarks.md). Filters the shard estimates below its full-scan threshold
            (~6,700 agents of 384 dims) are scanned exactly whatever this says.
        full_scan_kb: a filter the shard estimates to pass fewer agents than fill this many KB of
            vectors is served by a plain scan of those agents (qdrant's ``full_scan_threshold``).
        search_threads: the shard's search pool (1: search in the caller's thread; the pool's
            hand-off cost ~0.3 ms per query at batch 1, measured).
        scan_below: a filter that requires a capability or modality and that the shard estimates
            to pass at most this many agents is served by a scan of those agents' int8 codes
            (:mod:`~aos_gateway.matching.codescan`, ~0.1 µs an agent, measured), the best ``2 k``
            rescored with their exact vectors, instead of a graph walk (0: never). The calibration
            lowers it to the largest filter whose probe scans take at most 80% of ``budget_ms`` at
            p95. At 1M agents the walk lost most true neighbours of such filters (recall@10
            0.26-0.29 below 7% of the agents, measured in docs/benchmarks.md). The codes cost
            ``dim + 4`` bytes an agent in RAM, and a persisted index reads them back from the
            shard on open.
        calibrate, target_recall, budget_ms, max_ef: after each graph build, :meth:`calibrate`
            chooses ``ef`` and ``acorn_ef`` for the data at hand (``ef`` and ``acorn_ef`` given here
            are the floor). How many candidates a walk needs depends on the data more than on its
            size (measured in docs/benchmarks.md: ACORN ef 16 keeps recall@10 0.99 on one synthetic
            set of 100k agents and 0.80 on another, whose walk needs ef 96).
    """

    def __init__(
        self,
        dim: int,
        path: Path | str | None = None,
        *,
        m: int = 16,
        ef_construct: int = 100,
        ef: int = 64,
        exact_below: int = 0,
        reindex_after: int = 20_000,
        indexing_threads: int = 0,
        acorn_ef: int = 16,
        acorn_selectivity: float = 0.4,
        search_threads: int = 1,
        full_scan_kb: int = 10_000,
        calibrate: bool = True,
        target_recall: float = 0.95,
        budget_ms: float = 5.0,
        max_ef: int = 512,
        scan_below: int = 60_000,
    ) -> None:
        self.dim = dim
        self.ef = self.ef_floor = ef
        self.acorn_ef = self.acorn_ef_floor = acorn_ef
        self.acorn_selectivity = acorn_selectivity
        self.full_scan_kb = full_scan_kb
        self.auto_calibrate = calibrate
        self.target_recall = target_recall
        self.budget_ms = budget_ms
        self.max_ef = max(max_ef, ef, acorn_ef)
        self.calibration: dict[str, Any] | None = None
        """What the last :meth:`calibrate` measured and chose (None: not run, or not found on load)."""
        self.scan_below = self.scan_limit = scan_below
        self._scan = CodeScan(dim) if scan_below > 0 else None
        if self._scan is not None:
            warm()
        self.searches = {"exact": 0, "scan": 0, "hnsw": 0, "acorn": 0}
        """Searches per path since the index was opened (one per call of :meth:`search`)."""
        self.exact_below = exact_below
        self.reindex_after = reindex_after
        self._lock = threading.RLock()
        self._rebuild_lock = threading.Lock()
        self._replay: list[qe.UpdateOperation] | None = None
        self._rebuilder: threading.Thread | None = None
        self._writes = 0
        self._closed = False
        self._temp = path is None
        self.root = Path(tempfile.mkdtemp(prefix="aos-index-")) if path is None else Path(path)
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.root, True) if self._temp else None
        # vectors and payloads held in RAM (payloads default to cold, read from disk: a filtered
        # search checks payload indexes for many candidates, and fetches each hit's card)
        self._config = qe.EdgeConfig(
            vectors={VECTOR: qe.EdgeVectorParams(size=dim, distance=qe.Distance.Cosine, memory=qe.Memory.Cached)},
            payload_memory=qe.Memory.Cached,
            max_search_threads=search_threads,
            hnsw_config=qe.HnswIndexConfig(
                m=m,
                ef_construct=ef_construct,
                full_scan_threshold=full_scan_kb,
                max_indexing_threads=indexing_threads,
            ),
            # segments above ~1,000 vectors get a graph when optimised (the default waits for ~10 MB)
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=max(1, dim * 4 * 1000 // 1024)),
        )
        current = self._current()
        try:
            if current is not None:
                self._check_dim(current)
                self._shard = self._load(current)
            else:
                current = self.root / "gen-000001"
                self._shard = qe.EdgeShard.create(str(current), self._config)
                # Extra graph links per payload value (enable_hnsw) only for the tenant: with them on
                # every field, 100k agents took 938 s to build instead of 245 s (measured); filters
                # on the other fields are served by the payload index (small sets: exact scan) and
                # by ACORN during the graph search.
                for name in _KEYWORDS:
                    params = qe.KeywordIndexParams(
                        is_tenant=name == "tenant", enable_hnsw=name == "tenant", memory=qe.Memory.Pinned
                    )
                    self._shard.update(qe.UpdateOperation.create_field_index(name, params))
                self._shard.update(
                    qe.UpdateOperation.create_field_index(
                        "cost", qe.FloatIndexParams(enable_hnsw=False, memory=qe.Memory.Pinned)
                    )
                )
                self._shard.update(
                    qe.UpdateOperation.create_field_index(
                        "p95_latency_ms",
                        qe.IntegerIndexParams(lookup=False, range=True, enable_hnsw=False, memory=qe.Memory.Pinned),
                    )
                )
                self._set_current(current)
            self._gen = current
            self._count = self._shard.info().points_count
            self._fill_scan()
            if calibrate:
                self._load_calibration()
        except ConfigError:
            raise
        except Exception as exc:
            raise IndexBackendError(f"cannot open the qdrant index at {self.root}: {exc}") from exc

    # -- layout -----------------------------------------------------------------------------

    @staticmethod
    def exists(path: Path | str) -> bool:
        """True when ``path`` holds a persisted index."""
        return (Path(path) / "CURRENT").is_file()

    def _current(self) -> Path | None:
        marker = self.root / "CURRENT"
        if not marker.is_file():
            return None
        gen = self.root / marker.read_text().strip()
        if not gen.is_dir():
            raise IndexBackendError(f"{marker} names {gen.name}, which does not exist")
        return gen

    def _set_current(self, gen: Path) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / "CURRENT.tmp"
        tmp.write_text(gen.name + "\n")
        tmp.replace(self.root / "CURRENT")

    def _load(self, gen: Path) -> qe.EdgeShard:
        """Open a persisted generation with this index's search settings (they are rewritten on disk)."""
        return qe.EdgeShard.load(str(gen), self._config)

    def _check_dim(self, gen: Path) -> None:
        try:
            size = json.loads((gen / "edge_config.json").read_text())["vectors"][VECTOR]["size"]
        except (OSError, ValueError, KeyError) as exc:
            raise IndexBackendError(f"{gen} is not an index of agents: {exc}") from exc
        if size != self.dim:
            raise ConfigError(f"the index at {self.root} holds {size}-dim vectors, the encoder makes {self.dim}")

    # -- writes -----------------------------------------------------------------------------

    def __len__(self) -> int:
        return self._count

    def _apply(self, op: qe.UpdateOperation) -> None:
        try:
            self._shard.update(op)
        except Exception as exc:
            raise IndexBackendError(f"qdrant update failed: {exc}") from exc
        if self._replay is not None:
            self._replay.append(op)

    def _point(self, card: AgentCard, vec: FloatArray, version: int) -> qe.Point:
        return qe.Point(point_id(card["agent_id"]), {VECTOR: vec.tolist()}, _payload(card, version))

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        """Add or replace an agent; the version counts card changes seen."""
        vec = check_vector(vector, self.dim)
        with self._lock:
            self._check_open()
            old = self._get(card["agent_id"])
            entry = IndexedAgent(card=card, version=next_version(old, card))
            self._apply(qe.UpdateOperation.upsert_points([self._point(card, vec, entry.version)]))
            if self._scan is not None:
                self._scan.put([card], vec)
            self._count += old is None
            self._writes += 1
        self._maybe_reindex()
        return entry

    def put_many(self, entries: Iterable[tuple[IndexedAgent, FloatArray]]) -> None:
        """Load agents with the versions they already have (moving from another backend)."""
        batch: list[tuple[IndexedAgent, FloatArray]] = []
        for item in entries:
            batch.append(item)
            if len(batch) >= _BATCH:
                self._put_batch(batch)
                batch = []
        if batch:
            self._put_batch(batch)

    def _put_batch(self, batch: list[tuple[IndexedAgent, FloatArray]]) -> None:
        with self._lock:
            self._check_open()
            ids = [point_id(e.card["agent_id"]) for e, _ in batch]
            try:
                known = len(self._shard.retrieve(list(ids), False, False))
            except Exception as exc:
                raise IndexBackendError(f"qdrant retrieve failed: {exc}") from exc
            checked = [(e, check_vector(v, self.dim)) for e, v in batch]
            self._apply(qe.UpdateOperation.upsert_points([self._point(e.card, v, e.version) for e, v in checked]))
            if self._scan is not None:
                self._scan.put([e.card for e, _ in checked], np.stack([v for _, v in checked]))
            self._count += len(batch) - known
            self._writes += len(batch)

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            self._check_open()
            if self._get(agent_id) is None:
                return False
            self._apply(qe.UpdateOperation.delete_points([point_id(agent_id)]))
            if self._scan is not None:
                self._scan.remove(agent_id)
            self._count -= 1
            self._writes += 1
            return True

    # -- reads ------------------------------------------------------------------------------

    def _get(self, agent_id: str) -> IndexedAgent | None:
        try:
            recs = self._shard.retrieve([point_id(agent_id)], ["card", "version"], False)
        except Exception as exc:
            raise IndexBackendError(f"qdrant retrieve failed: {exc}") from exc
        return _agent(recs[0].payload) if recs else None

    def get(self, agent_id: str) -> IndexedAgent | None:
        with self._lock:
            self._check_open()
            return self._get(agent_id)

    def agents(self) -> list[IndexedAgent]:
        out: list[IndexedAgent] = []
        offset: Any = None
        with self._lock:
            self._check_open()
            while True:
                try:
                    recs, offset = self._shard.scroll(
                        qe.ScrollRequest(offset=offset, limit=1000, with_payload=["card", "version"])
                    )
                except Exception as exc:
                    raise IndexBackendError(f"qdrant scroll failed: {exc}") from exc
                out += [_agent(r.payload) for r in recs]
                if offset is None:
                    return out

    def search(self, queries: FloatArray, k: int, constraints: TaskConstraints | None = None) -> list[list[Hit]]:
        """For each query row, up to k agents that satisfy ``constraints`` (HNSW, or exact when small)."""
        q = check_queries(queries, k, self.dim)
        flt = to_filter(constraints) if constraints is not None else None
        with self._lock:
            self._check_open()
            try:
                way = self._route(flt, constraints)
                if way == "scan":
                    assert constraints is not None and self._scan is not None
                    return [self._scan_hits(row, constraints, k) for row in q]
                params = qe.SearchParams(exact=True) if way == "exact" else _walk(way, self._ef(way), k)
                reqs = [
                    qe.QueryRequest(
                        limit=k,
                        query=qe.Query.Nearest(row.tolist(), using=VECTOR),
                        filter=flt,
                        params=params,
                        with_payload=["card", "version"],
                    )
                    for row in q
                ]
                if len(reqs) == 1:
                    found = [self._shard.query(reqs[0])]
                else:
                    found = self._shard.query_batch(qe.QueryBatchRequest(reqs))
            except Exception as exc:
                raise IndexBackendError(f"qdrant search failed: {exc}") from exc
        return [[Hit(agent=_agent(p.payload), similarity=float(p.score)) for p in pts] for pts in found]

    def _route(self, flt: qe.Filter | None, cons: TaskConstraints | None) -> str:
        """Exact while small; else the code scan for a filter passing few agents, ACORN for a selective
        one and the plain walk for a broad one (or none)."""
        if self._count < self.exact_below:
            way = "exact"
        elif flt is None or cons is None:
            way = "hnsw"
        else:
            passing = self._passing(flt)
            way = "scan" if self._scans(cons, passing) else self._way(passing)
        self.searches[way] += 1
        return way

    def _scans(self, cons: TaskConstraints, passing: int) -> bool:
        """Whether the code scan serves a filter the shard estimates to pass ``passing`` agents: at most
        the scan limit, and the filter requires a capability or a modality (its candidates are then
        that one's agents; without one, every agent is a candidate) or the whole index is that small."""
        if self._scan is None or passing > self.scan_limit:
            return False
        return bool(cons.required_capabilities or cons.required_modalities) or self._count <= self.scan_limit

    def _ef(self, way: str) -> int:
        return self.acorn_ef if way == "acorn" else self.ef

    def _scan_hits(self, q: FloatArray, cons: TaskConstraints, k: int) -> list[Hit]:
        """The code scan's best ``_RESCORE * k`` agents, rescored with their exact vectors (under the lock)."""
        assert self._scan is not None
        found = self._scan.top(q, cons, max(_RESCORE * k, 20))
        if not found:
            return []
        # exact vectors of the candidates, then the cards of the best k only (parsing cards costs more)
        recs = list(self._shard.retrieve([point_id(aid) for aid, _ in found], False, [VECTOR]))
        named = [r.vector for r in recs if isinstance(r.vector, dict)]
        if len(named) != len(recs):
            raise IndexBackendError("a qdrant point has no named vectors")
        sims = np.asarray([v[VECTOR] for v in named], dtype=np.float32) @ q
        order = np.argsort(-sims, kind="stable")[:k]
        cards = {r.id: r.payload for r in self._shard.retrieve([recs[i].id for i in order], ["card", "version"], False)}
        hits = [Hit(agent=_agent(cards.get(recs[i].id)), similarity=float(sims[i])) for i in order]
        # the codes and the shard change together under the lock; the reference meaning confirms
        return [h for h in hits if cons.allows(h.agent.card)]

    def _fill_scan(self) -> None:
        """Read every agent's vector and filter fields from the shard into the code scan (on open)."""
        if self._scan is None or not self._count:
            return
        t0 = time.perf_counter()
        offset: Any = None
        while True:
            recs, offset = self._shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1000, with_payload=_FILTER_FIELDS, with_vector=[VECTOR])
            )
            found = [r for r in recs if isinstance(r.vector, dict) and r.payload]
            if found:
                vecs = np.array([cast(dict[str, Any], r.vector)[VECTOR] for r in found], dtype=np.float32)
                self._scan.put([cast(AgentCard, r.payload) for r in found], vecs)
            if offset is None:
                break
        log.info("capability index: %d agents' codes read in %.1f s", len(self._scan), time.perf_counter() - t0)

    def _passing(self, flt: qe.Filter) -> int:
        """The shard's estimate, from its payload indexes, of the agents ``flt`` passes (~0.02-0.1 ms
        at 100k agents, measured)."""
        return int(self._shard.count(qe.CountRequest(exact=False, filter=flt)))

    def _way(self, passing: int) -> str:
        """How a filter passing ``passing`` agents is walked: ACORN if selective, else the plain walk."""
        return "acorn" if passing <= self.acorn_selectivity * self._count else "hnsw"

    def info(self) -> dict[str, int]:
        """Points, points in an HNSW graph, segments: how much is searched by a plain scan."""
        with self._lock:
            self._check_open()
            i = self._shard.info()
            return {
                "points": i.points_count,
                "indexed": i.indexed_vectors_count,
                "segments": i.segments_count,
            }

    # -- the graph --------------------------------------------------------------------------

    def _maybe_reindex(self) -> None:
        due = max(self.reindex_after, self._count // 10)
        if self._writes < due or self._count < self.exact_below or self._replay is not None:
            return
        if self._rebuilder is not None and self._rebuilder.is_alive():
            return
        self._rebuilder = threading.Thread(target=self._reindex_quietly, name="aos-index-optimize", daemon=True)
        self._rebuilder.start()

    def _reindex_quietly(self) -> None:
        try:
            self.optimize()
        except Exception:  # a failed rebuild leaves the live shard as it was: log, keep serving
            log.exception("building the HNSW graph of %s failed", self.root)

    def optimize(self) -> dict[str, Any]:
        """Build the HNSW graph in a child process on a copy, then swap it in (searches go on meanwhile).

        Returns what it took: seconds of copy, child build and swap, and the child's peak RSS.
        """
        with self._rebuild_lock:
            t0 = time.perf_counter()
            with self._lock:
                self._check_open()
                old_gen = self._gen
                new_gen = self.root / f"gen-{int(old_gen.name.split('-')[1]) + 1:06d}"
                shutil.rmtree(new_gen, ignore_errors=True)
                try:
                    self._shard.flush()
                    _copy_tree(old_gen, new_gen)
                except Exception as exc:
                    raise IndexBackendError(f"cannot copy the shard for a rebuild: {exc}") from exc
                self._replay = []
                self._writes = 0
            t1 = time.perf_counter()
            try:
                proc = subprocess.run(
                    [sys.executable, "-c", _OPTIMIZE, str(new_gen)], capture_output=True, text=True, check=False
                )
                if proc.returncode != 0:
                    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                    raise IndexBackendError(f"building the HNSW graph failed (exit {proc.returncode}): {tail}")
                t2 = time.perf_counter()
                with self._lock:
                    self._check_open()
                    fresh = self._load(new_gen)
                    for op in self._replay:
                        fresh.update(op)
                    old, self._shard, self._gen = self._shard, fresh, new_gen
                    self._set_current(new_gen)
                    self._replay = None
                    old.close()
            except BaseException:
                with self._lock:
                    self._replay = None
                shutil.rmtree(new_gen, ignore_errors=True)
                raise
            shutil.rmtree(old_gen, ignore_errors=True)
            t3 = time.perf_counter()
            done: dict[str, Any] = {
                "copy_s": round(t1 - t0, 3),
                "build_s": round(t2 - t1, 3),
                "swap_s": round(t3 - t2, 3),
                "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
            }
            if self.auto_calibrate:
                done["calibration"] = self._calibrate()
        return done

    # -- search effort ----------------------------------------------------------------------

    def calibrate(self, k: int = 10, probes: int = 256, seed: int = 0) -> dict[str, Any]:
        """Choose ``ef`` and ``acorn_ef`` for this index's data (run after every graph build).

        Probe queries are agents drawn at random, each moved by noise of norm 0.5 (cosine ~0.89
        to its agent: a task near an agent), with a filter made from another random agent's card
        (its tenant; half the time one of its capabilities; 30% of the time its cost and,
        independently, its p95 latency as limits). Their true top k comes from an exact search
        of the shard. Probes go the way :meth:`search` would send them (ACORN or the plain walk;
        those qdrant would scan exactly are left out), and each way gets the smallest ``ef`` on a
        ladder from its floor whose recall@k reaches ``target_recall`` while the probes' p95
        stays within ``budget_ms``; if the target is out of reach within the budget, the best
        recall within it. The choice is kept in ``<path>/calibration.json`` for the generation
        it was made on. It also times the code scan on the probes and keeps it for the filters it
        scans within 80% of the budget at p95 (``scan_below`` at most). Indexes of fewer than 1,000
        agents (or than ``exact_below``, searched exactly) are not calibrated. Cost (measured):
        ~1 s at 100k agents with 64 probes, ~5 s with 256, ~40 s at 1M (the exact searches).
        With 64 probes, ~20 reached each way and the chosen ef moved between runs: 256 it is.
        """
        with self._rebuild_lock:
            return self._calibrate(k, probes, seed)

    def _calibrate(self, k: int = 10, probes: int = 256, seed: int = 0) -> dict[str, Any]:
        t0 = time.perf_counter()
        least = max(1000, self.exact_below)  # below exact_below every search is exact anyway
        if self._count < least:
            return {"skipped": f"{self._count} agents (< {least:,})"}
        rng = np.random.default_rng(seed)
        fields = ["tenant", "capabilities", "cost", "p95_latency_ms"]
        with self._lock:
            self._check_open()
            sample = self._shard.query(
                qe.QueryRequest(limit=2 * probes, query=qe.Sample.Random, with_vector=[VECTOR], with_payload=fields)
            )
        if len(sample) < 2:
            return {"skipped": "no agents sampled"}
        groups: dict[str, list[tuple[qe.Query, qe.Filter, set[Any]]]] = {"hnsw": [], "acorn": []}
        scans: list[tuple[FloatArray, TaskConstraints, int]] = []
        full_scan = self.full_scan_kb * 1024 // (4 * self.dim)
        for i in range(min(probes, len(sample) - 1)):
            named = sample[i].vector
            if not isinstance(named, dict):
                raise IndexBackendError("a sampled qdrant point has no named vectors")
            vec = np.asarray(named[VECTOR], dtype=np.float32)
            noise = rng.normal(size=self.dim).astype(np.float32)
            vec = vec + 0.5 * noise / np.linalg.norm(noise)
            vec /= np.linalg.norm(vec)
            query = qe.Query.Nearest(vec.tolist(), using=VECTOR)
            other = sample[int(rng.integers(i + 1, len(sample)))].payload or {}
            caps = list(other.get("capabilities") or [])
            cons = TaskConstraints(
                tenant=str(other.get("tenant", "public")),
                required_capabilities=frozenset([caps[int(rng.integers(len(caps)))]])
                if caps and rng.random() < 0.5
                else frozenset(),
                max_cost=float(other["cost"]) if "cost" in other and rng.random() < 0.3 else None,
                max_latency_ms=(
                    int(other["p95_latency_ms"]) if "p95_latency_ms" in other and rng.random() < 0.3 else None
                ),
            )
            flt = to_filter(cons)
            with self._lock:
                self._check_open()
                passing = self._passing(flt)
                scans.append((vec, cons, passing))
                # the code scan's filters stay among the probes of the walks: left out, the walks of
                # filters without a required capability kept a handful of probes (8 on 100k graded
                # agents) and chose their ef on them (recall@10 0.924 where they promised 1.0, measured)
                if passing < max(full_scan, k):
                    continue  # qdrant scans these exactly whatever the ef
                truth = self._ids(query, flt, k, qe.SearchParams(exact=True))
            groups[self._way(passing)].append((query, flt, truth))
        scan = self._scan_limit(scans, k)
        chosen: dict[str, Any] = {}
        for way, floor in (("hnsw", self.ef_floor), ("acorn", self.acorn_ef_floor)):
            chosen[way] = self._climb(way, groups[way], floor, k)
        self.ef = int(chosen["hnsw"]["ef"])
        self.acorn_ef = int(chosen["acorn"]["ef"])
        report = {
            "ef": self.ef,
            "acorn_ef": self.acorn_ef,
            "target_recall": self.target_recall,
            "budget_ms": self.budget_ms,
            "ways": chosen,
            "scan": scan,
            "scan_below": self.scan_limit,
            "seconds": round(time.perf_counter() - t0, 2),
            "generation": self._gen.name,
        }
        self.calibration = report
        try:
            (self.root / _CALIBRATION).write_text(json.dumps(report, indent=1) + "\n")
        except OSError as exc:
            log.warning("cannot keep the index calibration in %s: %s", self.root, exc)
        log.info("capability index calibrated: ef %d, ACORN ef %d (%s)", self.ef, self.acorn_ef, chosen)
        return report

    def _scan_limit(self, probes: list[tuple[FloatArray, TaskConstraints, int]], k: int) -> dict[str, Any]:
        """Time the code scan on the probes and keep it for the filters it serves within ``_SCAN_SHARE``
        of the budget: the largest estimated count whose probes at or below it take at most that at
        their p95 (never more than ``scan_below``). Each probe is scanned twice, the second timed: the
        first builds the slot lists its filter needs, which then stay until their members change."""
        self.scan_limit = self.scan_below
        if self._scan is None:
            return {}
        timed: list[tuple[int, float]] = []
        for q, cons, passing in probes:
            if not self._scans(cons, passing):  # against scan_below: the limit is not chosen yet
                continue
            with self._lock:
                self._check_open()
                self._scan_hits(q, cons, k)
                t = time.perf_counter()
                self._scan_hits(q, cons, k)
                timed.append((passing, (time.perf_counter() - t) * 1000))
        if len(timed) < 10:
            return {"probes": len(timed)}
        timed.sort()
        ms = np.array([t for _, t in timed])
        p95 = [float(np.percentile(ms[: i + 1], 95)) for i in range(len(ms))]  # of the probes up to each
        within = [i for i, p in enumerate(p95) if p <= _SCAN_SHARE * self.budget_ms]
        self.scan_limit = timed[within[-1]][0] if within else 0
        return {
            "probes": len(timed),
            "p95_ms": round(p95[within[-1]], 3) if within else None,
            "slowest_ms": [round(float(t), 3) for t in ms[-3:]],
        }

    def _ids(self, query: qe.Query, flt: qe.Filter, k: int, params: qe.SearchParams) -> set[Any]:
        req = qe.QueryRequest(limit=k, query=query, filter=flt, params=params, with_payload=False)
        return {p.id for p in self._shard.query(req)}

    def _climb(
        self, way: str, probes: list[tuple[qe.Query, qe.Filter, set[Any]]], floor: int, k: int
    ) -> dict[str, Any]:
        """The smallest ef from ``floor`` up the ladder reaching the target recall within the budget."""
        if not probes:
            return {"ef": floor, "probes": 0}
        steps: list[dict[str, Any]] = []
        best: dict[str, Any] | None = None
        for ef in [floor] + [e for e in _EF_LADDER if floor < e <= self.max_ef]:
            params = _walk(way, ef, k)
            lat: list[float] = []
            recall: list[float] = []
            for query, flt, truth in probes:
                with self._lock:
                    self._check_open()
                    t = time.perf_counter()
                    got = self._ids(query, flt, k, params)
                    lat.append((time.perf_counter() - t) * 1000)
                recall.append(len(got & truth) / len(truth) if truth else 1.0)
            step = {
                "ef": ef,
                "recall": round(float(np.mean(recall)), 4),
                "p95_ms": round(float(np.percentile(lat, 95)), 3),
            }
            steps.append(step)
            if step["p95_ms"] > self.budget_ms and best is not None:
                break  # over the budget: keep the best within it
            if best is None or step["recall"] > best["recall"]:
                best = step
            if step["recall"] >= self.target_recall:
                break
        assert best is not None
        return {"ef": best["ef"], "probes": len(probes), "recall": best["recall"], "steps": steps}

    def _load_calibration(self) -> None:
        """A calibration kept for the live generation (one made on another is stale: ignored)."""
        try:
            kept = json.loads((self.root / _CALIBRATION).read_text())
        except (OSError, ValueError):
            return
        if kept.get("generation") == self._gen.name:
            self.ef = max(self.ef_floor, int(kept["ef"]))
            self.acorn_ef = max(self.acorn_ef_floor, int(kept["acorn_ef"]))
            self.scan_limit = min(self.scan_below, int(kept.get("scan_below", self.scan_below)))
            self.calibration = kept

    # -- life -------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise IndexBackendError("the qdrant index is closed")

    def close(self) -> None:
        """Flush and close the shard (a temporary index is deleted)."""
        if self._rebuilder is not None:
            self._rebuilder.join()
        with self._rebuild_lock, self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._shard.flush()
                self._shard.close()
            finally:
                if self._cleanup is not None:
                    self._cleanup()


class HybridIndex:
    """Exact search while small, qdrant HNSW once past ``threshold`` agents (the ``auto`` backend).

    The move happens once, in the writer's thread, when an upsert crosses the threshold:
    searches keep using the exact index until the qdrant one, graph built, takes over. A
    persisted qdrant index found at ``path`` is used from the start, whatever its size.
    """

    def __init__(
        self,
        dim: int,
        threshold: int,
        path: Path | str | None = None,
        **hnsw: Any,
    ) -> None:
        self.dim = dim
        self.threshold = threshold
        self._path = path
        # options of the QdrantIndex it moves to (m, ef, acorn_ef, ...): a wrong name fails here, not
        # when the index first grows past the threshold
        inspect.signature(QdrantIndex).bind_partial(dim, path, **hnsw)
        self._hnsw = hnsw
        self._lock = threading.Lock()
        self._active: CapabilityIndex = (
            self._qdrant() if path is not None and QdrantIndex.exists(path) else ExactIndex(dim)
        )

    def _qdrant(self) -> QdrantIndex:
        return QdrantIndex(self.dim, self._path, exact_below=self.threshold, **self._hnsw)

    @property
    def backend(self) -> str:
        """Which index serves searches now: ``exact`` or ``qdrant``."""
        return "exact" if isinstance(self._active, ExactIndex) else "qdrant"

    def __len__(self) -> int:
        return len(self._active)

    def upsert(self, card: AgentCard, vector: FloatArray) -> IndexedAgent:
        with self._lock:
            entry = self._active.upsert(card, vector)
            if isinstance(self._active, ExactIndex) and len(self._active) > self.threshold:
                self._move_to_qdrant(self._active)
            return entry

    def _move_to_qdrant(self, exact: ExactIndex) -> None:
        log.info("capability index: %d agents > %d, moving to qdrant HNSW", len(exact), self.threshold)
        q = self._qdrant()
        try:
            q.put_many(exact.entries())
            q.optimize()
        except BaseException:
            q.close()
            raise
        self._active = q

    def remove(self, agent_id: str) -> bool:
        with self._lock:
            return self._active.remove(agent_id)

    def get(self, agent_id: str) -> IndexedAgent | None:
        return self._active.get(agent_id)

    def agents(self) -> list[IndexedAgent]:
        return self._active.agents()

    def search(self, queries: FloatArray, k: int, constraints: TaskConstraints | None = None) -> list[list[Hit]]:
        return self._active.search(queries, k, constraints)

    def close(self) -> None:
        with self._lock:
            self._active.close()
