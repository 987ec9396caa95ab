from __future__ import annotations

from aos_gateway.contracts.records import DEAD_LETTER
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.errors import ValidationError
from aos_gateway.streams.deadletter import dead_letter


def test_dead_letter_keeps_source_and_raw_bytes_and_encodes() -> None:
    dl = dead_letter(
        stage="perceive",
        error=ValidationError("empty task"),
        topic="aos.tasks.v1",
        partition=2,
        offset=41,
        key=b"k",
        value=b"\x00\xff",
        task_id="t",
        now_ms=5,
    )
    assert (dl["source_partition"], dl["source_offset"], dl["value"], dl["error_type"]) == (
        2,
        41,
        b"\x00\xff",
        "ValidationError",
    )
    again = dead_letter(
        stage="perceive", error=ValueError("x"), topic="aos.tasks.v1", partition=2, offset=41, key=None, value=None
    )
    assert again["dead_letter_id"] == dl["dead_letter_id"]  # stable id per stage and source offset
    codec = SingleObjectCodec(DEAD_LETTER)
    assert codec.decode(codec.encode(dl)) == dl
