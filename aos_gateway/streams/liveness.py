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
from typing import Any

from aos_gateway.contracts.records import Heartbeat
from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError
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
            return any(
                hb["status"] != "INACTIVE" and now - hb["sent_at"] <= max(self.timeout_ms, 3 * hb["interval_ms"])
                for hb in procs.values()
            )


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
