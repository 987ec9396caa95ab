"""Media parts of a task: inline bytes, or a reference (claim check) fetched with limits.

A task's image or audio travels inline when small (the tasks topic keeps Kafka's 1 MB record
limit) and by reference otherwise: a ``file://`` URI or absolute path on storage the workers
share, or an ``http(s)://`` URL. The perceive stage fetches references itself, so every fetch is
capped (size, time, scheme, file roots) and checked (size and sha256 when the client sent them):
a reference must not become a way to read arbitrary files, hang a worker or fill its memory.

Every failure is a :class:`~aos_gateway.errors.MediaError` whose one-line message starts with
the kind of part (``image: ...``, ``audio: ...``) and says why; messages show a reference
without its query string or credentials (signed URLs carry secrets there).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import mimetypes
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Any

from aos_gateway.contracts.records import MediaPart
from aos_gateway.errors import MediaError
from aos_gateway.settings import MediaSettings

_CHUNK = 64 * 1024


def load_media(part: MediaPart, kind: str, settings: MediaSettings) -> bytes:
    """The bytes of an image or audio part, inline or fetched by reference, within the limits.

    Args:
        part: the task's media part: ``data`` or ``uri``, never both.
        kind: ``"image"`` or ``"audio"``; starts every error message.
        settings: size and time limits, allowed schemes and file roots.

    Raises:
        MediaError: the part is malformed, cannot be fetched, is empty or too large, or does not
            match its declared size or sha256.
    """
    data, uri = part.get("data"), part.get("uri")
    if data is not None and uri is not None:
        raise MediaError(f"{kind}: the part has both inline data and a uri (send one)")
    if data is None and uri is None:
        raise MediaError(f"{kind}: the part has neither inline data nor a uri")
    limit = settings.max_ref_bytes
    declared = int(part.get("size_bytes") or 0)
    if declared > limit:  # refuse before fetching anything
        raise MediaError(f"{kind}: too large: {declared} bytes > {limit} (declared size)")
    if data is not None:
        out = bytes(data)
        if len(out) > limit:
            raise MediaError(f"{kind}: too large: {len(out)} bytes > {limit}")
    else:
        assert uri is not None
        out = _fetch(uri, kind, settings)
    if not out:
        raise MediaError(f"{kind}: empty (0 bytes)")
    if declared and declared != len(out):
        raise MediaError(f"{kind}: size mismatch: declared {declared} bytes, got {len(out)}")
    expected = part.get("sha256")
    if expected:
        got = hashlib.sha256(out).hexdigest()
        if got != expected.strip().lower():
            raise MediaError(f"{kind}: checksum mismatch: sha256 is {got}, the part declares {expected}")
    return out


def media_part_from_file(
    path: str | os.PathLike[str], mime_type: str | None = None, settings: MediaSettings | None = None
) -> MediaPart:
    """A media part for a local file: inline up to ``max_inline_bytes``, else a ``file://`` reference.

    For clients. The reference is the file's absolute path, so it only works when the perceive
    workers see the same file system (and the path lies under their ``AOS_MEDIA__FILE_ROOTS``).
    Size and sha256 are filled in either case, so the worker can check what it fetched.

    Raises:
        MediaError: the file is missing, not a regular file, empty, or larger than ``max_ref_bytes``.
    """
    settings = settings or MediaSettings()
    p = Path(path)
    mime = mime_type or mimetypes.guess_type(p.name)[0] or "application/octet-stream"
    kind = mime.split("/", 1)[0] if mime.startswith(("image/", "audio/")) else "media"
    try:
        resolved = p.resolve(strict=True)
        st = resolved.stat()
    except FileNotFoundError:
        raise MediaError(f"{kind}: not found: {p}") from None
    except (OSError, ValueError, RuntimeError) as exc:
        raise MediaError(f"{kind}: cannot read {p}: {exc}") from exc
    if not resolved.is_file():
        raise MediaError(f"{kind}: not a regular file: {p}")
    if st.st_size == 0:
        raise MediaError(f"{kind}: empty (0 bytes): {p}")
    if st.st_size > settings.max_ref_bytes:
        raise MediaError(f"{kind}: too large: {st.st_size} bytes > {settings.max_ref_bytes}: {p}")
    if st.st_size <= settings.max_inline_bytes:
        data = _read_file(resolved, kind, settings.max_ref_bytes)
        return MediaPart(
            mime_type=mime, data=data, uri=None, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
        )
    digest = hashlib.sha256()
    size = 0
    try:
        with resolved.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
    except OSError as exc:
        raise MediaError(f"{kind}: cannot read {p}: {exc}") from exc
    return MediaPart(mime_type=mime, data=None, uri=resolved.as_uri(), size_bytes=size, sha256=digest.hexdigest())


# -- references --


def _fetch(uri: str, kind: str, settings: MediaSettings) -> bytes:
    shown = _redact(uri)
    if os.path.isabs(uri):
        scheme = "file"
    else:
        try:
            scheme = urllib.parse.urlsplit(uri).scheme.lower()
        except ValueError as exc:
            raise MediaError(f"{kind}: malformed reference {shown}: {exc}") from exc
    allowed = sorted({s.lower() for s in settings.ref_schemes})
    if scheme not in allowed:
        shown_scheme = repr(scheme) if scheme else "none (a relative path?)"
        raise MediaError(
            f"{kind}: reference scheme not allowed: {shown_scheme} (allowed: {', '.join(allowed) or 'none'})"
        )
    if scheme == "file":
        return _fetch_file(uri, kind, settings)
    if scheme in ("http", "https"):
        return _fetch_http(uri, kind, settings)
    raise MediaError(f"{kind}: reference scheme not supported: {scheme!r} (supported: file, http, https)")


def _redact(uri: str) -> str:
    """The reference without user info, query or fragment, for error messages and logs."""
    if os.path.isabs(uri):
        return repr(uri)
    try:
        s = urllib.parse.urlsplit(uri)
    except ValueError:
        return "<malformed>"
    host = s.hostname or ""
    if s.port is not None:
        host = f"{host}:{s.port}"
    tail = "?…" if s.query else ""
    return repr(urllib.parse.urlunsplit((s.scheme, host, s.path, "", "")) + tail)


def _file_path(uri: str, kind: str) -> Path:
    if os.path.isabs(uri):
        return Path(uri)
    s = urllib.parse.urlsplit(uri)
    if s.netloc not in ("", "localhost"):
        raise MediaError(f"{kind}: file reference on another host: {s.netloc!r} (only local files)")
    local = urllib.request.url2pathname(s.path)
    if not os.path.isabs(local):
        raise MediaError(f"{kind}: a file reference must be an absolute path, got {_redact(uri)}")
    return Path(local)


def _fetch_file(uri: str, kind: str, settings: MediaSettings) -> bytes:
    raw = _file_path(uri, kind)
    shown = repr(str(raw))
    try:
        # resolve() follows symlinks and removes "..": the roots are checked on the real path
        path = raw.resolve(strict=True)
    except FileNotFoundError:
        raise MediaError(f"{kind}: not found: {shown}") from None
    except (OSError, ValueError, RuntimeError) as exc:  # ELOOP, a NUL byte, a symlink loop
        raise MediaError(f"{kind}: cannot resolve {shown}: {exc}") from exc
    if settings.file_roots:
        roots = [Path(r).resolve() for r in settings.file_roots]
        if not any(path.is_relative_to(root) for root in roots):
            raise MediaError(
                f"{kind}: file reference outside the allowed roots: {shown} (AOS_MEDIA__FILE_ROOTS: "
                + ", ".join(str(r) for r in roots)
                + ")"
            )
    if not path.is_file():
        raise MediaError(f"{kind}: not a regular file: {shown}")
    return _read_file(path, kind, settings.max_ref_bytes)


def _read_file(path: Path, kind: str, limit: int) -> bytes:
    try:
        with path.open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise MediaError(f"{kind}: too large: {size} bytes > {limit}")
            data = fh.read(limit + 1)  # the file may have grown since fstat
    except PermissionError:
        raise MediaError(f"{kind}: permission denied: {str(path)!r}") from None
    except OSError as exc:
        raise MediaError(f"{kind}: cannot read {str(path)!r}: {exc}") from exc
    if len(data) > limit:
        raise MediaError(f"{kind}: too large: more than {limit} bytes")
    return data


class _SchemeCheckingRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http(s) schemes the settings allow (urllib would follow ftp://)."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = allowed

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        scheme = urllib.parse.urlsplit(newurl).scheme.lower()
        if scheme not in self.allowed or scheme not in ("http", "https"):
            raise urllib.error.URLError(f"redirected to a scheme that is not allowed: {scheme!r}")
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch_http(uri: str, kind: str, settings: MediaSettings) -> bytes:
    shown = _redact(uri)
    limit, timeout = settings.max_ref_bytes, settings.fetch_timeout_s
    deadline = time.monotonic() + timeout
    opener = urllib.request.build_opener(_SchemeCheckingRedirects({s.lower() for s in settings.ref_schemes}))
    req = urllib.request.Request(uri, headers={"User-Agent": "aos-gateway", "Accept-Encoding": "identity"})
    try:
        with opener.open(req, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length is not None and length.strip().isdigit() and int(length) > limit:
                raise MediaError(f"{kind}: too large: {int(length)} bytes > {limit} ({shown})")
            chunks: list[bytes] = []
            got = 0
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError
                _set_read_timeout(resp, remaining)  # the cap is for the whole fetch, not per read
                chunk = resp.read1(min(_CHUNK, limit + 1 - got))  # read() would wait for the whole chunk
                if not chunk:
                    break
                chunks.append(chunk)
                got += len(chunk)
                if got > limit:
                    raise MediaError(f"{kind}: too large: more than {limit} bytes ({shown})")
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()
        what = "not found" if exc.code in (404, 410) else "refused"
        raise MediaError(f"{kind}: {what}: HTTP {exc.code} {exc.reason} ({shown})") from None
    except TimeoutError:
        raise MediaError(f"{kind}: timeout: fetching {shown} took more than {timeout:g} s") from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise MediaError(f"{kind}: timeout: fetching {shown} took more than {timeout:g} s") from None
        raise MediaError(f"{kind}: cannot fetch {shown}: {exc.reason}") from None
    except (OSError, ValueError, http.client.HTTPException) as exc:  # reset, malformed URL or response
        raise MediaError(f"{kind}: cannot fetch {shown}: {exc}") from None


def _set_read_timeout(resp: Any, seconds: float) -> None:
    """Best effort: shrink the socket timeout of an open response to the time left."""
    sock = getattr(getattr(getattr(resp, "fp", None), "raw", None), "_sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.settimeout(max(seconds, 0.001))
