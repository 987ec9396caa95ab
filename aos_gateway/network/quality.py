"""The network quality predictor, learned from experience.

Two things are learned from experience records (:class:`~aos_gateway.contracts.records.ExperienceRecord`):

- **reliability** — the probability that an agent succeeds when called, per agent and per task
  cluster (k-means over the task vectors of the STEP records). Estimates are shrunk towards the
  agent's overall rate, and that towards ``prior`` (Beta pseudo-counts), so an agent with little
  history is neither trusted nor condemned;
- **synergy** — for each pair of agents that ran as an edge of a plan (``metadata["edges"]`` of an
  EXECUTION record: JSON ``[[from, to], ...]``), the success rate of those executions over what the
  two agents' own rates predict, shrunk towards 1 (neutral).

A network's predicted quality (:mod:`aos_gateway.network.problem`) multiplies, along the DAG, each
role's fit × reliability and each edge's synergy. The state serialises to one ``aos.weights.v1``
record (name ``network.quality``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import ExperienceRecord, Weights
from aos_gateway.errors import ValidationError
from aos_gateway.matching.weights import expect
from aos_gateway.perception.vectors import FloatArray, unpack

FORMAT = "aos-network-quality-npz-v1"
NAME = "network.quality"
_OK = {"SUCCEEDED": 1.0, "PARTIAL": 0.5}


@dataclass
class QualityModel:
    """Reliability per agent and task cluster, and synergy per agent pair."""

    agent_ids: list[str] = field(default_factory=list)
    centroids: FloatArray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    #: (agents, clusters + 1) success and trial counts (last column: steps without a cluster);
    #: partial outcomes count half
    successes: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    trials: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros((0, 0)))
    #: (from, to) -> [successes, trials] of executions with that edge
    pairs: dict[tuple[str, str], tuple[float, float]] = field(default_factory=dict)
    prior: float = 0.9  # reliability of an agent nobody has seen yet
    prior_strength: float = 4.0  # pseudo-trials behind the prior
    cluster_strength: float = 8.0  # pseudo-trials of the agent's overall rate behind a cluster's
    pair_strength: float = 10.0
    version: int = 0

    def __post_init__(self) -> None:
        self._pos = {a: i for i, a in enumerate(self.agent_ids)}

    def cluster_of(self, vector: FloatArray | None) -> int | None:
        if vector is None or self.centroids.shape[0] == 0 or vector.shape[0] != self.centroids.shape[1]:
            return None
        return int(np.argmax(self.centroids @ vector))

    def reliability(self, agent_id: str, cluster: int | None = None) -> float:
        i = self._pos.get(agent_id)
        if i is None:
            return self.prior
        s_all, n_all = float(self.successes[i].sum()), float(self.trials[i].sum())
        overall = (s_all + self.prior * self.prior_strength) / (n_all + self.prior_strength)
        if cluster is None:
            return overall
        s, n = float(self.successes[i, cluster]), float(self.trials[i, cluster])
        return (s + overall * self.cluster_strength) / (n + self.cluster_strength)

    def synergy(self, a: str, b: str) -> float:
        sn = self.pairs.get((a, b))
        if sn is None:
            return 1.0
        s, n = sn
        expected = self.reliability(a) * self.reliability(b)
        rate = (s + expected * self.pair_strength) / (n + self.pair_strength)
        return rate / expected if expected > 0 else 1.0

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        meta = {
            "format": FORMAT,
            "agent_ids": self.agent_ids,
            "pairs": [[a, b, s, n] for (a, b), (s, n) in sorted(self.pairs.items())],
            "prior": self.prior,
            "prior_strength": self.prior_strength,
            "cluster_strength": self.cluster_strength,
            "pair_strength": self.pair_strength,
        }
        np.savez_compressed(
            buf,
            meta=np.array(json.dumps(meta)),
            centroids=self.centroids.astype(np.float32),
            successes=self.successes,
            trials=self.trials,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> QualityModel:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                meta = json.loads(str(z["meta"]))
                if meta.get("format") != FORMAT:
                    raise ValidationError(f"not a network quality model (format {meta.get('format')!r})")
                return cls(
                    agent_ids=list(meta["agent_ids"]),
                    centroids=np.asarray(z["centroids"], dtype=np.float32),
                    successes=np.asarray(z["successes"], dtype=np.float64),
                    trials=np.asarray(z["trials"], dtype=np.float64),
                    pairs={(a, b): (float(s), float(n)) for a, b, s, n in meta["pairs"]},
                    prior=float(meta["prior"]),
                    prior_strength=float(meta["prior_strength"]),
                    cluster_strength=float(meta["cluster_strength"]),
                    pair_strength=float(meta["pair_strength"]),
                )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValidationError(f"cannot read a network quality model: {exc}") from exc


#: one STEP's evidence: (agent, success 0..1, task vector or None)
Step = tuple[str, float, FloatArray | None]


def evidence(records: Iterable[ExperienceRecord]) -> tuple[list[Step], dict[tuple[str, str], list[float]]]:
    """The STEP records' (agent, success, vector) and the plan edges' [successes, trials] of the
    EXECUTION records, deduplicated by ``experience_id`` (the experience topic is at-least-once)."""
    seen: set[str] = set()
    steps: list[Step] = []
    pair_counts: dict[tuple[str, str], list[float]] = {}
    for rec in records:
        if rec["experience_id"] in seen:
            continue
        seen.add(rec["experience_id"])
        ok = _OK.get(rec["outcome"], 0.0)
        if rec["kind"] == "STEP" and rec["agent_id"]:
            vec = unpack(rec["task_vector"]) if rec["task_vector"] else None
            steps.append((rec["agent_id"], ok, vec))
        elif rec["kind"] == "EXECUTION":
            for a, b in _edges(rec):
                sn = pair_counts.setdefault((a, b), [0.0, 0.0])
                sn[0] += ok
                sn[1] += 1.0
    return steps, pair_counts


def fit_centroids(steps: Sequence[Step], clusters: int, seed: int = 0) -> FloatArray:
    """Unit-length k-means centroids of the steps' task vectors (none when the vectors are fewer
    than ``clusters`` or of several dimensions); MiniBatchKMeans beyond 20,000 vectors."""
    from aos_gateway.experience.mining import cluster_tasks

    vecs = [v for _, _, v in steps if v is not None]
    if not vecs or len({v.shape[0] for v in vecs}) != 1 or len(vecs) < clusters:
        return np.zeros((0, 0), dtype=np.float32)
    c = cluster_tasks(np.stack(vecs).astype(np.float32), clusters, seed=seed).centroids
    out: FloatArray = (c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return out


def add_evidence(model: QualityModel, steps: Sequence[Step], pairs: dict[tuple[str, str], list[float]]) -> None:
    """Count steps (each in its vector's cluster, or the last column) and edges into ``model``;
    agents met for the first time get rows."""
    new = sorted({a for a, _, _ in steps} - set(model.agent_ids))
    if new or model.trials.shape[0] != len(model.agent_ids):
        cols = model.centroids.shape[0] + 1
        grow = len(model.agent_ids) + len(new) - model.trials.shape[0]
        pad = np.zeros((grow, cols))
        model.successes = np.vstack([model.successes.reshape(-1, cols), pad])
        model.trials = np.vstack([model.trials.reshape(-1, cols), pad])
        model.agent_ids = [*model.agent_ids, *new]
        model.__post_init__()
    k = model.centroids.shape[0]
    cols_of = np.full(len(steps), k, dtype=np.int64)
    fit = [i for i, (_, _, v) in enumerate(steps) if v is not None and k and v.shape[0] == model.centroids.shape[1]]
    if fit:
        x = np.stack([steps[i][2] for i in fit]).astype(np.float32)  # type: ignore[misc]
        cols_of[fit] = np.argmax(x @ model.centroids.T, axis=1)
    rows = np.array([model._pos[a] for a, _, _ in steps], dtype=np.int64)
    oks = np.array([ok for _, ok, _ in steps], dtype=np.float64)
    np.add.at(model.successes, (rows, cols_of), oks)
    np.add.at(model.trials, (rows, cols_of), 1.0)
    for p, (s, n) in pairs.items():
        s0, n0 = model.pairs.get(p, (0.0, 0.0))
        model.pairs[p] = (s0 + s, n0 + n)


def learn_quality(records: Iterable[ExperienceRecord], clusters: int = 16, seed: int = 0) -> QualityModel:
    """A quality model from experience: STEP records give reliability, EXECUTION records synergy.

    Records are deduplicated by ``experience_id`` (the experience topic is at-least-once).
    """
    steps, pairs = evidence(records)
    centroids = fit_centroids(steps, clusters, seed)
    model = QualityModel(
        agent_ids=[], centroids=centroids, successes=np.zeros((0, centroids.shape[0] + 1)), trials=np.zeros((0, 0))
    )
    add_evidence(model, steps, pairs)
    return model


def _edges(rec: ExperienceRecord) -> list[tuple[str, str]]:
    raw = rec["metadata"].get("edges")
    if not raw:
        return []
    try:
        edges = json.loads(raw)
        return [(str(a), str(b)) for a, b in edges]
    except (ValueError, TypeError):
        return []


def to_record(model: QualityModel, created_at: int) -> Weights:
    """The model as an ``aos.weights.v1`` record (name ``network.quality``)."""
    return Weights(
        name=NAME,
        version=model.version,
        format=FORMAT,
        payload=model.to_bytes(),
        created_at=created_at,
        metadata={
            "agents": str(len(model.agent_ids)),
            "clusters": str(model.centroids.shape[0]),
            "steps": str(int(model.trials.sum())),
            "pairs": str(len(model.pairs)),
        },
    )


def from_record(record: Weights) -> QualityModel:
    expect(record, NAME, FORMAT)
    model = QualityModel.from_bytes(record["payload"])
    model.version = record["version"]
    return model
