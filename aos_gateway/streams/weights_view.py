"""Learned weights, followed from the compacted ``aos.weights.v1`` topic and hot-reloaded.

Each consumer of learned state (the matcher) reads the topic from the beginning on start and
keeps following it. A record whose name it wants, with a version above the one it holds,
replaces the state through ``on_state``; a bad record is logged and skipped (the state in
use stays).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError
from aos_gateway.matching import weights
from aos_gateway.matching.learned import LearnedState
from aos_gateway.streams.compacted import CompactedView

log = logging.getLogger("aos_gateway.weights")


class WeightsView(CompactedView):
    """Calls ``on_state`` with each newer learned matching state."""

    name = "weights view"

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topic: str,
        codec: RecordCodec,
        on_state: Callable[[LearnedState], None],
    ) -> None:
        super().__init__(consumer_conf, topic)
        self._codec = codec
        self._on_state = on_state
        self.version = 0
        self.skipped = 0

    def caught_up_message(self, seconds: float) -> str:
        held = f"version {self.version}" if self.version else "no learned state"
        return f"weights: {held} after {seconds:.1f}s"

    def apply(self, msgs: list[Any]) -> None:
        newest: Any = None
        for m in msgs:
            if m.value() is None or (m.key() or b"").decode("utf-8", "replace") != weights.NAME:
                continue
            try:
                rec = self._codec.decode(m.value())
            except AosError as exc:
                self.skipped += 1
                log.warning("weights: skipping offset %s: %s", m.offset(), exc)
                continue
            if rec["name"] == weights.NAME and rec["version"] > max(self.version, newest["version"] if newest else 0):
                newest = rec
        if newest is None:
            return
        try:
            state = weights.from_record(newest)
        except AosError as exc:
            self.skipped += 1
            log.warning("weights: cannot use %s v%s: %s", newest["name"], newest["version"], exc)
            return
        try:
            self._on_state(state)
        except AosError as exc:
            self.skipped += 1
            log.warning("weights: refused %s v%s: %s", newest["name"], newest["version"], exc)
            return
        self.version = state.version
        log.info("weights: matching state v%d loaded (%d memories)", state.version, state.memory.shape[0])
