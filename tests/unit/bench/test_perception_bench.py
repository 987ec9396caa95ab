from __future__ import annotations

import pytest

from aos_gateway.bench.perception import _compare, _measure, word_accuracy


def test_word_accuracy_is_one_minus_word_error_rate() -> None:
    assert word_accuracy("What is the weather in Paris", "what is the weather in paris?") == 1.0
    assert word_accuracy("what is the weather", "what is that weather") == pytest.approx(0.75)
    assert word_accuracy("a b c d", "a c d") == pytest.approx(0.75)  # one deletion
    assert word_accuracy("a b", "x y z w v") == 0.0  # floored
    assert word_accuracy("", "") == 1.0


def test_measure_counts_every_item_and_compares_at_a_batch() -> None:
    seen: list[int] = []
    r = _measure(lambda xs: seen.extend(xs), list(range(40)), (1, 8, 32), latency_n=5)
    # warm-up 1 + latency 5 + batches: 40 + 40 + 32 (one whole chunk of 32)
    assert len(seen) == 1 + 5 + 40 + 40 + 32
    assert set(r["items_per_s"]) == {"1", "8", "32"} and r["best_batch"] in (1, 8, 32)
    stage = {"items_per_s": {"32": 90.0}, "p50_ms": 12.0}
    bare = {"items_per_s": {"32": 99.0}, "p50_ms": 10.0}
    assert _compare(stage, bare, 32) == {"at_batch": 32, "overhead": 0.1, "stage_over_bare_p50": 1.2}
