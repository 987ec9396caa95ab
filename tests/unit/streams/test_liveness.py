"""Which agents are alive, from their heartbeats (aos_gateway/streams/liveness.py)."""

from __future__ import annotations

from aos_gateway.contracts.records import AgentStatus, Heartbeat
from aos_gateway.streams.liveness import Liveness

NOW = 1_000_000_000


def beat(agent: str, instance: str, ago_ms: int, status: AgentStatus = "ACTIVE", interval_ms: int = 5_000) -> Heartbeat:
    return Heartbeat(
        agent_id=agent,
        instance_id=instance,
        status=status,
        in_flight=0,
        handled=0,
        sent_at=NOW - ago_ms,
        interval_ms=interval_ms,
    )


def test_alive_down_or_unknown() -> None:
    live = Liveness(timeout_s=15)
    live.record(beat("a", "p1", 3_000))
    live.record(beat("b", "p1", 60_000))
    live.record(beat("c", "p1", 1_000, "INACTIVE"))
    assert live.alive("a", NOW) is True
    assert live.alive("b", NOW) is False  # stale
    assert live.alive("c", NOW) is False  # said it stopped
    assert live.alive("never", NOW) is None  # not run with the SDK: invoked anyway


def test_an_older_beat_does_not_replace_a_newer_one() -> None:
    live = Liveness(timeout_s=15)
    live.record(beat("a", "p1", 1_000))
    live.record(beat("a", "p1", 50_000))  # a late, older record of the same process
    assert live.alive("a", NOW) is True


def test_describe_for_people() -> None:
    live = Liveness(timeout_s=15)
    live.record(beat("a", "p1", 3_000))
    live.record(beat("a", "p2", 4_000))
    live.record(beat("a", "p0", 3_600_000))  # an old process of the same agent
    live.record(beat("b", "p1", 300_000))
    live.record(beat("c", "p1", 90_000, "INACTIVE"))
    live.record(beat("d", "p1", 3 * 3_600_000))
    assert live.describe("a", NOW) == "running (2 processes, last beat 3 s ago)"
    assert live.describe("b", NOW) == "down (last beat 5 min ago)"
    assert live.describe("c", NOW) == "down (stopped 90 s ago)"
    assert live.describe("d", NOW) == "down (last beat 3 h ago)"
    assert live.describe("never", NOW) == "no heartbeat"
