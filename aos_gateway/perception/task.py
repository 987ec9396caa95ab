"""The perceive stage's logic: validate task requests and turn them into perceived tasks.

A task carries text, an image and/or an audio clip. Each part present is loaded (inline or by
reference), decoded and encoded in batches:

- text -> the text encoder (MiniLM by default); the audio's transcript is appended to the text;
- image -> the CLIP image tower (named vector ``image``);
- audio -> Whisper: a transcript (-> the text encoder) and pooled encoder features (``audio``).

The named vectors are fused (:mod:`aos_gateway.perception.fusion`) into the vector the task is
matched with. A part that cannot be used (corrupt, too large, silent) fails only its own task,
with a :class:`~aos_gateway.errors.MediaError` that names the reason; a modality whose encoder is
not available (extra not installed, disabled) is reported in the task's notes and the others are
used; a task left with nothing to perceive fails.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from aos_gateway.contracts.records import Clause as ClauseRecord
from aos_gateway.contracts.records import NamedVector, PerceivedTask, TaskRequest, TextWindow, task_text
from aos_gateway.errors import AosError, MediaError, MissingExtraError, ValidationError
from aos_gateway.network.complexity import Clause, split_clauses
from aos_gateway.perception.text import WindowSpec
from aos_gateway.perception.vectors import FloatArray, pack
from aos_gateway.settings import Settings

log = logging.getLogger("aos_gateway.perception")


class Encoder(Protocol):
    name: str

    def encode(self, texts: list[str], batch_size: int = ...) -> FloatArray: ...


def validate_request(req: TaskRequest, max_text_chars: int) -> str:
    """The task's text ("" when it has only media), or a ValidationError saying what is wrong."""
    if not req["task_id"].strip():
        raise ValidationError("task_id is empty")
    text = (req["text"] or "").strip()
    if not text and req["image"] is None and req["audio"] is None:
        raise ValidationError("empty task: no text, image or audio")
    if "\x00" in text:
        raise ValidationError("text contains a NUL character (U+0000)")
    if len(text) > max_text_chars:
        raise ValidationError(f"text has {len(text)} characters, the limit is {max_text_chars}")
    for limit_name in ("max_cost", "max_latency_ms", "top_k"):
        val = req[limit_name]
        if val is not None and math.isnan(val):  # compares false with everything: no filter would hold
            raise ValidationError(f"{limit_name} is not a number (NaN)")
        if val is not None and val < 0:
            raise ValidationError(f"{limit_name} must not be negative")
    return text


@dataclass
class _Item:
    req: TaskRequest
    text: str
    image: bytes | None = None
    decoded: Any = None  # the image decoded once, for the encoder
    clip: FloatArray | None = None
    transcript: str | None = None
    audio_features: FloatArray | None = None
    notes: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=list)
    vectors: dict[str, FloatArray] = field(default_factory=dict)
    clauses: list[tuple[Clause, FloatArray]] = field(default_factory=list)
    windows: list[tuple[int, int, FloatArray]] = field(default_factory=list)  # (start, end, vector)
    error: AosError | None = None


class Perceiver:
    """Every encoder of a worker, loaded once; turns validated requests into perceived tasks."""

    def __init__(
        self,
        settings: Settings,
        text: Encoder,
        image: Any | None = None,
        audio: Any | None = None,
    ) -> None:
        self.settings = settings
        self.text = text
        self.image = image
        self.audio = audio
        self.image_unavailable: str | None = None if image is not None else "image encoder not configured"
        self.audio_unavailable: str | None = None if audio is not None else "audio encoder not configured"
        self.fusion: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, text: Encoder) -> Perceiver:
        """The text encoder given, plus image and audio encoders when enabled (not loaded yet)."""
        image = audio = None
        why_image = why_audio = None
        threads = settings.perception.torch_threads
        if not settings.vision.enabled:
            why_image = "image perception is disabled (AOS_VISION__ENABLED=false)"
        else:
            try:
                from aos_gateway.perception.image import ImageEncoder

                image = ImageEncoder(settings.vision, threads)
            except (ImportError, MissingExtraError) as exc:
                why_image = f"image perception unavailable: {exc}"
        if not settings.audio.enabled:
            why_audio = "audio perception is disabled (AOS_AUDIO__ENABLED=false)"
        else:
            try:
                from aos_gateway.perception.audio import AudioEncoder

                audio = AudioEncoder(settings.audio, threads)
            except (ImportError, MissingExtraError) as exc:
                why_audio = f"audio perception unavailable: {exc}"
        out = cls(settings, text, image, audio)
        out.image_unavailable = why_image or out.image_unavailable if image is None else None
        out.audio_unavailable = why_audio or out.audio_unavailable if audio is None else None
        return out

    def load(self) -> None:
        """Load every encoder now; an image or audio encoder that cannot load is reported, not fatal."""
        from aos_gateway.perception.fusion import Fusion

        if self.fusion is not None:
            return
        load_text = getattr(self.text, "load", None)
        if load_text is not None:
            load_text()
        text_dim = int(getattr(self.text, "dim", 0) or self.text.encode(["probe"]).shape[1])
        dims = {"text": text_dim}
        if self.image is not None:
            try:
                self.image.load()
                dims["image"] = int(self.image.dim)
            except AosError as exc:
                log.error("perception: image encoder failed to load, images will not be perceived: %s", exc)
                self.image_unavailable, self.image = f"image perception unavailable: {exc}", None
        if self.audio is not None:
            try:
                self.audio.load()
                dims["audio"] = int(self.audio.feature_dim)
            except AosError as exc:
                log.error("perception: audio encoder failed to load, audio will not be perceived: %s", exc)
                self.audio_unavailable, self.audio = f"audio perception unavailable: {exc}", None
        self.fusion = Fusion(dims, text_dim, weights_path=self.settings.perception.fusion_weights)

    @property
    def image_model(self) -> str | None:
        return None if self.image is None else str(self.image.name)

    def perceive(
        self, reqs: Sequence[TaskRequest], texts: Sequence[str], now_ms: int
    ) -> list[PerceivedTask | AosError]:
        """One perceived task, or the error that stops it, per validated request, in order."""
        if self.fusion is None:
            self.load()
        items = [_Item(req, text) for req, text in zip(reqs, texts, strict=True)]
        self._audio(items)
        self._image(items)
        self._text(items)
        self._fuse(items)
        return [it.error if it.error is not None else self._record(it, now_ms) for it in items]

    # -- stages, each over the whole batch; an item that fails keeps its error and is skipped --

    def _load_part(self, it: _Item, kind: str) -> bytes | None:
        part = it.req[kind]  # type: ignore[literal-required]
        if part is None:
            return None
        unavailable = self.image_unavailable if kind == "image" else self.audio_unavailable
        if unavailable is not None:
            it.notes.append(f"{kind} not perceived: {unavailable}")
            return None
        from aos_gateway.perception.media import load_media

        data: bytes = load_media(part, kind, self.settings.media)
        return data

    def _audio(self, items: list[_Item]) -> None:
        todo: list[tuple[_Item, FloatArray]] = []
        for it in items:
            try:
                data = self._load_part(it, "audio")
                if data is not None:
                    from aos_gateway.perception.audio import decode_audio

                    a = self.settings.audio
                    todo.append((it, decode_audio(data, max_duration_s=a.max_duration_s, silence_dbfs=a.silence_dbfs)))
            except AosError as exc:
                it.error = exc
        if not todo:
            return
        assert self.audio is not None
        results = self.audio.transcribe([clip for _, clip in todo])
        for (it, _), res in zip(todo, results, strict=True):
            transcript = res.text.strip()
            if not transcript and not it.text and it.req["image"] is None:
                it.error = MediaError("audio: no speech recognised in the clip")
                continue
            it.transcript = transcript
            it.audio_features = np.asarray(res.features, dtype=np.float32)
            it.modalities.append("audio")
            if not transcript:
                it.notes.append("audio: no speech recognised; its encoder features are kept")

    def _image(self, items: list[_Item]) -> None:
        todo: list[_Item] = []
        for it in items:
            if it.error is not None:
                continue
            try:
                data = self._load_part(it, "image")
                if data is not None:
                    from aos_gateway.perception.image import decode_image

                    size = getattr(self.image, "input_size", None)
                    # a clear error for this task alone; the decoded image goes to the encoder
                    it.decoded = decode_image(data, self.settings.vision.max_pixels, target_size=size)
                    it.image = data
                    todo.append(it)
            except AosError as exc:
                it.error = exc
        if not todo:
            return
        assert self.image is not None
        vecs = self.image.encode_images([it.image for it in todo], decoded=[it.decoded for it in todo])
        for it, vec in zip(todo, vecs, strict=True):
            it.clip = np.asarray(vec, dtype=np.float32)
            it.modalities.append("image")
            if getattr(self.image, "random_weights", False):
                it.notes.append(
                    "image encoded with RANDOM CLIP weights (AOS_VISION__WEIGHTS is not set): "
                    "its similarities to agents mean nothing"
                )

    def _text(self, items: list[_Item]) -> None:
        todo = [it for it in items if it.error is None and (it.text or it.transcript)]
        if not todo:
            return
        p = self.settings.perception
        inputs = [task_text(it.text, it.transcript) for it in todo]
        # complexity analysis: the clauses of a text that splits (see aos_gateway.network.complexity)
        # and short token windows of every text; their vectors come from the same model pass (mean
        # of their token vectors), so an encoder without token vectors gives none
        encode_parts = getattr(self.text, "encode_parts", None) if p.split_clauses else None
        encode_spans = getattr(self.text, "encode_spans", None) if p.split_clauses else None
        clauses: list[list[Clause]] = [[] for _ in inputs]
        windows: list[tuple[FloatArray, npt.NDArray[np.int32]]] = []
        span_vecs: list[FloatArray] = [np.zeros((0, 0), dtype=np.float32) for _ in inputs]
        if encode_spans is None:
            vecs = np.asarray(self.text.encode(inputs, batch_size=p.encode_batch_size))
        else:
            split = (split_clauses(t, max_clauses=p.max_clauses) for t in inputs)
            clauses = [c if len(c) > 1 else [] for c in split]
            spans = [[(c.start, c.end) for c in cs] for cs in clauses]
            if encode_parts is not None and p.window_tokens > 0:
                spec = WindowSpec(p.window_tokens, p.window_stride, p.max_windows)
                parts = encode_parts(inputs, spans, spec, batch_size=p.encode_batch_size)
                vecs, span_vecs, windows = parts.vectors, parts.spans, parts.windows
            else:
                vecs, span_vecs = encode_spans(inputs, spans, batch_size=p.encode_batch_size)
        for k, (it, vec, cs, sv) in enumerate(zip(todo, vecs, clauses, span_vecs, strict=True)):
            it.vectors["text"] = vec
            it.clauses = [(c, sv[j]) for j, c in enumerate(cs)]
            if windows:
                w_vecs, w_ranges = windows[k]
                it.windows = [(int(a), int(b), w_vecs[j]) for j, (a, b) in enumerate(w_ranges)]
            if it.text:
                it.modalities.insert(0, "text")

    def _fuse(self, items: list[_Item]) -> None:
        live = [it for it in items if it.error is None]
        for it in live:
            if it.clip is not None:
                it.vectors["image"] = it.clip
            if it.audio_features is not None:
                it.vectors["audio"] = it.audio_features
            if not it.vectors:
                it.error = MediaError("nothing to perceive: " + "; ".join(it.notes or ["no usable part"]))
        live = [it for it in live if it.error is None]
        fused = self.fusion.fuse([it.vectors for it in live])
        for it, vec in zip(live, fused, strict=True):
            if vec is None and it.clip is None:  # audio features alone do not reach the text space yet
                it.error = MediaError("audio: no speech recognised and no other part to match with")
            it.vectors["fused"] = vec if vec is not None else np.zeros(0, dtype=np.float32)

    def _record(self, it: _Item, now_ms: int) -> PerceivedTask:
        dtype = self.settings.perception.wire_dtype.upper()
        text_model = self.text.name
        models = {"text": text_model, "image": self.image_model or "", "audio": getattr(self.audio, "name", "")}
        named: list[NamedVector] = [
            pack(m, v, dtype, models[m]) for m, v in it.vectors.items() if m != "fused" and v.size
        ]
        fused_vec = it.vectors["fused"]
        if fused_vec.size:
            # text-led fusion lives in the text space: the text model's name lets the matcher use
            # the learned state (learned from text-space vectors) for it
            fused = pack("fused", fused_vec, dtype, text_model)
        else:
            # no modality reaches the text space (image-only task, fusion untrained): the task is
            # matched in the CLIP space, against cards embedded by the CLIP text tower
            assert it.clip is not None
            fused = pack("fused", it.clip, dtype, self.image_model or "")
            it.notes.append("matched in the CLIP space (image only)")
        # the parts of the text (complexity analysis) only for a task matched in the text space
        parts = bool(fused_vec.size) and fused["model"] == text_model
        req = it.req
        return PerceivedTask(
            task_id=req["task_id"],
            tenant=req["tenant"],
            submitted_at=req["submitted_at"],
            text=it.text or None,
            transcript=it.transcript,
            modalities=it.modalities,
            vectors=named,
            fused=fused,
            required_capabilities=list(req["required_capabilities"]),
            max_cost=req["max_cost"],
            max_latency_ms=req["max_latency_ms"],
            top_k=req["top_k"],
            reply_to=req["reply_to"],
            trace_id=req["trace_id"],
            clauses=[
                ClauseRecord(
                    text=c.text, vector=pack("text", v, dtype, text_model), depends_on_previous=c.depends_on_previous
                )
                for c, v in it.clauses
            ]
            if parts
            else [],
            # int8 whatever the wire dtype: a window only decides whether another agent is needed, and
            # a task carries ~10 of them (measured on MetaTool: roles as with float32 windows, 1 task in 344 apart)
            windows=[TextWindow(start=a, end=b, vector=pack("text", v, "INT8", text_model)) for a, b, v in it.windows]
            if parts
            else [],
            notes=it.notes,
            timings={"submitted": req["submitted_at"], "perceived": now_ms},
        )


def perceive(
    reqs: Sequence[TaskRequest],
    texts: Sequence[str],
    encoder: Encoder,
    now_ms: int,
    wire_dtype: str,
    batch_size: int = 8,
) -> list[PerceivedTask]:
    """Text-only perception in one batch (media parts noted, not perceived); raises on any failure."""
    settings = Settings()
    settings.perception.wire_dtype = wire_dtype
    settings.perception.encode_batch_size = batch_size
    perceiver = Perceiver(settings, encoder)
    perceiver.image_unavailable = perceiver.audio_unavailable = "text-only perception"
    out: list[PerceivedTask] = []
    for res in perceiver.perceive(reqs, texts, now_ms):
        if isinstance(res, AosError):
            raise res
        out.append(res)
    return out
