"""``aos models ...``: prepare the model files the encoders need, and list what each will load.

``prepare`` converts the packaged CTranslate2 Whisper tiny.en into an openai-whisper checkpoint
(once; later runs verify its sha256 and reuse it). ``list`` resolves the settings the way each
encoder does and says whether the files are there and sound (not empty; the sha256 that
``prepare`` recorded next to a checkpoint), without loading any model. A setting that looks like
a path (a ``/``, a ``.pt``/``.bin``/``.safetensors`` suffix) and names no file is missing, not a
hub name: no model hub is asked for it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aos_gateway.errors import AosError
from aos_gateway.settings import Settings


def add_parser(sub: argparse._SubParsersAction[Any], handler: Callable[[argparse.Namespace], int]) -> None:
    """Register ``models prepare`` and ``models list`` under ``sub``; both call ``handler``."""
    mp = sub.add_parser("models", help="model files the encoders load")
    msub = mp.add_subparsers(dest="action", required=True)
    pr = msub.add_parser(
        "prepare", help="convert Whisper tiny.en for the openai-whisper backend (idempotent; verifies checksums)"
    )
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(handler=handler)
    ls = msub.add_parser("list", help="what the text, vision and audio encoders will load, and whether it is here")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=handler)


@dataclass(frozen=True)
class ModelEntry:
    """One encoder's model as the settings resolve it."""

    encoder: str
    model: str
    location: str
    present: bool | None  # None: fetched from a hub on first use, cannot tell offline
    detail: str
    corrupt: bool = False  # there, but empty or not matching its recorded checksum (present is False)
    random: bool = False  # runs, but on random weights: its results mean nothing


#: file names that are weights, never a hub name or a pretrained tag
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt")


def _looks_like_path(value: str, slash: bool = True) -> bool:
    """A value meant as a file: a weights suffix, a leading ``/``, ``./``, ``~`` or (``slash``) any ``/``.

    The text model's hub names are ``org/name``: for it, ``slash`` is False.
    """
    if value.lower().endswith(_WEIGHT_SUFFIXES) or value.startswith(("/", "./", "../", "~")):
        return True
    return slash and "/" in value


def _missing(encoder: str, model: str, value: str, what: str, extra: str = "") -> ModelEntry:
    """A path-looking setting that names no file: missing (no hub is asked for a path)."""
    return ModelEntry(encoder, model, value, False, f"missing: no such {what}" + extra)


def _file_entry(encoder: str, model: str, path: Path, detail: str) -> ModelEntry:
    """A weights file: present, unless it is empty or its ``<file>.json`` sidecar (``aos models
    prepare``) records another sha256."""
    where = str(path.resolve())
    size = path.stat().st_size
    if size == 0:
        return ModelEntry(encoder, model, where, False, f"CORRUPT: empty file ({detail})", corrupt=True)
    from aos_gateway.perception.whisper_convert import read_sidecar, sha256_file

    want = read_sidecar(path).get("sha256")
    if isinstance(want, str):
        if sha256_file(path) != want:
            fix = "; run `aos models prepare`" if encoder == "audio" else ""
            msg = f"CORRUPT: checksum mismatch with {path.name}.json ({detail}){fix}"
            return ModelEntry(encoder, model, where, False, msg, corrupt=True)
        detail += ", checksum verified"
    return ModelEntry(encoder, model, where, True, detail)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _text_entry(settings: Settings) -> ModelEntry:
    from aos_gateway.perception.text import DEFAULT_TEXT_MODEL, default_model_path

    ref = settings.perception.text_model
    if ref is None:
        try:
            path = default_model_path()
        except AosError as exc:
            return ModelEntry("text", DEFAULT_TEXT_MODEL, "-", False, str(exc))
        return ModelEntry("text", DEFAULT_TEXT_MODEL, str(path), path.is_dir(), "sentence-transformers")
    if os.path.isfile(ref):
        return _file_entry("text", Path(ref).name, Path(ref), "sentence-transformers")
    if os.path.exists(ref):
        return ModelEntry("text", Path(ref).name, str(Path(ref).resolve()), True, "sentence-transformers")
    if _looks_like_path(ref, slash=False):
        return _missing("text", Path(ref).name, ref, "file or folder")
    return ModelEntry("text", ref, "hub", None, "sentence-transformers name: downloaded on first use")


def _vision_entry(settings: Settings) -> ModelEntry:
    v = settings.vision
    name = f"open_clip {v.model}"
    if not v.enabled:
        return ModelEntry("vision", name, "-", None, "disabled (AOS_VISION__ENABLED=false)")
    extra = "" if _installed("open_clip") else "; open_clip is not installed: pip install 'aos-gateway[vision]'"
    w = v.weights
    if not w:
        return ModelEntry(
            "vision",
            name,
            "-",
            True,
            "no weights configured (AOS_VISION__WEIGHTS): it runs on RANDOM weights, image matches mean nothing"
            + extra,
            random=True,
        )
    if w.startswith("hf-hub:"):
        return ModelEntry("vision", w, "hub", None, "downloaded on first use" + extra)
    if w.startswith("local-dir:"):
        d = w.removeprefix("local-dir:")
        return ModelEntry("vision", name, d, os.path.isdir(d), "local directory" + extra)
    if os.path.isfile(w):
        return _file_entry("vision", name, Path(w), "weights file" + extra)
    if _looks_like_path(w):
        return _missing("vision", name, w, "weights file", extra)
    return ModelEntry("vision", f"{name} ({w})", "hub", None, "pretrained tag: downloaded on first use" + extra)


def _audio_entry(settings: Settings) -> ModelEntry:
    from aos_gateway.perception.audio import DEFAULT_MODEL_LABEL
    from aos_gateway.perception.whisper_convert import default_checkpoint_path, packaged_ct2_dir

    a = settings.audio
    name = f"{Path(a.model).name if a.model else DEFAULT_MODEL_LABEL} ({a.backend})"
    if not a.enabled:
        return ModelEntry("audio", name, "-", None, "disabled (AOS_AUDIO__ENABLED=false)")
    package = "faster_whisper" if a.backend == "faster-whisper" else "whisper"
    extra = "" if _installed(package) else f"; {a.backend} is not installed: pip install 'aos-gateway[audio]'"
    if a.backend == "faster-whisper":
        if a.model:
            d = Path(a.model)
        else:
            try:
                d = packaged_ct2_dir()
            except AosError as exc:
                return ModelEntry("audio", name, "-", False, str(exc))
        return ModelEntry("audio", name, str(d), (d / "model.bin").is_file(), f"CTranslate2, {a.compute_type}" + extra)
    if a.model:
        if os.path.isfile(a.model):
            return _file_entry("audio", name, Path(a.model), "checkpoint file" + extra)
        if _looks_like_path(a.model):
            return _missing("audio", name, a.model, "checkpoint file", extra)
        return ModelEntry("audio", name, "hub", None, "openai-whisper name: downloaded on first use" + extra)
    ckpt = default_checkpoint_path(a)
    if ckpt.is_file():
        return _file_entry("audio", name, ckpt, "converted from the packaged CTranslate2 model" + extra)
    return ModelEntry(
        "audio",
        name,
        str(ckpt.resolve()),
        None,
        "not converted yet: the worker converts the packaged model at its first audio task, or run "
        "`aos models prepare` now" + extra,
    )


def list_models(settings: Settings) -> list[ModelEntry]:
    """What each encoder will load under ``settings``; loads nothing."""
    return [_text_entry(settings), _vision_entry(settings), _audio_entry(settings)]


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    if args.action == "prepare":
        from aos_gateway.perception.whisper_convert import prepare_whisper_info

        info = prepare_whisper_info(settings.audio, progress)
        if args.json:
            out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(info).items()}
            out["path"] = str(info.path.resolve())
            print(json.dumps(out, indent=2))
        else:
            print(f"whisper checkpoint: {info.path.resolve()}")
            print(f"size:   {info.size_bytes / 1e6:.1f} MB ({info.size_bytes} bytes)")
            print(f"sha256: {info.sha256}")
            print("converted now" if info.converted else "already prepared (checksum verified)")
        return 0
    entries = list_models(settings)
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    for e in entries:
        if e.corrupt:
            state = "CORRUPT"
        elif e.random:
            state = "RANDOM"
        else:
            state = {True: "present", False: "MISSING", None: "-"}[e.present]
        print(f"{e.encoder:<7} {state:<8} {e.model:<36} {e.location}")
        print(f"{'':<16} {e.detail}")
    return 0 if all(e.present is not False for e in entries) else 1
