"""The worker's learning pass in bounded work: learn from what arrived since the last pass.

:func:`aos_gateway.experience.learning.learn_all` learns from the whole history, so its work grows
with it (95k records: 90 s of CPU and 1.1 GB on the soak's machine, and longer each pass). The
worker's pass (:class:`aos_gateway.streams.learner.PeriodicLearner`) uses it while the history is at
most ``experience.learn_window`` records. Beyond, it keeps a :class:`Checkpoint` in
``worker.data_dir`` and each pass reads only the records after the checkpoint, plus the latest
``learn_window`` records for mining (:func:`advance`):

- **matcher memory**: held as the published state holds it (the most recent ``per_agent`` per
  agent and outcome), with task ids; new memories are appended and the cap applied again — the
  same memories as a full pass when records arrive in time order;
- **classifier**: continued from the previous pass's coefficients for ``experience.warm_iterations``
  iterations (a full pass fits it to convergence);
- **quality counts** per agent and task cluster, and per plan edge, are added up; the task clusters
  are fitted once :data:`FIX_CLUSTERS_AT` step vectors have been seen, then kept (a full pass
  refits them on every vector);
- **mining** (task clusters, rules, anomalies) and the A/B verdict's evidence: the latest
  ``learn_window`` records, whose weight decays with ``half_life_days`` anyway;
- **deduplication** across passes: 64-bit hashes of the experience ids learned;
- **late feedback** (on a task learned in an earlier pass) sets the success of that task's memories
  still held and adds the correct agent's memory and step, as
  :func:`~aos_gateway.experience.feedback.join_feedback` does within one pass.

A reset marker newer than the checkpoint, or a lost checkpoint, means one full pass again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.errors import ValidationError
from aos_gateway.experience.feedback import is_feedback, join_feedback
from aos_gateway.experience.learning import Learned, iso_ms, ordered
from aos_gateway.experience.mining import mine
from aos_gateway.matching.experience import Memory, learn_from_memories, memories
from aos_gateway.matching.learned import LearnedState
from aos_gateway.network import quality as nq
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.settings import Settings

FORMAT = "aos-learner-checkpoint-v1"
#: step vectors seen before the quality model's task clusters are fitted and kept
FIX_CLUSTERS_AT = 5_000
#: classifier iterations of a full (cold) fit
FULL_ITERATIONS = 3000


def id_hash(experience_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(experience_id.encode(), digest_size=8).digest(), "big")


@dataclass
class Checkpoint:
    """What the learning passes learned so far (see the module docstring)."""

    since: int | None = None  # the reset bound it was learned under
    offsets: dict[int, int] = field(default_factory=dict)  # experience partition -> next offset
    records: int = 0
    clock_ms: int = 0
    seen: set[int] = field(default_factory=set)
    memories: list[Memory] = field(default_factory=list)
    counts: nq.QualityModel | None = None  # step counts once the clusters are fixed (pairs apart)
    pending: list[nq.Step] = field(default_factory=list)  # steps before the clusters are fixed
    pairs: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    warm: LearnedState | None = None  # the last classifier
    skipped: dict[str, int] = field(default_factory=dict)

    def quality(self, clusters: int, seed: int = 0) -> nq.QualityModel | None:
        """The quality model now (None before any step)."""
        if self.counts is not None:
            m = self.counts
            out = nq.QualityModel(
                agent_ids=list(m.agent_ids),
                centroids=m.centroids,
                successes=m.successes.copy(),
                trials=m.trials.copy(),
            )
            out.pairs = {p: (v[0], v[1]) for p, v in self.pairs.items()}
            return out
        if not self.pending:
            return None
        centroids = nq.fit_centroids(self.pending, clusters, seed)
        out = nq.QualityModel(
            agent_ids=[], centroids=centroids, successes=np.zeros((0, centroids.shape[0] + 1)), trials=np.zeros((0, 0))
        )
        nq.add_evidence(out, self.pending, self.pairs)
        return out

    def add_steps(self, steps: Sequence[nq.Step], clusters: int, seed: int = 0) -> None:
        if self.counts is not None:
            nq.add_evidence(self.counts, steps, {})
            return
        self.pending.extend(steps)
        if sum(v is not None for _, _, v in self.pending) >= FIX_CLUSTERS_AT:
            centroids = nq.fit_centroids(self.pending, clusters, seed)
            counts = nq.QualityModel(
                agent_ids=[],
                centroids=centroids,
                successes=np.zeros((0, centroids.shape[0] + 1)),
                trials=np.zeros((0, 0)),
            )
            nq.add_evidence(counts, self.pending, {})
            self.counts, self.pending = counts, []


def cap_memories(mems: Sequence[Memory], per_agent: int) -> list[Memory]:
    """The most recent ``per_agent`` memories of each (agent, outcome), in order."""
    keep = [False] * len(mems)
    seen: dict[tuple[str, bool], int] = {}
    for i in range(len(mems) - 1, -1, -1):
        key = (mems[i].agent_id, mems[i].success)
        if seen.get(key, 0) < per_agent:
            seen[key] = seen.get(key, 0) + 1
            keep[i] = True
    return [m for m, k in zip(mems, keep, strict=True) if k]


def _late_feedback(ckpt: Checkpoint, feedback: Sequence[ExperienceRecord], vectors_now: set[str]) -> list[nq.Step]:
    """Apply feedback on tasks whose memories the checkpoint holds; the steps it adds.
    ``vectors_now``: tasks with a vector in this pass's records (their correct-agent memory comes
    from :func:`join_feedback` there)."""
    latest: dict[str, ExperienceRecord] = {}
    for fb in feedback:
        cur = latest.get(fb["task_id"])
        if cur is None or fb["occurred_at"] >= cur["occurred_at"]:
            latest[fb["task_id"]] = fb
    if not latest:
        return []
    steps: list[nq.Step] = []
    added: list[Memory] = []
    done: set[str] = set()
    for i, m in enumerate(ckpt.memories):
        last = latest.get(m.task_id)
        if last is None:
            continue
        ok = m.success
        if last["feedback_score"] is not None:
            ok = last["feedback_score"] >= 0.5
        correct = last["metadata"].get("correct_agent_id")
        if correct and not m.from_execution and m.agent_id != correct:
            ok = False
        if ok != m.success:
            ckpt.memories[i] = Memory(m.vector, m.agent_id, ok, m.model, m.task_id, m.from_execution)
        if correct and m.task_id not in done and m.task_id not in vectors_now:
            done.add(m.task_id)
            added.append(Memory(m.vector, correct, True, m.model, m.task_id, False))
            steps.append((correct, 1.0, m.vector))
    ckpt.memories.extend(added)
    return steps


def advance(
    ckpt: Checkpoint,
    new: Sequence[ExperienceRecord],
    window: Sequence[ExperienceRecord],
    agent_ids: Sequence[str],
    settings: Settings,
    per_agent: int = 1000,
) -> Learned:
    """Learn ``new`` records into ``ckpt`` (in place) and return every learned state, mined over
    ``window`` (the latest records). From an empty checkpoint with ``window`` = ``new`` = the whole
    history, the same states as :func:`~aos_gateway.experience.learning.learn_all`."""
    x = settings.experience
    fresh: list[ExperienceRecord] = []
    for r in ordered(new, ckpt.since):
        h = id_hash(r["experience_id"])
        if h not in ckpt.seen:
            ckpt.seen.add(h)
            fresh.append(r)
    recs = join_feedback(fresh)
    late = _late_feedback(
        ckpt, [r for r in fresh if is_feedback(r)], {r["task_id"] for r in recs if r["task_vector"] is not None}
    )
    mems, skipped = memories(recs)
    for k, v in skipped.items():
        ckpt.skipped[k] = ckpt.skipped.get(k, 0) + v
    step_tasks = {m.task_id for m in mems if not m.from_execution}
    held = [m for m in ckpt.memories if not (m.from_execution and m.task_id in step_tasks)]
    ckpt.memories = cap_memories([*held, *mems], per_agent)
    steps, pairs = nq.evidence(recs)
    ckpt.add_steps([*steps, *late], x.clusters)
    for p, (s, n) in pairs.items():
        acc = ckpt.pairs.setdefault(p, [0.0, 0.0])
        acc[0] += s
        acc[1] += n
    ckpt.records += len(recs)
    if recs:
        ckpt.clock_ms = max(ckpt.clock_ms, max(r["occurred_at"] for r in recs))
    mined = join_feedback(ordered(window, ckpt.since))
    if ckpt.records == 0 or not mined:
        raise ValidationError("no experience to learn from" + (f" since {iso_ms(ckpt.since)}" if ckpt.since else ""))
    out = Learned(records=ckpt.records, clock_ms=ckpt.clock_ms, report=mine(mined, x, ckpt.clock_ms))
    out.skipped = dict(ckpt.skipped)
    if ckpt.memories:
        warm = ckpt.warm
        state = learn_from_memories(
            ckpt.memories,
            sorted(agent_ids),
            per_agent=per_agent,
            warm=warm,
            max_iter=FULL_ITERATIONS if warm is None else x.warm_iterations,
        )
        state.metadata |= {"source": "aos.experience.v1", "clock": str(ckpt.clock_ms)}
        out.matching = state
        ckpt.warm = state
    out.quality = ckpt.quality(x.clusters)
    return out


# --- on disk -------------------------------------------------------------------------------------


def _flat(vectors: Sequence[FloatArray | None]) -> tuple[FloatArray, np.ndarray]:
    dims = np.array([-1 if v is None else v.shape[0] for v in vectors], dtype=np.int64)
    parts = [v.astype(np.float32) for v in vectors if v is not None]
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return flat, dims


def _unflat(flat: FloatArray, dims: np.ndarray) -> list[FloatArray | None]:
    out: list[FloatArray | None] = []
    at = 0
    for d in dims.tolist():
        if d < 0:
            out.append(None)
        else:
            out.append(flat[at : at + d])
            at += d
    return out


def save(ckpt: Checkpoint, path: Path) -> None:
    """Write ``ckpt`` to ``path`` (atomically: a crash leaves the previous one)."""
    mem_flat, mem_dims = _flat([m.vector for m in ckpt.memories])
    pend_flat, pend_dims = _flat([v for _, _, v in ckpt.pending])
    warm = ckpt.warm
    meta: dict[str, Any] = {
        "format": FORMAT,
        "since": ckpt.since,
        "offsets": {str(p): o for p, o in ckpt.offsets.items()},
        "records": ckpt.records,
        "clock_ms": ckpt.clock_ms,
        "pairs": [[a, b, s, n] for (a, b), (s, n) in ckpt.pairs.items()],
        "skipped": ckpt.skipped,
        "warm_agents": None if warm is None else warm.agent_ids,
    }
    arrays: dict[str, Any] = {
        "meta": np.array(json.dumps(meta)),
        "seen": np.fromiter(ckpt.seen, dtype=np.uint64, count=len(ckpt.seen)),
        "mem_flat": mem_flat,
        "mem_dims": mem_dims,
        "mem_agent": np.array([m.agent_id for m in ckpt.memories], dtype=str),
        "mem_model": np.array([m.model for m in ckpt.memories], dtype=str),
        "mem_task": np.array([m.task_id for m in ckpt.memories], dtype=str),
        "mem_success": np.array([m.success for m in ckpt.memories], dtype=np.bool_),
        "mem_exec": np.array([m.from_execution for m in ckpt.memories], dtype=np.bool_),
        "pend_flat": pend_flat,
        "pend_dims": pend_dims,
        "pend_agent": np.array([a for a, _, _ in ckpt.pending], dtype=str),
        "pend_ok": np.array([ok for _, ok, _ in ckpt.pending], dtype=np.float64),
        "counts": np.frombuffer(b"" if ckpt.counts is None else ckpt.counts.to_bytes(), dtype=np.uint8),
    }
    if warm is not None and warm.coef is not None and warm.intercept is not None and warm.classes is not None:
        arrays |= {"warm_coef": warm.coef, "warm_intercept": warm.intercept, "warm_classes": warm.classes}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def load(path: Path) -> Checkpoint | None:
    """The checkpoint at ``path``; None when there is none or it cannot be read (a full pass
    rebuilds it)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            if meta.get("format") != FORMAT:
                return None
            vecs = _unflat(z["mem_flat"], z["mem_dims"])
            mems = [
                Memory(v, str(a), bool(ok), str(model), str(task), bool(ex))
                for v, a, ok, model, task, ex in zip(
                    vecs, z["mem_agent"], z["mem_success"], z["mem_model"], z["mem_task"], z["mem_exec"], strict=True
                )
                if v is not None
            ]
            pend_vecs = _unflat(z["pend_flat"], z["pend_dims"])
            pending: list[nq.Step] = [
                (str(a), float(ok), v) for a, ok, v in zip(z["pend_agent"], z["pend_ok"], pend_vecs, strict=True)
            ]
            raw_counts = z["counts"].tobytes()
            warm = None
            if meta.get("warm_agents") is not None and "warm_coef" in z:
                coef = np.asarray(z["warm_coef"], dtype=np.float32)
                warm = LearnedState(
                    agent_ids=list(meta["warm_agents"]),
                    memory=np.zeros((0, coef.shape[1]), dtype=np.float32),
                    memory_agent=np.zeros(0, dtype=np.int32),
                    memory_success=np.zeros(0, dtype=np.bool_),
                    coef=coef,
                    intercept=np.asarray(z["warm_intercept"], dtype=np.float32),
                    classes=np.asarray(z["warm_classes"], dtype=np.int32),
                )
            return Checkpoint(
                since=meta["since"],
                offsets={int(p): int(o) for p, o in meta["offsets"].items()},
                records=int(meta["records"]),
                clock_ms=int(meta["clock_ms"]),
                seen={int(h) for h in z["seen"].tolist()},
                memories=mems,
                counts=nq.QualityModel.from_bytes(raw_counts) if raw_counts else None,
                pending=pending,
                pairs={(a, b): [float(s), float(n)] for a, b, s, n in meta["pairs"]},
                warm=warm,
                skipped={str(k): int(v) for k, v in meta["skipped"].items()},
            )
    except (OSError, ValueError, KeyError, TypeError, ValidationError):
        return None
