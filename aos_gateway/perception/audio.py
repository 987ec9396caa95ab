"""Speech: audio bytes → 16 kHz samples (ffmpeg) → Whisper transcript and an audio embedding.

Two backends run the same Whisper tiny.en weights: faster-whisper (CTranslate2, int8 on CPU) and
openai-whisper (PyTorch, a checkpoint converted from the CTranslate2 one by
:mod:`aos_gateway.perception.whisper_convert`). faster-whisper is the default: on espeak-ng clips it
gave the same or better transcripts at 2-4x lower latency and under half the memory (no torch).

A clip of up to 30 s is encoded once: the encoder output feeds both the decoder (transcript) and
the embedding (encoder frames mean-pooled over the part that holds the clip, not Whisper's 30 s of
padding). Longer clips take the library's own long-form transcription (timestamps, seeking), and
their embedding pools every 30 s window. Results are cached by a hash of the samples.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aos_gateway.errors import AosError, ConfigError, MediaError, MissingExtraError, ModelError
from aos_gateway.perception.cache import CacheCounts, ResultCache
from aos_gateway.perception.vectors import FloatArray, l2_normalize
from aos_gateway.settings import AudioSettings

log = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
HOP_LENGTH = 160  # samples per mel frame
WINDOW_SAMPLES = 30 * SAMPLE_RATE  # Whisper hears 30 s at a time
WINDOW_FRAMES = WINDOW_SAMPLES // HOP_LENGTH
DEFAULT_MODEL_LABEL = "whisper-tiny.en"

# Whisper's own guard against decoding loops: a transcript that compresses this well is repetitive,
# and is decoded again with sampling at rising temperatures.
COMPRESSION_RATIO_MAX = 2.4
FALLBACK_TEMPERATURES = (0.2, 0.4, 0.6, 0.8, 1.0)
FALLBACK_BEST_OF = 5
ENCODE_BATCH = 8  # windows per encoder call: bounds memory on long clips


# ---------------------------------------------------------------------------------------------
# decoding bytes


def _ffmpeg_cmd(ffmpeg: str, src: str, max_duration_s: float) -> list[str]:
    return [
        ffmpeg,
        "-nostdin",  # never read keys from stdin (the pipe:0 input is unaffected)
        "-hide_banner",
        "-loglevel",
        "error",
        "-i",
        src,
        "-map",
        "0:a:0",  # the first audio stream; video, subtitles, cover art are ignored
        "-t",
        f"{max_duration_s + 1.0:.3f}",  # decode a little past the cap: enough to know it is too long
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        "-f",
        "f32le",
        "pipe:1",
    ]


def _run_ffmpeg(cmd: list[str], data: bytes | None, timeout_s: float) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(cmd, input=data, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise MediaError(f"ffmpeg did not decode the audio within {timeout_s:g} s") from exc
    except OSError as exc:
        raise ConfigError(f"cannot run ffmpeg: {exc}") from exc


def _is_iso_bmff(data: bytes) -> bool:
    # MP4/M4A/MOV: the index ('moov') may sit at the end, which a pipe cannot seek to
    return data[4:8] == b"ftyp"


def rms_dbfs(samples: FloatArray) -> float:
    """The clip's RMS level in dB relative to full scale (-inf for digital silence)."""
    if samples.size == 0:
        return -math.inf
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(rms) if rms > 0 else -math.inf


def decode_audio(data: bytes, *, max_duration_s: float, silence_dbfs: float, timeout_s: float = 60.0) -> FloatArray:
    """Any audio ffmpeg reads (WAV, FLAC, OGG/Opus, MP3, M4A, WebM…) as 16 kHz mono float32.

    Raises:
        MediaError: not audio, corrupt or unsupported; empty; longer than ``max_duration_s``;
            silent (RMS level below ``silence_dbfs``); or ffmpeg took longer than ``timeout_s``.
        ConfigError: ffmpeg is not installed.
    """
    if not data:
        raise MediaError("audio is empty (0 bytes)")
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise ConfigError("ffmpeg is not installed (it decodes audio): run `sudo apt-get install -y ffmpeg`")
    proc = _run_ffmpeg(_ffmpeg_cmd(ffmpeg, "pipe:0", max_duration_s), data, timeout_s)
    if (proc.returncode != 0 or not proc.stdout) and _is_iso_bmff(data):
        with tempfile.NamedTemporaryFile(suffix=".m4a") as f:  # a seekable copy
            f.write(data)
            f.flush()
            proc = _run_ffmpeg(_ffmpeg_cmd(ffmpeg, f.name, max_duration_s), None, timeout_s)
    err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
    detail = err[-1].strip() if err else ""
    if proc.returncode != 0:
        if any("matches no streams" in line for line in err):
            raise MediaError("no audio stream in the media")
        raise MediaError(f"not audio, or corrupt or of an unsupported format (ffmpeg: {detail or 'failed'})")
    usable = len(proc.stdout) - len(proc.stdout) % 4
    samples: FloatArray = np.frombuffer(proc.stdout[:usable], dtype="<f4").astype(np.float32)
    if samples.size == 0:
        raise MediaError("the audio holds no samples" + (f" (ffmpeg: {detail})" if detail else ""))
    if not np.all(np.isfinite(samples)):
        raise MediaError("the audio holds NaN or infinite samples")
    if samples.size > max_duration_s * SAMPLE_RATE:
        raise MediaError(f"audio is longer than the {max_duration_s:g} s limit")
    level = rms_dbfs(samples)
    if level < silence_dbfs:
        shown = "-inf" if math.isinf(level) else f"{level:.1f}"
        raise MediaError(f"audio is silent: RMS level {shown} dBFS is below {silence_dbfs:g} dBFS")
    return samples


# ---------------------------------------------------------------------------------------------
# the encoder


@dataclass(frozen=True)
class AudioResult:
    """What the speech encoder makes of one clip."""

    text: str
    features: FloatArray  # Whisper encoder output, mean-pooled over the clip, L2-normalised
    duration_s: float
    language: str


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


class _Backend(Protocol):
    d_model: int
    multilingual: bool

    def encode(self, windows: list[FloatArray]) -> tuple[FloatArray, list[int]]:
        """Encoder output ``[n, frames, d]`` and how many frames of each hold audio."""
        ...

    def detect_language(self, encoded: FloatArray) -> list[str]: ...

    def decode(self, encoded: FloatArray, languages: list[str], temperature: float) -> list[str]: ...

    def transcribe_long(self, clip: FloatArray, language: str | None) -> tuple[str, str]: ...


def _encoder_frames(n_samples: int, max_frames: int) -> int:
    # the encoder's second convolution halves the mel frame rate
    mel_frames = n_samples // HOP_LENGTH
    return max(1, min(max_frames, math.ceil(mel_frames / 2)))


class _FasterWhisper:
    """CTranslate2 through faster-whisper: its feature extractor, tokenizer and model."""

    def __init__(self, settings: AudioSettings, threads: int) -> None:
        try:
            import ctranslate2  # type: ignore[import-untyped]
            from faster_whisper import WhisperModel  # type: ignore[import-untyped]
            from faster_whisper.tokenizer import Tokenizer  # type: ignore[import-untyped]
            from faster_whisper.transcribe import get_suppressed_tokens  # type: ignore[import-untyped]
        except ImportError as exc:
            raise MissingExtraError("faster-whisper", "audio") from exc
        from aos_gateway.perception.whisper_convert import packaged_ct2_dir

        path = settings.model or str(packaged_ct2_dir())
        if not os.path.isdir(path):
            raise ConfigError(f"faster-whisper model {path!r} is not a directory (a CTranslate2 Whisper model)")
        try:
            self._model = WhisperModel(
                path, device=settings.device or "auto", compute_type=settings.compute_type, cpu_threads=threads
            )
        except Exception as exc:
            raise ModelError(f"cannot load faster-whisper model {path!r}: {exc}") from exc
        self._ct2 = ctranslate2
        self._tokenizer_cls = Tokenizer
        self._tokenizers: dict[str, Any] = {}
        self._get_suppressed_tokens = get_suppressed_tokens
        self._beam_size = settings.beam_size
        self.multilingual = bool(self._model.model.is_multilingual)
        probe = self._encode_raw(np.zeros((1, self._model.model.n_mels, WINDOW_FRAMES), dtype=np.float32))
        self.d_model = int(probe.shape[-1])
        self._ctx = int(probe.shape[1])

    def _encode_raw(self, mels: FloatArray) -> FloatArray:
        storage = self._ct2.StorageView.from_array(np.ascontiguousarray(mels, dtype=np.float32))
        out: FloatArray = np.asarray(self._model.model.encode(storage, to_cpu=True), dtype=np.float32)
        return out

    def _tokenizer(self, language: str) -> Any:
        tok = self._tokenizers.get(language)
        if tok is None:
            lang = language if self.multilingual else None
            tok = self._tokenizer_cls(self._model.hf_tokenizer, self.multilingual, task="transcribe", language=lang)
            self._tokenizers[language] = tok
        return tok

    def encode(self, windows: list[FloatArray]) -> tuple[FloatArray, list[int]]:
        from faster_whisper.audio import pad_or_trim  # type: ignore[import-untyped]

        extractor = self._model.feature_extractor
        mels = [extractor(w) for w in windows]  # [n_mels, frames + 1]: one frame of padding
        batch = np.stack([pad_or_trim(m[:, :WINDOW_FRAMES]) for m in mels]).astype(np.float32)
        return self._encode_raw(batch), [_encoder_frames(len(w), self._ctx) for w in windows]

    def detect_language(self, encoded: FloatArray) -> list[str]:
        found = self._model.model.detect_language(self._ct2.StorageView.from_array(np.ascontiguousarray(encoded)))
        return [str(pairs[0][0])[2:-2] for pairs in found]  # '<|en|>' -> 'en'

    def decode(self, encoded: FloatArray, languages: list[str], temperature: float) -> list[str]:
        tokenizers = [self._tokenizer(lang) for lang in languages]
        prompts = [[*t.sot_sequence, t.no_timestamps] for t in tokenizers]
        sampling: dict[str, Any] = (
            {
                "beam_size": 1,
                "num_hypotheses": FALLBACK_BEST_OF,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
            if temperature > 0
            else {"beam_size": self._beam_size}
        )
        results = self._model.model.generate(
            self._ct2.StorageView.from_array(np.ascontiguousarray(encoded)),
            prompts,
            max_length=self._model.max_length,
            return_scores=True,
            suppress_blank=True,
            suppress_tokens=self._get_suppressed_tokens(tokenizers[0], [-1]),
            **sampling,
        )
        return [str(t.decode(r.sequences_ids[0])).strip() for t, r in zip(tokenizers, results, strict=True)]

    def transcribe_long(self, clip: FloatArray, language: str | None) -> tuple[str, str]:
        segments, info = self._model.transcribe(clip, language=language, beam_size=self._beam_size)
        text = "".join(s.text for s in segments).strip()
        return text, str(info.language)


class _OpenAIWhisper:
    """PyTorch through openai-whisper: its log-mel, tokenizer and decoding."""

    def __init__(self, settings: AudioSettings, threads: int) -> None:
        try:
            import torch
            import whisper  # type: ignore[import-untyped]
        except ImportError as exc:
            raise MissingExtraError("openai-whisper", "audio") from exc
        from aos_gateway.perception.text import pick_device

        torch.set_num_threads(threads)
        if settings.model:
            ref = settings.model
        else:
            from aos_gateway.perception.whisper_convert import prepare_whisper

            ref = str(prepare_whisper(settings, log.info))
        self._device = pick_device(settings.device)
        try:
            self._model = whisper.load_model(ref, device=self._device)
        except Exception as exc:
            raise ModelError(f"cannot load openai-whisper model {ref!r}: {exc}") from exc
        self._model.eval()
        with warnings.catch_warnings():
            # whisper reads its vocabulary without closing the file; warm its cache here, quietly
            warnings.simplefilter("ignore", ResourceWarning)
            whisper.tokenizer.get_tokenizer(self._model.is_multilingual, num_languages=self._model.num_languages)
        self._torch = torch
        self._whisper = whisper
        self._fp16 = self._device.startswith("cuda")
        self._beam_size = settings.beam_size
        dims = self._model.dims
        self.multilingual = bool(self._model.is_multilingual)
        self.d_model = int(dims.n_audio_state)
        self._ctx = int(dims.n_audio_ctx)
        self._n_mels = int(dims.n_mels)

    def encode(self, windows: list[FloatArray]) -> tuple[FloatArray, list[int]]:
        torch, whisper = self._torch, self._whisper
        mels = []
        for w in windows:
            # as whisper.transcribe does it: 30 s of silence appended before the log-mel
            mel = whisper.log_mel_spectrogram(torch.from_numpy(w.copy()), self._n_mels, padding=WINDOW_SAMPLES)
            mels.append(whisper.pad_or_trim(mel[:, :WINDOW_FRAMES], WINDOW_FRAMES))
        batch = torch.stack(mels).to(self._device, torch.float16 if self._fp16 else torch.float32)
        with torch.inference_mode():
            out = self._model.encoder(batch)
        encoded: FloatArray = out.float().cpu().numpy()
        return encoded, [_encoder_frames(len(w), self._ctx) for w in windows]

    def _features(self, encoded: FloatArray) -> Any:
        t = self._torch.from_numpy(np.ascontiguousarray(encoded))
        return t.to(self._device, self._torch.float16 if self._fp16 else self._torch.float32)

    def detect_language(self, encoded: FloatArray) -> list[str]:
        with self._torch.inference_mode():
            _, probs = self._model.detect_language(self._features(encoded))
        return [str(max(p, key=p.get)) for p in probs]

    def decode(self, encoded: FloatArray, languages: list[str], temperature: float) -> list[str]:
        # one decode call per language: DecodingOptions holds a single language
        texts: list[str] = [""] * len(languages)
        for lang in dict.fromkeys(languages):
            idx = [i for i, la in enumerate(languages) if la == lang]
            opts = self._whisper.DecodingOptions(
                task="transcribe",
                language=lang if self.multilingual else "en",
                temperature=temperature,
                beam_size=self._beam_size if temperature == 0 and self._beam_size > 1 else None,
                best_of=FALLBACK_BEST_OF if temperature > 0 else None,
                without_timestamps=True,
                fp16=self._fp16,
            )
            # whisper.decode does not repeat the audio features for each beam (or best-of sample), so
            # grouped decoding of a batch fails (openai/whisper PR #2197, open): one clip at a time then
            grouped = (opts.beam_size or 1) > 1 or (opts.best_of or 1) > 1
            for chunk in [[i] for i in idx] if grouped else [idx]:
                results = self._whisper.decode(self._model, self._features(encoded[chunk]), opts)
                for i, r in zip(chunk, results, strict=True):
                    texts[i] = str(r.text).strip()
        return texts

    def transcribe_long(self, clip: FloatArray, language: str | None) -> tuple[str, str]:
        result = self._model.transcribe(
            self._torch.from_numpy(clip.copy()),
            language=language if self.multilingual else "en",
            beam_size=self._beam_size if self._beam_size > 1 else None,
            fp16=self._fp16,
            verbose=None,
        )
        return str(result["text"]).strip(), str(result.get("language") or language or "en")


class AudioEncoder(CacheCounts):
    """Whisper transcripts and audio embeddings, with a content-hash cache; thread-safe.

    Model runs are serialised: openai-whisper's decoder keeps its key/value cache in hooks on the
    shared model, and CTranslate2 with one worker queues concurrent calls anyway.
    """

    def __init__(self, settings: AudioSettings, threads: int | None = None) -> None:
        self._settings = settings
        self._threads = threads or os.cpu_count() or 1
        self._backend: _Backend | None = None
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._cache: ResultCache[AudioResult] = ResultCache(settings.cache_size)
        label = Path(settings.model).name if settings.model else DEFAULT_MODEL_LABEL
        self.name = f"{label}/{settings.backend}"

    def load(self) -> None:
        """Load the model now (else on first use); the openai-whisper default converts once."""
        with self._lock:
            if self._backend is not None:
                return
            t0 = time.perf_counter()
            if self._settings.backend == "openai-whisper":
                self._backend = _OpenAIWhisper(self._settings, self._threads)
            else:
                self._backend = _FasterWhisper(self._settings, self._threads)
            log.info("audio: %s loaded in %.1fs", self.name, time.perf_counter() - t0)

    def _loaded(self) -> _Backend:
        self.load()
        assert self._backend is not None
        return self._backend

    @property
    def feature_dim(self) -> int:
        """Width of the audio embedding (the Whisper encoder's width: 384 for tiny)."""
        return self._loaded().d_model

    def transcribe(self, clips: Sequence[FloatArray]) -> list[AudioResult]:
        """One result per clip (16 kHz mono float32, as :func:`decode_audio` returns), in order."""
        backend = self._loaded()
        arrays: list[FloatArray] = []
        for i, c in enumerate(clips):
            a = np.ascontiguousarray(c, dtype=np.float32)
            if a.ndim != 1 or a.size == 0:
                raise MediaError(f"audio clip {i} must be a non-empty 1-D array of samples, got shape {a.shape}")
            arrays.append(a)

        def compute(first: list[int]) -> list[AudioResult]:
            try:
                with self._run_lock:
                    return self._run(backend, [arrays[i] for i in first])
            except AosError:
                raise
            except Exception as exc:
                raise ModelError(f"speech model ({self.name}) failed: {exc}") from exc

        keys = [hashlib.sha256(a.astype("<f4", copy=False).tobytes()).digest() for a in arrays]
        return self._cache.get_or_compute(keys, compute)

    def _language(self, backend: _Backend) -> str | None:
        if not backend.multilingual:
            return "en"
        return self._settings.language

    def _run(self, backend: _Backend, clips: list[FloatArray]) -> list[AudioResult]:
        # every clip cut into 30 s windows; all windows encoded in batches
        windows: list[FloatArray] = []
        owner: list[int] = []
        first: dict[int, int] = {}  # clip -> its first window (a short clip has only that one)
        for ci, clip in enumerate(clips):
            first[ci] = len(windows)
            for start in range(0, len(clip), WINDOW_SAMPLES):
                windows.append(clip[start : start + WINDOW_SAMPLES])
                owner.append(ci)
        encoded_parts: list[FloatArray] = []
        frames: list[int] = []
        for b in range(0, len(windows), ENCODE_BATCH):
            enc, n = backend.encode(windows[b : b + ENCODE_BATCH])
            encoded_parts.append(enc)
            frames.extend(n)
        encoded = np.concatenate(encoded_parts)

        sums = np.zeros((len(clips), backend.d_model), dtype=np.float64)
        counts = np.zeros(len(clips), dtype=np.int64)
        for wi, ci in enumerate(owner):
            sums[ci] += encoded[wi, : frames[wi]].sum(axis=0, dtype=np.float64)
            counts[ci] += frames[wi]
        features = l2_normalize(sums / counts[:, None])

        texts: list[str] = [""] * len(clips)
        langs: list[str] = ["en"] * len(clips)
        fixed = self._language(backend)
        short = [ci for ci, clip in enumerate(clips) if len(clip) <= WINDOW_SAMPLES]
        if short:
            enc_short = encoded[[first[ci] for ci in short]]
            short_langs = [fixed] * len(short) if fixed else backend.detect_language(enc_short)
            for ci, lang in zip(short, short_langs, strict=True):
                langs[ci] = str(lang)
            decoded = backend.decode(enc_short, [langs[ci] for ci in short], 0.0)
            for pos, (ci, text) in enumerate(zip(short, decoded, strict=True)):
                texts[ci] = self._fallback(backend, enc_short[pos : pos + 1], langs[ci], text)
        for ci, clip in enumerate(clips):
            if len(clip) > WINDOW_SAMPLES:
                texts[ci], langs[ci] = backend.transcribe_long(clip, fixed)
        return [
            AudioResult(text=texts[i], features=features[i], duration_s=len(clips[i]) / SAMPLE_RATE, language=langs[i])
            for i in range(len(clips))
        ]

    @staticmethod
    def _fallback(backend: _Backend, encoded: FloatArray, language: str, text: str) -> str:
        """Decode again with sampling when the greedy transcript is a repetition loop."""
        if _compression_ratio(text) <= COMPRESSION_RATIO_MAX:
            return text
        best = text
        for t in FALLBACK_TEMPERATURES:
            candidate = backend.decode(encoded, [language], t)[0]
            if _compression_ratio(candidate) <= COMPRESSION_RATIO_MAX:
                return candidate
            if _compression_ratio(candidate) < _compression_ratio(best):
                best = candidate
        return best
