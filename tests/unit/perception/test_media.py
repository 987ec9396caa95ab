"""Media parts: inline or by reference (file, http), with size, time, scheme, root and checksum limits."""

from __future__ import annotations

import hashlib
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aos_gateway.contracts.records import MediaPart
from aos_gateway.errors import MediaError
from aos_gateway.perception.media import load_media, media_part_from_file
from aos_gateway.settings import MediaSettings

PAYLOAD = b"\x89PNG not really, but bytes" * 10


def part(
    data: bytes | None = None, uri: str | None = None, sha256: str | None = None, size_bytes: int = 0
) -> MediaPart:
    return MediaPart(mime_type="image/png", data=data, uri=uri, size_bytes=size_bytes, sha256=sha256)


def settings_factory(**kw: object) -> MediaSettings:
    return MediaSettings.model_validate(kw)


@pytest.fixture
def media_file(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    root.mkdir()
    f = root / "pic.png"
    f.write_bytes(PAYLOAD)
    return f


# -- inline --


def test_inline_ok_with_checksum_and_size() -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    got = load_media(part(PAYLOAD, sha256=digest.upper(), size_bytes=len(PAYLOAD)), "image", MediaSettings())
    assert got == PAYLOAD


def test_inline_empty() -> None:
    with pytest.raises(MediaError, match=r"^image: empty"):
        load_media(part(b""), "image", MediaSettings())


@pytest.mark.parametrize("data,uri", [(PAYLOAD, "file:///x.png"), (None, None)])
def test_both_or_neither(data: bytes | None, uri: str | None) -> None:
    with pytest.raises(MediaError, match=r"^audio: the part has (both|neither)"):
        load_media(part(data, uri), "audio", MediaSettings())


def test_inline_too_large() -> None:
    with pytest.raises(MediaError, match=r"^image: too large: 260 bytes > 100$"):
        load_media(part(PAYLOAD), "image", settings_factory(max_ref_bytes=100))


def test_declared_size_too_large_is_refused_before_fetching() -> None:
    with pytest.raises(MediaError, match=r"too large: 10000 bytes > 100 \(declared size\)"):
        load_media(part(uri="http://192.0.2.1/never", size_bytes=10_000), "image", settings_factory(max_ref_bytes=100))


def test_declared_size_mismatch() -> None:
    with pytest.raises(MediaError, match=r"size mismatch: declared 5 bytes, got 260"):
        load_media(part(PAYLOAD, size_bytes=5), "image", MediaSettings())


def test_sha256_mismatch() -> None:
    with pytest.raises(MediaError, match=r"^image: checksum mismatch"):
        load_media(part(PAYLOAD, sha256="0" * 64), "image", MediaSettings())


# -- files --


def test_file_uri_and_plain_path(media_file: Path) -> None:
    s = settings_factory(file_roots=[media_file.parent])
    assert load_media(part(uri=media_file.as_uri()), "image", s) == PAYLOAD
    assert load_media(part(uri=str(media_file)), "image", s) == PAYLOAD
    assert load_media(part(uri=f"file://localhost{media_file}"), "image", s) == PAYLOAD


def test_file_outside_roots(media_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    with pytest.raises(MediaError, match=r"^image: file reference outside the allowed roots"):
        load_media(part(uri=str(media_file)), "image", settings_factory(file_roots=[other]))


def test_dotdot_escape(media_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    sneaky = f"{media_file.parent}/../secret.png"
    with pytest.raises(MediaError, match=r"outside the allowed roots"):
        load_media(part(uri=sneaky), "image", settings_factory(file_roots=[media_file.parent]))


def test_symlink_escape(media_file: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    link = media_file.parent / "link.png"
    link.symlink_to(secret)
    with pytest.raises(MediaError, match=r"outside the allowed roots"):
        load_media(part(uri=str(link)), "image", settings_factory(file_roots=[media_file.parent]))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"^audio: not found: "):
        load_media(part(uri=(tmp_path / "nope.wav").as_uri()), "audio", MediaSettings())


def test_file_too_large(media_file: Path) -> None:
    with pytest.raises(MediaError, match=r"^image: too large: 260 bytes > 100$"):
        load_media(part(uri=str(media_file)), "image", settings_factory(max_ref_bytes=100))


def test_directory_and_relative_path(media_file: Path) -> None:
    with pytest.raises(MediaError, match=r"not a regular file"):
        load_media(part(uri=str(media_file.parent)), "image", MediaSettings())
    with pytest.raises(MediaError, match=r"scheme not allowed: none"):
        load_media(part(uri="pic.png"), "image", MediaSettings())
    with pytest.raises(MediaError, match=r"another host"):
        load_media(part(uri="file://server/share/pic.png"), "image", MediaSettings())


def test_file_checksum_checked(media_file: Path) -> None:
    with pytest.raises(MediaError, match=r"checksum mismatch"):
        load_media(part(uri=str(media_file), sha256="ab" * 32), "image", MediaSettings())


@pytest.mark.parametrize(
    "uri,allowed",
    [("ftp://example.org/a.png", ["file", "http", "https"]), ("http://127.0.0.1:9/a.png", ["file"]), ("/a", ["http"])],
)
def test_scheme_not_allowed(uri: str, allowed: list[str]) -> None:
    with pytest.raises(MediaError, match=r"^image: reference scheme not allowed"):
        load_media(part(uri=uri), "image", settings_factory(ref_schemes=allowed))


def test_allowed_but_unsupported_scheme() -> None:
    with pytest.raises(MediaError, match=r"scheme not supported: 's3'"):
        load_media(part(uri="s3://bucket/key.png"), "image", settings_factory(ref_schemes=["s3"]))


# -- http --


class _Handler(http.server.BaseHTTPRequestHandler):
    stall = threading.Event()  # set by the fixture at teardown to release a stalled handler

    def do_GET(self) -> None:
        if self.path.startswith("/ok"):
            self._send(PAYLOAD)
        elif self.path.startswith("/big"):
            self._send(b"x" * 5000)
        elif self.path.startswith("/nolength"):  # chunk-free body with no Content-Length: read until close
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"y" * 5000)
            self.close_connection = True
        elif self.path.startswith("/stall"):
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"z" * 10)
            self.wfile.flush()
            self.stall.wait(5)
        elif self.path.startswith("/trickle"):  # a byte every 0.1 s: each read is quick, the whole is not
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                if self.stall.wait(0.1):
                    break
                self.wfile.write(b"t")
                self.wfile.flush()
        elif self.path.startswith("/redirect-ftp"):
            self.send_response(302)
            self.send_header("Location", "ftp://127.0.0.1/x.png")
            self.end_headers()
        else:
            self.send_error(404)

    def _send(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hung up on a stalled response: expected here


@pytest.fixture
def http_base() -> Iterator[str]:
    _Handler.stall.clear()
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _Handler.stall.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_http_ok(http_base: str) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    assert load_media(part(uri=f"{http_base}/ok?sig=secret", sha256=digest), "image", MediaSettings()) == PAYLOAD


def test_http_not_found_hides_the_query(http_base: str) -> None:
    with pytest.raises(MediaError, match=r"^image: not found: HTTP 404") as err:
        load_media(part(uri=f"{http_base}/missing?sig=secret"), "image", MediaSettings())
    assert "secret" not in str(err.value)


@pytest.mark.parametrize("path", ["/big", "/nolength"])
def test_http_too_large(http_base: str, path: str) -> None:
    with pytest.raises(MediaError, match=r"^image: too large: "):
        load_media(part(uri=http_base + path), "image", settings_factory(max_ref_bytes=1000))


@pytest.mark.parametrize("path", ["/stall", "/trickle"])
def test_http_timeout_caps_the_whole_fetch(http_base: str, path: str) -> None:
    start = time.monotonic()
    with pytest.raises(MediaError, match=r"^audio: timeout: fetching .* more than 0.5 s"):
        load_media(part(uri=http_base + path), "audio", settings_factory(fetch_timeout_s=0.5))
    assert time.monotonic() - start < 2.0


def test_http_redirect_to_other_scheme_refused(http_base: str) -> None:
    with pytest.raises(MediaError, match=r"redirected to a scheme that is not allowed"):
        load_media(part(uri=http_base + "/redirect-ftp"), "image", settings_factory(ref_schemes=["http", "ftp"]))


def test_http_connection_refused() -> None:
    server = _Server(("127.0.0.1", 0), _Handler)
    port = server.server_address[1]
    server.server_close()  # nothing listens there now
    with pytest.raises(MediaError, match=r"^image: cannot fetch"):
        load_media(part(uri=f"http://127.0.0.1:{port}/ok"), "image", MediaSettings())


# -- client helper --


def test_media_part_from_file_inline_then_reference(media_file: Path) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    inline = media_part_from_file(media_file)
    assert inline["data"] == PAYLOAD and inline["uri"] is None
    assert inline["mime_type"] == "image/png" and inline["size_bytes"] == len(PAYLOAD) and inline["sha256"] == digest
    ref = media_part_from_file(media_file, "image/x-test", settings_factory(max_inline_bytes=10))
    assert ref["data"] is None and ref["uri"] == media_file.resolve().as_uri()
    assert ref["mime_type"] == "image/x-test" and ref["size_bytes"] == len(PAYLOAD) and ref["sha256"] == digest
    # what a client builds, a worker loads
    s = settings_factory(file_roots=[media_file.parent])
    assert load_media(inline, "image", s) == load_media(ref, "image", s) == PAYLOAD


def test_media_part_from_file_errors(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"^audio: not found"):
        media_part_from_file(tmp_path / "a.wav")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(MediaError, match=r"^media: empty"):
        media_part_from_file(tmp_path / "empty.bin")
    (tmp_path / "big.jpg").write_bytes(b"j" * 200)
    with pytest.raises(MediaError, match=r"^image: too large: 200 bytes > 100"):
        media_part_from_file(tmp_path / "big.jpg", settings=settings_factory(max_ref_bytes=100))
