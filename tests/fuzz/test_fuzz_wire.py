"""Avro wire decoding of hostile bytes: a record or SerializationError, fast, in bounded memory.

Both framings (single-object, Confluent through ``mock://``) and the Faust codec over them, for
every contract: random bytes, a valid header with a garbage body, truncated and bit-flipped valid
encodings, huge length prefixes; and encoding of records that break the contract.
"""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aos_gateway.contracts.records import AGENT_CARD, DEAD_LETTER, TASK_REQUEST
from aos_gateway.contracts.schemas import SINGLE_OBJECT_MAGIC, contract, current_contracts
from aos_gateway.contracts.wire import ConfluentCodec, RecordCodec, SingleObjectCodec, codec_for
from aos_gateway.errors import SerializationError
from aos_gateway.settings import SchemaRegistrySettings
from aos_gateway.streams.codec import AvroCodec
from tests.fuzz.strategies import FUZZ_TIMEOUT, INT64, avro_records, fuzz, json_values, zigzag

pytestmark = FUZZ_TIMEOUT

NAMES = sorted(current_contracts())
CODECS = {name: SingleObjectCodec(name) for name in NAMES}


def _decode_or_refuse(codec: RecordCodec, data: bytes) -> dict[str, Any] | None:
    """The only allowed outcomes: a record (that encodes again) or a SerializationError."""
    try:
        out = codec.decode(data)
    except SerializationError:  # SchemaMismatchError is one
        return None
    assert isinstance(out, dict)
    codec.encode(out)  # what was read is a valid record of the contract
    return out


@st.composite
def encoded(draw: st.DrawFn, names: list[str] = NAMES) -> tuple[str, bytes]:
    name = draw(st.sampled_from(names))
    record = draw(avro_records(contract(name).parsed))
    return name, CODECS[name].encode(record)


@fuzz(300)
@given(st.sampled_from(NAMES), st.binary(max_size=512))
def test_random_bytes_decode_or_refuse(name: str, data: bytes) -> None:
    _decode_or_refuse(CODECS[name], data)


@fuzz(300)
@given(st.sampled_from(NAMES), st.binary(max_size=512))
def test_a_valid_header_with_a_garbage_body(name: str, body: bytes) -> None:
    codec = CODECS[name]
    _decode_or_refuse(codec, SINGLE_OBJECT_MAGIC + contract(name).fingerprint + body)


@fuzz(100)
@given(encoded())
def test_valid_records_round_trip(case: tuple[str, bytes]) -> None:
    name, data = case
    codec = CODECS[name]
    assert codec.encode(codec.decode(data)) == data


@fuzz(100)
@given(encoded(), st.data())
def test_truncated_records_are_refused(case: tuple[str, bytes], data: st.DataObject) -> None:
    name, full = case
    cut = data.draw(st.integers(min_value=0, max_value=len(full) - 1))
    with pytest.raises(SerializationError):
        CODECS[name].decode(full[:cut])


@fuzz(100)
@given(encoded(), st.data())
def test_bit_flips_and_overwrites(case: tuple[str, bytes], data: st.DataObject) -> None:
    name, full = case
    buf = bytearray(full)
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(buf) - 1))
        if data.draw(st.booleans()):
            buf[at] ^= 1 << data.draw(st.integers(min_value=0, max_value=7))
        else:
            buf[at] = data.draw(st.integers(min_value=0, max_value=255))
    _decode_or_refuse(CODECS[name], bytes(buf))


@fuzz(100, deadline_s=None)
@given(encoded(), st.data())
def test_huge_length_prefixes_fail_fast_in_bounded_memory(case: tuple[str, bytes], data: st.DataObject) -> None:
    """A length or block count of up to 2**63 spliced into a valid encoding: no gigabytes, no hang."""
    name, full = case
    at = data.draw(st.integers(min_value=10, max_value=len(full)))
    huge = data.draw(st.one_of(st.integers(min_value=2**20, max_value=INT64[1]), st.integers(*INT64)))
    tail = data.draw(st.sampled_from([b"", full[at:], full[at + 1 :], b"\x00" * 8, b"\xff" * 8]))
    mutated = full[:at] + zigzag(huge) + tail
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        _decode_or_refuse(CODECS[name], mutated)
    finally:
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < 32 * 1024 * 1024, f"decoding {len(mutated)} bytes allocated {peak} bytes"
    assert elapsed < 10.0, f"decoding {len(mutated)} bytes took {elapsed:.1f}s"


def _breaking(value: Any) -> st.SearchStrategy[Any]:
    return st.one_of(
        json_values,
        st.integers(min_value=-(2**80), max_value=2**80),
        st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 10**30, float("nan"), float("inf")]),
        st.binary(max_size=8),
        st.just(object()),
    )


@fuzz(120)
@given(st.sampled_from([TASK_REQUEST, AGENT_CARD, DEAD_LETTER]), st.data())
def test_encoding_a_record_that_breaks_the_contract_is_a_serialization_error(name: str, data: st.DataObject) -> None:
    """A wrong type, an out-of-range number or a lone surrogate in any one field: SerializationError."""
    record = data.draw(avro_records(contract(name).parsed))
    field = data.draw(st.sampled_from(sorted(record)))
    record[field] = data.draw(_breaking(record[field]))
    try:
        out = CODECS[name].encode(record)
    except SerializationError:
        return
    assert CODECS[name].decode(out) is not None


def test_an_out_of_range_long_is_a_serialization_error() -> None:
    """Regression: fastavro raises OverflowError for an int beyond 64 bits; it escaped encode()."""
    record = {
        "agent_id": "a", "name": "a", "description": "", "capabilities": [], "modalities": [], "examples": [],
        "tenant": "t", "cost": 0.0, "p95_latency_ms": 1, "status": "ACTIVE", "invocation_topic": None,
        "updated_at": 10**30, "metadata": {},
    }  # fmt: skip
    with pytest.raises(SerializationError, match="not a valid"):
        CODECS[AGENT_CARD].encode(record)


@pytest.fixture(scope="module")
def confluent() -> ConfluentCodec:
    codec = codec_for(TASK_REQUEST, "aos.tasks.v1", SchemaRegistrySettings(url="mock://fuzz"))
    assert isinstance(codec, ConfluentCodec)
    return codec


@fuzz(200)
@given(st.binary(max_size=256), st.sampled_from([b"", b"\x00", b"\x00\x00\x00\x00\x01", b"\x00\xff\xff\xff\xff"]))
def test_confluent_framing_decodes_or_refuses(confluent: ConfluentCodec, body: bytes, prefix: bytes) -> None:
    _decode_or_refuse(confluent, prefix + body)


@fuzz(100)
@given(st.data())
def test_confluent_framing_of_mutated_valid_records(confluent: ConfluentCodec, data: st.DataObject) -> None:
    record = data.draw(avro_records(contract(TASK_REQUEST).parsed))
    full = bytearray(confluent.encode(record))
    assert confluent.decode(bytes(full)) is not None
    cut = data.draw(st.integers(min_value=0, max_value=len(full)))
    for _ in range(data.draw(st.integers(min_value=0, max_value=3))):
        full[data.draw(st.integers(min_value=0, max_value=len(full) - 1))] ^= 0xFF
    _decode_or_refuse(confluent, bytes(full[:cut]))


@fuzz(100)
@given(st.binary(max_size=256))
def test_the_faust_codec_refuses_like_the_record_codec(data: bytes) -> None:
    codec = AvroCodec(CODECS[TASK_REQUEST])
    try:
        out = codec.loads(data)
    except SerializationError:
        return
    assert isinstance(out, dict)
