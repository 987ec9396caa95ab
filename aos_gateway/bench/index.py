"""``aos bench index``: the capability index backends on N synthetic agents, side by side.

Agents are random unit vectors around cluster centres (as embeddings of similar cards are;
``--data graded`` nests the clusters in domains and areas, see :func:`synthetic_agents`),
with realistic payloads: most public, the rest spread over tenants; 1-5 capabilities from a
skewed vocabulary; log-normal costs and p95 latencies; some DEGRADED and INACTIVE. Queries
lie near agents and carry filters (tenant always, often a capability, a cost or a latency
limit), as tasks do.

For each backend: build time (every card through ``upsert``, then the HNSW graph for qdrant,
built once after the load: background rebuilds are off in the bench),
memory (RSS growth after the build and peak growth during it; the graph is built in a child
process, reported apart), search latency at batch 1 (p50/p95/p99 over the queries) and
recall@10 against exact search with the same filters, computed by a separate vectorised scan.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import resource
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import ConfigError
from aos_gateway.matching.filters import TaskConstraints
from aos_gateway.matching.index import CapabilityIndex, ExactIndex, hnsw_options
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.settings import Settings

DIM = 384
K = 10
BACKENDS = ("exact", "qdrant")
_STATUSES = np.array(["ACTIVE", "DEGRADED", "INACTIVE"])
DATA_MODELS = ("graded", "flat")
# weights of the levels of a graded agent vector (squares: the share of its direction)
_W_SHARED, _W_AREA, _W_DOMAIN, _W_CLUSTER, _W_NOISE = (w**0.5 for w in (0.08, 0.12, 0.17, 0.23, 0.40))


@dataclass
class Agents:
    """The synthetic agents, with their payload as columns for the exact (vectorised) scan."""

    cards: list[AgentCard]
    vectors: FloatArray
    tenant: npt.NDArray[np.int32]  # 0 = public
    usable: npt.NDArray[np.bool_]
    caps: npt.NDArray[np.bool_]  # agents x vocabulary
    cost: npt.NDArray[np.float64]
    latency: npt.NDArray[np.int64]
    cluster: npt.NDArray[np.int64]  # the centre each agent was drawn around (domain = // 10, area = // 100)


def _unit(a: npt.NDArray[np.floating[Any]]) -> FloatArray:
    out: FloatArray = (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
    return out


def _cap(i: int) -> str:
    return f"cap-{i:03d}"


def _tenant(i: int) -> str:
    return "public" if i == 0 else f"tenant-{i:02d}"


def synthetic_agents(
    n: int,
    dim: int = DIM,
    seed: int = 0,
    n_caps: int = 200,
    n_tenants: int = 50,
    per_cluster: int = 100,
    data: str = "flat",
) -> Agents:
    """N agents: clustered unit vectors and realistic payloads (reproducible from ``seed``).

    ``per_cluster`` agents share a centre (similar cards). Members of a cluster are about equally
    similar to a query near it, so the more of them pass a filter, the more the true top 10 is
    decided by noise (at 1,000 per cluster, ranks 2-50 lie within 0.05 cosine, measured): a
    harder, less meaningful test of an approximate index. Until 2026-11-29 the clusters were
    capped at 1,000 (the same data up to 100k agents; at 1M, 1,000 agents per cluster).

    ``data`` shapes the vectors (the payloads are the same draws either way):

    - ``flat`` (default; every figure recorded before 2026-11-29): independent cluster centres,
      so an agent is similar to its ~100 cluster-mates and to nothing else (cosine ~0 +- 0.05).
      A filter that leaves one or two cluster-mates makes the rest of the true top 10 the
      extreme tail of that noise (at 1M agents, filters passing < 2%: median cosine 0.47 at
      rank 1, then 0.19 / 0.16 / 0.12 at ranks 2 / 10 / 100, measured), which no approximate
      index is built to find.
    - ``graded``: clusters nested in domains (10 clusters) nested in areas (10 domains), plus a
      direction all agents share, so similarity falls off by steps beyond the cluster, as between
      real embeddings (all-MiniLM-L6-v2 on MetaTool, a dev task against the 10,315 training
      tasks: median cosine 0.80 / 0.58 / 0.37 / 0.20 at ranks 1 / 10 / 100 / 1,000, unrelated
      pairs 0.08 on average; measured 2026-11-29). Level weights give plateaus of about 0.6
      (cluster), 0.37 (domain), 0.2 (area) and 0.08 (unrelated). Within a cluster the mates
      are nearly equidistant (as in ``flat``), unlike real data, whose similarity keeps falling.
    """
    if data not in DATA_MODELS:
        raise ConfigError(f"unknown synthetic data {data!r}: use {', '.join(DATA_MODELS)}")
    rng = np.random.default_rng(seed)
    n_clusters = max(1, n // max(1, per_cluster))
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    if data == "graded":
        # unit directions per level from their own stream (the payload draws below stay the same)
        lv = np.random.default_rng([seed, 7])
        shared = _unit(lv.normal(size=dim))
        areas = _unit(lv.normal(size=(-(-n_clusters // 100), dim)))
        domains = _unit(lv.normal(size=(-(-n_clusters // 10), dim)))
        ids = np.arange(n_clusters)
        centres = (
            _W_SHARED * shared
            + _W_AREA * areas[ids // 100]
            + _W_DOMAIN * domains[ids // 10]
            + _W_CLUSTER * _unit(centres)
        )
    vecs = np.empty((n, dim), dtype=np.float32)
    cluster = np.empty(n, dtype=np.int64)
    step = 50_000
    for s in range(0, n, step):
        m = min(step, n - s)
        own = cluster[s : s + m] = rng.integers(0, n_clusters, m)
        noise = rng.normal(size=(m, dim)).astype(np.float32)
        if data == "graded":
            v = centres[own] + _W_NOISE * noise / np.sqrt(dim, dtype=np.float32)
        else:
            v = centres[own] + 0.9 * noise
        vecs[s : s + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    # 70% public; the rest over tenants with a skew (a few large tenants, many small)
    tenant = np.where(rng.random(n) < 0.7, 0, 1 + np.minimum(rng.zipf(1.5, n) - 1, n_tenants - 1)).astype(np.int32)
    status = rng.choice(3, n, p=[0.85, 0.10, 0.05])
    caps = np.zeros((n, n_caps), dtype=np.bool_)
    n_own = rng.integers(1, 6, n)
    for j in range(5):
        pick = np.minimum(rng.zipf(1.3, n) - 1, n_caps - 1)
        caps[np.arange(n)[n_own > j], pick[n_own > j]] = True
    cost = np.round(rng.lognormal(-3.0, 1.2, n), 4)
    latency = np.clip(rng.lognormal(6.5, 0.9, n), 20, 60_000).astype(np.int64)
    image = rng.random(n) < 0.1
    cards = [
        AgentCard(
            agent_id=f"agent-{i:07d}",
            name=f"agent {i}",
            description=f"synthetic agent {i}",
            capabilities=[_cap(int(c)) for c in np.flatnonzero(caps[i])],
            modalities=["text", "image"] if image[i] else ["text"],
            examples=[],
            tenant=_tenant(int(tenant[i])),
            cost=float(cost[i]),
            p95_latency_ms=int(latency[i]),
            status=str(_STATUSES[status[i]]),  # type: ignore[typeddict-item]
            invocation_topic=None,
            updated_at=0,
            metadata={},
        )
        for i in range(n)
    ]
    return Agents(cards, vecs, tenant, status < 2, caps, cost, latency, cluster)


def synthetic_queries(
    agents: Agents, q: int, seed: int = 1, n_tenants: int = 50
) -> tuple[FloatArray, list[TaskConstraints]]:
    """Q queries near agents, each with a filter like a task's."""
    rng = np.random.default_rng(seed)
    n, dim = agents.vectors.shape
    base = agents.vectors[rng.integers(0, n, q)] + 0.5 * rng.normal(size=(q, dim)).astype(np.float32) / np.sqrt(dim)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    cost_q = np.quantile(agents.cost, [0.5, 0.9])
    lat_q = np.quantile(agents.latency, [0.5, 0.9])
    cons = []
    for _ in range(q):
        caps = frozenset([_cap(int(min(rng.zipf(1.3) - 1, 19)))]) if rng.random() < 0.5 else frozenset()
        cons.append(
            TaskConstraints(
                tenant=_tenant(int(rng.integers(1, n_tenants))),
                required_capabilities=caps,
                max_cost=float(cost_q[rng.integers(0, 2)]) if rng.random() < 0.3 else None,
                max_latency_ms=int(lat_q[rng.integers(0, 2)]) if rng.random() < 0.3 else None,
            )
        )
    return base.astype(np.float32), cons


def _mask(agents: Agents, c: TaskConstraints) -> npt.NDArray[np.bool_]:
    tenant_id = 0 if c.tenant == "public" else int(c.tenant.split("-")[1])
    m: npt.NDArray[np.bool_] = agents.usable & ((agents.tenant == 0) | (agents.tenant == tenant_id))
    for cap in c.required_capabilities:
        m &= agents.caps[:, int(cap.split("-")[1])]
    if c.max_cost is not None:
        m &= agents.cost <= c.max_cost
    if c.max_latency_ms is not None:
        m &= agents.latency <= c.max_latency_ms
    return m


def exact_truth(
    agents: Agents, queries: FloatArray, cons: list[TaskConstraints], k: int = K, passing: list[int] | None = None
) -> list[list[int]]:
    """The true top-k rows per query under its filter, by a vectorised scan (not through any backend).
    ``passing``, when given, receives how many agents each query's filter lets through."""
    out: list[list[int]] = []
    for s in range(0, len(cons), 32):
        sims = queries[s : s + 32] @ agents.vectors.T
        for row, c in zip(sims, cons[s : s + 32], strict=True):
            m = _mask(agents, c)
            row = np.where(m, row, -np.inf)
            cnt = int(m.sum())
            if passing is not None:
                passing.append(cnt)
            if cnt == 0:
                out.append([])
                continue
            kk = min(k, cnt)
            top = np.argpartition(-row, kk - 1)[:kk]
            out.append([int(j) for j in top[np.argsort(-row[top])]])
    return out


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of this process, in MB."""
    cur = peak = 0.0
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur = int(line.split()[1]) / 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) / 1024
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return cur, peak


def _reset_peak() -> None:
    with contextlib.suppress(OSError):  # Linux: writing 5 resets the peak RSS (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")


def _pct(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values)
    return {
        "p50": round(float(np.percentile(arr, 50)), 3),
        "p95": round(float(np.percentile(arr, 95)), 3),
        "p99": round(float(np.percentile(arr, 99)), 3),
        "mean": round(float(arr.mean()), 3),
    }


def _du_mb(path: Path) -> float | None:
    du = shutil.which("du")
    if du is None:
        return None
    out = subprocess.run([du, "-sk", str(path)], capture_output=True, text=True, check=False).stdout.split()
    return round(int(out[0]) / 1024, 1) if out else None


def _make(backend: str, settings: Settings, n_agents: int) -> CapabilityIndex:
    if backend == "exact":
        return ExactIndex(DIM)
    if backend == "qdrant":
        from aos_gateway.matching.qdrant_index import QdrantIndex

        # exact_below=0: measure the graph at every size (the auto backend would scan below the threshold);
        # no background rebuilds during the bulk load: the bench builds the graph once, after it
        return QdrantIndex(DIM, None, exact_below=0, reindex_after=n_agents + 1, **hnsw_options(settings))
    raise ConfigError(f"unknown bench backend {backend!r}: use {', '.join(BACKENDS)}")


BANDS = ((0.0, 0.02), (0.02, 0.07), (0.07, 0.4), (0.4, 1.0))
"""Bands of the share of agents a query's filter passes, for the recall/latency breakdown."""


def by_filter(matches: list[int], n: int, latency_ms: list[float], recalls: list[float]) -> list[dict[str, Any]]:
    """p95 latency and mean recall of the queries in each band of filter selectivity.

    ``matches``: agents each query's filter passes; the other lists run over the same queries.
    """
    out: list[dict[str, Any]] = []
    share = np.asarray(matches) / n
    lat = np.asarray(latency_ms)
    rec = np.asarray(recalls)
    for lo, hi in BANDS:
        sel = (share >= lo) & ((share < hi) if hi < 1.0 else (share <= hi))
        if sel.any():
            out.append(
                {
                    "band": f"{lo:.0%}-{hi:.0%}",
                    "queries": int(sel.sum()),
                    "p95_ms": round(float(np.percentile(lat[sel], 95)), 3),
                    "recall_at_10": round(float(rec[sel].mean()), 4),
                }
            )
    return out


def bench_backend(
    backend: str,
    settings: Settings,
    agents: Agents,
    queries: FloatArray,
    cons: list[TaskConstraints],
    truth: list[list[int]],
    matches: list[int],
    progress: Callable[[str], None],
) -> dict[str, Any]:
    """Build one backend from the agents, search every query at batch 1, compare with the truth."""
    from aos_gateway.matching.qdrant_index import QdrantIndex

    n = len(agents.cards)
    gc.collect()
    rss0, _ = _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    idx = _make(backend, settings, n)
    try:
        every = max(1, n // 10)
        last = time.perf_counter()
        for i, (card, vec) in enumerate(zip(agents.cards, agents.vectors, strict=True)):
            idx.upsert(card, vec)
            if (i + 1) % every == 0 or time.perf_counter() - last > 30:
                last = time.perf_counter()
                progress(f"bench index: {backend}: {i + 1}/{n} upserted ({last - t0:.0f} s)")
        t_upsert = time.perf_counter() - t0
        graph: dict[str, Any] = {}
        if isinstance(idx, QdrantIndex):
            progress(f"bench index: {backend}: building the HNSW graph (child process)")
            graph = idx.optimize()
        build_s = time.perf_counter() - t0
        _, peak1 = _rss_mb()
        progress(f"bench index: {backend}: built in {build_s:.1f} s; searching {len(cons)} queries")
        lat: list[float] = []
        hits_total = violations = 0
        recalls: list[float] = []
        # one BLAS thread, as the eval (measured: 2 threads spin); set once around the loop: entering
        # threadpool_limits inspects the loaded libraries, ~1.2 ms a time (measured), which the
        # figures recorded before 2026-11-29 carried in every query
        with threadpool_limits(1, user_api="blas"):
            for q, c, want in zip(queries, cons, truth, strict=True):
                s = time.perf_counter()
                (hits,) = idx.search(q, K, c)
                lat.append((time.perf_counter() - s) * 1000)
                got = [int(h.agent.card["agent_id"].split("-")[1]) for h in hits]
                violations += sum(not c.allows(h.agent.card) for h in hits)
                hits_total += len(hits)
                recalls.append(len(set(got) & set(want)) / len(want) if want else float(not got))
        rss2, peak2 = _rss_mb()
        report: dict[str, Any] = {
            "backend": backend,
            "build_s": round(build_s, 3),
            "upsert_s": round(t_upsert, 3),
            "upserts_per_s": round(n / t_upsert, 1),
            "rss_delta_mb": round(rss2 - rss0, 1),
            "peak_rss_delta_mb": round(max(peak1, peak2) - rss0, 1),
            "latency_ms": _pct(lat),
            "recall_at_10": round(float(np.mean(recalls)), 4),
            "filter_violations": violations,
            "mean_hits": round(hits_total / len(cons), 2),
            "by_filter": by_filter(matches, n, lat, recalls),
        }
        if isinstance(idx, QdrantIndex):
            report["graph"] = graph
            report["disk_mb"] = _du_mb(idx.root)
            report["shard"] = idx.info()
            report["search_paths"] = dict(idx.searches)
        return report
    finally:
        idx.close()
        del idx
        gc.collect()


def run(
    settings: Settings,
    n: int,
    n_queries: int,
    backends: list[str],
    progress: Callable[[str], None],
    seed: int = 0,
    query_seed: int | None = None,
    per_cluster: int = 100,
    data: str = "flat",
) -> dict[str, Any]:
    """The whole bench: data, exact truth, then each backend in turn (one at a time in memory)."""
    if n < 1 or n_queries < 1 or per_cluster < 1:
        raise ConfigError("--n, --queries and --per-cluster must be at least 1")
    for b in backends:
        if b not in BACKENDS:
            raise ConfigError(f"unknown bench backend {b!r}: use {', '.join(BACKENDS)}")
    t = time.perf_counter()
    progress(f"bench index: generating {n} agents x {DIM} dims")
    agents = synthetic_agents(n, DIM, seed, per_cluster=per_cluster, data=data)
    qseed = seed + 1 if query_seed is None else query_seed
    queries, cons = synthetic_queries(agents, n_queries, qseed)
    progress(f"bench index: exact top-{K} for {n_queries} filtered queries ({time.perf_counter() - t:.0f} s)")
    matches: list[int] = []  # agents passing each query's filter
    truth = exact_truth(agents, queries, cons, passing=matches)
    report: dict[str, Any] = {
        "n": n,
        "dim": DIM,
        "queries": n_queries,
        "k": K,
        "seeds": {"agents": seed, "queries": qseed},
        "per_cluster": per_cluster,
        "data": data,
        "hnsw": hnsw_options(settings),
        "filter_matches": {
            "median": int(np.median(matches)),
            "min": int(min(matches)),
            "under_k": sum(x < K for x in matches),
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "load_avg_1m": os.getloadavg()[0]},
        "backends": {},
    }
    for b in backends:
        report["backends"][b] = bench_backend(b, settings, agents, queries, cons, truth, matches, progress)
    report["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    be = report["backends"]
    if "exact" in be and "qdrant" in be:
        report["speedup_p50"] = round(be["exact"]["latency_ms"]["p50"] / be["qdrant"]["latency_ms"]["p50"], 2)
        report["speedup_p95"] = round(be["exact"]["latency_ms"]["p95"] / be["qdrant"]["latency_ms"]["p95"], 2)
    return report


def format_report(r: dict[str, Any]) -> str:
    fm = r["filter_matches"]
    h = r["hnsw"]
    lines = [
        f"{r['n']} agents x {r['dim']} dims ({r['data']} data, {r['per_cluster']} per cluster, "
        f"seed {r['seeds']['agents']}), "
        f"{r['queries']} filtered queries "
        f"(seed {r['seeds']['queries']}) at batch 1, k={r['k']} "
        f"(agents passing a query's filter: median {fm['median']}, min {fm['min']}, {fm['under_k']} under k)",
        f"HNSW m={h['m']} ef_construct={h['ef_construct']} ef={h['ef']} (ACORN ef={h['acorn_ef']} for filters "
        f"passing <= {h['acorn_selectivity']:.0%}; code scan for filters passing <= {h['scan_below']:,} agents)"
        f"{'; calibrated from these floors' if h.get('calibrate') else ''}; "
        f"{r['machine']['cpus']} cpus, "
        f"load {r['machine']['load_avg_1m']:.1f} -> {r['machine']['load_avg_1m_end']:.1f}",
        f"{'backend':<8} {'build s':>9} {'upsert/s':>9} {'RSS +MB':>8} {'peak +MB':>9} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'recall@10':>9} {'bad':>4}",
    ]
    for name, b in r["backends"].items():
        lat = b["latency_ms"]
        lines.append(
            f"{name:<8} {b['build_s']:>9.1f} {b['upserts_per_s']:>9.0f} {b['rss_delta_mb']:>8.0f} "
            f"{b['peak_rss_delta_mb']:>9.0f} {lat['p50']:>8.2f} {lat['p95']:>8.2f} {lat['p99']:>8.2f} "
            f"{b['recall_at_10']:>9.4f} {b['filter_violations']:>4}"
        )
        if "graph" in b:
            g = b["graph"]
            lines.append(
                f"         graph: copy {g['copy_s']} s, build {g['build_s']} s (child process, peak RSS "
                f"{g['child_peak_rss_mb']} MB), swap {g['swap_s']} s; on disk {b['disk_mb']} MB"
            )
            cal = g.get("calibration")
            if cal is not None and "ways" in cal:
                ways = cal["ways"]
                lines.append(
                    f"         calibrated in {cal['seconds']} s (target recall {cal['target_recall']}, budget "
                    f"{cal['budget_ms']} ms): ef {cal['ef']} (probe recall {ways['hnsw'].get('recall', '-')}, "
                    f"{ways['hnsw']['probes']} probes), ACORN ef {cal['acorn_ef']} (probe recall "
                    f"{ways['acorn'].get('recall', '-')}, {ways['acorn']['probes']} probes); code scan for "
                    f"filters passing <= {cal['scan_below']:,} agents (p95 {cal['scan'].get('p95_ms', '-')} ms on "
                    f"{cal['scan'].get('probes', 0)} probes)"
                )
            sp = b["search_paths"]
            lines.append(
                f"         searches: {sp['scan']} code scan, {sp['hnsw']} plain HNSW, {sp['acorn']} ACORN, "
                f"{sp['exact']} exact"
            )
        lines.append(
            "         by the share of agents a filter passes: "
            + "; ".join(
                f"{f['band']}: {f['queries']} queries, p95 {f['p95_ms']:.2f} ms, recall {f['recall_at_10']:.3f}"
                for f in b["by_filter"]
            )
        )
    if "speedup_p50" in r:
        lines.append(f"exact/qdrant latency: p50 x{r['speedup_p50']}, p95 x{r['speedup_p95']}")
    return "\n".join(lines)
