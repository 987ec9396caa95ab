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
    # the cards' prototypes adapted to the 2,000 training tasks, their labels unused: better than the
    # cards alone (deterministic: the same encoder, no random choice)
    assert set(report["unsupervised"]) == set(zs) and report["unsupervised"]["top1"] > zs["top1"]


def test_bandit_with_fallback_tries_a_failed_task_once_more_and_learns_from_both_tries() -> None:
    import numpy as np

    from aos_gateway.matching.dataset import Example
    from aos_gateway.matching.evaluate import learn

    rng = np.random.default_rng(3)
    ids = ["a", "b", "c", "d"]
    centres = np.eye(4, 8, dtype=np.float32)
    labels = rng.integers(0, 4, 400)
    vecs = centres[labels] + 0.1 * rng.normal(size=(400, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    train = [Example(f"t{i}", "", (ids[y],)) for i, y in enumerate(labels)]
    cards = np.roll(centres, 1, axis=0)  # every card points at the wrong tasks: zero-shot is wrong
    _, plain = learn("bandit", ids, cards, train, vecs)
    _, with_fb = learn("bandit", ids, cards, train, vecs, fallback=True)
    assert not plain["bandit_fallback"] and with_fb["bandit_fallback"]
    assert plain["bandit_trials"] == 400 and plain["bandit_solved_rate"] == plain["bandit_success_rate"]
    failed_first = with_fb["bandit_trials"] - 400  # each task whose first agent failed had one more try
    assert 0 < failed_first < 400
    assert with_fb["bandit_solved_rate"] > plain["bandit_solved_rate"]
    # successes = tasks solved (by the first try or the fallback): one success at most per task
    successes = round(with_fb["bandit_success_rate"] * with_fb["bandit_trials"])
    assert successes == round(with_fb["bandit_solved_rate"] * 400)


def test_read_examples_names_a_missing_field_and_refuses_an_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "nogold.jsonl"
    f.write_text('{"text": "hi"}\n')
    with pytest.raises(ValidationError, match=r'nogold\.jsonl:1: no "gold" \(a list of agent ids\)$'):
        read_examples(f)
    assert [e.gold for e in read_examples(f, labelled=False)] == [()]  # unlabelled: gold may be left out
    f.write_text('{"gold": ["A"]}\n')
    with pytest.raises(ValidationError, match=r'nogold\.jsonl:1: no "text"'):
        read_examples(f)
    f.write_text("\n  \n")
    for labelled in (True, False):
        with pytest.raises(ValidationError, match=r"^no tasks in .*nogold\.jsonl$"):
            read_examples(f, labelled=labelled)
