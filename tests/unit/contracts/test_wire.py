from __future__ import annotations

import pytest

from aos_gateway.client import new_task
from aos_gateway.contracts.records import PLAN, TASK_REQUEST
from aos_gateway.contracts.schemas import contract
from aos_gateway.contracts.wire import ConfluentCodec, SingleObjectCodec, codec_for
from aos_gateway.errors import SchemaMismatchError, SerializationError
from aos_gateway.settings import SchemaRegistrySettings


def test_single_object_encoding_has_the_spec_header() -> None:
    codec = SingleObjectCodec(TASK_REQUEST)
    data = codec.encode(new_task("hello", task_id="t1"))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == contract(TASK_REQUEST).fingerprint
    out = codec.decode(data)
    assert out["task_id"] == "t1" and out["text"] == "hello" and out["tenant"] == "default"


@pytest.mark.parametrize(
    "raw",
    [b"", b"garbage bytes that are not avro", b"\xc3\x01", b"\x00\x00\x00\x00\x01hello", bytes(range(256))],
)
def test_garbage_is_a_serialization_error(raw: bytes) -> None:
    with pytest.raises(SerializationError):
        SingleObjectCodec(TASK_REQUEST).decode(raw)


def test_a_record_of_another_schema_is_named_in_the_error() -> None:
    plan = SingleObjectCodec(PLAN)
    from aos_gateway.network.sequential import plan_sequential

    data = plan.encode(
        plan_sequential(
            {
                "task_id": "t",
                "tenant": "d",
                "submitted_at": 1,
                "text": "x",
                "transcript": None,
                "modalities": ["text"],
                "fused": {"name": "f", "model": "", "dim": 0, "dtype": "FLOAT32", "scale": 1.0, "data": b""},
                "candidates": [],
                "abstained": True,
                "reason": "none",
                "index_size": 0,
                "reply_to": None,
                "trace_id": None,
                "notes": [],
                "timings": {},
            },
            now_ms=2,
        )
    )
    with pytest.raises(SchemaMismatchError, match=r"is a aos\.plans\.Plan, expected aos\.tasks\.TaskRequest"):
        SingleObjectCodec(TASK_REQUEST).decode(data)


def test_unknown_fingerprint_is_a_schema_mismatch() -> None:
    data = SingleObjectCodec(TASK_REQUEST).encode(new_task("x"))
    with pytest.raises(SchemaMismatchError, match="unknown writer schema"):
        SingleObjectCodec(TASK_REQUEST).decode(data[:2] + b"\x00" * 8 + data[10:])


def test_truncated_and_padded_bodies_are_rejected() -> None:
    codec = SingleObjectCodec(TASK_REQUEST)
    data = codec.encode(new_task("some text"))
    with pytest.raises(SerializationError):
        codec.decode(data[:-3])
    with pytest.raises(SerializationError, match="trailing"):
        codec.decode(data + b"\x00\x00")


def test_encoding_an_invalid_record_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        SingleObjectCodec(TASK_REQUEST).encode({"task_id": 5})


def test_confluent_framing_through_the_mock_registry() -> None:
    # confluent-kafka's own test double: no schema-registry server can run here.
    codec = codec_for(TASK_REQUEST, "aos.tasks.v1", SchemaRegistrySettings(url="mock://unit"))
    assert isinstance(codec, ConfluentCodec)
    data = codec.encode(new_task("hi", task_id="c1"))
    assert data[0] == 0 and len(data) > 5  # magic byte 0, then a 4-byte schema id
    assert codec.decode(data)["task_id"] == "c1"
    with pytest.raises(SerializationError):
        codec.decode(b"\xc3\x01not confluent")


def test_no_registry_means_single_object() -> None:
    assert isinstance(codec_for(TASK_REQUEST, "aos.tasks.v1", SchemaRegistrySettings()), SingleObjectCodec)
