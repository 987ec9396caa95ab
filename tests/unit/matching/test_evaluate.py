from __future__ import annotations

from pathlib import Path

import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.matching.dataset import read_examples
from aos_gateway.matching.evaluate import ranking_metrics

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
    assert report["feedback"] == "gold"
    zs, learned = report["zero_shot"], report["learned"]
    assert set(zs) == set(learned) == {"top1", "r5", "mrr", "p95_ms"}
    assert 0.3 < zs["top1"] < learned["top1"] <= 1.0 and zs["p95_ms"] > 0
