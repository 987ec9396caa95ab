"""Which agents are alive: the latest heartbeat of each agent process, from ``aos.agents.heartbeats.v1``.

An agent is *alive* when one of its processes sent an ACTIVE heartbeat within
``max(liveness_timeout, 3 x its interval)``; *down* when every process it had is stale or said
INACTIVE; *unknown* (``None``) when none ever sent one — such agents (not run with the SDK) are
invoked anyway and found out by their timeouts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from aos_gateway.contracts.records import Heartbeat
from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError, SerializationError
from aos_gateway.settings import Settings
from aos_gateway.streams.compacted import CompactedView

log = logging.getLogger("aos_gateway.liveness")


class Liveness:
    """Heartbeats by agent and process; thread-safe."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_ms = int(timeout_s * 1000)
        self._beats: dict[str, dict[str, Heartbeat]] = {}
        self._lock = threading.Lock()

    def record(self, hb: Heartbeat) -> None:
        with self._lock:
            procs = self._beats.setdefault(hb["agent_id"], {})
            old = procs.get(hb["instance_id"])
            if old is None or old["sent_at"] <= hb["sent_at"]:
                procs[hb["instance_id"]] = hb

    def alive(self, agent_id: str, now_ms: int | None = None) -> bool | None:
        now = int(time.time() * 1000) if now_ms is None else now_ms
        with self._lock:
            procs = self._beats.get(agent_id)
            if not procs:
                return None
            return any(self._fresh(hb, now) for hb in procs.values())

    def _fresh(self, hb: Heartbeat, now: int) -> bool:
        return hb["status"] != "INACTIVE" and now - hb["sent_at"] <= max(self.timeout_ms, 3 * hb["interval_ms"])

    def describe(self, agent_id: str, now_ms: int | None = None) -> str:
        """For people: ``running (2 processes, last beat 3 s ago)``, ``down (stopped 5 min ago)``,
        ``down (last beat 2 h ago)``, or ``no heartbeat`` (not run with the SDK: invoked anyway)."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        alive = self.alive(agent_id, now)
        with self._lock:
            beats = list(self._beats.get(agent_id, {}).values())
        if alive is None or not beats:
            return "no heartbeat"
        latest = max(beats, key=lambda hb: hb["sent_at"])
        age = _age(now - latest["sent_at"])
        if alive:
            live = [hb for hb in beats if self._fresh(hb, now)]
            procs = f"{len(live)} process{'es' if len(live) != 1 else ''}"
            return f"running ({procs}, last beat {age} ago)"
        if latest["status"] == "INACTIVE":
            return f"down (stopped {age} ago)"
        return f"down (last beat {age} ago)"


def _age(ms: int) -> str:
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    return f"{s // 3600} h"


def decode_heartbeats(
    messages: Iterable[Any], codec: RecordCodec, warn: Callable[[str], None] | None = None
) -> list[Heartbeat]:
    """The heartbeats decoded from ``messages``, skipping what is not one (garbage bytes, an empty value,
    a tombstone) as the worker does; ``warn`` hears of the skipped records once, with a count."""
    out: list[Heartbeat] = []
    skipped = 0
    first = ""
    for m in messages:
        value = m.value()
        try:
            if value is None:
                raise SerializationError("a tombstone (no value)")
            out.append(codec.decode(value))  # type: ignore[arg-type]
        except SerializationError as exc:
            skipped += 1
            first = first or f"{m.topic()}[{m.partition()}]@{m.offset()}: {exc}"
    if skipped and warn is not None:
        warn(f"skipped {skipped} undecodable heartbeat record(s) (first: {first})")
    return out


def read_liveness(settings: Settings, warn: Callable[[str], None] | None = None) -> Liveness:
    """The agents' liveness as the heartbeat topic says now (read to its end once)."""
    from aos_gateway import topics
    from aos_gateway.contracts.records import HEARTBEAT
    from aos_gateway.contracts.wire import codec_for
    from aos_gateway.streams.kafka import read_to_end

    codec = codec_for(HEARTBEAT, topics.HEARTBEATS.name, settings.schema_registry)
    live = Liveness(settings.execution.liveness_timeout_s)
    for beat in decode_heartbeats(read_to_end(settings.kafka, topics.HEARTBEATS.name), codec, warn):
        live.record(beat)
    return live


class HeartbeatView(CompactedView):
    """Follows the heartbeat topic into a :class:`Liveness`."""

    name = "heartbeat view"

    def __init__(self, consumer_conf: dict[str, Any], topic: str, codec: RecordCodec, liveness: Liveness) -> None:
        super().__init__(consumer_conf, topic)
        self._codec = codec
        self.liveness = liveness

    def apply(self, msgs: list[Any]) -> None:
        for m in msgs:
            if m.value() is None:
                continue
            try:
                self.liveness.record(self._codec.decode(m.value()))  # type: ignore[arg-type]
            except AosError as exc:
                log.warning("heartbeat at %s[%d]@%d skipped: %s", m.topic(), m.partition(), m.offset(), exc)
