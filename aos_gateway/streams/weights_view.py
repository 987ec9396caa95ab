"""Learned weights, followed from the compacted ``aos.weights.v1`` topic and hot-reloaded.

Each consumer of learned state reads the topic from the beginning on start and keeps following
it. Records are keyed by name: the matcher's state (``matching.ranker``) and the network quality
predictor (``network.quality``). A record whose name is followed, with a version above the one
held, replaces that state through its callback; a bad record is logged and skipped (the state in
use stays).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from aos_gateway.contracts.records import Weights
from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError
from aos_gateway.matching import weights
from aos_gateway.matching.learned import LearnedState
from aos_gateway.streams.compacted import CompactedView

log = logging.getLogger("aos_gateway.weights")

#: name -> (record -> state, state -> None)
Handlers = dict[str, tuple[Callable[[Weights], Any], Callable[[Any], None]]]


class WeightsView(CompactedView):
    """Calls ``on_state`` with each newer learned matching state (and ``extra`` handlers with theirs)."""

    name = "weights view"

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topic: str,
        codec: RecordCodec,
        on_state: Callable[[LearnedState], None] | None,
        extra: Handlers | None = None,
    ) -> None:
        super().__init__(consumer_conf, topic)
        self._codec = codec
        self._handlers: Handlers = dict(extra or {})
        if on_state is not None:
            self._handlers[weights.NAME] = (weights.from_record, on_state)
        self.versions: dict[str, int] = {}
        self.skipped = 0

    @property
    def version(self) -> int:
        """The matching state's version held (0: none)."""
        return self.versions.get(weights.NAME, 0)

    def caught_up_message(self, seconds: float) -> str:
        held = ", ".join(f"{n} v{v}" for n, v in sorted(self.versions.items())) or "no learned state"
        return f"weights: {held} after {seconds:.1f}s"

    def apply(self, msgs: list[Any]) -> None:
        newest: dict[str, Weights] = {}
        for m in msgs:
            name = (m.key() or b"").decode("utf-8", "replace")
            if m.value() is None or name not in self._handlers:
                continue
            try:
                rec: Weights = self._codec.decode(m.value())  # type: ignore[assignment]
            except AosError as exc:
                self.skipped += 1
                log.warning("weights: skipping offset %s: %s", m.offset(), exc)
                continue
            held = max(self.versions.get(name, 0), newest[name]["version"] if name in newest else 0)
            if rec["name"] == name and rec["version"] > held:
                newest[name] = rec
        for name, chosen in newest.items():
            load, use = self._handlers[name]
            try:
                use(load(chosen))
            except AosError as exc:
                self.skipped += 1
                log.warning("weights: cannot use %s v%s: %s", name, chosen["version"], exc)
                continue
            self.versions[name] = chosen["version"]
            log.info("weights: %s v%d loaded", name, chosen["version"])
