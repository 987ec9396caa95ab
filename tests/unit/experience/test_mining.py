from __future__ import annotations

import json
from itertools import combinations
from typing import Any

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.experience.mining import (
    DAY_MS,
    association_rules,
    binomial_z,
    cluster_tasks,
    decay_weights,
    detect_anomalies,
    mine,
    outcome_class,
    reference_rate,
    robust_center,
    success_of,
    weighted_quantile,
)
from aos_gateway.perception.vectors import pack
from aos_gateway.settings import ExperienceSettings

NOW = 1_714_521_600_000  # 2024-05-01T00:00:00Z
HOUR = 3_600_000


def _rec(eid: str, kind: str = "STEP", at: int = NOW, **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": eid,
        "task_id": f"t-{eid}",
        "tenant": "acme",
        "kind": kind,
        "plan_id": None,
        "agent_id": None,
        "agent_ids": [],
        "outcome": "SUCCEEDED",
        "latency_ms": 100,
        "cost": 0.01,
        "task_vector": None,
        "error": None,
        "feedback_score": None,
        "occurred_at": at,
        "trace_id": None,
        "metadata": {},
    }
    rec.update(over)
    return rec


def _exec(eid: str, agents: list[str], ok: bool, edges: list[list[str]] | None = None, **over: Any) -> Any:
    meta = {"edges": json.dumps(edges)} if edges is not None else {}
    return _rec(eid, "EXECUTION", agent_ids=agents, outcome="SUCCEEDED" if ok else "FAILED", metadata=meta, **over)


# --- outcomes and decay ------------------------------------------------------------------------


def test_feedback_overrides_the_outcome() -> None:
    assert success_of(_rec("a", outcome="FAILED", feedback_score=0.5)) == 1.0
    assert success_of(_rec("a", outcome="SUCCEEDED", feedback_score=0.49)) == 0.0
    assert success_of(_rec("a", outcome="PARTIAL")) == 0.5
    assert outcome_class(_rec("a", outcome="TIMED_OUT")) == "timeout"
    assert outcome_class(_rec("a", outcome="TIMED_OUT", feedback_score=0.9)) == "success"
    assert outcome_class(_rec("a", outcome="PARTIAL")) == "partial"
    assert outcome_class(_rec("a", outcome="FAILED")) == "failure"


def test_decay_halves_at_one_half_life() -> None:
    w = decay_weights([NOW, NOW - 30 * DAY_MS, NOW - 60 * DAY_MS, NOW + DAY_MS], NOW, 30.0)
    np.testing.assert_allclose(w, [1.0, 0.5, 0.25, 1.0])
    assert decay_weights([NOW - DAY_MS], NOW, 1.0)[0] == pytest.approx(0.5)
    with pytest.raises(ValidationError):
        decay_weights([NOW], NOW, 0.0)


def test_weighted_quantile_and_robust_center() -> None:
    assert weighted_quantile([5, 1, 3], 0.5) == 3
    assert weighted_quantile([1, 2, 3, 4], 0.5, [0, 0, 1, 1]) == 3
    med, spread = robust_center([10, 11, 9, 10, 1000])
    assert med == 10
    assert spread == pytest.approx(1.4826)


def test_binomial_z_is_the_exact_tail() -> None:
    assert binomial_z(2, 2, 0.5) == pytest.approx(0.6745, abs=1e-4)  # P(X >= 2) = 0.25
    assert binomial_z(1, 1, 0.5) == pytest.approx(0.0, abs=1e-9)  # P = 0.5
    assert binomial_z(3, 30, 0.02) == pytest.approx(2.0195, abs=1e-3)  # the normal approximation says 3.1
    assert binomial_z(0, 30, 0.1) == 0.0
    assert binomial_z(300, 300, 0.01) == 37.5  # beyond any doubt, still finite
    assert binomial_z(2.5, 10, 0.1) == binomial_z(2, 10, 0.1)  # a PARTIAL half rounds down


def test_reference_rate_pools_rare_failures_and_ignores_a_bad_reference() -> None:
    # 20 windows of 30 steps: 8 failures in all, most windows none (median 0)
    failures = [1.0] * 8 + [0.0] * 12
    baseline, spread = reference_rate(failures, [30.0] * 20, 3.5)
    assert baseline == pytest.approx(8.5 / 601)
    assert spread == 0.0
    with_incident, _ = reference_rate([*failures, 20.0], [30.0] * 21, 3.5)
    assert with_incident == pytest.approx(baseline)  # the incident window is not part of the pool
    bursty, _ = reference_rate([10.0, 12.0, 9.0, 11.0], [30.0] * 4, 3.5)
    assert bursty == pytest.approx(10.5 / 30, abs=0.01)


# --- clusters ----------------------------------------------------------------------------------


def _blobs(seed: int = 0, n: int = 60) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    rng = np.random.default_rng(seed)
    centers = np.eye(8, dtype=np.float32)[:3] * 10
    truth = np.repeat(np.arange(3), n)
    x = centers[truth] + rng.normal(scale=0.3, size=(3 * n, 8)).astype(np.float32)
    perm = rng.permutation(3 * n)
    return x[perm], truth[perm]


def _same_partition(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> bool:
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


@pytest.mark.parametrize("minibatch_above", [20_000, 10])
def test_clusters_recover_separated_blobs(minibatch_above: int) -> None:
    x, truth = _blobs()
    c = cluster_tasks(x, 3, seed=7, minibatch_above=minibatch_above)
    assert c.k == 3
    assert _same_partition(c.labels, truth)
    np.testing.assert_array_equal(c.assign(x), c.labels)
    again = cluster_tasks(x, 3, seed=7, minibatch_above=minibatch_above)
    np.testing.assert_array_equal(again.labels, c.labels)
    np.testing.assert_array_equal(again.centroids, c.centroids)


def test_k_is_clipped_to_the_data() -> None:
    x = np.array([[0, 0], [0, 0], [5, 5], [9, 9]], dtype=np.float32)
    c = cluster_tasks(x, 16)
    assert c.k == 3
    assert c.labels[0] == c.labels[1] != c.labels[2]
    empty = cluster_tasks(np.zeros((0, 4), dtype=np.float32), 5)
    assert empty.k == 0
    assert empty.labels.shape == (0,)
    with pytest.raises(ValidationError):
        cluster_tasks(x, 0)


def test_weights_pull_centroids_to_recent_tasks() -> None:
    x = np.array([[0.0], [10.0]], dtype=np.float32)
    c = cluster_tasks(x, 1, weights=[1.0, 3.0])
    assert c.centroids[0, 0] == pytest.approx(7.5)


def test_cluster_of_a_record() -> None:
    x, _ = _blobs()
    c = cluster_tasks(x, 3, seed=1)
    near0 = np.zeros(8, dtype=np.float32)
    near0[0] = 10
    expected = int(c.assign(near0)[0])
    assert c.cluster_of(_rec("a", task_vector=pack("fused", near0, "FLOAT32"))) == expected
    assert c.cluster_of(_rec("b", task_vector=pack("fused", np.ones(4), "FLOAT32"))) is None  # other dim
    assert c.cluster_of(_rec("c")) is None


# --- association rules -------------------------------------------------------------------------


def _team_records() -> list[Any]:
    recs = []
    for i in range(40):
        recs.append(_exec(f"ab{i}", ["A", "B"], True, [["A", "B"]]))  # A and B always succeed together
        recs.append(_exec(f"ac{i}", ["A", "C"], i % 2 == 0, [["A", "C"]]))  # A with C: half the time
        recs.append(_exec(f"bc{i}", ["B", "C"], i % 4 == 0, [["C", "B"]]))  # B with C: a quarter
    return recs


def test_a_pair_that_always_succeeds_has_lift_above_one() -> None:
    rules = {(r.antecedent, r.consequent): r for r in association_rules(_team_records(), 0.05, 0.3)}
    ab = rules[(("A", "B"), "success")]
    assert ab.confidence == pytest.approx(1.0)
    assert ab.count == 40
    assert ab.support == pytest.approx(40 / 120)
    base = (40 + 20 + 10) / 120
    assert ab.lift == pytest.approx(1 / base)
    assert ab.lift > 1
    assert rules[(("A->B",), "success")].lift == pytest.approx(ab.lift)
    bc_fail = rules[(("B", "C"), "failure")]
    assert bc_fail.confidence == pytest.approx(0.75)
    assert bc_fail.lift > 1
    assert (("B", "C"), "success") not in rules  # confidence 0.25 < 0.3
    assert next(iter(association_rules(_team_records(), 0.05, 0.3))).lift >= ab.lift  # sorted by lift


def test_redelivered_executions_count_once() -> None:
    recs = _team_records()
    twice = association_rules(recs + recs[:30], 0.05, 0.3)
    assert twice == association_rules(recs, 0.05, 0.3)


def test_step_records_are_not_transactions() -> None:
    steps = [_rec(f"s{i}", agent_id="A", agent_ids=["A"]) for i in range(10)]
    assert association_rules(steps, 0.01, 0.0) == []


def test_executions_without_agents_do_not_move_the_base_rate() -> None:
    unjoined_feedback = [_exec(f"fb{i}", [], False) for i in range(100)]
    assert association_rules(_team_records() + unjoined_feedback, 0.05, 0.3) == association_rules(
        _team_records(), 0.05, 0.3
    )


def test_weights_change_supports_but_not_counts() -> None:
    recs = _team_records()
    w = [0.0 if r["outcome"] == "FAILED" else 1.0 for r in recs]  # forget every failure
    rules = {(r.antecedent, r.consequent): r for r in association_rules(recs, 0.01, 0.0, weights=w)}
    assert rules[(("A", "C"), "success")].confidence == pytest.approx(1.0)
    assert rules[(("A", "C"), "success")].count == 40
    assert (("A", "C"), "failure") not in rules  # no weight left on failures


def test_apriori_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    agents = list("ABCDEF")
    recs = []
    for i in range(300):
        team = sorted(rng.choice(agents, size=int(rng.integers(1, 5)), replace=False).tolist())
        p = 0.9 if {"A", "B"} <= set(team) else 0.5
        recs.append(_exec(f"x{i}", team, bool(rng.random() < p)))
    weights = rng.uniform(0.1, 1.0, size=len(recs))
    min_support, min_conf = 0.03, 0.2
    got = {(r.antecedent, r.consequent): r for r in association_rules(recs, min_support, min_conf, weights=weights)}
    total = weights.sum()
    ok = np.array([success_of(r) for r in recs])
    base = (weights * ok).sum() / total
    want = {}
    for size in (1, 2, 3):
        for combo in combinations(agents, size):
            has = np.array([set(combo) <= set(r["agent_ids"]) for r in recs])
            wx = weights[has].sum()
            if wx / total < min_support:
                continue
            for cons, joint, b in (
                ("success", (weights * ok)[has].sum(), base),
                ("failure", (weights * (1 - ok))[has].sum(), 1 - base),
            ):
                if joint / total >= min_support and joint / wx >= min_conf:
                    want[(combo, cons)] = (joint / total, joint / wx, joint / wx / b, int(has.sum()))
    assert set(got) == set(want)
    for key, (support, conf, lift, count) in want.items():
        r = got[key]
        assert (r.support, r.confidence, r.lift) == pytest.approx((support, conf, lift))
        assert r.count == count


# --- anomalies ---------------------------------------------------------------------------------


def _fleet(
    rng: np.random.Generator,
    agents: dict[str, float],
    hours: int = 24,
    per_hour: int = 30,
    jump: dict[str, tuple[float, float]] | None = None,
) -> list[Any]:
    """Steady agents (base latency ms, 2% failures); ``jump``: (latency ×, failure rate) in the last hour."""
    recs = []
    for agent, base in agents.items():
        for h in range(hours):
            for j in range(per_hour):
                at = NOW - (h * HOUR) - int((j + 0.5) * HOUR / per_hour)
                mult, fail = (1.0, 0.02)
                if h == 0 and jump and agent in jump:
                    mult, fail = jump[agent]
                lat = int(base * mult * rng.lognormal(0, 0.2))
                outcome = "FAILED" if rng.random() < fail else "SUCCEEDED"
                recs.append(
                    _rec(f"{agent}-{h}-{j}", at=at, agent_id=agent, agent_ids=[agent], latency_ms=lat, outcome=outcome)
                )
    return recs


AGENTS = {"steady1": 100.0, "steady2": 120.0, "steady3": 90.0, "steady4": 140.0, "slow": 110.0, "flaky": 95.0}


def test_a_latency_jump_is_flagged_and_steady_agents_are_not() -> None:
    recs = _fleet(np.random.default_rng(0), AGENTS, jump={"slow": (10.0, 0.02), "flaky": (1.0, 0.5)})
    found = {(a.agent_id, a.kind): a for a in detect_anomalies(recs, NOW, 3.5)}
    assert {a for a, _ in found} == {"slow", "flaky"}
    lat = found[("slow", "latency_p95")]
    assert lat.value > 5 * lat.baseline
    assert 100 < lat.baseline < 200
    assert "latency p95" in lat.reason
    assert ("slow", "latency_p95_vs_fleet") in found
    fail = found[("flaky", "failure_rate")]
    assert fail.value > 0.3
    assert fail.baseline < 0.1
    assert ("flaky", "failure_rate_vs_fleet") in found
    assert ("slow", "failure_rate") not in found
    assert ("flaky", "latency_p95") not in found


def test_a_quiet_fleet_has_no_anomalies() -> None:
    for seed in range(3):
        recs = _fleet(np.random.default_rng(seed), AGENTS)
        assert detect_anomalies(recs, NOW, 3.5) == []


def test_sparse_history_falls_back_to_the_pooled_past() -> None:
    # 12 steps a day: no hour of history has min_samples, the pooled history does
    rng = np.random.default_rng(5)
    recs = [
        _rec(f"h{i}", at=NOW - 2 * HOUR - i * 2 * HOUR, agent_id="x", latency_ms=int(100 * rng.lognormal(0, 0.1)))
        for i in range(24)
    ]
    recs += [_rec(f"r{i}", at=NOW - i * 60_000, agent_id="x", latency_ms=1000) for i in range(10)]
    found = detect_anomalies(recs, NOW, 3.5)
    assert [(a.agent_id, a.kind) for a in found] == [("x", "latency_p95")]


def test_a_perfectly_steady_agent_is_not_flagged_for_jitter() -> None:
    # MAD 0 in the history: the spread floor (10%) decides
    def run(recent_ms: int) -> list[str]:
        recs = [_rec(f"h{i}", at=NOW - HOUR - 1 - i * 120_000, agent_id="x", latency_ms=100) for i in range(300)]
        recs += [_rec(f"r{i}", at=NOW - i * 60_000, agent_id="x", latency_ms=recent_ms) for i in range(20)]
        return [a.kind for a in detect_anomalies(recs, NOW, 3.5)]

    assert run(110) == []
    assert run(200) == ["latency_p95"]


def test_future_and_duplicate_records_do_not_count() -> None:
    recs = _fleet(np.random.default_rng(1), {"a": 100.0}, hours=6)
    spikes = [_rec(f"f{i}", at=NOW + 1000, agent_id="a", latency_ms=100_000) for i in range(50)]
    assert detect_anomalies(recs + recs[:60] + spikes, NOW, 3.5) == []


def test_isolation_forest_finds_the_odd_agent() -> None:
    agents = {f"ok{i}": 100.0 + 5 * i for i in range(11)} | {"odd": 105.0}
    recs = _fleet(np.random.default_rng(2), agents, hours=1, jump={"odd": (40.0, 0.9)})
    plain = detect_anomalies(recs, NOW, 3.5)
    assert all(a.kind != "isolation" for a in plain)
    found = [a for a in detect_anomalies(recs, NOW, 3.5, isolation=True) if a.kind == "isolation"]
    assert [a.agent_id for a in found][:1] == ["odd"]
    assert max(found, key=lambda a: a.score).agent_id == "odd"


# --- mine --------------------------------------------------------------------------------------


def test_mine_bundles_everything() -> None:
    rng = np.random.default_rng(4)
    x, truth = _blobs(seed=4, n=20)
    recs = []
    for i, (v, t) in enumerate(zip(x, truth, strict=True)):
        vec = pack("fused", v, "FLOAT32", "minilm")
        team = ["A", "B"] if t == 0 else ["A", "C"]
        ok = t == 0 or bool(rng.random() < 0.5)
        at = NOW - i * 60_000
        recs.append(_exec(f"e{i}", team, ok, [team], task_vector=vec, occurred_at=at))
        for a in team:
            recs.append(_rec(f"s{i}{a}", at=at, agent_id=a, agent_ids=[a], task_vector=vec, outcome="SUCCEEDED"))
    recs += _fleet(rng, {"A": 100.0, "B": 100.0, "C": 100.0, "D": 100.0}, jump={"D": (10.0, 0.02)})
    settings = ExperienceSettings(clusters=3, min_support=0.05)
    report = mine(recs + recs[:5], settings, NOW)
    assert report.executions == 60
    assert report.records == len(recs)
    assert report.clustering is not None and report.clustering.k == 3
    assert report.clustering.model == "minilm"
    assert sorted(c.tasks for c in report.clusters) == [20, 20, 20]
    perfect = [c for c in report.clusters if c.success_rate == pytest.approx(1.0)]
    assert len(perfect) == 1
    assert {a for a, _, _ in perfect[0].best_agents} == {"A", "B"}
    ab = [r for r in report.rules if r.antecedent == ("A", "B") and r.consequent == "success"]
    assert ab and ab[0].lift > 1
    assert ("D", "latency_p95") in {(a.agent_id, a.kind) for a in report.anomalies}
    data = json.loads(json.dumps(report.to_dict()))
    assert data["clustering"] == {"k": 3, "dim": 8, "model": "minilm"}
    assert len(data["rules"]) == len(report.rules)
    text = report.summary()
    assert "60 executions" in text
    assert "D: latency p95" in text


def test_mine_without_vectors_or_executions() -> None:
    report = mine([_rec("s1", agent_id="A")], ExperienceSettings(), NOW)
    assert report.clustering is None
    assert report.rules == []
    assert report.anomalies == []
    assert "clusters: none" in report.summary()
