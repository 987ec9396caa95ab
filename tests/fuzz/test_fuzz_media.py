"""Media parts from hostile clients: image and audio bytes, and references to them.

Decoding arbitrary bytes, truncated or bit-flipped real files of every accepted format and
headers that claim huge sizes: an image (RGB, within the pixel limit), audio samples (finite,
within the duration limit) or a MediaError, in bounded time. Audio decoding runs ffmpeg, so it
gets fewer examples and a time limit of its own. A reference fetches only files under the
allowed roots.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aos_gateway.contracts.records import MediaPart
from aos_gateway.errors import MediaError
from aos_gateway.perception.media import load_media
from aos_gateway.settings import MediaSettings
from tests.fuzz.strategies import FUZZ_TIMEOUT, any_text, fuzz

pytestmark = FUZZ_TIMEOUT

MAX_PIXELS = 1_000_000


def _mutate(data: bytes, draw: st.DrawFn) -> bytes:
    buf = bytearray(data[: draw(st.integers(min_value=0, max_value=len(data)))])
    for _ in range(draw(st.integers(min_value=0, max_value=6)) if buf else 0):
        at = draw(st.integers(min_value=0, max_value=len(buf) - 1))
        buf[at] = draw(st.integers(min_value=0, max_value=255))
    return bytes(buf)


# -- images --


@pytest.fixture(scope="module")
def images() -> dict[str, bytes]:
    pil = pytest.importorskip("PIL.Image")
    rng = np.random.default_rng(0)
    img = pil.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8))
    out = {}
    for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP"):
        buf = io.BytesIO()
        img.save(buf, format=fmt)
        out[fmt] = buf.getvalue()
    rgba = img.convert("RGBA")
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    out["PNG-RGBA"] = buf.getvalue()
    return out


def _decode_or_refuse_image(data: bytes) -> None:
    from aos_gateway.perception.image import decode_image

    t0 = time.perf_counter()
    try:
        img = decode_image(data, MAX_PIXELS, target_size=8)
    except MediaError as exc:
        assert str(exc).startswith("image: ")
    else:
        assert img.mode == "RGB" and 0 < img.width * img.height <= MAX_PIXELS
    assert time.perf_counter() - t0 < 5.0


MAGIC = [
    b"",
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF89a",
    b"BM",
    b"II*\x00",
    b"MM\x00*",
    b"RIFF\x00\x00\x00\x00WEBP",
]


@fuzz(300)
@given(st.sampled_from(MAGIC), st.binary(max_size=300))
def test_arbitrary_bytes_are_an_image_or_a_media_error(images: dict[str, bytes], magic: bytes, body: bytes) -> None:
    _decode_or_refuse_image(magic + body)


@fuzz(300)
@given(st.data())
def test_truncated_and_corrupted_images_are_an_image_or_a_media_error(images: dict[str, bytes], data: Any) -> None:
    fmt = data.draw(st.sampled_from(sorted(images)))
    _decode_or_refuse_image(_mutate(images[fmt], data.draw))


def _png(width: int, height: int, body: bytes = b"") -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(body)) + chunk(b"IEND", b"")


@fuzz(100)
@given(st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1), st.binary(max_size=64))
def test_a_header_claiming_any_size_is_refused_or_decoded_fast(
    images: dict[str, bytes], width: int, height: int, body: bytes
) -> None:
    """A PNG that claims up to 2**31 × 2**31 pixels (valid CRCs, a tiny body): never allocated."""
    _decode_or_refuse_image(_png(width, height, body))


# -- audio (ffmpeg) --


@pytest.fixture(scope="module")
def wav() -> bytes:
    if shutil.which("ffmpeg") is None:
        pytest.skip("needs ffmpeg")
    out = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=440:duration=0.5",
         "-ar", "8000", "-ac", "1", "-f", "wav", "pipe:1"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return out


def _decode_or_refuse_audio(data: bytes) -> None:
    from aos_gateway.perception.audio import SAMPLE_RATE, decode_audio

    t0 = time.perf_counter()
    try:
        samples = decode_audio(data, max_duration_s=2.0, silence_dbfs=-60.0, timeout_s=20.0)
    except MediaError:
        pass
    else:
        assert samples.ndim == 1 and 0 < samples.size <= 2.0 * SAMPLE_RATE and np.all(np.isfinite(samples))
    assert time.perf_counter() - t0 < 30.0


@fuzz(8, deadline_s=None, cost=50)
@given(st.sampled_from([b"", b"RIFF\xff\xff\xff\xffWAVE", b"fLaC", b"OggS", b"ID3", b"\x00\x00\x00\x18ftypM4A "]),
       st.binary(min_size=1, max_size=200))  # fmt: skip
def test_arbitrary_bytes_are_audio_or_a_media_error(wav: bytes, magic: bytes, body: bytes) -> None:
    _decode_or_refuse_audio(magic + body)


@fuzz(10, deadline_s=None, cost=50)
@given(st.data())
def test_truncated_and_corrupted_wav_files_are_audio_or_a_media_error(wav: bytes, data: Any) -> None:
    mutated = _mutate(wav, data.draw)
    if mutated:
        _decode_or_refuse_audio(mutated)


def test_a_wav_header_claiming_gigabytes_is_decoded_as_far_as_it_goes(wav: bytes) -> None:
    huge = wav[:4] + b"\xff\xff\xff\xff" + wav[8:40] + b"\xff\xff\xff\xff" + wav[44:]
    _decode_or_refuse_audio(huge)


@pytest.mark.parametrize(
    "payload",
    [
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:2.0,\nfile://{path}\n#EXT-X-ENDLIST\n",
        b"ffconcat version 1.0\nfile {path}\n",
        b"#EXTM3U\n#EXTINF:2.0,\nhttp://127.0.0.1:9/x.wav\n#EXT-X-ENDLIST\n",
    ],
)
def test_playlists_do_not_make_ffmpeg_read_other_files(wav: bytes, tmp_path: Path, payload: bytes) -> None:
    """An HLS playlist or a concat script as the "audio": ffmpeg must not open what it names."""
    secret = tmp_path / "secret.wav"
    secret.write_bytes(wav)
    from aos_gateway.perception.audio import decode_audio

    with pytest.raises(MediaError):
        decode_audio(payload.replace(b"{path}", str(secret).encode()), max_duration_s=5, silence_dbfs=-60)


# -- media parts: inline data or references --


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("media")
    (base / "root").mkdir()
    (base / "root" / "ok.bin").write_bytes(b"inside")
    (base / "outside.bin").write_bytes(b"outside")
    (base / "root" / "link.bin").symlink_to(base / "outside.bin")
    return base / "root"


def _uris(root: Path) -> st.SearchStrategy[str | None]:
    names = ["ok.bin", "link.bin", "../outside.bin", "missing", "", ".", "ok.bin\x00x", "%2e%2e/outside.bin"]
    local = st.sampled_from(names).map(lambda n: str(root / n))
    return st.one_of(
        st.none(),
        local,
        local.map(lambda p: "file://" + p),
        local.map(lambda p: "file://localhost" + p),
        st.sampled_from(
            [
                "file:///etc/hostname",
                "/etc/hostname",
                "file://other/etc/x",
                "http://127.0.0.1:9/x",
                "ftp://x/y",
                "data:,abc",
                "relative/path",
                "file:",
                "http://[::1",
                "\udcff",
            ]
        ),
        any_text,
    )


@fuzz(300)
@given(st.data())
def test_a_media_part_is_bytes_from_inside_the_roots_or_a_media_error(root: Path, data: Any) -> None:
    part = MediaPart(
        mime_type=data.draw(any_text),
        data=data.draw(st.one_of(st.none(), st.binary(max_size=40))),
        uri=data.draw(_uris(root)),
        size_bytes=data.draw(st.one_of(st.just(0), st.integers(-(2**63), 2**63 - 1))),
        sha256=data.draw(st.one_of(st.none(), any_text, st.just(hashlib.sha256(b"inside").hexdigest()))),
    )
    settings = MediaSettings(file_roots=[str(root)], ref_schemes=["file"], max_ref_bytes=1000)
    try:
        out = load_media(part, "image", settings)
    except MediaError as exc:
        assert str(exc).startswith("image: ")
        return
    assert out and len(out) <= 1000
    if part["uri"] is not None:
        assert out == b"inside"  # the only file under the root
