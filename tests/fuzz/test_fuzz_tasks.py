"""Tasks from hostile producers: the perceive stage's decode → validate path and its dead letters.

What the stage does per event (``streams/stages.py``: decode, trace id, ``validate_request``,
any exception → ``dead_letter``) is replayed here on arbitrary bytes and arbitrary valid records
with weird text: the outcome is a validated task or a dead letter that can be written (encodes
as a DeadLetter); the only errors are SerializationError and ValidationError. Clause splitting
(complexity analysis, run on every task's text) must give in-bounds spans in linear time.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from aos_gateway.client import new_task
from aos_gateway.contracts.records import DEAD_LETTER, PERCEIVED_TASK, TASK_REQUEST, TaskRequest
from aos_gateway.contracts.schemas import contract
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.errors import AosError, MediaError, SerializationError, ValidationError
from aos_gateway.network.complexity import _SPLIT, split_clauses
from aos_gateway.perception.task import perceive, validate_request
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.streams.deadletter import dead_letter
from aos_gateway.streams.tracing import trace_id_for
from tests.fuzz.strategies import (
    FUZZ_TIMEOUT,
    INT32,
    INT64,
    any_float,
    any_text,
    avro_records,
    fuzz,
    utf8_text,
    weird_text,
)

pytestmark = FUZZ_TIMEOUT

TASKS = SingleObjectCodec(TASK_REQUEST)
DEAD = SingleObjectCodec(DEAD_LETTER)
PERCEIVED = SingleObjectCodec(PERCEIVED_TASK)
MAX_TEXT = 200


def perceive_gate(value: bytes | None, offset: int = 7) -> tuple[TaskRequest, str] | dict[str, Any]:
    """The perceive stage's per-event path: a validated task and its text, or the written dead letter."""
    req: Any = None
    try:
        if value is None:
            raise AosError("empty event (null value)")
        req = TASKS.decode(value)
        req["trace_id"] = trace_id_for(req["trace_id"], req["task_id"])
        return req, validate_request(req, MAX_TEXT)
    except Exception as exc:
        assert isinstance(exc, (SerializationError, ValidationError)) or value is None, repr(exc)
        tid = req.get("task_id") if isinstance(req, dict) else None
        trace = req.get("trace_id") if isinstance(req, dict) else None
        dl = dead_letter(
            stage="perceive",
            error=exc,
            topic="aos.tasks.v1",
            partition=0,
            offset=offset,
            key=b"k",
            value=value,
            task_id=tid,
            trace_id=trace_id_for(trace, tid) if tid else trace,
        )
        written = DEAD.decode(DEAD.encode(dl))
        assert written["value"] == value and written["reason"]
        return written


def task_requests() -> st.SearchStrategy[dict[str, Any]]:
    """Valid TaskRequests with hostile contents: weird text, NaN or negative limits, empty ids."""
    base = avro_records(contract(TASK_REQUEST).parsed)
    return st.builds(
        lambda rec, text, task_id, cost, latency, top_k: {
            **rec,
            "text": text,
            "task_id": task_id,
            "max_cost": cost,
            "max_latency_ms": latency,
            "top_k": top_k,
        },
        base,
        st.one_of(st.none(), st.just("hello"), weird_text, st.text(min_size=MAX_TEXT - 2, max_size=MAX_TEXT + 2)),
        st.one_of(st.just("t1"), weird_text, st.just(" \t")),
        st.one_of(st.none(), any_float),
        st.one_of(st.none(), st.integers(*INT32)),
        st.one_of(st.none(), st.integers(*INT32)),
    )


@fuzz(300)
@given(st.one_of(st.none(), st.binary(max_size=300)))
def test_random_bytes_on_the_tasks_topic_are_dead_lettered(value: bytes | None) -> None:
    out = perceive_gate(value)
    assert isinstance(out, dict) and out["stage"] == "perceive"


@fuzz(300)
@given(task_requests())
def test_any_task_request_is_validated_or_dead_lettered(record: dict[str, Any]) -> None:
    out = perceive_gate(TASKS.encode(record))
    if isinstance(out, tuple):
        req, text = out
        assert text == (req["text"] or "").strip() and len(text) <= MAX_TEXT
        assert text or req["image"] is not None or req["audio"] is not None
        for name in ("max_cost", "max_latency_ms", "top_k"):
            assert req[name] is None or req[name] >= 0  # NaN is not >= 0
    else:
        assert out["task_id"] == record["task_id"] and out["error_type"] == "ValidationError"


def test_a_nan_max_cost_is_refused() -> None:
    """Regression: NaN passed `val < 0`; every cost filter then silently held nothing."""
    out = perceive_gate(TASKS.encode(new_task("hi", max_cost=float("nan"))))
    assert isinstance(out, dict) and "max_cost is not a number" in out["reason"]


class _Boom(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no message for you")


def exceptions() -> st.SearchStrategy[BaseException]:
    kinds = st.sampled_from([ValueError, KeyError, RuntimeError, AosError, SerializationError, MediaError, Exception])
    return st.one_of(
        st.builds(lambda k, msg: k(msg), kinds, st.one_of(any_text, st.text(min_size=3000, max_size=5000))),
        st.builds(lambda k: k(), kinds),
        st.just(_Boom()),
        st.just(UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")),
        st.just(RecursionError("maximum recursion depth exceeded")),
    )


@fuzz(300)
@given(
    exceptions(),
    st.one_of(st.none(), st.binary(max_size=200)),
    st.one_of(st.none(), st.binary(max_size=50)),
    st.integers(*INT32),
    st.integers(*INT64),
    st.one_of(st.none(), utf8_text),
    st.one_of(st.none(), utf8_text),
)
def test_dead_letter_is_a_writable_record_for_any_bytes_and_any_exception(
    error: BaseException,
    value: bytes | None,
    key: bytes | None,
    partition: int,
    offset: int,
    task_id: str | None,
    tenant: str | None,
) -> None:
    dl = dead_letter(
        stage="perceive",
        error=error,
        topic="aos.tasks.v1",
        partition=partition,
        offset=offset,
        key=key,
        value=value,
        task_id=task_id,
        tenant=tenant,
        trace_id=trace_id_for(None, task_id) if task_id else None,
    )
    written = DEAD.decode(DEAD.encode(dl))
    assert (written["key"], written["value"], written["source_offset"]) == (key, value, offset)
    assert 0 < len(written["reason"]) <= 2000 and written["error_type"] == type(error).__name__


def test_an_exception_without_a_printable_message_is_dead_lettered() -> None:
    """Regression: str(error) raising, or a message with lone surrogates, made dead_letter() (or its
    encoding) fail, and the failure escaped the stage's per-event handler."""
    for error in (_Boom(), ValueError("bad key \udcff\udc80")):
        dl = dead_letter(stage="s", error=error, topic="t", partition=0, offset=1, key=None, value=None)
        assert DEAD.decode(DEAD.encode(dl))["reason"] in ("_Boom", "bad key \\udcff\\udc80")


# -- clause splitting (complexity analysis) --

_OLD_SPLIT = re.compile(
    r"(?<=[.?!;])\s+"
    r"|,?\s+(?:and\s+then|and\s+also|as\s+well\s+as|along\s+with|additionally,?|also,?|then|and|but|plus)\s+",
    re.IGNORECASE,
)
_SPLIT_WORDS = st.sampled_from([" ", "  ", "\t", "\u00a0", ",", ".", ";", "and", "then", "also", "as", "well", "x"])


@fuzz(300)
@given(st.lists(_SPLIT_WORDS, max_size=16).map("".join))
def test_the_linear_separator_pattern_matches_like_the_old_one(text: str) -> None:
    assert [m.span() for m in _SPLIT.finditer(text)] == [m.span() for m in _OLD_SPLIT.finditer(text)]


@fuzz(300)
@given(st.one_of(weird_text, st.lists(weird_text, max_size=40).map(" and then ".join)), st.integers(2, 16))
def test_clauses_are_in_bounds_spans_of_the_text(text: str, max_clauses: int) -> None:
    clauses = split_clauses(text, max_clauses=max_clauses)
    assert len(clauses) <= max_clauses
    end = 0
    for c in clauses:
        assert end <= c.start < c.end <= len(text) and c.text == text[c.start : c.end]
        end = c.end


@fuzz(20, deadline_s=None)
@given(st.sampled_from([" ", "\t", "\u00a0", " ,", ", ", "\r\n", " and"]), st.sampled_from(["a", "", "x."]))
def test_clause_splitting_is_fast_on_long_runs_of_separators(run: str, word: str) -> None:
    """Regression: 8,000 spaces between two words took ~8 s (the pattern tried every start in the run)."""
    text = (word + run * (8_000 // len(run)) + "b")[:8_000]
    t0 = time.perf_counter()
    split_clauses(text, max_clauses=4)
    assert time.perf_counter() - t0 < 1.0


# -- text perception over the clauses (an encoder stand-in that checks the spans it is given) --


class SpanCheckingEncoder:
    name = "fake"

    def encode(self, texts: list[str], batch_size: int = 8) -> FloatArray:
        out = np.zeros((len(texts), 4), dtype=np.float32)
        out[:, 0] = 1.0
        return out

    def encode_spans(
        self, texts: list[str], spans: list[list[tuple[int, int]]], batch_size: int = 8
    ) -> tuple[FloatArray, list[FloatArray]]:
        for text, sp in zip(texts, spans, strict=True):
            assert all(0 <= a < b <= len(text) for a, b in sp), (text, sp)
        return self.encode(texts), [np.tile(self.encode([""]), (len(sp), 1)) for sp in spans]


@fuzz(20)
@given(st.lists(st.one_of(weird_text, st.just("and then convert it into a PDF")), min_size=1, max_size=4))
def test_weird_text_is_perceived_or_refused_with_a_validation_error(parts: list[str]) -> None:
    out = perceive_gate(TASKS.encode(new_task(" and ".join(parts), required_capabilities=parts[:1])))
    if not isinstance(out, tuple):
        return
    req, valid = out
    (perceived,) = perceive([req], [valid], SpanCheckingEncoder(), now_ms=1, wire_dtype="float16")  # type: ignore[arg-type]
    assert PERCEIVED.decode(PERCEIVED.encode(perceived))["task_id"] == req["task_id"]
