"""The dashboard's web app: the page, plotly.js (from the ``plotly`` package: no CDN), and its JSON.

GET /                 the page (plots refresh every ``dashboard.refresh_s``)
GET /api/dashboard    every figure as JSON (``?window_min=`` overrides the window)
GET /healthz          200 when PostgreSQL answers
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import FastAPI, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response

from aos_gateway.errors import StoreError
from aos_gateway.settings import Settings


def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs  # type: ignore[import-untyped]

    return str(get_plotlyjs()).encode("utf-8")


def create_app(settings: Settings) -> FastAPI:
    """The app; each request opens its own short PostgreSQL connection (the page polls every few seconds)."""
    import psycopg

    from aos_gateway.dashboard.queries import snapshot

    d = settings.dashboard
    page = (
        resources.files("aos_gateway.dashboard")
        .joinpath("page.html")
        .read_text(encoding="utf-8")
        .replace("__REFRESH_S__", repr(float(d.refresh_s)))
    )
    js = _plotly_js()
    app = FastAPI(title="AOS Gateway dashboard", docs_url=None, redoc_url=None)

    def connect() -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(settings.postgres.conninfo(), autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL at {settings.postgres.host}:{settings.postgres.port}: {exc}") from exc

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/static/plotly.min.js")
    def plotly_js() -> Response:
        return Response(js, media_type="application/javascript", headers={"Cache-Control": "max-age=86400"})

    @app.get("/api/dashboard")
    def figures(window_min: int | None = Query(default=None, ge=1, le=7 * 24 * 60)) -> JSONResponse:
        try:
            with connect() as conn:
                return JSONResponse(snapshot(conn, window_min or d.window_min))
        except StoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        try:
            with connect() as conn:
                conn.execute("SELECT 1")
        except StoreError as exc:
            return JSONResponse({"ok": False, "error": str(exc)}, status_code=503)
        return JSONResponse({"ok": True})

    return app
