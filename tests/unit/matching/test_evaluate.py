from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.matching.dataset import read_examples
from aos_gateway.matching.evaluate import ranking_metrics
from aos_gateway.matching.learned import GoldLearner

METATOOL = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "metatool"


def test_ranking_metrics() -> None:
    got = ranking_metrics([["a", "b"], ["b", "a"], ["c", "d", "e", "f", "g", "a"]], [["a"], ["a"], ["a"]])
    assert got == {"top1": round(1 / 3, 4), "r5": round(2 / 3, 4), "mrr": round((1 + 0.5 + 1 / 6) / 3, 4)}


def test_read_examples_validates(tmp_path: Path) -> None:
    f = tmp_path / "t.jsonl"
    f.write_text('{"task_id": "1", "text": "hi", "gold": ["A"]}\n{"text": "x", "gold": []}\n')
    with pytest.raises(ValidationError, match=r"t\.jsonl:2"):
        read_examples(f)
    assert [e.gold for e in read_examples(f, limit=1)] == [("A",)]


def test_learner_beats_a_misleading_card_score() -> None:
    rng = np.random.default_rng(0)
    centers = np.eye(3, 8, dtype=np.float32)
    x = np.concatenate([c + 0.05 * rng.normal(size=(20, 8)) for c in centers]).astype(np.float32)
    y = ["a"] * 20 + ["b"] * 20 + ["c"] * 20
    learner = GoldLearner(["a", "b", "c"], k=5).fit(x, y)
    query = centers[1:2]
    misleading = np.array([[0.9, 0.1, 0.1]], dtype=np.float32)  # the cards point at "a"
    assert int(np.argmax(learner.scores(query, misleading)[0])) == 1


@pytest.mark.skipif(not METATOOL.is_dir(), reason="shared MetaTool data not beside the checkout")
def test_eval_on_a_metatool_subset_learns_something() -> None:
    from aos_gateway.matching.cards import read_cards
    from aos_gateway.matching.evaluate import evaluate
    from aos_gateway.perception.text import TextEncoder

    report = evaluate(
        list(read_cards(METATOOL / "agents.jsonl")),
        read_examples(METATOOL / "train.jsonl", 2000),
        read_examples(METATOOL / "dev.jsonl", 200),
        TextEncoder(),
    )
    zs, learned = report["zero_shot"], report["learned"]
    assert set(zs) == set(learned) == {"top1", "r5", "mrr", "p95_ms"}
    assert 0.3 < zs["top1"] < learned["top1"] <= 1.0 and zs["p95_ms"] > 0
