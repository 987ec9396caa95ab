"""One contract for every capability index backend: the same writes must give the same answers.

Backends: exact, qdrant-edge (temporary; HNSW graph built; filtered searches served by its code
scan, or, in ``qdrant-graph``, by the graph), qdrant-edge persisted and reopened between writes and
reads (the code scan refilled from the shard), the hybrid across its threshold, and Weaviate when
``AOS_WEAVIATE__URL`` names a server (none can run here: skipped otherwise).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError, IndexBackendError, MissingExtraError, ValidationError
from aos_gateway.matching.cards import card_from_json
from aos_gateway.matching.filters import TaskConstraints
from aos_gateway.matching.index import CapabilityIndex, ExactIndex, IndexedAgent, make_index
from aos_gateway.matching.qdrant_index import HybridIndex, QdrantIndex, to_filter
from aos_gateway.settings import Settings, WeaviateSettings


def card(aid: str, **kw: object) -> AgentCard:
    return card_from_json({"agent_id": aid, "description": f"{aid} agent", **kw}, now_ms=1)


@dataclass
class Backend:
    name: str
    make: Callable[[int], CapabilityIndex]
    reopen: Callable[[CapabilityIndex], CapabilityIndex]


def _same(idx: CapabilityIndex) -> CapabilityIndex:
    return idx


def _optimized(idx: CapabilityIndex) -> CapabilityIndex:
    assert isinstance(idx, QdrantIndex)
    idx.optimize()
    return idx


def _backends(tmp: Path) -> dict[str, Backend]:
    def persisted(dim: int) -> CapabilityIndex:
        return QdrantIndex(dim, tmp / f"q{dim}-{uuid.uuid4().hex[:6]}")

    def reopen(idx: CapabilityIndex) -> CapabilityIndex:
        assert isinstance(idx, QdrantIndex)
        idx.close()
        return QdrantIndex(idx.dim, idx.root)

    out = {
        "exact": Backend("exact", ExactIndex, _same),
        "qdrant": Backend("qdrant", lambda d: QdrantIndex(d), _optimized),
        # filtered searches through the graph (no code scan), as at 1M agents for broad filters
        "qdrant-graph": Backend("qdrant-graph", lambda d: QdrantIndex(d, scan_below=0), _optimized),
        "qdrant-persisted": Backend("qdrant-persisted", persisted, reopen),
        # threshold 3: the filter fixture (7 agents) and the recall data cross it
        "hybrid": Backend("hybrid", lambda d: HybridIndex(d, threshold=3), _same),
    }
    url = os.environ.get("AOS_WEAVIATE__URL")
    if url:
        from aos_gateway.matching.weaviate_index import WeaviateIndex

        def weaviate(dim: int) -> CapabilityIndex:
            ws = WeaviateSettings(url=url, collection=f"AosTest{uuid.uuid4().hex[:10]}")
            return WeaviateIndex.connect(ws, dim)

        out["weaviate"] = Backend("weaviate", weaviate, _same)
    return out


BACKENDS = ["exact", "qdrant", "qdrant-graph", "qdrant-persisted", "hybrid", "weaviate"]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    found = _backends(tmp_path_factory.mktemp("index"))
    if request.param not in found:
        pytest.skip("Weaviate contract: set AOS_WEAVIATE__URL to a running server (none can run on this machine)")
    return found[request.param]


@pytest.fixture
def index_factory(backend: Backend) -> Iterator[Callable[[int], CapabilityIndex]]:
    made: list[CapabilityIndex] = []

    def factory(dim: int) -> CapabilityIndex:
        idx = backend.make(dim)
        made.append(idx)
        return idx

    yield factory
    for idx in made:
        drop = getattr(idx, "drop", None)
        if drop is not None:
            drop()
        idx.close()


@pytest.fixture(scope="module")
def seven(backend: Backend) -> Iterator[CapabilityIndex]:
    """The seven agents of AGENTS in one index per backend, reopened once; tests only read it."""
    idx = reopen(backend, filled(backend.make))
    yield idx
    drop = getattr(idx, "drop", None)
    if drop is not None:
        drop()
    idx.close()


def reopen(backend: Backend, idx: CapabilityIndex) -> CapabilityIndex:
    return backend.reopen(idx)


def unit(*xs: float) -> np.ndarray:  # type: ignore[type-arg]
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


QUERY = unit(1, 0, 0, 0)
# similarity to QUERY falls from a to g, so the expected order is the alphabet
AGENTS: dict[str, tuple[dict[str, object], np.ndarray]] = {  # type: ignore[type-arg]
    "a": ({"capabilities": ["x"], "cost": 0.0, "p95_latency_ms": 100}, unit(1, 0.00, 0, 0)),
    "b": ({"capabilities": ["x", "y"], "cost": 5.0, "p95_latency_ms": 100}, unit(1, 0.10, 0, 0)),
    "c": ({"tenant": "acme", "capabilities": ["y"], "cost": 1.0, "p95_latency_ms": 50}, unit(1, 0.20, 0, 0)),
    "d": ({"status": "INACTIVE", "capabilities": ["x"]}, unit(1, 0.30, 0, 0)),
    "e": ({"status": "DEGRADED", "cost": 2.0, "p95_latency_ms": 3000}, unit(1, 0.40, 0, 0)),
    "f": ({"tenant": "zeta", "capabilities": ["x"]}, unit(1, 0.50, 0, 0)),
    "g": ({"modalities": ["text", "image"], "cost": 0.5, "p95_latency_ms": 500}, unit(1, 0.60, 0.1, 0)),
}


def filled(factory: Callable[[int], CapabilityIndex]) -> CapabilityIndex:
    idx = factory(4)
    for aid, (kw, vec) in AGENTS.items():
        idx.upsert(card(aid, **kw), vec)
    return idx


def ids(idx: CapabilityIndex, cons: TaskConstraints | None, k: int = 10) -> list[str]:
    (hits,) = idx.search(QUERY, k, cons)
    return [h.agent.card["agent_id"] for h in hits]


def cons(tenant: str = "t1", caps: tuple[str, ...] = (), **kw: object) -> TaskConstraints:
    return TaskConstraints(
        tenant=tenant,
        required_capabilities=frozenset(caps),
        max_cost=kw.get("max_cost"),  # type: ignore[arg-type]
        max_latency_ms=kw.get("max_latency_ms"),  # type: ignore[arg-type]
        required_modalities=frozenset(kw.get("modalities", ())),  # type: ignore[call-overload]
    )


def test_upsert_replace_and_versions(backend: Backend, index_factory: Callable[[int], CapabilityIndex]) -> None:
    idx = index_factory(4)
    assert len(idx) == 0
    assert idx.upsert(card("a", capabilities=["x"]), unit(1, 0, 0, 0)).version == 1
    assert idx.upsert(card("a", capabilities=["x"]), unit(1, 0, 0, 0)).version == 1  # same card: same version
    idx.upsert(card("b"), unit(0, 1, 0, 0))
    idx = reopen(backend, idx)
    assert idx.upsert(card("a", capabilities=["x", "y"]), unit(0, 0, 1, 0)).version == 2
    idx = reopen(backend, idx)
    got = idx.get("a")
    assert got is not None and got.version == 2 and got.card["capabilities"] == ["x", "y"]
    assert got.card == card("a", capabilities=["x", "y"])  # the whole card comes back unchanged
    assert idx.get("nobody") is None and len(idx) == 2
    # the replaced vector is the one searched: a now sits at (0, 0, 1, 0)
    (hits,) = idx.search(unit(0, 0, 1, 0), 1, None)
    assert hits[0].agent.card["agent_id"] == "a" and hits[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert sorted(a.card["agent_id"] for a in idx.agents()) == ["a", "b"]
    assert {a.card["agent_id"]: a.version for a in idx.agents()} == {"a": 2, "b": 1}


def test_remove(backend: Backend, index_factory: Callable[[int], CapabilityIndex]) -> None:
    idx = filled(index_factory)
    assert idx.remove("a") and not idx.remove("a") and not idx.remove("nobody")
    idx = reopen(backend, idx)
    assert idx.get("a") is None and len(idx) == 6
    assert ids(idx, None)[:2] == ["b", "c"]
    # a removed agent comes back as a new one: version 1 again
    assert idx.upsert(card("a", capabilities=["x"]), unit(1, 0, 0, 0)).version == 1
    assert ids(idx, None)[0] == "a"


@pytest.mark.parametrize(
    ("constraints", "expected"),
    [
        (None, ["a", "b", "c", "d", "e", "f", "g"]),  # no filter at all
        (cons(), ["a", "b", "e", "g"]),  # status: d inactive; tenant: c acme, f zeta
        (cons(tenant="acme"), ["a", "b", "c", "e", "g"]),  # own tenant + public
        (cons(tenant="public"), ["a", "b", "e", "g"]),
        (cons(caps=("x",)), ["a", "b"]),
        (cons(caps=("x", "y")), ["b"]),
        (cons(tenant="acme", caps=("y",)), ["b", "c"]),
        (cons(caps=("nope",)), []),
        (cons(max_cost=1.0), ["a", "g"]),
        (cons(tenant="acme", max_cost=1.0), ["a", "c", "g"]),  # cost equal to the limit passes
        (cons(max_latency_ms=100), ["a", "b"]),  # latency equal to the limit passes
        (cons(tenant="acme", max_latency_ms=99), ["c"]),
        (cons(max_latency_ms=500, max_cost=0.5), ["a", "g"]),
        (cons(modalities=("image",)), ["g"]),
        (cons(modalities=("text",)), ["a", "b", "e", "g"]),
    ],
)
def test_filters(seven: CapabilityIndex, constraints: TaskConstraints | None, expected: list[str]) -> None:
    assert ids(seven, constraints) == expected
    # the reference meaning agrees with the hand-written expectation
    assert [a for a in AGENTS if constraints is None or constraints.allows(card(a, **AGENTS[a][0]))] == sorted(expected)


def test_k_larger_than_matches_and_k_smaller(seven: CapabilityIndex) -> None:
    idx = seven
    assert ids(idx, cons(caps=("x",)), k=50) == ["a", "b"]
    assert ids(idx, cons(), k=2) == ["a", "b"]
    (hits,) = idx.search(QUERY, 3, None)
    sims = [h.similarity for h in hits]
    assert sims == sorted(sims, reverse=True) and sims[0] == pytest.approx(1.0, abs=1e-4)


def test_batch_of_queries(seven: CapabilityIndex) -> None:
    res = seven.search(np.stack([QUERY, unit(1, 0.6, 0.1, 0)]), 1, None)
    assert [[h.agent.card["agent_id"] for h in r] for r in res] == [["a"], ["g"]]


def test_empty_index(backend: Backend, index_factory: Callable[[int], CapabilityIndex]) -> None:
    idx = index_factory(4)
    assert idx.search(np.stack([QUERY, QUERY]), 5, cons()) == [[], []]
    assert idx.search(QUERY, 5, None) == [[]]
    assert idx.agents() == [] and len(idx) == 0 and idx.get("a") is None


def test_wrong_dimension_and_bad_k(seven: CapabilityIndex) -> None:
    idx = seven
    with pytest.raises(ValidationError, match="3 dims, index has 4"):
        idx.upsert(card("z"), np.ones(3, dtype=np.float32))
    with pytest.raises(ValidationError, match="4 dims"):
        idx.search(np.ones(5, dtype=np.float32), 3, None)
    with pytest.raises(ValidationError, match="k must be"):
        idx.search(QUERY, 0, None)
    assert len(idx) == 7 and idx.get("z") is None


def _random_agents(n: int, dim: int, seed: int) -> tuple[list[AgentCard], np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, dim))
    vecs = centres[rng.integers(0, 20, n)] + 0.6 * rng.normal(size=(n, dim))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    tenants = np.array(["public", "public", "acme", "zeta"])
    cards = [
        card(
            f"r{i}",
            tenant=str(tenants[rng.integers(0, 4)]),
            capabilities=["x"] if rng.random() < 0.5 else ["y"],
            cost=float(rng.integers(0, 10)),
            status="INACTIVE" if rng.random() < 0.1 else "ACTIVE",
        )
        for i in range(n)
    ]
    return cards, vecs.astype(np.float32)


def test_recall_against_exact_search(backend: Backend, index_factory: Callable[[int], CapabilityIndex]) -> None:
    n, dim, k = 3000, 32, 10
    cards, vecs = _random_agents(n, dim, seed=7)
    idx = index_factory(dim)
    for c, v in zip(cards, vecs, strict=True):
        idx.upsert(c, v)
    idx = reopen(backend, idx)
    rng = np.random.default_rng(8)
    queries = vecs[rng.integers(0, n, 40)] + 0.3 * rng.normal(size=(40, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    c = cons(tenant="acme", caps=("x",), max_cost=6.0)
    allowed = np.array([c.allows(x) for x in cards])
    found = idx.search(queries, k, c)
    recalls = []
    for q, hits in zip(queries, found, strict=True):
        sims = np.where(allowed, vecs @ q, -np.inf)
        truth = {f"r{j}" for j in np.argsort(-sims)[:k]}
        got = [h.agent.card["agent_id"] for h in hits]
        assert len(got) == k and all(allowed[int(g[1:])] for g in got)  # every hit passes the filter
        for h in hits:  # reported similarity is the true cosine
            assert h.similarity == pytest.approx(float(vecs[int(h.agent.card["agent_id"][1:])] @ q), abs=1e-3)
        recalls.append(len(truth & set(got)) / k)
    assert float(np.mean(recalls)) >= 0.95


# -- backend specifics ----------------------------------------------------------------------


def test_hybrid_refuses_an_unknown_qdrant_option_at_once() -> None:
    with pytest.raises(TypeError, match="eff"):
        HybridIndex(4, threshold=3, eff=10)


def test_hybrid_moves_to_qdrant_past_its_threshold_keeping_versions(tmp_path: Path) -> None:
    idx = HybridIndex(4, threshold=3, path=tmp_path / "h")
    try:
        idx.upsert(card("a"), unit(1, 0, 0, 0))
        idx.upsert(card("a", capabilities=["x"]), unit(1, 0, 0, 0))
        idx.upsert(card("b"), unit(0, 1, 0, 0))
        idx.upsert(card("c"), unit(0, 0, 1, 0))
        assert idx.backend == "exact" and not QdrantIndex.exists(tmp_path / "h")
        idx.upsert(card("d"), unit(0, 0, 0, 1))
        assert idx.backend == "qdrant" and QdrantIndex.exists(tmp_path / "h")
        assert idx.get("a").version == 2  # type: ignore[union-attr]
        assert ids(idx, None, k=1) == ["a"] and len(idx) == 4
    finally:
        idx.close()
    again = HybridIndex(4, threshold=3, path=tmp_path / "h")  # a persisted index is used from the start
    try:
        assert again.backend == "qdrant" and len(again) == 4 and again.get("a").version == 2  # type: ignore[union-attr]
    finally:
        again.close()


def test_qdrant_persisted_index_of_other_dims_is_a_config_error(tmp_path: Path) -> None:
    QdrantIndex(4, tmp_path / "q").close()
    with pytest.raises(ConfigError, match="4-dim vectors, the encoder makes 8"):
        QdrantIndex(8, tmp_path / "q")


def test_qdrant_temporary_index_is_removed_and_closed_index_refuses(tmp_path: Path) -> None:
    idx = QdrantIndex(4)
    root = idx.root
    assert root.is_dir()
    idx.close()
    assert not root.exists()
    with pytest.raises(IndexBackendError, match="closed"):
        idx.search(QUERY, 1, None)


def test_qdrant_builds_the_graph_without_freezing_searches() -> None:
    """optimize() holds the GIL in-process; the child-process build must leave this thread running."""
    cards, vecs = _random_agents(3000, 64, seed=3)
    idx = QdrantIndex(64, exact_below=0)
    try:
        for c, v in zip(cards, vecs, strict=True):
            idx.upsert(c, v)
        ticks = 0
        done = threading.Event()

        def search_meanwhile() -> None:
            nonlocal ticks
            while not done.is_set():
                idx.search(vecs[ticks % 3000], 5, cons())
                ticks += 1
                time.sleep(0.005)

        t = threading.Thread(target=search_meanwhile)
        t.start()
        t0 = time.perf_counter()
        took = idx.optimize()
        elapsed = time.perf_counter() - t0
        done.set()
        t.join()
        assert idx.info()["indexed"] == 3000 and took["build_s"] > 0
        # a frozen interpreter would manage ~1 search in the whole build
        assert ticks >= max(5, elapsed * 10), (ticks, elapsed)
    finally:
        idx.close()


def test_qdrant_rebuilds_in_the_background_after_many_writes() -> None:
    # 1,500 x 32 dims is above the size at which a segment gets a graph (~1,000 vectors)
    cards, vecs = _random_agents(1500, 32, seed=5)
    idx = QdrantIndex(32, exact_below=0, reindex_after=1200)
    try:
        for c, v in zip(cards, vecs, strict=True):
            idx.upsert(c, v)
        assert idx._rebuilder is not None
        idx._rebuilder.join(120)
        info = idx.info()
        assert info["points"] == 1500 and info["indexed"] >= 1200
        assert len(idx) == 1500 and idx.get("r1499") is not None  # writes made during the rebuild were replayed
    finally:
        idx.close()


def test_qdrant_searches_selective_filters_with_acorn_and_broad_ones_plainly() -> None:
    n, dim, k = 3000, 32, 10
    cards, vecs = _random_agents(n, dim, seed=11)
    # a full-scan threshold of 4 KB (32 vectors) and no code scan: these agents are searched through the graph
    idx = QdrantIndex(dim, exact_below=0, full_scan_kb=4, scan_below=0)
    try:
        idx.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards, vecs, strict=True))
        idx.optimize()
        rng = np.random.default_rng(12)
        queries = vecs[rng.integers(0, n, 30)] + 0.3 * rng.normal(size=(30, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        selective = cons(tenant="acme", caps=("x",), max_cost=5.0)  # ~20% of the agents pass
        broad = cons(tenant="acme")  # public or acme, usable: ~67%
        for c, path in [(selective, "acorn"), (broad, "hnsw"), (None, "hnsw")]:
            before = dict(idx.searches)
            found = idx.search(queries, k, c)
            assert idx.searches[path] == before[path] + 1 and sum(idx.searches.values()) == sum(before.values()) + 1
            allowed = np.array([c is None or c.allows(x) for x in cards])
            recalls = []
            for q, hits in zip(queries, found, strict=True):
                truth = {f"r{j}" for j in np.argsort(-np.where(allowed, vecs @ q, -np.inf))[:k]}
                got = {h.agent.card["agent_id"] for h in hits}
                assert len(got) == k and all(allowed[int(g[1:])] for g in got)
                recalls.append(len(truth & got) / k)
            assert float(np.mean(recalls)) >= 0.95, (path, np.mean(recalls))
    finally:
        idx.close()
    small = QdrantIndex(dim, exact_below=10_000)
    try:
        small.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards[:50], vecs[:50], strict=True))
        small.search(vecs[0], 3, cons(tenant="acme", caps=("x",)))
        assert small.searches == {"exact": 1, "scan": 0, "hnsw": 0, "acorn": 0}
    finally:
        small.close()


def test_qdrant_serves_filters_passing_few_agents_by_its_code_scan(tmp_path: Path) -> None:
    n, dim, k = 3000, 32, 10
    cards, vecs = _random_agents(n, dim, seed=31)
    # graph walks for every filter estimated above 600 agents; a 4 KB full-scan threshold: qdrant never scans
    idx = QdrantIndex(dim, tmp_path / "idx", exact_below=0, full_scan_kb=4, scan_below=600, calibrate=False)
    rng = np.random.default_rng(32)
    queries = vecs[rng.integers(0, n, 30)] + 0.3 * rng.normal(size=(30, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    narrow = cons(tenant="acme", caps=("x",), max_cost=2.0)  # ~150 agents
    broad = cons(tenant="acme")

    def check(index: QdrantIndex, cards: list[AgentCard], vecs: np.ndarray, c: TaskConstraints, way: str) -> None:  # type: ignore[type-arg]
        before = index.searches[way]
        found = index.search(queries, k, c)
        assert index.searches[way] == before + 1
        allowed = np.array([c.allows(x) for x in cards])
        for q, hits in zip(queries, found, strict=True):
            truth = [cards[j]["agent_id"] for j in np.argsort(-np.where(allowed, vecs @ q, -np.inf))[:k]]
            got = [h.agent.card["agent_id"] for h in hits]
            if way == "scan":  # the codes rank, the exact vectors rescore: the exact answer, in order
                assert got == truth
            row = {x["agent_id"]: i for i, x in enumerate(cards)}
            for h in hits:
                assert h.similarity == pytest.approx(float(vecs[row[h.agent.card["agent_id"]]] @ q), abs=1e-5)

    try:
        idx.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards, vecs, strict=True))
        idx.optimize()
        check(idx, cards, vecs, narrow, "scan")
        check(idx, cards, vecs, broad, "hnsw")
        # few agents pass, but no capability narrows the candidates (the scan would read every agent)
        check(idx, cards, vecs, cons(tenant="acme", max_cost=0.0), "acorn")
        # writes reach the scan: a moved agent, a changed card, a removed agent
        vecs = vecs.copy()
        vecs[5] = queries[0]
        idx.upsert(card("r5", tenant="acme", capabilities=["x"], cost=1.0), vecs[5])
        cards[5] = card("r5", tenant="acme", capabilities=["x"], cost=1.0)
        best = next(i for i in range(n) if i != 5 and narrow.allows(cards[i]))
        cards[best] = card(f"r{best}", tenant="acme", capabilities=["y"])
        idx.upsert(cards[best], vecs[best])
        check(idx, cards, vecs, narrow, "scan")
        (top,) = idx.search(queries[0], 1, narrow)
        assert top[0].agent.card["agent_id"] == "r5"
        idx.remove("r5")
        assert "r5" not in {h.agent.card["agent_id"] for h in idx.search(queries[0], k, narrow)[0]}
    finally:
        idx.close()
    again = QdrantIndex(dim, tmp_path / "idx", exact_below=0, full_scan_kb=4, scan_below=600, calibrate=False)
    try:  # reopened: the codes are read back from the shard
        keep = [i for i in range(n) if i != 5]
        check(again, [cards[i] for i in keep], vecs[keep], narrow, "scan")
    finally:
        again.close()


def test_qdrant_calibrates_its_search_effort_to_its_data_and_keeps_it(tmp_path: Path) -> None:
    n, dim, k = 3000, 32, 10
    cards, vecs = _random_agents(n, dim, seed=21)
    path = tmp_path / "idx"
    # floors of 4 candidates (too few here for the target) and graph walks even for small filters (4 KB
    # full scan). The graph build and the shard's random probe sample are not repeatable: over builds
    # of these agents the plain walk's recall at the floor ranged 0.69-0.95, so the target is 0.99
    # (never reached at the floor in those builds) and the rule is checked for either outcome
    opts: dict[str, Any] = {
        "exact_below": 0,
        "full_scan_kb": 4,
        "scan_below": 0,
        "ef": 4,
        "acorn_ef": 4,
        "budget_ms": 1000.0,
        "target_recall": 0.99,
    }
    idx = QdrantIndex(dim, path, **opts)
    try:
        idx.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards, vecs, strict=True))
        report = idx.optimize()["calibration"]
        assert report == idx.calibration and (report["ef"], report["acorn_ef"]) == (idx.ef, idx.acorn_ef)
        for way in ("hnsw", "acorn"):
            w = report["ways"][way]
            assert w["probes"] >= 10, report  # both ways were probed
            steps = w["steps"]
            assert [s["ef"] for s in steps] == sorted({s["ef"] for s in steps}) and steps[0]["ef"] == 4
            # the rule: the first step reaching the target is chosen, every step before it falls short;
            # if none reaches it (the budget is generous here: the ladder's top), the best recall
            if steps[-1]["recall"] >= 0.99:
                assert w["ef"] == steps[-1]["ef"] and all(s["recall"] < 0.99 for s in steps[:-1])
            else:
                assert steps[-1]["ef"] == 512 and w["ef"] == max(steps, key=lambda s: s["recall"])["ef"]
        assert idx.ef > 4 or idx.acorn_ef > 4  # 4 candidates did not do here
        # what it chose holds on queries it never saw
        # tasks near agents, as the probes are (noise of norm ~0.5); 200 of them: the chosen ef may only
        # just reach 0.95 on its ~90 probes (seen: 0.952), and with 40 queries one suite run failed here
        rng = np.random.default_rng(22)
        queries = vecs[rng.integers(0, n, 200)] + 0.5 / dim**0.5 * rng.normal(size=(200, dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for c in (cons(tenant="acme", caps=("x",)), cons(tenant="acme")):
            allowed = np.array([c.allows(x) for x in cards])
            recalls = []
            for q, hits in zip(queries, idx.search(queries, k, c), strict=True):
                truth = {f"r{j}" for j in np.argsort(-np.where(allowed, vecs @ q, -np.inf))[:k]}
                recalls.append(len(truth & {h.agent.card["agent_id"] for h in hits}) / k)
            assert float(np.mean(recalls)) >= 0.9, (c, np.mean(recalls))
        chosen = (idx.ef, idx.acorn_ef)
    finally:
        idx.close()
    kept = json.loads((path / "calibration.json").read_text())
    assert (kept["ef"], kept["acorn_ef"]) == chosen
    again = QdrantIndex(dim, path, **opts)  # reopened: the kept choice, no new calibration
    assert (again.ef, again.acorn_ef) == chosen
    again.close()
    floor = QdrantIndex(dim, path, **{**opts, "ef": 600, "acorn_ef": 600})  # the settings stay the floor
    assert (floor.ef, floor.acorn_ef) == (600, 600)
    floor.close()
    (path / "calibration.json").write_text(json.dumps({**kept, "generation": "gen-999999"}))
    stale = QdrantIndex(dim, path, **{**opts, "budget_ms": 1e-6})  # made on another generation: ignored
    assert (stale.ef, stale.acorn_ef) == (4, 4) and stale.calibration is None
    try:
        tight = stale.calibrate()  # a budget no search meets: each way stays at its floor
        assert (tight["ef"], tight["acorn_ef"]) == (4, 4)
        assert all(len(tight["ways"][w]["steps"]) <= 2 for w in ("hnsw", "acorn"))  # the floor (and one over): stop
    finally:
        stale.close()


def test_qdrant_calibration_is_skipped_when_small_or_off() -> None:
    cards, vecs = _random_agents(1500, 8, seed=3)
    idx = QdrantIndex(8, exact_below=0, calibrate=False)
    try:
        idx.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards, vecs, strict=True))
        assert "calibration" not in idx.optimize() and idx.calibration is None
        for i in range(600):
            idx.remove(f"r{i}")
        assert idx.calibrate() == {"skipped": "900 agents (< 1,000)"}
    finally:
        idx.close()
    exact = QdrantIndex(8, exact_below=5000)  # searched exactly below 5,000: nothing to calibrate
    try:
        exact.put_many((IndexedAgent(card=c, version=1), v) for c, v in zip(cards, vecs, strict=True))
        assert exact.optimize()["calibration"] == {"skipped": "1500 agents (< 5,000)"}
    finally:
        exact.close()


def test_qdrant_filter_translation_names_every_field() -> None:
    f = to_filter(cons(tenant="acme", caps=("x", "y"), max_cost=2.0, max_latency_ms=10, modalities=("image",)))
    keys = [c.key for c in f.must or []]  # type: ignore[union-attr]
    assert keys == ["status", "tenant", "capabilities", "capabilities", "modalities", "cost", "p95_latency_ms"]
    assert [c.key for c in to_filter(cons()).must or []] == ["status", "tenant"]  # type: ignore[union-attr]


def test_weaviate_filter_translation() -> None:
    pytest.importorskip("weaviate", reason="the weaviate extra is not installed")
    from aos_gateway.matching.weaviate_index import to_weaviate_filter

    f = to_weaviate_filter(cons(tenant="acme", caps=("x", "y"), max_cost=2.0, max_latency_ms=10))
    parts = f.filters
    assert len(parts) == 5
    assert [p.target for p in parts[0].filters] == ["status", "status"]
    assert sorted(p.value for p in parts[1].filters) == ["acme", "public"]
    assert (parts[2].target, parts[2].value) == ("capabilities", ["x", "y"])
    assert (parts[3].target, parts[3].value, parts[4].value) == ("cost", 2.0, 10)


def test_weaviate_unreachable_or_unset_is_a_clear_error() -> None:
    from aos_gateway.matching.weaviate_index import WeaviateIndex

    with pytest.raises(ConfigError, match="AOS_WEAVIATE__URL"):
        WeaviateIndex.connect(WeaviateSettings(), 4)
    with pytest.raises(ConfigError, match="http"):
        WeaviateIndex.connect(WeaviateSettings(url="ftp://x"), 4)
    pytest.importorskip("weaviate", reason="the weaviate extra is not installed")
    with pytest.raises(IndexBackendError, match="cannot reach Weaviate"):
        WeaviateIndex.connect(WeaviateSettings(url="http://127.0.0.1:9", grpc_port=9, timeout_s=2), 4)


def test_weaviate_without_the_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from aos_gateway.matching.weaviate_index import WeaviateIndex

    monkeypatch.setitem(sys.modules, "weaviate", None)  # import weaviate -> ImportError
    with pytest.raises(MissingExtraError, match=r"aos-gateway\[weaviate\]"):
        WeaviateIndex.connect(WeaviateSettings(url="http://127.0.0.1:9"), 4)


def test_make_index_follows_the_settings(tmp_path: Path) -> None:
    def settings(**matching: object) -> Settings:
        return Settings.model_validate({"matching": matching})

    assert isinstance(make_index(settings(index_backend="exact"), 4), ExactIndex)
    hybrid = make_index(settings(), 4)
    assert isinstance(hybrid, HybridIndex) and hybrid.backend == "exact" and hybrid.threshold == 20_000
    q = make_index(settings(index_backend="qdrant", index_path=str(tmp_path / "q"), hnsw_ef=99, acorn_ef=20), 4)
    try:
        assert isinstance(q, QdrantIndex) and q.ef == 99 and QdrantIndex.exists(tmp_path / "q")
        assert q.acorn_ef == 20 and q.acorn_selectivity == 0.4
    finally:
        q.close()
    with pytest.raises(ConfigError, match="AOS_WEAVIATE__URL"):
        make_index(settings(index_backend="weaviate"), 4)
