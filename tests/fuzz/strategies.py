"""Hypothesis strategies and settings shared by the fuzz tests.

Every fuzz test takes its settings from :func:`fuzz`: a small, derandomised run by default (the
normal suite and CI: fast and reproducible), and ``AOS_FUZZ_EXAMPLES`` random examples per test
for a long local run, with failures kept under ``.aos/hypothesis`` so a rerun replays them first::

    AOS_FUZZ_EXAMPLES=5000 .venv/bin/python -m pytest tests/fuzz -q
"""

from __future__ import annotations

import math
import os
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.database import DirectoryBasedExampleDatabase

#: examples per test for a long run (0: the defaults of each test)
LONG_EXAMPLES = int(os.environ.get("AOS_FUZZ_EXAMPLES", "0") or 0)

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)


#: the per-test timeout (pytest-timeout): a hang guard for the default run, none for a long one
FUZZ_TIMEOUT = pytest.mark.timeout(0 if LONG_EXAMPLES else 300)


def fuzz(examples: int, deadline_s: float | None = 30.0, *, cost: int = 1) -> settings:
    """Settings for one fuzz test.

    Args:
        examples: examples in the default (CI) run.
        deadline_s: a generous per-example bound: a hang guard, not a benchmark (the machine
            running the suite may be loaded, and a first example pays for imports and warm-up);
            None for no per-example deadline. Tests that bound a time assert it themselves.
        cost: how expensive one example is (a subprocess, a model): a long run gives the test
            ``AOS_FUZZ_EXAMPLES // cost`` examples, never fewer than the default.
    """
    long = LONG_EXAMPLES > 0
    return settings(
        max_examples=max(examples, LONG_EXAMPLES // cost) if long else examples,
        deadline=None if deadline_s is None else timedelta(seconds=deadline_s),
        derandomize=not long,
        database=DirectoryBasedExampleDatabase(".aos/hypothesis") if long else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=True,
    )


#: any code point, lone surrogates included (JSON's "\ud800" escapes decode to them), and often
any_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=()), max_size=64),
    st.lists(st.sampled_from(["\ud800", "\udc80", "\udfff", "\x00", "a", " ", "\u202e"]), max_size=6).map("".join),
)

#: text a UTF-8 decoder can produce (what comes out of a Kafka record or a valid request)
utf8_text = st.text(max_size=64)

#: unicode that breaks naive code: controls, NUL, bidi overrides, combining marks, zero-width, astral
_WEIRD = "\x00\x07\x1b\x7f\u0085\u2028\u2029\u202e\u200b\ufeff\u0301\U0001f600\U0010ffff\ufffd\t"
weird_chars = st.sampled_from([*_WEIRD, "\r\n", " ", "and", ",", ".", "then", "it", "Also,", "and then convert it"])
weird_text = st.lists(st.one_of(weird_chars, utf8_text), max_size=12).map("".join)

#: floats, with the special values drawn often (plain st.floats() rarely gives NaN)
any_float = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 1e308, -1e308, 5e-324]),
)

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    any_float,
    any_text,
)

#: arbitrary JSON values (what json.loads can return), NaN and infinities included
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(any_text, inner, max_size=5)),
    max_leaves=20,
)


def _avro(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    if isinstance(schema, str):
        prim = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(*INT32),
            "long": st.integers(*INT64),
            "float": st.floats(width=32),
            "double": any_float,  # a producer may send NaN and infinities
            "bytes": st.binary(max_size=64),
            "string": utf8_text,
        }
        if schema in prim:
            return prim[schema]
        return st.deferred(lambda: _avro(named[schema], named))
    if isinstance(schema, list):
        return st.one_of(*[_avro(s, named) for s in schema])
    kind = schema["type"]
    if kind in ("record", "error"):
        named[schema["name"]] = schema
        fields = {f["name"]: _avro(f["type"], named) for f in schema["fields"]}
        return st.fixed_dictionaries(fields)
    if kind == "enum":
        named[schema["name"]] = schema
        return st.sampled_from(schema["symbols"])
    if kind == "fixed":
        named[schema["name"]] = schema
        return st.binary(min_size=schema["size"], max_size=schema["size"])
    if kind == "array":
        return st.lists(_avro(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(utf8_text, _avro(schema["values"], named), max_size=4)
    return _avro(kind, named)  # {"type": "string", "logicalType": ...}


def avro_records(parsed_schema: Any) -> st.SearchStrategy[dict[str, Any]]:
    """Valid records of a (fastavro-parsed, self-contained) schema."""
    return _avro(parsed_schema, {})


def zigzag(n: int) -> bytes:
    """An Avro long: zig-zag, then a base-128 varint."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b, z = z & 0x7F, z >> 7
        if z:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def same_json(a: Any, b: Any) -> bool:
    """Equality where NaN equals NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
