"""``aos bench perception``: each modality through the perceive stage and through the bare model.

For text, image and audio, in one process and one run:

- **stage**: :class:`~aos_gateway.perception.task.Perceiver` on task requests (media inline),
  i.e. what the perceive stage does per micro-batch: load and decode the media, encode, fuse,
  build the records. Content caches are off, every item is new.
- **bare**: the model call a user would write without the gateway: sentence-transformers
  ``encode``; PIL decode + open_clip preprocess + ``encode_image``; faster-whisper
  ``WhisperModel.transcribe`` (or openai-whisper ``transcribe``) on the decoded clip.

Figures: latency p50/p95 at batch 1, items/s per batch size (best marked), the stage's overhead
over the bare call at the largest batch (the issue's limit: under 10 % at batch 32), peak RSS.
Audio clips are synthesised with espeak-ng from MetaTool task texts, so each has a reference
transcript: the word accuracy (1 - WER) of each backend is reported beside its speed.
"""

from __future__ import annotations

import io
import os
import platform
import re
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from aos_gateway.client import new_task
from aos_gateway.contracts.records import MediaPart, TaskRequest
from aos_gateway.errors import AosError, ConfigError
from aos_gateway.settings import Settings

MODALITIES = ("text", "image", "audio")
DATA = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "metatool" / "dev.jsonl"


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _pct(xs: Sequence[float], q: float) -> float:
    return round(float(np.percentile(np.asarray(xs) * 1000, q)), 2) if xs else float("nan")


def _texts(n: int) -> list[str]:
    import json

    if DATA.is_file():
        out = [json.loads(line)["text"] for line in DATA.read_text().splitlines() if line.strip()]
        if len(out) >= n:
            return out[:n]
    words = [
        "weather",
        "news",
        "stock",
        "price",
        "translate",
        "summarise",
        "invoice",
        "flight",
        "hotel",
        "recipe",
        "code",
        "review",
    ]
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(words, size=8)) + f" #{i}" for i in range(n)]


def _images(n: int, size: int = 320) -> list[bytes]:
    """Distinct photo-sized PNGs (shapes on noise): every one is decoded and encoded anew."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1)
    out = []
    for _ in range(n):
        arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        img = Image.fromarray(arr, "RGB")
        d = ImageDraw.Draw(img)
        for _ in range(3):
            x0, y0 = (int(v) for v in rng.integers(0, size // 2, 2))
            d.rectangle((x0, y0, x0 + size // 3, y0 + size // 4), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _clips(texts: Sequence[str], folder: Path) -> list[bytes]:
    if shutil.which("espeak-ng") is None:
        raise ConfigError("espeak-ng is needed for the audio benchmark: apt-get install -y espeak-ng")
    out = []
    for i, t in enumerate(texts):
        wav = folder / f"clip{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), t], check=True, capture_output=True, timeout=60)
        out.append(wav.read_bytes())
    return out


def _part(data: bytes, mime: str) -> MediaPart:
    return MediaPart(mime_type=mime, data=data, uri=None, size_bytes=len(data), sha256=None)


def word_accuracy(ref: str, hyp: str) -> float:
    """1 - word error rate (edit distance over lower-case words), floored at 0."""
    r, h = re.findall(r"[a-z0-9']+", ref.lower()), re.findall(r"[a-z0-9']+", hyp.lower())
    if not r:
        return 1.0 if not h else 0.0
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        cur = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (rw != hw))
        prev = cur
    return max(0.0, 1.0 - prev[-1] / len(r))


def _measure(
    run: Callable[[list[Any]], Any], items: list[Any], batches: Sequence[int], latency_n: int
) -> dict[str, Any]:
    """Latency at batch 1 over ``latency_n`` items, then items/s per batch size over all items."""
    run(items[:1])  # warm-up (lazy allocations, first-call paths)
    lat = []
    for x in items[:latency_n]:
        t0 = time.perf_counter()
        run([x])
        lat.append(time.perf_counter() - t0)
    rates: dict[str, float] = {}
    for b in batches:
        chunks = [items[i : i + b] for i in range(0, len(items) - b + 1, b)] or [items[:b]]
        t0 = time.perf_counter()
        for c in chunks:
            run(c)
        rates[str(b)] = round(sum(len(c) for c in chunks) / (time.perf_counter() - t0), 2)
    best = max(rates, key=lambda k: rates[k])
    return {"p50_ms": _pct(lat, 50), "p95_ms": _pct(lat, 95), "items_per_s": rates, "best_batch": int(best)}


def _compare(stage: dict[str, Any], bare: dict[str, Any], batch: int) -> dict[str, Any]:
    s, b = stage["items_per_s"][str(batch)], bare["items_per_s"][str(batch)]
    return {
        "at_batch": batch,
        "overhead": round(b / s - 1.0, 4),
        "stage_over_bare_p50": round(stage["p50_ms"] / bare["p50_ms"], 3),
    }


def _stage_runner(perceiver: Any, make: Callable[[Any], TaskRequest]) -> Callable[[list[Any]], Any]:
    from aos_gateway.perception.task import validate_request

    max_chars = perceiver.settings.perception.max_text_chars

    def run(items: list[Any]) -> Any:
        reqs = [make(x) for x in items]
        texts = [validate_request(r, max_chars) for r in reqs]
        out = perceiver.perceive(reqs, texts, 0)
        for o in out:
            if isinstance(o, AosError):
                raise o
        return out

    return run


def bench_text(settings: Settings, n: int, batches: Sequence[int], progress: Callable[[str], None]) -> dict[str, Any]:
    from aos_gateway.perception.task import Perceiver
    from aos_gateway.perception.text import TextEncoder

    p = settings.perception
    enc = TextEncoder(p.text_model, p.device, 0, p.torch_threads)
    perceiver = Perceiver(settings, enc)
    perceiver.image_unavailable = perceiver.audio_unavailable = "not benchmarked"
    t0 = time.perf_counter()
    perceiver.load()
    load_s = time.perf_counter() - t0
    texts = _texts(n)
    progress(f"bench perception: text, {len(texts)} texts, batches {list(batches)}")
    stage = _measure(_stage_runner(perceiver, lambda t: new_task(t)), texts, batches, min(200, n))
    model = enc._model
    bs = p.encode_batch_size
    bare = _measure(
        lambda xs: model.encode(xs, batch_size=bs, convert_to_numpy=True, show_progress_bar=False),
        texts,
        batches,
        min(200, n),
    )
    return {"model": enc.name, "load_s": round(load_s, 2), "stage": stage, "bare": bare}


def bench_image(settings: Settings, n: int, batches: Sequence[int], progress: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from aos_gateway.perception.image import ImageEncoder, decode_image
    from aos_gateway.perception.task import Perceiver
    from aos_gateway.perception.text import TextEncoder

    vision = settings.vision.model_copy(update={"cache_size": 0})
    s = settings.model_copy(update={"vision": vision})
    enc = ImageEncoder(vision, settings.perception.torch_threads)
    t0 = time.perf_counter()
    enc.load()
    load_s = time.perf_counter() - t0
    p = settings.perception
    perceiver = Perceiver(s, TextEncoder(p.text_model, p.device, 0, p.torch_threads), image=enc)
    perceiver.audio_unavailable = "not benchmarked"
    perceiver.load()
    images = _images(n)
    progress(f"bench perception: image, {len(images)} distinct {enc.name} images, batches {list(batches)}")
    stage = _measure(
        _stage_runner(perceiver, lambda b: new_task(None, image=_part(b, "image/png"))), images, batches, min(30, n)
    )
    model, prep, dev = enc._model, enc._preprocess, enc._device

    def bare_call(xs: list[bytes]) -> Any:
        from PIL import Image

        with torch.inference_mode():
            batch = torch.stack([prep(Image.open(io.BytesIO(x)).convert("RGB")) for x in xs]).to(dev)
            return torch.nn.functional.normalize(model.encode_image(batch), dim=-1).cpu().numpy()

    bare = _measure(bare_call, images, batches, min(30, n))
    decode_image(images[0], vision.max_pixels)
    return {
        "model": enc.name,
        "random_weights": enc.random_weights,
        "load_s": round(load_s, 2),
        "stage": stage,
        "bare": bare,
    }


def bench_audio(
    settings: Settings, backend: str, n: int, batches: Sequence[int], progress: Callable[[str], None]
) -> dict[str, Any]:
    from aos_gateway.perception.audio import AudioEncoder, decode_audio
    from aos_gateway.perception.task import Perceiver
    from aos_gateway.perception.text import TextEncoder

    audio = settings.audio.model_copy(update={"cache_size": 0, "backend": backend})
    s = settings.model_copy(update={"audio": audio})
    enc = AudioEncoder(audio, settings.perception.torch_threads)
    t0 = time.perf_counter()
    enc.load()
    load_s = time.perf_counter() - t0
    p = settings.perception
    perceiver = Perceiver(s, TextEncoder(p.text_model, p.device, 0, p.torch_threads), audio=enc)
    perceiver.image_unavailable = "not benchmarked"
    perceiver.load()
    texts = _texts(n)
    with tempfile.TemporaryDirectory() as tmp:
        wavs = _clips(texts, Path(tmp))
    clips = [decode_audio(w, max_duration_s=audio.max_duration_s, silence_dbfs=audio.silence_dbfs) for w in wavs]
    secs = [len(c) / 16000 for c in clips]
    progress(f"bench perception: audio ({backend}), {n} espeak-ng clips of {np.mean(secs):.1f} s on average")
    items = list(range(n))
    transcripts: dict[int, str] = {}

    def stage_make(i: int) -> TaskRequest:
        return new_task(None, task_id=f"clip{i}", audio=_part(wavs[i], "audio/wav"))

    stage_run = _stage_runner(perceiver, stage_make)

    def stage_call(idx: list[int]) -> Any:
        out = stage_run(idx)
        for i, o in zip(idx, out, strict=True):
            transcripts[i] = o["transcript"] or ""
        return out

    stage = _measure(stage_call, items, batches, min(10, n))
    backend_obj: Any = enc._backend
    if backend == "faster-whisper":
        wm = backend_obj._model

        def bare_call(idx: list[int]) -> Any:
            return [
                " ".join(
                    seg.text for seg in wm.transcribe(clips[i], beam_size=audio.beam_size, language=audio.language)[0]
                )
                for i in idx
            ]
    else:
        om = backend_obj._model

        def bare_call(idx: list[int]) -> Any:
            return [
                om.transcribe(clips[i], language=audio.language, beam_size=audio.beam_size, fp16=False)["text"]
                for i in idx
            ]

    bare = _measure(bare_call, items, batches, min(10, n))
    acc = [word_accuracy(texts[i], transcripts.get(i, "")) for i in items]
    return {
        "backend": backend,
        "model": enc.name,
        "load_s": round(load_s, 2),
        "clip_s_mean": round(float(np.mean(secs)), 2),
        "word_accuracy": round(float(np.mean(acc)), 4),
        "examples": [{"spoken": texts[i], "heard": transcripts.get(i, "")} for i in items[:3]],
        "stage": stage,
        "bare": bare,
    }


def run(
    settings: Settings,
    modalities: Sequence[str],
    n: int,
    progress: Callable[[str], None],
    audio_backends: Sequence[str] = ("faster-whisper", "openai-whisper"),
    audio_n: int = 24,
) -> dict[str, Any]:
    import torch

    torch.set_num_threads(settings.perception.torch_threads or os.cpu_count() or 1)
    report: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch_threads": torch.get_num_threads(),
        },
        "rss_start_mb": round(_rss_mb(), 1),
    }
    text_batches, image_batches, audio_batches = (1, 8, 32), (1, 8, 32), (1, 4, 8)
    for m in modalities:
        t0 = time.perf_counter()
        if m == "text":
            report["text"] = bench_text(settings, n, text_batches, progress)
            report["text"]["vs_bare"] = _compare(report["text"]["stage"], report["text"]["bare"], 32)
        elif m == "image":
            report["image"] = bench_image(settings, max(64, n // 8), image_batches, progress)
            report["image"]["vs_bare"] = _compare(report["image"]["stage"], report["image"]["bare"], 32)
        elif m == "audio":
            report["audio"] = []
            for b in audio_backends:
                r = bench_audio(settings, b, audio_n, audio_batches, progress)
                r["vs_bare"] = _compare(r["stage"], r["bare"], audio_batches[-1])
                report["audio"].append(r)
        else:
            raise ConfigError(f"unknown modality {m!r} (choose from {', '.join(MODALITIES)})")
        progress(f"bench perception: {m} done in {time.perf_counter() - t0:.0f}s, RSS {_rss_mb():.0f} MB")
    report["rss_end_mb"] = round(_rss_mb(), 1)
    report["peak_rss_mb"] = round(_peak_mb(), 1)
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"machine: {r['machine']}"]

    def block(title: str, x: dict[str, Any]) -> None:
        lines.append(title)
        for side in ("stage", "bare"):
            s = x[side]
            rates = ", ".join(f"b{k} {v}/s" for k, v in s["items_per_s"].items())
            lines.append(
                f"  {side:5}  batch 1 p50 {s['p50_ms']} ms  p95 {s['p95_ms']} ms   {rates}  (best b{s['best_batch']})"
            )
        v = x["vs_bare"]
        lines.append(f"  stage overhead over the bare call at batch {v['at_batch']}: {100 * v['overhead']:.1f}%")

    if "text" in r:
        block(f"text ({r['text']['model']}, load {r['text']['load_s']} s)", r["text"])
    if "image" in r:
        rw = " RANDOM weights" if r["image"]["random_weights"] else ""
        block(f"image ({r['image']['model']}{rw}, load {r['image']['load_s']} s)", r["image"])
    for a in r.get("audio", []):
        block(
            f"audio {a['backend']} ({a['model']}, load {a['load_s']} s, clips {a['clip_s_mean']} s, "
            f"word accuracy {100 * a['word_accuracy']:.1f}%)",
            a,
        )
        for ex in a["examples"]:
            lines.append(f"    said {ex['spoken']!r} -> heard {ex['heard']!r}")
    lines.append(f"RSS: start {r['rss_start_mb']} MB, end {r['rss_end_mb']} MB, peak {r['peak_rss_mb']} MB")
    return "\n".join(lines)
