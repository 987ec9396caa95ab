from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.client import new_task
from aos_gateway.contracts.records import PERCEIVED_TASK, MediaPart
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.errors import MediaError, ValidationError
from aos_gateway.perception.task import perceive, validate_request
from aos_gateway.perception.vectors import FloatArray, unpack


class FakeEncoder:
    """A deterministic stand-in for unit tests of the stage logic (the real model is tested apart)."""

    name = "fake"

    def encode(self, texts: list[str], batch_size: int = 32) -> FloatArray:
        out = np.zeros((len(texts), 4), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % 4] = 1.0
        return out


def test_validate_rejects_empty_and_oversize() -> None:
    with pytest.raises(ValidationError, match="empty task"):
        validate_request(new_task("   "), 100)
    with pytest.raises(ValidationError, match="empty task"):
        validate_request(new_task(None), 100)
    with pytest.raises(ValidationError, match="limit is 10"):
        validate_request(new_task("x" * 11), 10)
    with pytest.raises(ValidationError, match="negative"):
        validate_request(new_task("ok", max_cost=-1.0), 10)
    with pytest.raises(ValidationError, match="NUL"):
        validate_request(new_task("What is 2+2?\x00\x00"), 100)
    assert validate_request(new_task("  hi  "), 10) == "hi"


def test_media_without_text_is_valid_and_fails_only_when_nothing_can_be_perceived() -> None:
    img = MediaPart(mime_type="image/png", data=b"\x89PNG", uri=None, size_bytes=4, sha256=None)
    req = new_task(None, image=img)
    assert validate_request(req, 100) == ""
    # text-only perception: the image is noted as not perceived, and a task left with nothing fails
    with pytest.raises(MediaError, match="nothing to perceive: image not perceived"):
        perceive([req], [""], FakeEncoder(), now_ms=1, wire_dtype="float16")
    (both,) = perceive([new_task("hi", image=img)], ["hi"], FakeEncoder(), now_ms=1, wire_dtype="float16")
    assert both["modalities"] == ["text"] and any("image not perceived" in n for n in both["notes"])


def test_perceive_keeps_order_and_constraints() -> None:
    reqs = [new_task("a", required_capabilities=["x"], top_k=2), new_task("bb", max_cost=1.5)]
    out = perceive(reqs, ["a", "bb"], FakeEncoder(), now_ms=123, wire_dtype="float16")
    assert [o["task_id"] for o in out] == [r["task_id"] for r in reqs]
    assert out[0]["required_capabilities"] == ["x"] and out[0]["top_k"] == 2 and out[1]["max_cost"] == 1.5
    assert out[0]["timings"]["perceived"] == 123
    assert np.argmax(unpack(out[1]["fused"])) == 2 and out[1]["fused"]["dtype"] == "FLOAT16"


def test_a_text_that_splits_carries_its_clauses_with_vectors() -> None:
    from aos_gateway.perception.text import TextEncoder

    enc = TextEncoder()
    text = "Show me the weather for the next 10 days in Paris and convert it into a PDF file."
    single = "What's the weather in Paris tomorrow?"
    two, one = perceive([new_task(text), new_task(single)], [text, single], enc, now_ms=1, wire_dtype="float32")
    assert [c["text"] for c in two["clauses"]] == [
        "Show me the weather for the next 10 days in Paris",
        "convert it into a PDF file.",
    ]
    assert [c["depends_on_previous"] for c in two["clauses"]] == [False, True]
    assert all(unpack(c["vector"]).shape == (384,) and c["vector"]["model"] == enc.name for c in two["clauses"])
    assert one["clauses"] == []
    # token windows of every text (one-clause too), in the text space, each with its place in the text
    for task, t in ((two, text), (one, single)):
        windows = task["windows"]
        assert len(windows) >= 2 and windows[0]["start"] == 0 and windows[-1]["end"] == len(t)
        assert all(unpack(w["vector"]).shape == (384,) and w["vector"]["model"] == enc.name for w in windows)
        assert {w["vector"]["dtype"] for w in windows} == {"INT8"}  # whatever the wire dtype (float32 here)
    codec = SingleObjectCodec(PERCEIVED_TASK)  # the wire contract carries them
    back = codec.decode(codec.encode(two))["windows"][3]
    assert (back["start"], back["end"]) == (two["windows"][3]["start"], two["windows"][3]["end"])
    assert np.allclose(unpack(back["vector"]), unpack(two["windows"][3]["vector"]), atol=1e-6)  # scale: a float
    # an encoder without token vectors (the fake) gives no clauses nor windows, and the task still flows
    (fake,) = perceive([new_task(text)], [text], FakeEncoder(), now_ms=1, wire_dtype="float32")
    assert fake["clauses"] == [] and fake["windows"] == []
