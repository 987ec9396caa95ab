"""Mining experience: task clusters, association rules and anomalies, old evidence decayed.

Works on lists of :class:`~aos_gateway.contracts.records.ExperienceRecord` (deduplicated here by
``experience_id``: the topic is at-least-once). STEP records speak for one agent (its latency,
failures); EXECUTION records for a combination of agents (``agent_ids`` and ``metadata["edges"]``).

Success follows the rest of the gateway: a ``feedback_score`` overrides the outcome (>= 0.5 is a
success); otherwise SUCCEEDED counts 1, PARTIAL half, FAILED and TIMED_OUT nothing.

- :func:`decay_weights` — evidence loses half its weight every ``half_life_days``;
- :func:`cluster_tasks` — k-means over task vectors (scikit-learn), deterministic by seed;
- :func:`association_rules` — agent sets and plan edges → success (or failure), with support,
  confidence, lift. A small exact Apriori written here, not mlxtend: it needs weighted
  transactions (decay) and soft outcomes (PARTIAL), which mlxtend's boolean one-hot frames do not
  take, and mlxtend would bring pandas and matplotlib into the worker;
- :func:`detect_anomalies` — per agent, the recent failure rate and latency p95 against the agent's
  own history and against the fleet, as robust z-scores (median/MAD), optionally IsolationForest;
- :func:`mine` — all of it, as a :class:`MiningReport` (``to_dict()`` for JSON, ``summary()``).
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import combinations
from statistics import NormalDist
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.errors import ValidationError
from aos_gateway.perception.vectors import FloatArray, unpack
from aos_gateway.settings import ExperienceSettings

DAY_MS = 86_400_000
MAD_SCALE = 1.4826  # MAD of a normal distribution times this is its standard deviation
_SUCCESS = {"SUCCEEDED": 1.0, "PARTIAL": 0.5}
_NORMAL = NormalDist()

OutcomeClass = Literal["success", "partial", "failure", "timeout"]
FloatVec = npt.NDArray[np.float64]
IntVec = npt.NDArray[np.int64]


# --- outcomes and weights ----------------------------------------------------------------------


def outcome_class(rec: ExperienceRecord) -> OutcomeClass:
    """What a record counts as: feedback (>= 0.5 success, else failure) overrides the outcome."""
    score = rec.get("feedback_score")
    if score is not None:
        return "success" if score >= 0.5 else "failure"
    return {"SUCCEEDED": "success", "PARTIAL": "partial", "TIMED_OUT": "timeout"}.get(  # type: ignore[return-value]
        rec["outcome"], "failure"
    )


def success_of(rec: ExperienceRecord) -> float:
    """Success as a number: 1, 0.5 for PARTIAL, 0 (feedback overrides: 1 or 0)."""
    score = rec.get("feedback_score")
    if score is not None:
        return 1.0 if score >= 0.5 else 0.0
    return _SUCCESS.get(rec["outcome"], 0.0)


def distinct(records: Iterable[ExperienceRecord]) -> list[ExperienceRecord]:
    """The first copy of each ``experience_id``, in order."""
    seen: set[str] = set()
    out = []
    for rec in records:
        if rec["experience_id"] not in seen:
            seen.add(rec["experience_id"])
            out.append(rec)
    return out


def decay_weights(occurred_at_ms: npt.ArrayLike, now_ms: int, half_life_days: float) -> FloatVec:
    """Weights ``0.5 ** (age / half_life)``: 1 now, 0.5 one half-life ago (the future counts 1)."""
    if not half_life_days > 0:
        raise ValidationError(f"half_life_days must be positive: {half_life_days}")
    at = np.asarray(occurred_at_ms, dtype=np.float64)
    age = np.maximum(float(now_ms) - at, 0.0)
    out: FloatVec = np.power(0.5, age / (half_life_days * DAY_MS))
    return out


# --- clusters ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clustering:
    """k-means centroids of task vectors and each input vector's cluster."""

    centroids: FloatArray
    labels: IntVec
    model: str = ""  # the encoder of the vectors: other encoders' vectors get no cluster

    @property
    def k(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, vectors: npt.ArrayLike) -> IntVec:
        """The nearest centroid of each row."""
        x = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if self.k == 0 or x.shape[1] != self.centroids.shape[1]:
            raise ValidationError(f"vectors of dim {x.shape[1]} do not fit centroids {self.centroids.shape}")
        c = self.centroids
        d = (c * c).sum(axis=1)[None, :] - 2.0 * (x @ c.T)  # + |x|², the same for every centroid
        out: IntVec = d.argmin(axis=1).astype(np.int64)
        return out

    def cluster_of(self, rec: ExperienceRecord) -> int | None:
        """A record's cluster; None without a vector, clusters, or a vector of this encoder."""
        vec = rec.get("task_vector")
        if vec is None or not _fits(self, rec):
            return None
        return int(self.assign(unpack(vec))[0])


def _fits(clustering: Clustering, rec: ExperienceRecord) -> bool:
    vec = rec.get("task_vector")
    if vec is None or clustering.k == 0 or vec["dim"] != clustering.centroids.shape[1]:
        return False
    return not clustering.model or vec.get("model", "") == clustering.model


def cluster_tasks(
    vectors: npt.ArrayLike,
    k: int,
    seed: int = 0,
    weights: npt.ArrayLike | None = None,
    minibatch_above: int = 20_000,
) -> Clustering:
    """k-means over task vectors; ``k`` is clipped to the distinct vectors there are.

    KMeans up to ``minibatch_above`` vectors, MiniBatchKMeans beyond (same seed, same result on
    the same input). ``weights`` (e.g. :func:`decay_weights`) pull centroids towards recent tasks.
    """
    if k < 1:
        raise ValidationError(f"k must be at least 1: {k}")
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2:
        raise ValidationError(f"vectors must be a 2-d array, got shape {x.shape}")
    n = x.shape[0]
    w = None if weights is None else np.asarray(weights, dtype=np.float64)
    if w is not None and (w.shape != (n,) or not np.all(np.isfinite(w)) or np.any(w < 0)):
        raise ValidationError("weights must be one finite non-negative number per vector")
    if w is not None and not w.sum() > 0:
        w = None
    live = x if w is None else x[w > 0]
    k = min(k, int(np.unique(live, axis=0).shape[0])) if live.shape[0] else 0
    if k == 0:
        return Clustering(np.zeros((0, x.shape[1]), dtype=np.float32), np.zeros(n, dtype=np.int64))
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if n > minibatch_above:
        km: Any = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=2048)
    else:
        km = KMeans(n_clusters=k, random_state=seed, n_init=1)  # k-means++ once: sklearn's own default
    km.fit(x, sample_weight=w)
    centroids = np.asarray(km.cluster_centers_, dtype=np.float32)
    return Clustering(centroids, np.asarray(km.predict(x), dtype=np.int64))


# --- association rules -------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """``antecedent`` → ``consequent``: agents (or one plan edge ``a->b``) and an outcome."""

    antecedent: tuple[str, ...]
    consequent: Literal["success", "failure"]
    support: float  # weighted share of executions with the antecedent and the consequent
    confidence: float  # P(consequent | antecedent), weighted
    lift: float  # confidence over the consequent's base rate: > 1 helps, < 1 hurts
    count: int  # executions with the antecedent (unweighted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "antecedent": list(self.antecedent),
            "consequent": self.consequent,
            "support": self.support,
            "confidence": self.confidence,
            "lift": self.lift,
            "count": self.count,
        }

    def __str__(self) -> str:
        return (
            f"{{{', '.join(self.antecedent)}}} → {self.consequent} (lift {self.lift:.2f}, "
            f"confidence {self.confidence:.2f}, support {self.support:.3f}, n={self.count})"
        )


def _edges(rec: ExperienceRecord) -> list[str]:
    raw = rec.get("metadata", {}).get("edges")
    if not raw:
        return []
    try:
        return sorted({f"{a}->{b}" for a, b in json.loads(raw)})
    except (ValueError, TypeError):
        return []


def association_rules(
    records: Sequence[ExperienceRecord],
    min_support: float,
    min_confidence: float,
    weights: npt.ArrayLike | None = None,
    max_len: int = 3,
) -> list[Rule]:
    """Rules from agent sets (up to ``max_len`` agents) and single plan edges to the outcome.

    One transaction per EXECUTION record with agents: its distinct ``agent_ids``, and each edge of
    ``metadata["edges"]`` as an item ``from->to``. Exact level-wise Apriori: an agent set is
    counted only when all its subsets are frequent (support >= ``min_support``). ``weights``
    (one per record, e.g. decay) make supports weighted shares; ``count`` stays a plain count.
    Sorted by lift, then support.
    """
    if not 0 < min_support <= 1 or not 0 <= min_confidence <= 1:
        raise ValidationError(f"min_support in (0, 1] and min_confidence in [0, 1]: {min_support}, {min_confidence}")
    w_all = np.ones(len(records)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w_all.shape != (len(records),):
        raise ValidationError("weights must be one number per record")
    seen: set[str] = set()
    txs: list[tuple[frozenset[str], list[str], float, float]] = []  # agents, edges, success, weight
    for rec, w in zip(records, w_all, strict=True):
        if rec["kind"] != "EXECUTION" or not rec["agent_ids"] or rec["experience_id"] in seen:
            continue  # an execution without agents (a feedback record not joined yet) says nothing here
        seen.add(rec["experience_id"])
        txs.append((frozenset(rec["agent_ids"]), _edges(rec), success_of(rec), float(w)))
    total = sum(t[3] for t in txs)
    if not txs or total <= 0:
        return []
    base = {"success": sum(t[2] * t[3] for t in txs) / total}
    base["failure"] = 1.0 - base["success"]
    # itemset -> [weight, weight * success, count]
    stats: dict[tuple[str, ...], list[float]] = {}

    def add(items: tuple[str, ...], s: float, w: float) -> None:
        acc = stats.setdefault(items, [0.0, 0.0, 0.0])
        acc[0] += w
        acc[1] += w * s
        acc[2] += 1

    for agents, edges, s, w in txs:
        for item in (*sorted(agents), *edges):
            add((item,), s, w)
    frequent = {i for i, acc in stats.items() if acc[0] / total >= min_support}
    for size in range(2, max_len + 1):
        level: dict[tuple[str, ...], list[float]] = {}
        for agents, _, s, w in txs:
            usable = sorted(a for a in agents if (a,) in frequent)
            for combo in combinations(usable, size):
                if all(sub in frequent for sub in combinations(combo, size - 1)):
                    acc = level.setdefault(combo, [0.0, 0.0, 0.0])
                    acc[0] += w
                    acc[1] += w * s
                    acc[2] += 1
        new = {i for i, acc in level.items() if acc[0] / total >= min_support}
        if not new:
            break
        stats.update(level)
        frequent |= new
    rules: list[Rule] = []
    for items in frequent:
        wx, ws, n = stats[items]
        for consequent, joint in (("success", ws), ("failure", wx - ws)):
            support, confidence = joint / total, joint / wx
            if support < min_support or confidence < min_confidence or base[consequent] <= 0:
                continue
            rules.append(
                Rule(items, consequent, support, confidence, confidence / base[consequent], int(n))  # type: ignore[arg-type]
            )
    rules.sort(key=lambda r: (-r.lift, -r.support, r.antecedent, r.consequent))
    return rules


# --- anomalies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Anomaly:
    """An agent that behaves unlike its own past or unlike the fleet."""

    agent_id: str
    kind: str  # failure_rate, latency_p95, failure_rate_vs_fleet, latency_p95_vs_fleet, isolation
    value: float  # now: a rate, milliseconds, or (isolation) an anomaly score in (0, 1)
    baseline: float  # what was expected
    score: float  # robust z-score (isolation: the anomaly score)
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "kind": self.kind,
            "value": self.value,
            "baseline": self.baseline,
            "score": self.score,
            "reason": self.reason,
        }


def weighted_quantile(values: npt.ArrayLike, q: float, weights: npt.ArrayLike | None = None) -> float:
    """The ``q`` quantile of weighted values (inverted CDF: an observed value)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValidationError("quantile of no values")
    w = np.ones_like(v) if weights is None else np.asarray(weights, dtype=np.float64)
    order = np.argsort(v, kind="stable")
    cum = np.cumsum(w[order])
    if not cum[-1] > 0:
        raise ValidationError("quantile with no weight")
    i = int(np.searchsorted(cum, q * cum[-1], side="left"))
    return float(v[order][min(i, v.size - 1)])


def robust_center(values: npt.ArrayLike, weights: npt.ArrayLike | None = None) -> tuple[float, float]:
    """(median, MAD × 1.4826): a centre and a spread that one wild value cannot move."""
    v = np.asarray(values, dtype=np.float64)
    med = weighted_quantile(v, 0.5, weights)
    return med, MAD_SCALE * weighted_quantile(np.abs(v - med), 0.5, weights)


@dataclass
class _Obs:
    at: FloatVec
    failed: FloatVec
    latency: FloatVec
    cost: FloatVec


def _log_ms(ms: float) -> float:
    return math.log(max(ms, 1.0))


def binomial_z(failures: float, n: int, p0: float) -> float:
    """How surprising ``failures`` of ``n`` are at rate ``p0``, as a z-score (exact binomial tail).

    The normal approximation is far too generous for rare failures (3 of 30 at 2% would score
    3.1; the exact tail says 2.0), so the tail P(X >= k) is summed exactly and mapped to the
    normal quantile with the same one-sided probability. PARTIAL halves round down.
    """
    k = math.floor(failures + 1e-9)
    if n <= 0 or k <= 0:
        return 0.0
    p = min(max(p0, 1e-12), 1 - 1e-12)
    lp, lq = math.log(p), math.log1p(-p)
    terms = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * lp + (n - j) * lq
        for j in range(k, n + 1)
    ]
    top = max(terms)
    log_sf = top + math.log(sum(math.exp(t - top) for t in terms))
    if log_sf < -700:
        return 37.5  # beyond any doubt (the largest z a double can express)
    return -_NORMAL.inv_cdf(min(math.exp(log_sf), 1 - 1e-16))


def reference_rate(
    failures: Sequence[float], trials: Sequence[float], z: float, weights: npt.ArrayLike | None = None
) -> tuple[float, float]:
    """(baseline failure rate, spread) of reference windows or agents.

    Rare failures make most references' raw rate 0, so the median alone would be 0 and every
    failure a surprise. The baseline is therefore the larger of the median and the pooled rate
    of the references that are not outliers themselves (exact binomial z <= ``z`` against the
    pooled rate of all): pooling is what a rare count needs, the trimming keeps one bad window or
    agent from raising the bar. The spread is the MAD of the raw rates (burstiness).
    """
    f = np.asarray(failures, dtype=np.float64)
    n = np.asarray(trials, dtype=np.float64)
    w = np.ones_like(f) if weights is None else np.asarray(weights, dtype=np.float64)
    pooled = (float((w * f).sum()) + 0.5) / (float((w * n).sum()) + 1.0)  # Jeffreys: never 0 or 1
    inlier = np.array([binomial_z(fi, int(ni), pooled) <= z for fi, ni in zip(f, n, strict=True)])
    if inlier.any():
        pooled = (float((w * f)[inlier].sum()) + 0.5) / (float((w * n)[inlier].sum()) + 1.0)
    med, mad = robust_center(f / np.maximum(n, 1.0), w)
    return max(med, pooled), mad


def _rate_score(failures: float, n: int, baseline: float, spread: float) -> float:
    """The exact binomial z, or the robust z over the reference spread when that is smaller."""
    zb = binomial_z(failures, n, baseline)
    return min(zb, (failures / n - baseline) / spread) if spread > 0 else zb


def detect_anomalies(
    records: Sequence[ExperienceRecord],
    now_ms: int,
    z: float = 3.5,
    *,
    window_ms: int = 3_600_000,
    min_samples: int = 10,
    half_life_days: float | None = None,
    isolation: bool = False,
    seed: int = 0,
    min_latency_scale: float = 0.1,
    min_fleet_latency_scale: float = 0.25,
) -> list[Anomaly]:
    """Agents whose last ``window_ms`` is worse than their past or than the fleet.

    From STEP records. For each agent with ``min_samples`` recent steps, two metrics: failure
    rate (PARTIAL counts half) and latency p95 (compared on a log scale, so it is relative).

    - **own history**: the time before the window is cut into windows of the same length; the
      baseline is the median of those with ``min_samples`` steps and the spread their MAD (decay-
      weighted when ``half_life_days`` is given). With fewer than three such windows the pooled
      history is the baseline (and there is no spread).
    - **fleet**: the median and MAD of the other agents' recent values (three or more needed).

    Latency scores are robust z-scores of log p95 whose spread has a floor, so a steady agent
    (MAD near 0) is not flagged for jitter: ``min_latency_scale`` (0.1 ≈ 10%) against the agent's
    past, ``min_fleet_latency_scale`` (0.25: at z 3.5 only ≥ 2.4× the median agent) against the
    fleet, whose agents differ in speed by design. Failure rates are counts, and rare ones: the
    baseline is the larger of the references' median and their trimmed pooled rate (see
    :func:`reference_rate`), and the score is the exact binomial z of the window's failures at that baseline
    (:func:`binomial_z`), or the robust z over the references' MAD when that is smaller (bursty
    agents). Only the worse direction is flagged (score > ``z``). ``isolation`` adds
    IsolationForest over per-agent features (failure rate, log p95, log mean cost, log calls)
    when there are eight agents or more.
    """
    if z <= 0 or window_ms <= 0 or min_samples < 1:
        raise ValidationError("z and window_ms must be positive and min_samples at least 1")
    per_agent: dict[str, list[tuple[float, float, float, float]]] = {}
    for rec in distinct(records):
        if rec["kind"] != "STEP" or not rec["agent_id"] or rec["occurred_at"] > now_ms:
            continue
        per_agent.setdefault(rec["agent_id"], []).append(
            (float(rec["occurred_at"]), 1.0 - success_of(rec), float(rec["latency_ms"]), float(rec["cost"]))
        )
    start = now_ms - window_ms
    obs = {
        a: _Obs(*(np.asarray(c, dtype=np.float64) for c in zip(*rows, strict=True))) for a, rows in per_agent.items()
    }
    out: list[Anomaly] = []
    recent: dict[str, tuple[int, float, float, float]] = {}  # n, failure rate, p95 ms, mean cost
    fails: dict[str, float] = {}
    window_min = window_ms / 60_000
    for agent, o in sorted(obs.items()):
        now_mask = o.at > start
        n = int(now_mask.sum())
        if n < min_samples:
            continue
        fails[agent] = float(o.failed[now_mask].sum())
        rate = fails[agent] / n
        p95 = weighted_quantile(o.latency[now_mask], 0.95)
        recent[agent] = (n, rate, p95, float(o.cost[now_mask].mean()))
        hist = _history(o, start, window_ms, min_samples, now_ms, half_life_days, z)
        if hist is None:
            continue
        (rate_b, rate_mad), (lat_b, lat_mad) = hist
        score = _rate_score(fails[agent], n, rate_b, rate_mad)
        if score > z:
            out.append(
                Anomaly(
                    agent,
                    "failure_rate",
                    rate,
                    rate_b,
                    score,
                    f"{agent}: failure rate {rate:.0%} in the last {window_min:.0f} min vs {rate_b:.0%} "
                    f"usually (robust z {score:.1f})",
                )
            )
        score = (_log_ms(p95) - lat_b) / max(lat_mad, min_latency_scale)
        if score > z:
            base_ms = math.exp(lat_b)
            out.append(
                Anomaly(
                    agent,
                    "latency_p95",
                    p95,
                    base_ms,
                    score,
                    f"{agent}: latency p95 {p95:.0f} ms in the last {window_min:.0f} min vs {base_ms:.0f} ms "
                    f"usually (robust z {score:.1f})",
                )
            )
    if len(recent) >= 4:  # each agent against at least three others
        for agent, (n, rate, p95, _) in recent.items():
            others = [a for a in recent if a != agent]
            rate_b, rate_mad = reference_rate([fails[a] for a in others], [recent[a][0] for a in others], z)
            score = _rate_score(fails[agent], n, rate_b, rate_mad)
            if score > z:
                out.append(
                    Anomaly(
                        agent,
                        "failure_rate_vs_fleet",
                        rate,
                        rate_b,
                        score,
                        f"{agent}: failure rate {rate:.0%} vs {rate_b:.0%} for the median agent (robust z {score:.1f})",
                    )
                )
            lat_b, lat_mad = robust_center([_log_ms(recent[a][2]) for a in others])
            score = (_log_ms(p95) - lat_b) / max(lat_mad, min_fleet_latency_scale)
            if score > z:
                base_ms = math.exp(lat_b)
                out.append(
                    Anomaly(
                        agent,
                        "latency_p95_vs_fleet",
                        p95,
                        base_ms,
                        score,
                        f"{agent}: latency p95 {p95:.0f} ms vs {base_ms:.0f} ms for the median agent "
                        f"(robust z {score:.1f})",
                    )
                )
    if isolation and len(recent) >= 8:
        out.extend(_isolation(recent, seed))
    out.sort(key=lambda a: (-a.score, a.agent_id, a.kind))
    return out


def _history(
    o: _Obs, start: int, window_ms: int, min_samples: int, now_ms: int, half_life_days: float | None, z: float
) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """((rate baseline, rate MAD), (log-latency baseline, log-latency MAD)) before ``start``."""
    past = o.at <= start
    if int(past.sum()) < min_samples:
        return None
    at, failed, lat = o.at[past], o.failed[past], o.latency[past]
    bucket = ((start - at) // window_ms).astype(np.int64)
    nfail, ntrial, lats, mids = [], [], [], []
    for b in np.unique(bucket):
        m = bucket == b
        if int(m.sum()) >= min_samples:
            nfail.append(float(failed[m].sum()))
            ntrial.append(float(m.sum()))
            lats.append(_log_ms(weighted_quantile(lat[m], 0.95)))
            mids.append(start - (float(b) + 0.5) * window_ms)
    if len(lats) >= 3:
        bw = None if half_life_days is None else decay_weights(mids, now_ms, half_life_days)
        return reference_rate(nfail, ntrial, z, bw), robust_center(lats, bw)
    w = np.ones_like(at) if half_life_days is None else decay_weights(at, now_ms, half_life_days)
    pooled = (float((failed * w).sum()) + 0.5) / (float(w.sum()) + 1.0)
    return (pooled, 0.0), (_log_ms(weighted_quantile(lat, 0.95, w)), 0.0)


def _isolation(recent: dict[str, tuple[int, float, float, float]], seed: int) -> list[Anomaly]:
    from sklearn.ensemble import IsolationForest

    agents = sorted(recent)
    x = np.array(
        [[recent[a][1], _log_ms(recent[a][2]), math.log1p(recent[a][3]), math.log(recent[a][0])] for a in agents]
    )
    forest = IsolationForest(n_estimators=200, contamination="auto", random_state=seed).fit(x)
    scores = -forest.score_samples(x)  # in (0, 1): above 0.5 is unusual
    flagged = forest.predict(x) == -1
    threshold = float(-forest.offset_)
    return [
        Anomaly(
            a,
            "isolation",
            float(s),
            threshold,
            float(s),
            f"{a}: unusual mix of failure rate {recent[a][1]:.0%}, p95 {recent[a][2]:.0f} ms, "
            f"cost {recent[a][3]:.3g} and {recent[a][0]} calls among {len(agents)} agents "
            f"(isolation score {s:.2f} > {threshold:.2f})",
        )
        for a, s, f in zip(agents, scores, flagged, strict=True)
        if f
    ]


# --- the whole mining pass ---------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterSummary:
    """One task cluster: how many tasks, how they went, and the agents that did best in it."""

    cluster: int
    tasks: int
    weight: float
    success_rate: float
    best_agents: list[tuple[str, float, int]]  # agent, weighted success rate, steps

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "tasks": self.tasks,
            "weight": self.weight,
            "success_rate": self.success_rate,
            "best_agents": [{"agent_id": a, "success_rate": r, "steps": n} for a, r, n in self.best_agents],
        }


@dataclass
class MiningReport:
    """What one mining pass found."""

    generated_at: int
    records: int
    executions: int
    steps: int
    half_life_days: float
    clustering: Clustering | None = None
    clusters: list[ClusterSummary] = field(default_factory=list)
    rules: list[Rule] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (centroids are left out: they are numbers for machines, see ``clustering``)."""
        return {
            "generated_at": self.generated_at,
            "records": self.records,
            "executions": self.executions,
            "steps": self.steps,
            "half_life_days": self.half_life_days,
            "clustering": None
            if self.clustering is None
            else {
                "k": self.clustering.k,
                "dim": int(self.clustering.centroids.shape[1]),
                "model": self.clustering.model,
            },
            "clusters": [c.to_dict() for c in self.clusters],
            "rules": [r.to_dict() for r in self.rules],
            "anomalies": [a.to_dict() for a in self.anomalies],
        }

    def summary(self, top: int = 3) -> str:
        """A few lines for a person."""
        when = datetime.fromtimestamp(self.generated_at / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        lines = [f"mined {self.records} records ({self.executions} executions, {self.steps} steps) at {when}"]
        if self.clusters:
            big = max(self.clusters, key=lambda c: c.tasks)
            lines.append(f"clusters: {len(self.clusters)} (largest: {big.tasks} tasks, success {big.success_rate:.0%})")
        else:
            lines.append("clusters: none (no task vectors)")
        lines.append(f"rules: {len(self.rules)}")
        lines += [f"  {r}" for r in self.rules[:top]]
        lines.append(f"anomalies: {len(self.anomalies)}")
        lines += [f"  {a.reason}" for a in self.anomalies[:top]]
        return "\n".join(lines)


def _task_vectors(recs: Sequence[ExperienceRecord]) -> tuple[list[int], FloatArray, str]:
    """Indices of the records whose vector is of the most common (encoder, dim), their vectors."""
    keyed = [(i, (v["model"], v["dim"])) for i, r in enumerate(recs) if (v := r.get("task_vector")) is not None]
    if not keyed:
        return [], np.zeros((0, 0), dtype=np.float32), ""
    key = Counter(k for _, k in keyed).most_common(1)[0][0]
    idx = [i for i, k in keyed if k == key]
    vecs = [unpack(recs[i]["task_vector"]) for i in idx]  # type: ignore[arg-type]
    return idx, np.stack(vecs).astype(np.float32), key[0]


def mine(
    records: Iterable[ExperienceRecord],
    settings: ExperienceSettings,
    now_ms: int,
    *,
    seed: int = 0,
    min_confidence: float = 0.5,
    anomaly_window_ms: int = 3_600_000,
    isolation: bool = False,
) -> MiningReport:
    """Clusters, rules and anomalies from experience, evidence weighted by its age.

    Tasks are clustered on the EXECUTION records' vectors (the STEP records' when there are
    none) with ``settings.clusters`` clusters; rules use ``settings.min_support``; anomalies
    ``settings.anomaly_z``; every weight decays with ``settings.half_life_days``.
    """
    recs = distinct(records)
    execs = [r for r in recs if r["kind"] == "EXECUTION"]
    steps = [r for r in recs if r["kind"] == "STEP"]
    hl = settings.half_life_days
    report = MiningReport(
        generated_at=now_ms, records=len(recs), executions=len(execs), steps=len(steps), half_life_days=hl
    )
    tasks = execs if any(r.get("task_vector") for r in execs) else steps
    idx, vecs, model = _task_vectors(tasks)
    if idx:
        w = decay_weights([tasks[i]["occurred_at"] for i in idx], now_ms, hl)
        c = cluster_tasks(vecs, settings.clusters, seed=seed, weights=w)
        report.clustering = Clustering(c.centroids, c.labels, model)
        report.clusters = _summaries(report.clustering, [tasks[i] for i in idx], w, steps, now_ms, hl)
    if execs:
        report.rules = association_rules(
            execs, settings.min_support, min_confidence, decay_weights([r["occurred_at"] for r in execs], now_ms, hl)
        )
    report.anomalies = detect_anomalies(
        steps,
        now_ms,
        settings.anomaly_z,
        window_ms=anomaly_window_ms,
        half_life_days=hl,
        isolation=isolation,
        seed=seed,
    )
    return report


def _summaries(
    clustering: Clustering,
    tasks: Sequence[ExperienceRecord],
    weights: FloatVec,
    steps: Sequence[ExperienceRecord],
    now_ms: int,
    half_life_days: float,
    min_steps: int = 3,
) -> list[ClusterSummary]:
    k = clustering.k
    size = np.bincount(clustering.labels, minlength=k)
    wsum = np.bincount(clustering.labels, weights=weights, minlength=k)
    ssum = np.bincount(clustering.labels, weights=weights * np.array([success_of(t) for t in tasks]), minlength=k)
    per: dict[tuple[int, str], list[float]] = {}  # (cluster, agent) -> [weight, weighted success, steps]
    usable = [r for r in steps if r["agent_id"] and _fits(clustering, r)]
    if usable:
        labels = clustering.assign(np.stack([unpack(r["task_vector"]) for r in usable]))  # type: ignore[arg-type]
        step_w = decay_weights([r["occurred_at"] for r in usable], now_ms, half_life_days)
        for rec, c, w in zip(usable, labels, step_w, strict=True):
            acc = per.setdefault((int(c), str(rec["agent_id"])), [0.0, 0.0, 0.0])
            acc[0] += float(w)
            acc[1] += float(w) * success_of(rec)
            acc[2] += 1
    out = []
    for c in range(k):
        agents = [(a, acc[1] / acc[0], int(acc[2])) for (ci, a), acc in per.items() if ci == c and acc[2] >= min_steps]
        agents.sort(key=lambda t: (-t[1], -t[2], t[0]))
        out.append(
            ClusterSummary(
                cluster=c,
                tasks=int(size[c]),
                weight=float(wsum[c]),
                success_rate=float(ssum[c] / wsum[c]) if wsum[c] > 0 else 0.0,
                best_agents=agents[:3],
            )
        )
    return out
