"""``aos eval matching``: routing accuracy and per-query latency, zero-shot and after learning."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from aos_gateway.contracts.records import AgentCard
from aos_gateway.matching.cards import card_text
from aos_gateway.matching.dataset import Example
from aos_gateway.matching.learned import GoldLearner
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


def evaluate(
    cards: Sequence[AgentCard],
    train: Sequence[Example],
    test: Sequence[Example],
    encoder: TextEncoder,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """Zero-shot (card similarity) and learned (gold feedback from ``train``) on ``test``."""
    ids = [c["agent_id"] for c in cards]
    progress(f"eval: encoding {len(cards)} agent cards and {len(train)} training tasks")
    agent_vecs = encoder.encode([card_text(c) for c in cards])
    learner = GoldLearner(ids).fit(encoder.encode([e.text for e in train]), [e.gold[0] for e in train])

    progress(f"eval: {len(test)} test tasks, one at a time (batch 1: encode + search + rank)")
    zero_rank: list[list[str]] = []
    learned_rank: list[list[str]] = []
    zero_ms: list[float] = []
    learned_ms: list[float] = []
    # one query at a time is the serving case; multi-threaded BLAS on such small products spins
    # its threads against torch's (measured: p95 111 ms -> 18 ms per query with one BLAS thread)
    with threadpool_limits(1, user_api="blas"):
        for i, ex in enumerate(test):
            zero, learned, z_ms, l_ms = _rank_one(ex.text, encoder, agent_vecs, learner, ids)
            zero_rank.append(zero)
            learned_rank.append(learned)
            zero_ms.append(z_ms)
            learned_ms.append(l_ms)
            if i and i % 500 == 0:
                progress(f"eval: {i}/{len(test)}")
    gold = [ex.gold for ex in test]
    return {
        "agents": len(cards),
        "train": len(train),
        "test": len(test),
        "feedback": "gold",
        "zero_shot": {**ranking_metrics(zero_rank, gold), "p95_ms": _p95(zero_ms)},
        "learned": {**ranking_metrics(learned_rank, gold), "p95_ms": _p95(learned_ms)},
    }


def _rank_one(
    text: str, encoder: TextEncoder, agent_vecs: FloatArray, learner: GoldLearner, ids: list[str]
) -> tuple[list[str], list[str], float, float]:
    """Rank one task both ways; each path's time counts the encoding and what it uses."""
    t0 = time.perf_counter()
    q: FloatArray = encoder.encode([text], batch_size=1)
    card_scores = q @ agent_vecs.T
    t1 = time.perf_counter()
    order = np.argsort(-card_scores[0])[:10]
    t2 = time.perf_counter()
    lorder = np.argsort(-learner.scores(q, card_scores)[0])[:10]
    t3 = time.perf_counter()
    zero_ms = (t2 - t0) * 1000
    learned_ms = ((t1 - t0) + (t3 - t2)) * 1000
    return [ids[j] for j in order], [ids[j] for j in lorder], zero_ms, learned_ms
