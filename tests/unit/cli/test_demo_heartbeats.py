"""``aos demo`` skips heartbeat records it cannot decode (garbage, empty value, tombstone), as the worker does."""

from __future__ import annotations

import time
from dataclasses import dataclass

import pytest

from aos_gateway import topics
from aos_gateway.cli import demo
from aos_gateway.contracts.records import HEARTBEAT, Heartbeat
from aos_gateway.contracts.wire import codec_for
from aos_gateway.settings import Settings
from aos_gateway.streams.liveness import decode_heartbeats

CODEC = codec_for(HEARTBEAT, topics.HEARTBEATS.name)


@dataclass
class Msg:
    v: bytes | None
    off: int

    def value(self) -> bytes | None:
        return self.v

    def topic(self) -> str:
        return topics.HEARTBEATS.name

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self.off


def _beat(agent: str) -> bytes:
    hb = Heartbeat(
        agent_id=agent,
        instance_id="i1",
        status="ACTIVE",
        in_flight=0,
        handled=0,
        sent_at=int(time.time() * 1000),
        interval_ms=1000,
    )
    return CODEC.encode(hb)


def _messages() -> list[Msg]:
    return [Msg(b"garbage", 0), Msg(_beat("ref-a"), 1), Msg(b"", 2), Msg(None, 3), Msg(_beat("ref-b"), 4)]


def test_undecodable_heartbeats_are_skipped_and_counted() -> None:
    said: list[str] = []
    beats = decode_heartbeats(_messages(), CODEC, said.append)
    assert [b["agent_id"] for b in beats] == ["ref-a", "ref-b"]
    assert len(said) == 1
    assert "skipped 3 undecodable heartbeat record(s)" in said[0]
    assert f"{topics.HEARTBEATS.name}[0]@0" in said[0]


def test_wait_alive_goes_on_past_bad_records_and_warns_once(monkeypatch: pytest.MonkeyPatch) -> None:
    passes = [0]

    def read_to_end(_kafka: object, topic: str, timeout: float = 30.0) -> list[Msg]:
        assert topic == topics.HEARTBEATS.name
        passes[0] += 1
        msgs = _messages()
        return msgs if passes[0] > 1 else msgs[:4]  # ref-b beats only from the second pass on

    monkeypatch.setattr("aos_gateway.streams.kafka.read_to_end", read_to_end)
    monkeypatch.setattr(demo.time, "sleep", lambda _s: None)
    said: list[str] = []
    demo.wait_alive(Settings(), ["ref-a", "ref-b"], 30, said.append)
    assert passes[0] == 2
    assert sum("undecodable" in m for m in said) == 1
    assert said[-1] == "agents alive: ref-a, ref-b"
