"""The bounded learning pass: checkpoint + new records against a full pass over the whole history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aos_gateway.contracts.records import ExperienceRecord, Feedback
from aos_gateway.errors import ValidationError
from aos_gateway.experience import incremental
from aos_gateway.experience.feedback import feedback_record, join_feedback
from aos_gateway.experience.learning import learn_all, ordered
from aos_gateway.matching.experience import memories
from aos_gateway.perception.vectors import pack
from aos_gateway.settings import Settings

AGENTS = ["a", "b", "c"]
CENTRES = {"a": [1.0, 0.0, 0.0, 0.0], "b": [0.0, 1.0, 0.0, 0.0], "c": [0.0, 0.0, 1.0, 0.0]}


def _vec(agent: str, rng: np.random.Generator) -> Any:
    v = np.asarray(CENTRES[agent]) + rng.normal(0, 0.15, 4)
    return pack("text", (v / np.linalg.norm(v)).astype(np.float32), "FLOAT32", "m")


def _step(i: int, agent: str, ok: bool, vec: Any, task: str | None = None) -> ExperienceRecord:
    return ExperienceRecord(
        experience_id=f"s{i}",
        task_id=task or f"t{i}",
        tenant="d",
        kind="STEP",
        plan_id=f"p{i}",
        agent_id=agent,
        agent_ids=[agent],
        outcome="SUCCEEDED" if ok else "FAILED",
        latency_ms=10 + i % 7,
        cost=0.01,
        task_vector=vec,
        error=None,
        feedback_score=None,
        occurred_at=1_000 + i,
        trace_id=None,
        metadata={},
    )


def _execution(i: int, agents: list[str], ok: bool, vec: Any) -> ExperienceRecord:
    edges = json.dumps([[agents[0], agents[1]]]) if len(agents) > 1 else ""
    return ExperienceRecord(
        **{
            **_step(i, agents[0], ok, vec),
            "experience_id": f"x{i}",
            "kind": "EXECUTION",
            "agent_id": None,
            "agent_ids": agents,
            "metadata": {"edges": edges} if edges else {},
        }
    )


def history(n: int, seed: int = 0) -> list[ExperienceRecord]:
    """Tasks near agent k's centre; the right agent succeeds 90% of the time, a wrong one 10%."""
    rng = np.random.default_rng(seed)
    out: list[ExperienceRecord] = []
    for i in range(n):
        right = AGENTS[i % 3]
        ran = right if rng.random() < 0.8 else AGENTS[(i + 1) % 3]
        ok = bool(rng.random() < (0.9 if ran == right else 0.1))
        vec = _vec(right, rng)
        out.append(_step(i, ran, ok, vec))
        second = AGENTS[(AGENTS.index(ran) + 1) % 3]
        out.append(_execution(i, [ran, second] if i % 4 == 0 else [ran], ok, vec))
    return out


def _settings() -> Settings:
    s = Settings()
    return s.model_copy(update={"experience": s.experience.model_copy(update={"clusters": 3})})


def _triples(mems: list[Any]) -> list[tuple[str, str, bool]]:
    return [(m.task_id, m.agent_id, m.success) for m in mems]


def test_from_empty_over_the_whole_history_it_is_the_full_pass() -> None:
    recs = history(300)
    s = _settings()
    full = learn_all(recs, AGENTS, s)
    inc = incremental.advance(incremental.Checkpoint(), recs, recs, AGENTS, s)
    assert inc.fingerprints() == full.fingerprints()
    assert inc.records == full.records


def test_in_batches_it_holds_the_same_memories_and_counts_as_one_full_pass() -> None:
    recs = history(600)
    s = _settings()
    full = learn_all(recs, AGENTS, s)
    ckpt = incremental.Checkpoint()
    for k in range(0, len(recs), 200):
        out = incremental.advance(ckpt, recs[k : k + 200], recs[max(0, k - 200) : k + 200], AGENTS, s)
    assert out.matching is not None and full.matching is not None
    assert np.array_equal(out.matching.memory, full.matching.memory)
    assert np.array_equal(out.matching.memory_success, full.matching.memory_success)
    assert out.matching.agent_ids == full.matching.agent_ids
    assert out.records == full.records and out.clock_ms == full.clock_ms
    # fewer steps than FIX_CLUSTERS_AT: the quality model is refitted on all of them, like a full pass
    assert out.fingerprints()["network.quality"] == full.fingerprints()["network.quality"]
    # the classifier is continued, not refitted: the same decisions on the tasks it learned from
    x = full.matching.memory
    proba = [st.coef @ x.T + st.intercept[:, None] for st in (out.matching, full.matching)]  # type: ignore[operator]
    agree = np.mean(np.argmax(proba[0], axis=0) == np.argmax(proba[1], axis=0))
    assert agree >= 0.95, agree
    # mining saw the window only
    assert out.report.records == 400 < full.report.records


def test_records_seen_in_an_earlier_pass_count_once() -> None:
    recs = history(200)
    s = _settings()
    ckpt = incremental.Checkpoint()
    first = incremental.advance(ckpt, recs, recs, AGENTS, s)
    again = incremental.advance(ckpt, recs[50:150], recs, AGENTS, s)  # redelivered
    assert again.records == first.records
    assert first.quality is not None and again.quality is not None
    assert np.array_equal(again.quality.trials, first.quality.trials)
    assert again.quality.pairs == first.quality.pairs
    assert again.matching is not None and first.matching is not None
    assert np.array_equal(again.matching.memory, first.matching.memory)


def test_feedback_after_its_task_was_learned_changes_what_a_full_pass_would() -> None:
    recs = history(90)
    s = _settings()
    failed = next(r for r in recs if r["kind"] == "STEP" and r["outcome"] == "FAILED")
    right = next(a for a in AGENTS if a != failed["agent_id"])
    fb = feedback_record(
        Feedback(
            feedback_id="f1",
            task_id=failed["task_id"],
            tenant="d",
            success=False,
            rating=None,
            correct_agent_id=right,
            comment=None,
            created_at=5_000,
        )
    )
    ckpt = incremental.Checkpoint()
    incremental.advance(ckpt, recs, recs, AGENTS, s)
    late = incremental.advance(ckpt, [fb], [*recs, fb], AGENTS, s)
    full = learn_all([*recs, fb], AGENTS, s)
    mems_full, _ = memories(join_feedback(ordered([*recs, fb])))
    assert sorted(_triples(ckpt.memories)) == sorted(_triples(mems_full))
    assert (failed["task_id"], right, True) in _triples(ckpt.memories)
    assert late.quality is not None and full.quality is not None
    assert late.quality.trials.sum() == full.quality.trials.sum()


def test_quality_counts_add_up_once_the_clusters_are_fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incremental, "FIX_CLUSTERS_AT", 100)
    recs = history(600)
    s = _settings()
    ckpt = incremental.Checkpoint()
    for k in range(0, len(recs), 300):
        out = incremental.advance(ckpt, recs[k : k + 300], recs[k : k + 300], AGENTS, s)
    assert ckpt.counts is not None and not ckpt.pending
    full = learn_all(recs, AGENTS, s)
    assert out.quality is not None and full.quality is not None
    assert out.quality.agent_ids == full.quality.agent_ids
    assert np.allclose(out.quality.trials.sum(axis=1), full.quality.trials.sum(axis=1))
    assert np.allclose(out.quality.successes.sum(axis=1), full.quality.successes.sum(axis=1))
    assert out.quality.pairs == full.quality.pairs
    # the clusters still separate the agents' task regions
    for agent, centre in CENTRES.items():
        c = out.quality.cluster_of(np.asarray(centre, dtype=np.float32))
        assert out.quality.reliability(agent, c) > 0.6


def test_a_saved_checkpoint_continues_as_the_one_in_memory(tmp_path: Path) -> None:
    recs = history(300)
    s = _settings()
    a = incremental.Checkpoint(since=None, offsets={0: 300})
    incremental.advance(a, recs[:200], recs[:200], AGENTS, s)
    path = tmp_path / "ckpt.npz"
    incremental.save(a, path)
    b = incremental.load(path)
    assert b is not None and b.offsets == {0: 300} and b.records == a.records and b.seen == a.seen
    assert _triples(b.memories) == _triples(a.memories)
    out_a = incremental.advance(a, recs[200:], recs, AGENTS, s)
    out_b = incremental.advance(b, recs[200:], recs, AGENTS, s)
    assert out_a.fingerprints() == out_b.fingerprints()


def test_an_unreadable_checkpoint_means_a_full_pass(tmp_path: Path) -> None:
    bad = tmp_path / "ckpt.npz"
    bad.write_bytes(b"not an archive")
    assert incremental.load(bad) is None
    assert incremental.load(tmp_path / "missing.npz") is None


def test_nothing_to_learn_is_an_error() -> None:
    with pytest.raises(ValidationError, match="no experience"):
        incremental.advance(incremental.Checkpoint(), [], [], AGENTS, _settings())


def test_records_before_the_reset_are_not_learned() -> None:
    recs = history(100)
    ckpt = incremental.Checkpoint(since=1_050)
    out = incremental.advance(ckpt, recs, recs, AGENTS, _settings())
    assert out.records == sum(r["occurred_at"] >= 1_050 for r in recs)
