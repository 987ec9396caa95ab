from __future__ import annotations

import pytest
from faust.serializers import codecs

from aos_gateway.client import new_task
from aos_gateway.errors import SerializationError
from aos_gateway.settings import SchemaRegistrySettings
from aos_gateway.streams.codec import register_codecs


def test_faust_codec_round_trip_by_topic_name() -> None:
    assert "aos.tasks.v1" in register_codecs()
    data = codecs.dumps("aos.tasks.v1", new_task("hello", task_id="f1"))
    assert data[:2] == b"\xc3\x01"
    assert codecs.loads("aos.tasks.v1", data)["task_id"] == "f1"
    with pytest.raises(SerializationError):
        codecs.loads("aos.tasks.v1", b"garbage")


def test_faust_codec_with_confluent_framing() -> None:
    register_codecs(SchemaRegistrySettings(url="mock://faust"))
    data = codecs.dumps("aos.tasks.v1", new_task("hi", task_id="f2"))
    assert data[0] == 0 and codecs.loads("aos.tasks.v1", data)["task_id"] == "f2"
    register_codecs()  # leave single-object framing registered for other tests
