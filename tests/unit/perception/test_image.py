"""Image decoding (untrusted bytes) and the open_clip encoder (real ViT-B-32 architecture, seeded random weights).

No CLIP weights ship with any package and no model hub is reachable here, so the encoder is
tested for shapes, norms, determinism, caching and its warnings; the semantic test runs only
when ``AOS_VISION__WEIGHTS`` points at real weights.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from aos_gateway.errors import ConfigError, MediaError
from aos_gateway.perception import image as image_mod
from aos_gateway.perception.image import ImageEncoder, decode_image
from aos_gateway.settings import VisionSettings

MAX = 40_000_000


def encoded(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(seed: int = 0, size: int = 256, square: tuple[int, int, int] = (220, 20, 30)) -> bytes:
    """A photo-like JPEG: a noisy grey gradient with a coloured square in the middle."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(150, 210, size, dtype=np.float32)[None, :, None]
    px = np.clip(ramp + rng.normal(0, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(px)
    q = size // 4
    ImageDraw.Draw(img).rectangle((q, q, size - q, size - q), fill=square)
    return encoded(img, "JPEG", quality=90)


# -- decoding --


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF"])
def test_decode_formats_to_rgb(fmt: str) -> None:
    src = Image.new("RGB", (64, 48), (10, 200, 30))
    img = decode_image(encoded(src, fmt), MAX)
    assert img.mode == "RGB" and img.size == (64, 48)


def test_decode_transparent_png_on_white() -> None:
    img = decode_image(encoded(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG"), MAX)
    assert img.mode == "RGB" and img.getpixel((3, 3)) == (255, 255, 255)


def test_decode_16_bit_grey_is_scaled_not_clipped() -> None:
    ramp = Image.fromarray(np.arange(256 * 256, dtype=np.uint16).reshape(256, 256))
    img = decode_image(encoded(ramp, "PNG"), MAX)
    assert img.mode == "RGB" and img.getpixel((100, 100)) == (100, 100, 100)  # 25700 / 257


def test_decode_jpeg_draft_keeps_at_least_the_target_size() -> None:
    img = decode_image(photo(size=1024), MAX, target_size=224)
    assert img.mode == "RGB" and min(img.size) >= 224 and max(img.size) < 1024


def test_empty_bytes() -> None:
    with pytest.raises(MediaError, match=r"^image: empty"):
        decode_image(b"", MAX)


@pytest.mark.parametrize(
    "data", [b"certainly not an image", os.urandom(2048), encoded(Image.new("RGB", (4, 4)), "PPM")]
)
def test_not_an_image_or_unsupported_format(data: bytes) -> None:
    with pytest.raises(MediaError, match=r"^image: not an image of a supported format"):
        decode_image(data, MAX)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated(fmt: str) -> None:
    data = photo() if fmt == "JPEG" else encoded(Image.effect_noise((128, 128), 40).convert("RGB"), "PNG")
    with pytest.raises(MediaError, match=r"^image: corrupt or truncated"):
        decode_image(data[: len(data) // 2], MAX)


def test_corrupt_png_checksum() -> None:
    data = bytearray(encoded(Image.new("RGB", (16, 16), (1, 2, 3)), "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 6] ^= 0xFF  # a byte of compressed data: the chunk's CRC no longer matches
    with pytest.raises(MediaError, match=r"^image: corrupt or truncated"):
        decode_image(bytes(data), MAX)


def test_too_many_pixels_checked_from_the_header() -> None:
    data = encoded(Image.new("L", (1000, 1000)), "PNG")
    with pytest.raises(MediaError, match=r"^image: too many pixels: 1000×1000 = 1000000 > 999999$"):
        decode_image(data, 999_999)
    assert decode_image(data, 1_000_000).size == (1000, 1000)


@pytest.mark.parametrize("side", [12, 15])  # PIL warns above its limit, refuses above twice it
def test_pil_decompression_bomb_guard_becomes_media_error(monkeypatch: pytest.MonkeyPatch, side: int) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(MediaError, match=r"^image: too many pixels \(decompression bomb\?\)"):
        decode_image(encoded(Image.new("RGB", (side, side)), "PNG"), MAX)


# -- encoder (random weights) --


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    enc = ImageEncoder(VisionSettings(), threads=1)  # one OpenMP thread: two stall on a busy 2-core host
    enc.load()
    return enc


def test_shape_norm_and_name(encoder: ImageEncoder) -> None:
    out = encoder.encode_images([photo(1), photo(2, square=(20, 30, 220)), photo(3)])
    assert out.shape == (3, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert encoder.dim == 512 and encoder.random_weights
    assert encoder.name == "open_clip:ViT-B-32:random"
    assert encoder.encode_images([]).shape == (0, 512)


def test_deterministic_and_cached(encoder: ImageEncoder) -> None:
    data = photo(7)
    misses, hits = encoder.misses, encoder.hits
    a = encoder.encode_images([data, data])
    assert encoder.misses == misses + 2 and encoder.hits == hits  # counted per row, computed once
    b = encoder.encode_images([data])
    assert encoder.hits == hits + 1
    assert np.array_equal(a[0], a[1]) and np.array_equal(a[0], b[0])
    encoder._cache.clear()  # recomputed from scratch, and not in a batch of two: same vector
    c = encoder.encode_images([data])
    assert np.allclose(a[0], c[0], atol=1e-5)


def test_bad_image_in_a_batch_names_its_index(encoder: ImageEncoder) -> None:
    with pytest.raises(MediaError, match=r"^image: not an image .*\(image #1 of the batch\)$"):
        encoder.encode_images([photo(1), b"garbage"])


def test_encode_texts(encoder: ImageEncoder) -> None:
    out = encoder.encode_texts(["a red square", "a dog", "a red square"])
    assert out.shape == (3, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(out[0], out[2]) and not np.allclose(out[0], out[1])
    assert encoder.encode_texts([]).shape == (0, 512)


def test_random_weights_warned_loudly_once_and_same_in_every_instance(
    encoder: ImageEncoder, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(image_mod, "_RANDOM_WARNED", False)  # as in a fresh process
    caplog.set_level(logging.INFO)
    first, second = ImageEncoder(VisionSettings()), ImageEncoder(VisionSettings())
    first.load()
    first.load()
    second.load()
    ours = [r for r in caplog.records if r.name == "aos_gateway.perception.image"]
    assert len(ours) == 1 and ours[0].levelno >= logging.WARNING
    msg = ours[0].getMessage()
    assert "RANDOM WEIGHTS" in msg and "MEANINGLESS" in msg and "AOS_VISION__WEIGHTS" in msg
    assert not any("No pretrained weights loaded" in r.getMessage() for r in caplog.records)
    data = photo(5)
    assert np.array_equal(first.encode_images([data]), encoder.encode_images([data]))


def test_weights_file_missing_or_unknown_tag() -> None:
    with pytest.raises(ConfigError, match=r"AOS_VISION__WEIGHTS='/nonexistent/clip.bin': no such file"):
        ImageEncoder(VisionSettings(weights="/nonexistent/clip.bin")).load()
    with pytest.raises(ConfigError, match=r"not a pretrained tag of ViT-B-32 \(tags: openai"):
        ImageEncoder(VisionSettings(weights="no-such-tag")).load()
    with pytest.raises(ConfigError, match=r"AOS_VISION__MODEL='ViT-Nope'"):
        ImageEncoder(VisionSettings(model="ViT-Nope")).load()


def test_weights_from_a_local_file(encoder: ImageEncoder, tmp_path: Path) -> None:
    import torch

    path = tmp_path / "open_clip_model.bin"
    torch.save(encoder._model.state_dict(), path)
    enc = ImageEncoder(VisionSettings(weights=str(path)))
    assert not enc.random_weights
    assert enc.name.startswith("open_clip:ViT-B-32:open_clip_model.bin@sha256:")
    data = photo(9)
    assert np.allclose(enc.encode_images([data]), encoder.encode_images([data]), atol=1e-6)


@pytest.mark.skipif(not os.environ.get("AOS_VISION__WEIGHTS"), reason="needs real CLIP weights: AOS_VISION__WEIGHTS")
def test_semantics_with_real_weights() -> None:
    enc = ImageEncoder(VisionSettings(weights=os.environ["AOS_VISION__WEIGHTS"]))
    img = enc.encode_images([photo(11)])[0]
    red, dog = enc.encode_texts(["a red square", "a dog"])
    assert float(img @ red) > float(img @ dog)
