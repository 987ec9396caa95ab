"""The ingress's FastAPI app: submit tasks, read their plans and results, stream both as events.

Routes (OpenAPI at ``/openapi.json``, interactive docs at ``/docs``):

- ``POST /v1/tasks``: JSON (text and options) or multipart/form-data (the same fields plus
  ``image`` and/or ``audio`` files) -> 202 ``{"task_id": ...}`` once Kafka has the task.
- ``GET /v1/tasks/{task_id}``: the plan and, when there, the execution's final result;
  ``?wait=S`` long-polls up to S seconds for the plan (``&until=result``: for the result).
- ``GET /v1/tasks/{task_id}/events``: server-sent events ``plan``, then ``result`` (or
  ``error`` when a stage dead-lettered the task, ``timeout`` when nothing came in time).
- ``GET /healthz``.

Every refusal is ``{"error": "..."}`` with a 4xx status (503 when Kafka or the server is
saturated); nothing a client sends becomes a 500 with a traceback. The app takes its Kafka side
as two small interfaces (:class:`TaskSink`, :class:`RecordFeed`), so tests can run it in-process.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aos_gateway import __version__
from aos_gateway.contracts.records import MediaPart, TaskRequest
from aos_gateway.errors import AosError, KafkaError
from aos_gateway.ingress.auth import ApiKeys
from aos_gateway.ingress.results import Batch, Status, TaskEntry, TaskStore, Until, public, view
from aos_gateway.ingress.tasks import (
    MEDIA_KINDS,
    RequestError,
    TaskIn,
    build_task,
    check_multipart_end,
    media_part,
    parse_form,
    parse_json,
)
from aos_gateway.limits import Limits
from aos_gateway.settings import Settings

log = logging.getLogger("aos_gateway.ingress")


class TaskSink(Protocol):
    """Where accepted tasks go (Kafka in production)."""

    async def send(self, task: TaskRequest) -> None: ...

    def close(self) -> None: ...


class RecordFeed(Protocol):
    """Where plans, results and dead letters come from (one Kafka consumer in production)."""

    def start(self, deliver: Callable[[Batch], None]) -> None: ...

    def alive(self) -> bool: ...

    def close(self) -> None: ...


class TaskAccepted(BaseModel):
    task_id: str
    status_url: str = Field(description="GET it for the plan and result (add ?wait=SECONDS to long-poll)")
    events_url: str = Field(description="server-sent events: plan, then result")


class TaskView(BaseModel):
    task_id: str
    status: Status = Field(description="pending, planned, done (final result in) or failed (see error)")
    plan: dict[str, Any] | None = Field(description="the plan record (aos.plans.v1) without the task vector")
    result: dict[str, Any] | None = Field(description="the execution's final result (aos.results.v1)")
    error: str | None = Field(description="why a stage refused the task (dead-lettered)")


class ErrorOut(BaseModel):
    error: str


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": what}
    for code, what in (
        (400, "malformed request (bad JSON, a broken multipart body)"),
        (401, "missing or invalid API key"),
        (404, "no such task for this tenant"),
        (413, "body or upload too large"),
        (415, "unsupported content type"),
        (422, "a field breaks a rule"),
        (429, "over the tenant's task rate (AOS_LIMITS__*): retry after Retry-After seconds"),
        (503, "Kafka unavailable or too many requests waiting"),
    )
}


def _multipart_schema() -> dict[str, Any]:
    props: dict[str, Any] = {
        name: {k: v for k, v in spec.items() if k != "default"}
        for name, spec in TaskIn.model_json_schema()["properties"].items()
        if name not in ("metadata", "required_capabilities")
    }
    props["required_capabilities"] = {"type": "array", "items": {"type": "string"}}
    props["metadata"] = {"type": "string", "description": "a JSON object of strings"}
    for kind in MEDIA_KINDS:
        props[kind] = {"type": "string", "format": "binary", "description": f"an {kind} file"}
    return {"type": "object", "properties": props}


_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": TaskIn.model_json_schema()},
            "multipart/form-data": {"schema": _multipart_schema()},
        },
    }
}


class BodyLimit:
    """Refuses request bodies over ``limit`` bytes with a 413, by Content-Length or while reading."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body larger than {self.limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > self.limit:
                    await JSONResponse({"error": message}, status_code=413)(scope, receive, send)
                    return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise RequestError(message, 413)
            return msg

        await self.app(scope, counted, send)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <API key>")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="or X-API-Key: <API key>")


async def tenant_of(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    key: Annotated[str | None, Depends(_api_key)],
) -> str:
    """The request's tenant: its API key's (or the default tenant when the server has no keys)."""
    keys: ApiKeys = request.app.state.keys
    return keys.tenant_for(creds.credentials if creds is not None else key)


Tenant = Annotated[str, Depends(tenant_of)]


def create_app(
    settings: Settings,
    sender: TaskSink,
    feed: RecordFeed,
    keys: ApiKeys | None = None,
    store: TaskStore | None = None,
    limits: Limits | None = None,
) -> FastAPI:
    """The ingress app over a task sink and a record feed (started and closed with the app)."""
    ing = settings.ingress
    limiter = limits if limits is not None else Limits(settings)
    keys = keys if keys is not None else ApiKeys.from_settings(settings)
    tasks = store if store is not None else TaskStore(ing.cache_size, ing.max_waiters)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def deliver(batch: Batch) -> None:  # on the feed's thread: hand over to the loop
            loop.call_soon_threadsafe(tasks.put_many, batch)

        feed.start(deliver)
        try:
            yield
        finally:
            await asyncio.to_thread(feed.close)
            await asyncio.to_thread(sender.close)

    app = FastAPI(
        title="AOS Gateway ingress",
        version=__version__,
        description="Submit tasks to the AOS Gateway over HTTP and read their plans and results.",
        lifespan=lifespan,
    )
    app.state.store = tasks
    app.state.keys = keys
    app.add_middleware(BodyLimit, limit=ing.max_body_bytes)

    async def on_request_error(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestError)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else exc.headers
        return _error(exc.status, str(exc), headers)

    async def on_aos_error(_req: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, KafkaError):
            return _error(503, str(exc))
        log.error("request failed: %s: %s", type(exc).__name__, exc)
        return _error(500, f"{type(exc).__name__}: {exc}")

    async def on_http_error(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    async def on_invalid(_req: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5]]
        return _error(422, "; ".join(parts) or "invalid request")

    async def on_crash(_req: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return _error(500, "internal error (the server log has the details)")

    handlers: list[tuple[type[Exception], Callable[[Request, Exception], Awaitable[JSONResponse]]]] = [
        (RequestError, on_request_error),
        (AosError, on_aos_error),
        (StarletteHTTPException, on_http_error),
        (RequestValidationError, on_invalid),
        (Exception, on_crash),
    ]
    for exc_type, handler in handlers:
        app.add_exception_handler(exc_type, handler)

    def readable(task_id: str, tenant: str) -> TaskEntry:
        entry = tasks.readable(task_id, tenant)
        if entry is None:
            raise RequestError(f"no task {task_id} (unknown here, another tenant's, or long forgotten)", 404)
        return entry

    async def read_body(request: Request, tenant: str) -> TaskRequest:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        media: dict[str, MediaPart] = {}
        lim = limiter.of(tenant)  # the tenant's size limits, within the hard ones every tenant has
        media_limits = settings.media.model_copy(update={"max_ref_bytes": lim.max_media_bytes})
        if ctype == "application/json" or ctype.endswith("+json"):
            body = parse_json(await request.body())
        elif ctype in ("multipart/form-data", "application/x-www-form-urlencoded"):
            if ctype == "multipart/form-data":  # read once (within the body limit); the form parser reuses it
                check_multipart_end(await request.body(), request.headers["content-type"])
            async with request.form(max_files=len(MEDIA_KINDS), max_fields=64) as form:
                fields: list[tuple[str, str]] = []
                files: dict[str, UploadFile] = {}
                for key, value in form.multi_items():
                    if isinstance(value, str):
                        if key in MEDIA_KINDS:
                            raise RequestError(f"{key}: send it as a file part (multipart/form-data)", 422)
                        fields.append((key, value))
                    elif key not in MEDIA_KINDS or key in files:
                        raise RequestError(f"unexpected file part {key!r}: send at most one image and one audio", 422)
                    else:
                        files[key] = value
                body = parse_form(fields)
                for kind, upload in files.items():
                    data = await upload.read()
                    media[kind] = await asyncio.to_thread(
                        media_part, kind, data, upload.content_type, upload.filename, media_limits, ing.upload_dir
                    )
        else:
            shown = ctype or "none"
            raise RequestError(f"content type {shown!r}: send application/json or multipart/form-data", 415)
        return build_task(body, tenant, lim.max_text_chars, media.get("image"), media.get("audio"))

    @app.post(
        "/v1/tasks",
        status_code=202,
        response_model=TaskAccepted,
        responses=_ERRORS,
        openapi_extra=_SUBMIT_BODY,
        summary="Submit a task (JSON, or multipart with image/audio files)",
    )
    async def submit(request: Request, tenant: Tenant) -> JSONResponse:
        wait = limiter.admit(tenant)  # before the body is read: a tenant over its rate costs little
        if wait:
            rate = limiter.of(tenant).tasks_per_s
            raise RequestError(
                f"too many tasks: this tenant may submit {rate:g} per second; retry in {wait:.1f}s",
                429,
                {"Retry-After": str(max(1, math.ceil(wait)))},
            )
        task = await read_body(request, tenant)
        tid = task["task_id"]
        tasks.submitted(tid, tenant, task["submitted_at"])
        try:
            await sender.send(task)
        except AosError:  # refused or unanswered: not the client's task after all (a late copy is seen as it comes)
            tasks.forget(tid)
            raise
        url = f"/v1/tasks/{tid}"
        return JSONResponse(
            {"task_id": tid, "status_url": url, "events_url": f"{url}/events"},
            status_code=202,
            headers={"Location": url},
        )

    @app.get("/v1/tasks/{task_id}", response_model=TaskView, responses=_ERRORS, summary="A task's plan and result")
    async def get_task(
        task_id: str,
        tenant: Tenant,
        wait: Annotated[
            float, Query(ge=0, description="long-poll up to this many seconds (capped by AOS_INGRESS__MAX_WAIT_S)")
        ] = 0.0,
        until: Annotated[Until, Query(description="what to wait for: the plan, or the execution's result")] = "plan",
    ) -> JSONResponse:
        entry = readable(task_id, tenant)
        if wait > 0 and not entry.reached(until):
            entry = await tasks.wait(task_id, until, min(wait, ing.max_wait_s)) or entry
            if entry.tenant != tenant:  # forgotten and seen again meanwhile: check once more
                entry = readable(task_id, tenant)
        return JSONResponse(view(entry))

    @app.get(
        "/v1/tasks/{task_id}/events",
        response_class=StreamingResponse,
        responses={
            **_ERRORS,
            200: {"content": {"text/event-stream": {}}, "description": "plan, result, error, timeout"},
        },
        summary="Server-sent events: the plan, then the result",
    )
    async def events(
        task_id: str,
        tenant: Tenant,
        until: Annotated[Until, Query(description="end the stream after the plan, or after the result")] = "result",
    ) -> StreamingResponse:
        readable(task_id, tenant)
        if tasks.waiting >= tasks.max_waiters:
            raise RequestError(f"too many requests waiting ({tasks.max_waiters}); try again shortly", 503)
        return StreamingResponse(
            _stream(task_id, tenant, until),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _stream(task_id: str, tenant: str, until: Until) -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ing.stream_timeout_s
        sent_plan = False
        yield ": aos task events\n\n"
        while True:
            entry = tasks.get(task_id)
            state: tuple[bool, bool, str | None] | None = None
            if entry is not None and entry.tenant == tenant:
                state = (entry.plan is not None, entry.result is not None, entry.error)
                if entry.plan is not None and not sent_plan:
                    sent_plan = True
                    yield _sse("plan", public(entry.plan))
                if entry.result is not None:
                    yield _sse("result", public(entry.result))
                    return
                if entry.error is not None:
                    yield _sse("error", {"error": entry.error})
                    return
                if until == "plan" and sent_plan:
                    return
            left = deadline - loop.time()
            if left <= 0:
                yield _sse("timeout", {"error": f"no {until} within {ing.stream_timeout_s:g}s"})
                return
            try:
                after = await tasks.wait(task_id, "result" if sent_plan else "plan", min(left, ing.keepalive_s))
            except RequestError as exc:
                yield _sse("error", {"error": str(exc)})
                return
            if after is None or (after.plan is not None, after.result is not None, after.error) == state:
                yield ": keepalive\n\n"

    @app.get("/healthz", summary="Liveness: the result consumer runs")
    async def healthz() -> JSONResponse:
        alive = feed.alive()
        return JSONResponse(
            {
                "status": "ok" if alive else "degraded",
                "feed": "running" if alive else "stopped",
                "tasks": len(tasks),
                "waiting": tasks.waiting,
                "auth": "api-keys" if keys.configured else "none",
            },
            status_code=200 if alive else 503,
        )

    return app
