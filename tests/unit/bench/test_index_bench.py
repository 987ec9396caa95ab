from __future__ import annotations

import json

import numpy as np
import pytest

from aos_gateway.bench import index as bench
from aos_gateway.cli.main import main
from aos_gateway.errors import ConfigError
from aos_gateway.settings import Settings


def test_synthetic_payloads_are_varied_and_the_truth_mask_means_what_allows_means() -> None:
    agents = bench.synthetic_agents(2000, dim=16, seed=3)
    cards = agents.cards
    assert len({c["agent_id"] for c in cards}) == 2000
    assert np.allclose(np.linalg.norm(agents.vectors, axis=1), 1.0, atol=1e-5)
    assert 0.6 < np.mean([c["tenant"] == "public" for c in cards]) < 0.8
    assert {c["status"] for c in cards} == {"ACTIVE", "DEGRADED", "INACTIVE"}
    assert all(1 <= len(c["capabilities"]) <= 5 for c in cards)
    queries, cons = bench.synthetic_queries(agents, 60, seed=4)
    assert queries.shape == (60, 16) and any(c.required_capabilities for c in cons) and any(c.max_cost for c in cons)
    for c in cons:
        assert bench._mask(agents, c).tolist() == [c.allows(card) for card in cards]


def test_exact_truth_is_the_filtered_top_k() -> None:
    agents = bench.synthetic_agents(500, dim=8, seed=1)
    queries, cons = bench.synthetic_queries(agents, 10, seed=2)
    passing: list[int] = []
    truth = bench.exact_truth(agents, queries, cons, k=5, passing=passing)
    for q, c, rows, n_ok in zip(queries, cons, truth, passing, strict=True):
        ok = [i for i, card in enumerate(agents.cards) if c.allows(card)]
        want = sorted(ok, key=lambda i: -float(agents.vectors[i] @ q))[:5]
        assert rows == want and n_ok == len(ok)


def test_run_reports_every_backend_at_a_tiny_n() -> None:
    lines: list[str] = []
    r = bench.run(Settings(), 300, 20, ["exact", "qdrant"], lines.append)
    assert set(r["backends"]) == {"exact", "qdrant"} and r["n"] == 300 and r["dim"] == 384
    ex, qd = r["backends"]["exact"], r["backends"]["qdrant"]
    assert ex["recall_at_10"] == 1.0 and ex["filter_violations"] == 0 and qd["filter_violations"] == 0
    assert qd["recall_at_10"] >= 0.9 and qd["shard"]["points"] == 300 and qd["graph"]["build_s"] > 0
    for b in (ex, qd):
        assert b["build_s"] > 0 and 0 < b["latency_ms"]["p50"] <= b["latency_ms"]["p95"] <= b["latency_ms"]["p99"]
    assert r["speedup_p50"] > 0 and any("upserted" in x for x in lines)
    assert sum(qd["search_paths"].values()) == 20 and r["seeds"] == {"agents": 0, "queries": 1}
    assert r["per_cluster"] == 100 and r["data"] == "flat"
    assert sum(b["queries"] for b in qd["by_filter"]) == 20 and "per_query" not in qd
    text = bench.format_report(r)
    assert "recall@10" in text and "exact/qdrant latency" in text and text.count("\n") >= 5
    assert "ACORN" in text and "(seed 1)" in text and "flat data, 100 per cluster" in text
    assert "by the share of agents a filter passes" in text and "calibrated from these floors" in text
    assert qd["graph"]["calibration"] == {"skipped": "300 agents (< 1,000)"}


def test_bad_arguments_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="at least 1"):
        bench.run(Settings(), 0, 5, ["exact"], print)
    with pytest.raises(ConfigError, match="unknown bench backend"):
        bench.run(Settings(), 10, 5, ["faiss"], print)


def test_cli_bench_index_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "index", "--n", "200", "--queries", "10", "--backend", "exact", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert list(out["backends"]) == ["exact"] and out["backends"]["exact"]["recall_at_10"] == 1.0
    assert out["seeds"] == {"agents": 0, "queries": 1}
    args = ["bench", "index", "--n", "200", "--queries", "10", "--backend", "exact", "--json", "--query-seed", "9"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["seeds"] == {"agents": 0, "queries": 9}
    assert main([*args, "--data", "graded"]) == 0
    graded = json.loads(capsys.readouterr().out)
    assert graded["data"] == "graded" and graded["backends"]["exact"]["by_filter"]
    with pytest.raises(SystemExit) as exc:  # a usage error: one line, exit 2
        main(["bench", "index", "--n", "0"])
    assert exc.value.code == 2 and "must be > 0" in capsys.readouterr().err


def test_per_cluster_sets_how_many_agents_share_a_centre() -> None:
    one = bench.synthetic_agents(400, dim=32, seed=5, per_cluster=400).vectors  # one centre for all (flat data)
    each = bench.synthetic_agents(400, dim=32, seed=5, per_cluster=1).vectors  # a centre each
    mean_cos = [float((v @ v.T)[np.triu_indices(400, 1)].mean()) for v in (one, each)]
    assert mean_cos[0] > 0.4 and abs(mean_cos[1]) < 0.1
    with pytest.raises(ConfigError, match="per-cluster"):
        bench.run(Settings(), 10, 5, ["exact"], print, per_cluster=0)


def test_graded_data_falls_off_by_level_and_keeps_the_payloads() -> None:
    flat = bench.synthetic_agents(20_000, seed=2)
    graded = bench.synthetic_agents(20_000, seed=2, data="graded")
    assert (flat.cluster == graded.cluster).all() and (flat.caps == graded.caps).all()
    assert [c["tenant"] for c in flat.cards] == [c["tenant"] for c in graded.cards]
    v, cl = graded.vectors, graded.cluster
    rows = np.arange(0, 20_000, 7)
    sims = v[rows] @ v.T
    same = {
        "cluster": cl[rows, None] == cl[None, :],
        "domain": (cl[rows, None] // 10 == cl[None, :] // 10) & (cl[rows, None] != cl[None, :]),
        "area": (cl[rows, None] // 100 == cl[None, :] // 100) & (cl[rows, None] // 10 != cl[None, :] // 10),
        "none": cl[rows, None] // 100 != cl[None, :] // 100,
    }
    same["cluster"] &= rows[:, None] != np.arange(20_000)[None, :]
    mean = {k: float(sims[m].mean()) for k, m in same.items()}
    # the weights' plateaus: ~0.6 / 0.37 / 0.2 / 0.08 (each pair's own noise adds +-0.05)
    for level, want in (("cluster", 0.6), ("domain", 0.37), ("area", 0.2), ("none", 0.08)):
        assert abs(mean[level] - want) < 0.03, (level, mean)
    # flat clusters share nothing beyond themselves
    fs = flat.vectors[rows] @ flat.vectors.T
    assert abs(float(fs[same["domain"]].mean())) < 0.02 and float(fs[same["cluster"]].mean()) > 0.4
    with pytest.raises(ConfigError, match="unknown synthetic data"):
        bench.synthetic_agents(10, data="zipf")


def test_by_filter_splits_queries_by_the_share_of_agents_their_filter_passes() -> None:
    bands = bench.by_filter([10, 500, 3000, 9000], 10_000, [1.0, 2.0, 3.0, 4.0], [1.0, 0.5, 0.0, 1.0])
    assert [(b["band"], b["queries"], b["recall_at_10"]) for b in bands] == [
        ("0%-2%", 1, 1.0),
        ("2%-7%", 1, 0.5),
        ("7%-40%", 1, 0.0),
        ("40%-100%", 1, 1.0),
    ]
    assert bands[3]["p95_ms"] == 4.0
    assert bench.by_filter([10_000], 10_000, [1.0], [1.0])[0]["band"] == "40%-100%"  # a filter passing all
