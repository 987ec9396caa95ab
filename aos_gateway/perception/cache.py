"""A cache of model results by content digest, shared by the encoders."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Generic, TypeVar

V = TypeVar("V")


class ResultCache(Generic[V]):
    """Results by content key (a digest of the input): the least recently used is dropped past
    ``size`` entries (0: nothing is kept). Hits and misses are counted per requested row. Thread-safe;
    the model runs outside the lock, so two threads missing the same key may both compute it."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[bytes, V] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        """Forget every result (the counts stay)."""
        with self._lock:
            self._items.clear()

    def get_or_compute(self, keys: Sequence[bytes], compute: Callable[[list[int]], Iterable[V]]) -> list[V]:
        """The result of each key, in order. The missing ones come from one call of ``compute``
        with the first position of each distinct missing key; it returns their results in that order."""
        out: list[V | None] = [None] * len(keys)
        todo: dict[bytes, list[int]] = {}
        with self._lock:
            for i, k in enumerate(keys):
                hit = self._items.get(k)
                if hit is not None:
                    self._items.move_to_end(k)
                    out[i] = hit
                    self.hits += 1
                else:
                    todo.setdefault(k, []).append(i)
                    self.misses += 1
        if todo:
            fresh = compute([at[0] for at in todo.values()])
            with self._lock:
                for (k, at), v in zip(todo.items(), fresh, strict=True):
                    for i in at:
                        out[i] = v
                    if self.size:
                        self._items[k] = v
                        if len(self._items) > self.size:
                            self._items.popitem(last=False)
        return [v for v in out if v is not None]


class CacheCounts:
    """``hits`` and ``misses`` of an encoder's ``_cache``: rows served from it, rows computed."""

    _cache: ResultCache[Any]

    @property
    def hits(self) -> int:
        return self._cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses
