"""Request bodies -> validated TaskRequests: the ingress's input rules, with no HTTP framework in them.

A task arrives as JSON (text and options) or as a multipart form (the same fields as form fields,
plus ``image`` and/or ``audio`` file parts). Both end in :func:`build_task`, which makes the
record with :func:`aos_gateway.client.new_task` and checks it with the perceive stage's own
:func:`~aos_gateway.perception.task.validate_request`, so a task the ingress accepts is one the
pipeline would not refuse for its shape. Media bytes are checked (type, size) here; whether they
decode is the perceive stage's business (a corrupt image comes back as a dead letter, which the
ingress reports as the task's error).
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import os
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from aos_gateway.client import new_task
from aos_gateway.contracts.records import MediaPart, TaskRequest
from aos_gateway.errors import AosError, ValidationError
from aos_gateway.perception.task import validate_request
from aos_gateway.settings import MediaSettings

MEDIA_KINDS = ("image", "audio")


class RequestError(AosError):
    """A request the ingress refuses; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.headers = headers


class TaskIn(BaseModel):
    """A task as a client sends it. The tenant is not a field: it is the API key's."""

    model_config = ConfigDict(extra="forbid")

    text: str | None = Field(default=None, description="what to do; may be empty when an image or audio is sent")
    required_capabilities: list[str] = Field(
        default_factory=list, max_length=64, description="only agents with all of these capabilities"
    )
    max_cost: float | None = Field(default=None, ge=0, description="only agents that cost at most this")
    max_latency_ms: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="only agents at most this slow (p95)"
    )  # an Avro int on the tasks topic
    top_k: int | None = Field(default=None, ge=1, le=100, description="candidates to consider")
    metadata: dict[str, str] = Field(default_factory=dict, description="carried with the task, untouched")

    @model_validator(mode="after")
    def _unicode(self) -> TaskIn:
        """JSON's \\ud800 escapes decode to lone surrogates, which no UTF-8 record can carry."""
        texts = [self.text or "", *self.required_capabilities, *self.metadata, *self.metadata.values()]
        for text in texts:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text must be valid Unicode: a lone surrogate (\\ud800-\\udfff) is not") from None
        return self


def describe(exc: pydantic.ValidationError) -> str:
    """A pydantic error as one line: ``field: message; ...``."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    more = len(exc.errors()) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _refuse_tenant(fields: Mapping[str, Any]) -> None:
    if "tenant" in fields:
        raise RequestError("tenant: set by your API key, not by the request; remove it", 422)


def parse_json(body: bytes) -> TaskIn:
    """A JSON body; malformed JSON is a 400, a well-formed body that breaks the rules a 422."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RequestError(f"malformed JSON: {exc}", 400) from None
    except RecursionError:
        raise RequestError("malformed JSON: nested too deeply", 400) from None
    if not isinstance(raw, dict):
        raise RequestError(f"the body must be a JSON object, got {type(raw).__name__}", 422)
    _refuse_tenant(raw)
    try:
        return TaskIn.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise RequestError(describe(exc), 422) from None


def parse_form(fields: Iterable[tuple[str, str]]) -> TaskIn:
    """The non-file fields of a form: repeated or comma-separated ``required_capabilities``,
    ``metadata`` as a JSON object, numbers as text."""
    raw: dict[str, Any] = {}
    caps: list[str] = []
    for key, value in fields:
        if key == "required_capabilities":
            caps.extend(c.strip() for c in value.split(",") if c.strip())
        elif key == "metadata":
            try:
                raw["metadata"] = json.loads(value) if value.strip() else {}
            except json.JSONDecodeError as exc:
                raise RequestError(f"metadata: not a JSON object: {exc}", 422) from None
            except RecursionError:
                raise RequestError("metadata: not a JSON object: nested too deeply", 422) from None
        elif key in raw:
            raise RequestError(f"{key}: given more than once", 422)
        else:
            raw[key] = value if value.strip() or key == "text" else None
    if caps:
        raw["required_capabilities"] = caps
    _refuse_tenant(raw)
    try:
        return TaskIn.model_validate(raw)
    except pydantic.ValidationError as exc:
        raise RequestError(describe(exc), 422) from None


def check_multipart_end(body: bytes, content_type: str) -> None:
    """Refuse a multipart body cut short (400): the parser would take the parts before the cut as
    the whole form (a task without its audio) and leave the cut part's spooled file unclosed."""
    from python_multipart.multipart import parse_options_header

    boundary = parse_options_header(content_type)[1].get(b"boundary")
    if not boundary:
        return  # the form parser refuses it (400)
    delimiter = b"--" + boundary
    last = body.rfind(delimiter)
    if last < 0 or body[last + len(delimiter) : last + len(delimiter) + 2] != b"--":
        raise RequestError("malformed multipart body: it does not end with its closing boundary (cut short?)", 400)


def _mime(kind: str, content_type: str | None, filename: str | None) -> str:
    declared = (content_type or "").split(";", 1)[0].strip().lower()
    if declared.startswith(f"{kind}/"):
        return declared
    guessed = (mimetypes.guess_type(filename)[0] or "") if filename else ""
    if declared in ("", "application/octet-stream") and guessed.startswith(f"{kind}/"):
        return guessed
    shown = declared or "none"
    raise RequestError(f"{kind}: expected an {kind}/* file, got content type {shown!r}", 415)


def media_part(
    kind: str,
    data: bytes,
    content_type: str | None,
    filename: str | None,
    media: MediaSettings,
    upload_dir: Path | None,
) -> MediaPart:
    """An uploaded image or audio file as a task's media part.

    Inline when it fits the tasks topic (``media.max_inline_bytes``); larger ones are written to
    ``upload_dir`` (named by their sha256) and sent by ``file://`` reference, which the perceive
    workers fetch within their own limits; without an upload folder they are refused (413).
    """
    mime = _mime(kind, content_type, filename)
    if not data:
        raise RequestError(f"{kind}: empty (0 bytes)", 422)
    if len(data) > media.max_ref_bytes:
        raise RequestError(f"{kind}: too large: {len(data)} bytes > {media.max_ref_bytes}", 413)
    digest = hashlib.sha256(data).hexdigest()
    if len(data) <= media.max_inline_bytes:
        return MediaPart(mime_type=mime, data=data, uri=None, size_bytes=len(data), sha256=digest)
    if upload_dir is None:
        raise RequestError(
            f"{kind}: {len(data)} bytes is more than a task carries inline ({media.max_inline_bytes}), and this "
            "server keeps no uploads (AOS_INGRESS__UPLOAD_DIR)",
            413,
        )
    path = store_upload(upload_dir, digest, mimetypes.guess_extension(mime) or "", data)
    return MediaPart(mime_type=mime, data=None, uri=path.as_uri(), size_bytes=len(data), sha256=digest)


def store_upload(folder: Path, digest: str, suffix: str, data: bytes) -> Path:
    """Write an upload under its content hash (atomically: a reader never sees half a file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder.resolve() / f"{digest}{suffix}"
    if path.is_file() and path.stat().st_size == len(data):
        return path
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".upload-")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def build_task(
    body: TaskIn,
    tenant: str,
    max_text_chars: int,
    image: MediaPart | None = None,
    audio: MediaPart | None = None,
) -> TaskRequest:
    """The TaskRequest for a request, checked as the perceive stage will check it (422 if not)."""
    task = new_task(
        body.text,
        tenant=tenant,
        image=image,
        audio=audio,
        required_capabilities=body.required_capabilities,
        max_cost=body.max_cost,
        max_latency_ms=body.max_latency_ms,
        top_k=body.top_k,
        metadata=body.metadata,
    )
    try:
        validate_request(task, max_text_chars)
    except ValidationError as exc:
        raise RequestError(str(exc), 422) from None
    return task
