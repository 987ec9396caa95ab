"""``aos serve``: the HTTP ingress; ``aos bench ingress``: what it adds over the Kafka client.

The server binds its socket itself before anything else starts, so a taken port, a refused
address or an unreachable Kafka is a one-line error and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable
from typing import Any

from aos_gateway.cli import argtypes
from aos_gateway.errors import ConfigError
from aos_gateway.settings import Settings, get_settings

_LOG_LEVELS = ["critical", "error", "warning", "info", "debug"]


def add_parser(
    sub: Any, handler: Callable[[argparse.Namespace], int], parser_class: Any, bench: Any | None = None
) -> None:
    """``aos serve`` on ``sub``, and ``aos bench ingress`` on ``bench`` (the bench subparsers) if given."""
    sv = sub.add_parser(
        "serve", help="the HTTP ingress: submit tasks and read their plans over HTTP (OpenAPI at /docs)"
    )
    sv.add_argument("--host", default=None, help="address to bind (default: AOS_INGRESS__HOST, 127.0.0.1)")
    sv.add_argument(
        "--port", type=argtypes.port_or_zero, default=None, help="port (default: AOS_INGRESS__PORT, 8080; 0: any free)"
    )
    sv.add_argument(
        "--insecure",
        action="store_true",
        help="serve a non-loopback address without API keys (every task is the default tenant's)",
    )
    sv.add_argument("--log-level", default="warning", choices=_LOG_LEVELS, help="info also logs every request")
    sv.set_defaults(handler=handler)
    if bench is None:
        return
    bi = bench.add_parser(
        "ingress", help="latency the HTTP ingress adds: the same tasks through GatewayClient and through HTTP"
    )
    bi.add_argument("--n", type=argtypes.positive_int, default=200, help="tasks per path")
    bi.add_argument("--rate", type=argtypes.positive_float, default=20.0, help="tasks per second, both paths together")
    bi.add_argument("--timeout", type=argtypes.positive_float, default=60.0, help="the longest a task's plan may take")
    bi.add_argument("--json", action="store_true")
    bi.set_defaults(handler=handler)


def run(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.command == "bench":
        from aos_gateway.bench import ingress as bench

        report = bench.run(settings, args.n, args.rate, args.timeout, _progress)
        print(json.dumps(report, indent=2) if args.json else bench.format_report(report))
        return 0
    return serve(settings, args.host, args.port, args.insecure, args.log_level)


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket on ``host:port`` (a ConfigError says why not)."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
            0
        ]
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"cannot serve on {host}: {exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot serve on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, host: str | None, port: int | None, insecure: bool, log_level: str = "warning") -> int:
    """Run the ingress until Ctrl-C or SIGTERM."""
    import uvicorn

    from aos_gateway.ingress.api import create_app
    from aos_gateway.ingress.auth import ApiKeys, check_bind
    from aos_gateway.ingress.kafka import KafkaRecordFeed, KafkaTaskSender

    ing = settings.ingress
    host = host or ing.host
    keys = ApiKeys.from_settings(settings)
    check_bind(host, keys, insecure)
    sock = bind(host, ing.port if port is None else port)
    try:
        sender = KafkaTaskSender(settings)
        try:
            feed = KafkaRecordFeed(settings)
        except BaseException:
            sender.close()
            raise
    except BaseException:
        sock.close()
        raise
    app = create_app(settings, sender, feed, keys)
    bound = sock.getsockname()
    shown = f"[{bound[0]}]" if ":" in bound[0] else bound[0]
    n = len(keys.tenants)
    auth = (
        f"API keys for {n} tenant{'s' if n != 1 else ''}"
        if keys.configured
        else f"no API keys: every task is tenant {settings.tenant!r}"
    )
    _progress(f"aos serve: http://{shown}:{bound[1]} (docs: /docs, OpenAPI: /openapi.json); {auth}")
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=log_level in ("info", "debug"),
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again for the handler in
    # force before it: make that a no-op, so a clean stop exits 0 instead of "killed by SIGTERM"
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: None) if in_main else None
    try:
        server.run(sockets=[sock])
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
    if not server.started:
        return 1
    _progress("aos serve: stopped")
    return 0
