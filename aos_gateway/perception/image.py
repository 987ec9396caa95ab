"""Image perception: decode untrusted bytes safely, embed them with open_clip (CLIP).

``pip install 'aos-gateway[vision]'`` (open_clip_torch, torchvision, pillow). Importing this
module imports none of them; they load on first use.

Decoding refuses what should not reach the model: bytes that are not an image of a common
format, corrupt or truncated files, and images with more pixels than ``max_pixels`` (checked from
the header, before the pixels are decoded, so a decompression bomb costs nothing).

The encoder embeds images with CLIP's image tower and texts (agent cards) with its text tower,
into one space, so an image-only task can be matched against cards. Weights come from
``AOS_VISION__WEIGHTS`` (a local checkpoint file, an open_clip pretrained tag or an
``hf-hub:`` name). Without them the real architecture runs with seeded random weights, the same
in every process, so the pipeline works end to end but similarities mean nothing: said loudly
once per process and in :attr:`ImageEncoder.random_weights`.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from aos_gateway.errors import ConfigError, MediaError, MissingExtraError, ModelError
from aos_gateway.perception.cache import CacheCounts, ResultCache
from aos_gateway.perception.vectors import FloatArray, l2_normalize
from aos_gateway.settings import VisionSettings

if TYPE_CHECKING:
    from PIL import Image as PILImage

log = logging.getLogger(__name__)

#: Formats decoded; exotic decoders are refused (smaller attack surface for untrusted bytes).
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

#: The seed of the random weights used when none are configured (same model in every process).
RANDOM_WEIGHTS_SEED = 0

_OPEN_LOCK = threading.Lock()  # warnings filters are process-wide: one header check at a time
_RANDOM_WARNED = False
_RANDOM_WARNED_LOCK = threading.Lock()


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingExtraError("pillow", "vision") from exc
    return Image


def decode_image(data: bytes, max_pixels: int, *, target_size: int | None = None) -> PILImage.Image:
    """Untrusted bytes to an RGB image, or a MediaError that says why not.

    Args:
        data: the encoded image (JPEG, PNG, WebP, GIF, BMP or TIFF; the first frame is used).
        max_pixels: width × height above this is refused before decoding. PIL's own
            decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``) applies as well.
        target_size: when set, a JPEG is decoded at a reduced scale that keeps both sides at
            least this large (much faster for photos that will be shrunk to 224 px anyway).

    Transparent pixels are composited on white; EXIF orientation is applied.
    """
    if not data:
        raise MediaError("image: empty (0 bytes)")
    image_mod = _pil()
    from PIL import ImageOps, UnidentifiedImageError

    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", image_mod.DecompressionBombWarning)
        try:
            with image_mod.open(io.BytesIO(data), formats=IMAGE_FORMATS) as probe:
                width, height = probe.size
                _check_pixels(width, height, max_pixels)
                probe.verify()  # structure and checksums, without decoding the pixels
        except MediaError:
            raise
        except (image_mod.DecompressionBombError, image_mod.DecompressionBombWarning) as exc:
            raise MediaError(f"image: too many pixels (decompression bomb?): {exc}") from None
        except UnidentifiedImageError:
            raise MediaError(f"image: not an image of a supported format ({', '.join(IMAGE_FORMATS)})") from None
        except Exception as exc:  # PIL raises SyntaxError, OSError, ValueError, struct.error... on bad data
            raise MediaError(f"image: corrupt or truncated: {exc}") from None
    try:
        img = image_mod.open(io.BytesIO(data), formats=IMAGE_FORMATS)  # verify() leaves the image unusable
        if target_size and img.format == "JPEG":
            img.draft("RGB", (target_size, target_size))
        img.load()
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img)
    except Exception as exc:
        raise MediaError(f"image: corrupt or truncated: {exc}") from None


def _check_pixels(width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"image: no pixels ({width}×{height})")
    if width * height > max_pixels:
        raise MediaError(f"image: too many pixels: {width}×{height} = {width * height} > {max_pixels}")


def _to_rgb(img: PILImage.Image) -> PILImage.Image:
    from PIL import Image

    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit / float greys: PIL clips them to white
        arr = np.asarray(img, dtype=np.float32)
        peak = 65535.0 if img.mode.startswith("I;16") else float(arr.max(initial=0.0))
        scaled = arr * (255.0 / peak) if peak > 255.0 else arr
        img = Image.fromarray(np.clip(scaled, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        out = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        out.alpha_composite(rgba)
        return out.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _warn_random_weights(model: str) -> None:
    global _RANDOM_WARNED
    with _RANDOM_WARNED_LOCK:
        if _RANDOM_WARNED:
            return
        _RANDOM_WARNED = True
    log.warning(
        "VISION ENCODER HAS RANDOM WEIGHTS: open_clip %s runs without pretrained weights, so image "
        "embeddings and image-to-card similarities are MEANINGLESS (the pipeline works, the matches do "
        "not). Set AOS_VISION__WEIGHTS to a local open_clip checkpoint file for %s (e.g. "
        "open_clip_pytorch_model.bin), an open_clip pretrained tag or an 'hf-hub:ORG/NAME' name the host "
        "can download.",
        model,
        model,
    )


class _DropOpenClipRandomNotice(logging.Filter):
    """open_clip logs its own random-init notice on the root logger; ours says more, once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_open_clip() -> Iterator[None]:
    f = _DropOpenClipRandomNotice()
    logging.root.addFilter(f)
    try:
        yield
    finally:
        logging.root.removeFilter(f)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


class ImageEncoder(CacheCounts):
    """CLIP image and text embeddings (open_clip), with a content-hash LRU cache; thread-safe.

    Rows are L2-normalised float32. Loaded once, on :meth:`load` or first use.
    """

    def __init__(self, settings: VisionSettings, threads: int | None = None) -> None:
        for module, package in (("open_clip", "open_clip_torch"), ("torchvision", "torchvision"), ("PIL", "pillow")):
            if importlib.util.find_spec(module) is None:
                raise MissingExtraError(package, "vision")
        self.settings = settings
        self._threads = threads
        self._lock = threading.Lock()
        self._cache: ResultCache[FloatArray] = ResultCache(settings.cache_size)
        self._model: Any = None
        self._preprocess: Any = None
        self._tokenizer: Any = None
        self._device = "cpu"
        self._dim = 0
        self._image_size = 224
        self._name = ""

    @property
    def random_weights(self) -> bool:
        """True when no weights are configured: the embeddings are those of a random network."""
        return not self.settings.weights

    @property
    def name(self) -> str:
        """The vector space: ``open_clip:<model>:<weights>`` (a file by its sha256), or ``...:random``."""
        self.load()
        return self._name

    @property
    def dim(self) -> int:
        self.load()
        return self._dim

    def _resolve(self, open_clip: Any) -> tuple[str, str | None, str]:
        """(open_clip model name, pretrained argument, encoder name) from the settings."""
        model, w = self.settings.model, self.settings.weights
        if w and w.startswith("hf-hub:"):
            return w, None, f"open_clip:{w}"
        if w and w.startswith("local-dir:"):
            if not os.path.isdir(w.removeprefix("local-dir:")):
                raise ConfigError(f"AOS_VISION__WEIGHTS={w!r}: no such directory")
            return w, None, f"open_clip:{w}"
        if model not in open_clip.list_models():
            raise ConfigError(f"AOS_VISION__MODEL={model!r} is not an open_clip architecture (open_clip.list_models())")
        if not w:
            return model, None, f"open_clip:{model}:random"
        path = os.path.expanduser(w)
        if os.path.isfile(path):
            try:
                digest = _file_digest(path)
            except OSError as exc:
                raise ConfigError(f"AOS_VISION__WEIGHTS={w!r}: cannot read the file: {exc}") from exc
            return model, path, f"open_clip:{model}:{os.path.basename(path)}@sha256:{digest[:12]}"
        tags = open_clip.list_pretrained_tags_by_model(model)
        if w in tags:
            return model, w, f"open_clip:{model}:{w}"
        raise ConfigError(
            f"AOS_VISION__WEIGHTS={w!r}: no such file, and not a pretrained tag of {model} "
            f"(tags: {', '.join(tags) or 'none'}; or use 'hf-hub:ORG/NAME')"
        )

    def load(self) -> None:
        """Build the model now (else on first use); ConfigError/ModelError when it cannot be."""
        with self._lock:
            if self._model is not None:
                return
            try:
                import open_clip  # type: ignore[import-untyped]
                import torch
            except ImportError as exc:
                raise MissingExtraError("open_clip_torch", "vision") from exc
            if self._threads:
                torch.set_num_threads(self._threads)
            from aos_gateway.perception.text import pick_device

            model_name, pretrained, name = self._resolve(open_clip)
            device = pick_device(self.settings.device)
            try:
                with torch.random.fork_rng(devices=[]), _quiet_open_clip():
                    torch.manual_seed(RANDOM_WEIGHTS_SEED)  # random weights: the same in every process
                    model, _, preprocess = open_clip.create_model_and_transforms(
                        model_name, pretrained=pretrained, device=device
                    )
                model.eval()
                tokenizer = open_clip.get_tokenizer(model_name)
                with torch.inference_mode():
                    dim = int(model.encode_text(tokenizer(["probe"]).to(device)).shape[-1])
            except Exception as exc:
                remote = model_name.startswith("hf-hub:") or bool(pretrained and not os.path.isfile(pretrained))
                hint = " (is the model hub reachable from this host?)" if remote else ""
                raise ModelError(
                    f"cannot load open_clip {model_name} with weights {pretrained or 'none'}{hint}: {exc}"
                ) from exc
            if self.random_weights:
                _warn_random_weights(model_name)
            size = getattr(getattr(model, "visual", None), "image_size", 224)
            self._image_size = int(min(size) if isinstance(size, tuple | list) else size)
            self._preprocess, self._tokenizer, self._device, self._dim, self._name = (
                preprocess,
                tokenizer,
                device,
                dim,
                name,
            )
            self._model = model

    @property
    def input_size(self) -> int:
        """The side in pixels the model takes (images are decoded at least this large)."""
        return self._image_size

    def encode_images(
        self, images: list[bytes], batch_size: int = 32, decoded: Sequence[PILImage.Image | None] | None = None
    ) -> FloatArray:
        """One unit row per encoded image, in order; a repeated image is served from the cache.

        ``decoded``: the images already decoded by :func:`decode_image` (the caller validated
        them), so they are not decoded twice; the bytes still key the cache.

        Raises:
            MediaError: an image cannot be decoded (the message gives its index in ``images``);
                validate parts with :func:`decode_image` first to fail only their own task.
            ModelError: the model failed.
        """
        self.load()
        max_pixels, size = self.settings.max_pixels, self._image_size

        def prepare(data: bytes, i: int) -> Any:
            done = decoded[i] if decoded is not None else None
            if done is not None:
                return self._preprocess(done)
            try:
                return self._preprocess(decode_image(data, max_pixels, target_size=size))
            except MediaError as exc:
                raise MediaError(f"{exc} (image #{i} of the batch)") from exc

        return self._encode(
            [b"i" + hashlib.sha256(b).digest() for b in images], images, prepare, "encode_image", batch_size
        )

    def encode_texts(self, texts: list[str], batch_size: int = 64) -> FloatArray:
        """CLIP text-tower rows, in the images' space (cards are embedded so image tasks can match them)."""
        self.load()
        keys = [b"t" + hashlib.sha256(t.encode("utf-8")).digest() for t in texts]
        return self._encode(keys, texts, None, "encode_text", batch_size)

    def _encode(self, keys: list[bytes], items: list[Any], prepare: Any, method: str, batch_size: int) -> FloatArray:
        def compute(first: list[int]) -> FloatArray:
            inputs = [prepare(items[i], i) for i in first] if prepare is not None else [items[i] for i in first]
            return self._run(method, inputs, max(1, batch_size))

        if not items:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack(self._cache.get_or_compute(keys, compute)).astype(np.float32, copy=False)

    def _run(self, method: str, inputs: list[Any], batch_size: int) -> FloatArray:
        import torch

        rows: list[FloatArray] = []
        try:
            with torch.inference_mode():
                for start in range(0, len(inputs), batch_size):
                    chunk = inputs[start : start + batch_size]
                    x = torch.stack(chunk) if method == "encode_image" else self._tokenizer(chunk)
                    feats = getattr(self._model, method)(x.to(self._device))
                    rows.append(feats.float().cpu().numpy())
        except Exception as exc:
            raise ModelError(f"open_clip {method} failed: {exc}") from exc
        return l2_normalize(np.concatenate(rows, axis=0))
