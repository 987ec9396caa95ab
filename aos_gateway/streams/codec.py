"""Avro as a Faust codec, for topics whose records Faust should decode itself.

``register_codecs()`` registers one codec per catalog topic under the topic's name, e.g.
``app.topic("aos.plans.v1", value_serializer="aos.plans.v1")``. The framing follows the
settings (Confluent with a schema registry URL, Avro single-object otherwise).

The gateway's own stages keep their topics raw and decode inside the per-event ``try``:
an error raised in a Faust codec happens before the agent sees the event, where it cannot
be dead-lettered with its offset and bytes.
"""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.settings import SchemaRegistrySettings
from aos_gateway.topics import CATALOG


class AvroCodec(codecs.Codec):
    """Dicts <-> Avro bytes of one record type."""

    def __init__(self, record: RecordCodec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.record = record

    def _dumps(self, obj: Any) -> bytes:
        return self.record.encode(obj)

    def _loads(self, s: bytes) -> Any:
        return self.record.decode(s)


def register_codecs(registry: SchemaRegistrySettings | None = None) -> list[str]:
    """Register a codec named after each catalog topic; returns the names."""
    names = []
    for spec in CATALOG:
        codecs.register(spec.name, AvroCodec(codec_for(spec.record, spec.name, registry)))
        names.append(spec.name)
    return names
