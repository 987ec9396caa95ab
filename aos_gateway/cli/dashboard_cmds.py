"""``aos dashboard``: serve the dashboard page until Ctrl-C."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from aos_gateway.cli import argtypes
from aos_gateway.settings import Settings


def add_parser(sub: Any, handler: Callable[[argparse.Namespace], int]) -> None:
    db = sub.add_parser("dashboard", help="a web page over the tables Kafka Connect fills (needs `aos dev up`)")
    db.add_argument("--host", default=None, help="address to listen on (default: dashboard.host, 127.0.0.1)")
    db.add_argument("--port", type=argtypes.port, default=None, help="port (default: dashboard.port, 8090)")
    db.add_argument(
        "--window",
        type=argtypes.int_between(1, 7 * 24 * 60, "number of minutes"),
        default=None,
        metavar="MIN",
        help="minutes the plots cover",
    )
    db.set_defaults(handler=handler)


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    import uvicorn

    from aos_gateway.dashboard.web import create_app
    from aos_gateway.devstack._proc import port_taken
    from aos_gateway.errors import ConfigError

    d = settings.dashboard
    host = args.host or d.host
    port = args.port or d.port
    if args.window:
        settings = settings.model_copy(update={"dashboard": d.model_copy(update={"window_min": args.window})})
    try:
        taken = port_taken(port, host)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    if taken:
        raise ConfigError(f"port {port} on {host} is taken; use --port or AOS_DASHBOARD__PORT")
    progress(
        f"dashboard: http://{host}:{port}/ (PostgreSQL {settings.postgres.host}:{settings.postgres.port}; Ctrl-C stops)"
    )
    uvicorn.run(create_app(settings), host=host, port=port, log_level="warning", access_log=False)
    return 0
