from __future__ import annotations

import pytest

from aos_gateway.perception.cache import ResultCache


def test_each_distinct_missing_key_is_computed_once_and_counted_per_row() -> None:
    cache: ResultCache[str] = ResultCache(10)
    calls: list[list[int]] = []

    def compute(first: list[int]) -> list[str]:
        calls.append(first)
        return [f"v{i}" for i in first]

    assert cache.get_or_compute([b"a", b"b", b"a"], compute) == ["v0", "v1", "v0"]
    assert calls == [[0, 1]] and (cache.hits, cache.misses) == (0, 3)
    assert cache.get_or_compute([b"b", b"c"], compute) == ["v1", "v1"]  # b cached; c first at position 1
    assert calls[-1] == [1] and (cache.hits, cache.misses) == (1, 4)
    assert cache.get_or_compute([], compute) == [] and len(calls) == 2


def test_least_recently_used_is_dropped_and_size_zero_keeps_nothing() -> None:
    cache: ResultCache[int] = ResultCache(2)
    cache.get_or_compute([b"a", b"b"], lambda first: [1, 2])
    cache.get_or_compute([b"a"], lambda first: pytest.fail("a is cached"))  # a is now the most recent
    cache.get_or_compute([b"c"], lambda first: [3])  # drops b
    assert len(cache) == 2
    assert cache.get_or_compute([b"b"], lambda first: [20]) == [20]
    none: ResultCache[int] = ResultCache(0)
    none.get_or_compute([b"a"], lambda first: [1])
    assert len(none) == 0 and none.get_or_compute([b"a"], lambda first: [5]) == [5]
    cache.clear()
    assert len(cache) == 0 and cache.get_or_compute([b"a"], lambda first: [10]) == [10]


def test_a_failed_computation_caches_nothing() -> None:
    cache: ResultCache[int] = ResultCache(4)

    def boom(first: list[int]) -> list[int]:
        raise RuntimeError("model down")

    with pytest.raises(RuntimeError):
        cache.get_or_compute([b"a"], boom)
    assert len(cache) == 0 and cache.get_or_compute([b"a"], lambda first: [7]) == [7]
