"""Failures are data: a failing event becomes a DeadLetter record with why and where."""

from __future__ import annotations

import hashlib
import logging
import time
from typing import Any

from aos_gateway.contracts.records import DeadLetter

log = logging.getLogger("aos_gateway.deadletter")

_MAX_REASON = 2_000


def dead_letter(
    *,
    stage: str,
    error: BaseException,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    task_id: str | None = None,
    tenant: str | None = None,
    now_ms: int | None = None,
    trace_id: str | None = None,
) -> DeadLetter:
    """The dead-letter record of one failed event (its id is stable for stage + source offset)."""
    ident = hashlib.sha256(f"{stage}|{topic}|{partition}|{offset}".encode()).hexdigest()[:32]
    return DeadLetter(
        dead_letter_id=ident,
        stage=stage,
        reason=_reason(error),
        error_type=type(error).__name__,
        source_topic=topic,
        source_partition=partition,
        source_offset=offset,
        key=key,
        value=value,
        failed_at=now_ms if now_ms is not None else int(time.time() * 1000),
        task_id=task_id,
        tenant=tenant,
        trace_id=trace_id,
    )


def _reason(error: BaseException) -> str:
    """The error's message, always encodable: a dead letter that cannot be written would crash its stage."""
    try:
        text = str(error)
    except Exception:  # an exception whose __str__ fails is still dead-lettered, by its type
        text = ""
    text = text[:_MAX_REASON] or type(error).__name__
    # lone surrogates (bytes decoded with surrogateescape) are not UTF-8: written as \udcxx escapes
    return text.encode("utf-8", "backslashreplace").decode("utf-8")[:_MAX_REASON]


def as_bytes(obj: Any) -> bytes | None:
    if obj is None:
        return None
    if isinstance(obj, (bytes, bytearray, memoryview)):
        return bytes(obj)
    return str(obj).encode("utf-8")
