"""The perceive stage's logic: validate task requests and turn them into perceived tasks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from aos_gateway.contracts.records import PerceivedTask, TaskRequest
from aos_gateway.errors import ValidationError
from aos_gateway.perception.vectors import FloatArray, pack


class Encoder(Protocol):
    name: str

    def encode(self, texts: list[str], batch_size: int = ...) -> FloatArray: ...


def validate_request(req: TaskRequest, max_text_chars: int) -> str:
    """The task's text, or a ValidationError saying what is wrong with the request."""
    if not req["task_id"].strip():
        raise ValidationError("task_id is empty")
    text = (req["text"] or "").strip()
    if (req["image"] is not None or req["audio"] is not None) and not text:
        raise ValidationError("image and audio perception are not available in this version: the task has no text")
    if not text:
        raise ValidationError("empty task: no text, image or audio")
    if len(text) > max_text_chars:
        raise ValidationError(f"text has {len(text)} characters, the limit is {max_text_chars}")
    for limit_name in ("max_cost", "max_latency_ms", "top_k"):
        val = req[limit_name]
        if val is not None and val < 0:
            raise ValidationError(f"{limit_name} must not be negative")
    return text


def perceive(
    reqs: Sequence[TaskRequest],
    texts: Sequence[str],
    encoder: Encoder,
    now_ms: int,
    wire_dtype: str,
    batch_size: int = 8,
) -> list[PerceivedTask]:
    """Encode validated requests in one batch; one perceived task each, in order."""
    if not reqs:
        return []
    vecs = encoder.encode(list(texts), batch_size=batch_size)
    out: list[PerceivedTask] = []
    notes: list[str] = []
    if reqs and any(r["image"] is not None or r["audio"] is not None for r in reqs):
        notes = ["image/audio parts were not perceived (text only in this version)"]
    for req, text, vec in zip(reqs, texts, np.asarray(vecs), strict=True):
        named = pack("text", vec, wire_dtype.upper(), encoder.name)
        fused = pack("fused", vec, wire_dtype.upper(), encoder.name)
        has_media = req["image"] is not None or req["audio"] is not None
        out.append(
            PerceivedTask(
                task_id=req["task_id"],
                tenant=req["tenant"],
                submitted_at=req["submitted_at"],
                text=text,
                modalities=["text"],
                vectors=[named],
                fused=fused,
                required_capabilities=list(req["required_capabilities"]),
                max_cost=req["max_cost"],
                max_latency_ms=req["max_latency_ms"],
                top_k=req["top_k"],
                reply_to=req["reply_to"],
                trace_id=req["trace_id"],
                notes=list(notes) if has_media else [],
                timings={"submitted": req["submitted_at"], "perceived": now_ms},
            )
        )
    return out
