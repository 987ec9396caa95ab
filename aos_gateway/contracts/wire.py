"""Records to bytes and back, with the framing a reader needs to find the writer's schema.

Two framings:

* Avro single-object encoding (the Avro specification's): ``C3 01`` + the 8-byte
  little-endian CRC-64-AVRO fingerprint of the writer schema + the Avro binary body.
  Used when no schema registry is configured; readers find writer schemas among the
  contracts shipped with the package (current and released versions).
* Confluent framing (magic byte 0, 4-byte schema id, body) through confluent-kafka's
  schema-registry client, when ``AOS_SCHEMA_REGISTRY__URL`` is set (``mock://`` works for tests).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any, Protocol

import fastavro

from aos_gateway.contracts.schemas import (
    SINGLE_OBJECT_MAGIC,
    Contract,
    contract,
    contracts_by_fingerprint,
)
from aos_gateway.errors import SchemaMismatchError, SerializationError
from aos_gateway.settings import SchemaRegistrySettings


class RecordCodec(Protocol):
    """What every framing offers."""

    record_name: str

    def encode(self, record: Mapping[str, Any]) -> bytes: ...

    def decode(self, data: bytes) -> dict[str, Any]: ...


def _body(parsed: Any, record: Mapping[str, Any], name: str) -> bytes:
    buf = io.BytesIO()
    try:
        fastavro.schemaless_writer(buf, parsed, dict(record), strict_allow_default=True)
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:  # an int beyond 64 bits overflows
        raise SerializationError(f"record is not a valid {name}: {exc}") from exc
    return buf.getvalue()


def _read(data: bytes, start: int, writer: Contract, reader: Contract) -> dict[str, Any]:
    buf = io.BytesIO(data)
    buf.seek(start)
    try:
        out = fastavro.schemaless_reader(buf, writer.parsed, reader.parsed)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise SerializationError(f"corrupt {reader.name} body: {type(exc).__name__}: {exc}") from exc
    if buf.tell() != len(data):
        raise SerializationError(f"corrupt {reader.name} body: {len(data) - buf.tell()} trailing bytes")
    if not isinstance(out, dict):
        raise SerializationError(f"{reader.name} body did not decode to a record")
    return out


class SingleObjectCodec:
    """Avro single-object encoding (no registry needed)."""

    def __init__(self, record_name: str) -> None:
        self.record_name = record_name
        self._contract = contract(record_name)
        self._header = SINGLE_OBJECT_MAGIC + self._contract.fingerprint

    def encode(self, record: Mapping[str, Any]) -> bytes:
        return self._header + _body(self._contract.parsed, record, self.record_name)

    def decode(self, data: bytes) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < 10 or data[:2] != SINGLE_OBJECT_MAGIC:
            raise SerializationError("not an Avro single-object encoded record (magic bytes C3 01 missing)")
        fp = data[2:10]
        writer = contracts_by_fingerprint().get(fp)
        if writer is None:
            raise SchemaMismatchError(f"unknown writer schema (fingerprint {fp.hex()}); expected {self.record_name}")
        if writer.name != self.record_name:
            raise SchemaMismatchError(f"event is a {writer.name}, expected {self.record_name}")
        return _read(data, 10, writer, self._contract)


class ConfluentCodec:
    """Confluent wire format through a schema registry (confluent-kafka's client)."""

    def __init__(self, record_name: str, topic: str, registry: SchemaRegistrySettings) -> None:
        from confluent_kafka.schema_registry import SchemaRegistryClient
        from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
        from confluent_kafka.serialization import MessageField, SerializationContext

        if not registry.url:
            raise SerializationError("ConfluentCodec needs a schema registry URL")
        conf: dict[str, Any] = {"url": registry.url}
        if registry.basic_auth_user_info is not None:
            conf["basic.auth.user.info"] = registry.basic_auth_user_info.get_secret_value()
        self.record_name = record_name
        self._contract = contract(record_name)
        self._client = SchemaRegistryClient.new_client(conf)  # mock:// gives the library's test double
        self._ctx = SerializationContext(topic, MessageField.VALUE)
        self._ser = AvroSerializer(self._client, self._contract.json_text)
        self._de = AvroDeserializer(self._client, self._contract.json_text)

    def encode(self, record: Mapping[str, Any]) -> bytes:
        try:
            out = self._ser(dict(record), self._ctx)
        except Exception as exc:  # confluent-kafka wraps fastavro errors in several types
            raise SerializationError(f"record is not a valid {self.record_name}: {exc}") from exc
        assert out is not None
        return bytes(out)

    def decode(self, data: bytes) -> dict[str, Any]:
        if not data or data[:1] != b"\x00" or len(data) < 5:
            raise SerializationError("not a Confluent-framed record (magic byte 0 missing)")
        try:
            out = self._de(bytes(data), self._ctx)
        except Exception as exc:
            raise SerializationError(f"cannot decode {self.record_name}: {exc}") from exc
        if not isinstance(out, dict):
            raise SerializationError(f"{self.record_name} did not decode to a record")
        return out


def codec_for(record_name: str, topic: str, registry: SchemaRegistrySettings | None = None) -> RecordCodec:
    """The codec the settings call for: Confluent framing with a registry URL, else single-object."""
    if registry is not None and registry.url:
        return ConfluentCodec(record_name, topic, registry)
    return SingleObjectCodec(record_name)
