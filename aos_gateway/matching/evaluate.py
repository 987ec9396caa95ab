"""``aos eval matching``: routing accuracy and per-query latency, zero-shot and after learning."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from aos_gateway.contracts.records import AgentCard
from aos_gateway.matching.adapt import unlabelled_state
from aos_gateway.matching.bandit import ThompsonLearner
from aos_gateway.matching.cards import card_text
from aos_gateway.matching.dataset import Example
from aos_gateway.matching.learned import LearnedState, Ranker, learn_gold
from aos_gateway.perception.text import TextEncoder
from aos_gateway.perception.vectors import FloatArray


def ranking_metrics(rankings: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """top-1, recall@5 and mean reciprocal rank (a task is right if any gold agent is)."""
    top1 = r5 = rr = 0.0
    for ranked, g in zip(rankings, gold, strict=True):
        want = set(g)
        top1 += bool(ranked[:1] and ranked[0] in want)
        r5 += bool(want & set(ranked[:5]))
        rank = next((i for i, a in enumerate(ranked) if a in want), None)
        rr += 0.0 if rank is None else 1.0 / (rank + 1)
    n = max(len(gold), 1)
    return {"top1": round(top1 / n, 4), "r5": round(r5 / n, 4), "mrr": round(rr / n, 4)}


def _p95(ms: list[float]) -> float:
    return round(float(np.percentile(ms, 95)), 2) if ms else float("nan")


def learn(
    feedback: str,
    ids: list[str],
    agent_vecs: FloatArray,
    train: Sequence[Example],
    train_vecs: FloatArray,
    progress: Callable[[str], None] = lambda _m: None,
    seed: int = 0,
    fallback: bool = False,
) -> tuple[LearnedState, dict[str, Any]]:
    """The learned state after the training stream, with either kind of feedback.

    gold: every training task comes with its right agent. none: no outcome is known; only the card
    prototypes are adapted to the training tasks (:mod:`.adapt`). bandit: each training task is
    seen once, in order; the learner picks an agent (Thompson sampling over its top
    candidates) and is told only whether that agent was right. With ``fallback``, a task whose
    agent failed is tried once more on the fallback planned with it (the best-scored other
    agent), as the gateway's plans do, and that outcome is learned too.
    """
    if feedback == "gold":
        labels = [e.gold[0] for e in train]
        return learn_gold(ids, train_vecs, labels), {"feedback": "gold"}
    if feedback == "none":
        return unlabelled_state(ids, agent_vecs, train_vecs), {"feedback": "none"}
    if feedback != "bandit":
        raise ValueError(f"unknown feedback mode {feedback!r}")
    learner = ThompsonLearner(ids, agent_vecs.shape[1], seed=seed)
    sims = train_vecs @ agent_vecs.T
    solved = 0
    for i, ex in enumerate(train):
        chosen, backup = learner.choose_with_fallback(train_vecs[i], ids, sims[i])
        ok = chosen in ex.gold
        learner.observe(train_vecs[i], chosen, ok)
        if fallback and not ok and backup is not None:
            ok = backup in ex.gold
            learner.observe(train_vecs[i], backup, ok)
        solved += ok
        if i and i % 1000 == 0:
            progress(
                f"eval: bandit {i}/{len(train)} tasks, {learner.successes / learner.trials:.1%} of tries right so far"
            )
    state = learner.finish()
    return state, {
        "feedback": "bandit",
        "bandit_fallback": fallback,
        "bandit_trials": learner.trials,
        "bandit_success_rate": round(learner.successes / max(learner.trials, 1), 4),
        "bandit_solved_rate": round(solved / max(len(train), 1), 4),
    }


def evaluate(
    cards: Sequence[AgentCard],
    train: Sequence[Example],
    test: Sequence[Example],
    encoder: TextEncoder,
    feedback: str = "gold",
    progress: Callable[[str], None] = lambda _m: None,
    fallback: bool = False,
) -> dict[str, Any]:
    """On ``test``: zero-shot (card similarity), unsupervised (card prototypes adapted to the
    training tasks' vectors, their labels unused: :mod:`.adapt`) and learned (from ``train`` with
    ``feedback``); ``fallback``: bandit feedback with a second try on the planned fallback (see
    :func:`learn`)."""
    ids = [c["agent_id"] for c in cards]
    progress(f"eval: encoding {len(cards)} agent cards and {len(train)} training tasks")
    agent_vecs = encoder.encode([card_text(c) for c in cards])
    train_vecs = encoder.encode([e.text for e in train])
    progress(f"eval: learning from {len(train)} tasks ({feedback} feedback)")
    with threadpool_limits(1, user_api="blas"):
        state, info = learn(feedback, ids, agent_vecs, train, train_vecs, progress, fallback=fallback)
        adapted = state if feedback == "none" else unlabelled_state(ids, agent_vecs, train_vecs)
    rankers = {"zero_shot": Ranker(None), "unsupervised": Ranker(adapted), "learned": Ranker(state)}

    progress(f"eval: {len(test)} test tasks, one at a time (batch 1: encode + search + rank)")
    rankings: dict[str, list[list[str]]] = {name: [] for name in rankers}
    times: dict[str, list[float]] = {name: [] for name in rankers}
    # one query at a time is the serving case; multi-threaded BLAS on such small products spins
    # its threads against torch's (measured: p95 111 ms -> 18 ms per query with one BLAS thread)
    with threadpool_limits(1, user_api="blas"):
        for i, ex in enumerate(test):
            for name, ranker in rankers.items():
                ranked, ms = _rank_one(ex.text, encoder, agent_vecs, ranker, ids)
                rankings[name].append(ranked)
                times[name].append(ms)
            if i and i % 500 == 0:
                progress(f"eval: {i}/{len(test)}")
    gold = [ex.gold for ex in test]
    return {
        "agents": len(cards),
        "train": len(train),
        "test": len(test),
        **info,
        **{name: {**ranking_metrics(rankings[name], gold), "p95_ms": _p95(times[name])} for name in rankers},
    }


def _rank_one(
    text: str, encoder: TextEncoder, agent_vecs: FloatArray, ranker: Ranker, ids: list[str]
) -> tuple[list[str], float]:
    """Rank one task: encode (each path pays for its own encoding: no cache), search, rank."""
    t0 = time.perf_counter()
    q: FloatArray = encoder.encode([text], batch_size=1)[0]
    scores, _ = ranker.score(q, ids, agent_vecs @ q)
    order = np.argsort(-scores)[:10]
    ms = (time.perf_counter() - t0) * 1000
    return [ids[j] for j in order], ms
