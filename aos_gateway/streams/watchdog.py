"""Stalled-partition watchdog: an assigned partition with records waiting that is not read gets resumed.

Seen in the fault suite (worker kill -9, restart): after the rebalance, the new worker read one
partition of ``aos.tasks.v1`` and never fetched the other three, for minutes, while records waited
on them — faust-streaming's open issue "Certain topic partitions are not sending fetch requests"
(faust-streaming/faust#629). Nothing is lost (the records stay on the topic, uncommitted), but
nothing moves either. Every ``interval`` the watchdog compares, for each assigned source partition,
the broker's end offset with the worker's read position; a partition whose position has not moved
for ``stall_s`` while records wait is resumed and re-seeked to its position (the fetcher state is
reset), and a warning names it. :class:`StallWatch` is the pure decision; :func:`install` the timer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("aos_gateway.watchdog")


@dataclass
class StallWatch:
    """Which partitions have records waiting and have not moved for ``stall_s`` seconds."""

    stall_s: float
    _seen: dict[Hashable, tuple[int, float]] = field(default_factory=dict)

    def check(self, now: float, progress: Mapping[Hashable, tuple[int, int]]) -> list[Hashable]:
        """``progress``: partition -> (next offset to read, broker end offset). Returns the stalled
        partitions (each reported once per ``stall_s`` while it stays stalled)."""
        stalled: list[Hashable] = []
        for tp, (position, end) in progress.items():
            prev = self._seen.get(tp)
            if prev is None or prev[0] != position or end <= position:
                self._seen[tp] = (position, now)  # moving, or nothing to read
                continue
            if now - prev[1] >= self.stall_s:
                stalled.append(tp)
                self._seen[tp] = (position, now)
        for tp in set(self._seen) - set(progress):
            del self._seen[tp]
        return stalled


async def _progress(consumer: Any, internal_prefix: str) -> dict[Hashable, tuple[int, int]]:
    tps = [
        tp
        for tp in consumer.assignment()
        if not tp.topic.endswith("-changelog") and not tp.topic.startswith(internal_prefix)
    ]
    if not tps:
        return {}
    ends = await asyncio.wait_for(consumer.highwaters(*tps), 10.0)
    out: dict[Hashable, tuple[int, int]] = {}
    for tp in tps:
        read = consumer._read_offset.get(tp)  # Faust's last offset handed to a stream
        position = read + 1 if read is not None else await asyncio.wait_for(consumer.position(tp), 2.0)
        if position is not None and tp in ends:
            out[tp] = (int(position), int(ends[tp]))
    return out


async def unstick(consumer: Any, tp: Any, position: int) -> None:
    paused = tp in getattr(consumer, "_paused_partitions", set())
    log.warning(
        "watchdog: %s[%d] has records waiting and was not read for a while (paused by Faust: %s); "
        "resuming it and seeking to %d",
        tp.topic,
        tp.partition,
        paused,
        position,
    )
    consumer.resume_partitions([tp])
    await consumer.seek(tp, position)


def install(app: Any, interval_s: float, stall_s: float) -> StallWatch:
    """Check the worker's partitions every ``interval_s``."""
    watch = StallWatch(stall_s)

    @app.timer(interval=interval_s)  # type: ignore[untyped-decorator]
    async def partition_watchdog() -> None:
        try:
            consumer = app.consumer
            progress = await _progress(consumer, f"{app.conf.id}-")
            loop = asyncio.get_running_loop()
            for tp in watch.check(loop.time(), progress):
                await unstick(consumer, tp, progress[tp][0])
        except Exception as exc:  # never let the timer die; a rebalance in progress, a slow broker
            log.debug("watchdog: no check this time: %s", exc)

    return watch
