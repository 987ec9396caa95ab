"""``aos connect apply | status``: the Kafka Connect sinks that fill the dashboards' tables."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aos_gateway.cli import argtypes
from aos_gateway.settings import Settings


def add_parser(sub: Any, handler: Callable[[argparse.Namespace], int], parser_class: Any) -> None:
    cn = sub.add_parser("connect", help="Kafka Connect: the sinks that fill the dashboards' tables")
    csub = cn.add_subparsers(dest="action", required=True, parser_class=parser_class)
    ap = csub.add_parser("apply", help="create or update the connectors of connectors/*.json (idempotent)")
    ap.add_argument(
        "--dir",
        type=argtypes.existing_dir,
        default=None,
        help="a folder of connector configs (default: the shipped ones)",
    )
    ap.add_argument(
        "--wait",
        type=argtypes.non_negative_float,
        default=60.0,
        metavar="SECONDS",
        help="wait until RUNNING (0: do not)",
    )
    ap.add_argument("--json", action="store_true")
    st = csub.add_parser("status", help="each connector and task, with the first line of a failure's trace")
    st.add_argument("--json", action="store_true")
    for p in (ap, st):
        p.set_defaults(handler=handler)


def apply(settings: Settings, folder: Path | None, wait_s: float, progress: Callable[[str], None]) -> dict[str, str]:
    """Create the sink topics, then create or update every connector and wait until they run.

    Raises:
        ConfigError: A connector config cannot be read.
        ConnectError: Connect refused a config, a task failed, or it did not answer.
        KafkaError: The broker did not answer.
    """
    from aos_gateway.connect.rest import ConnectClient, connectors_dir, load_configs
    from aos_gateway.streams.kafka import ensure_topics
    from aos_gateway.topics import SINKS

    configs = load_configs(connectors_dir(folder or settings.connect.connectors_dir))
    created = ensure_topics(settings.kafka, SINKS)  # the sink subscribes by pattern: the topics must exist
    if created:
        progress(f"connect: created {len(created)} sink topics")
    client = ConnectClient(settings.connect.url, settings.connect.request_timeout_s)
    done = client.apply(configs)
    for name, what in done.items():
        progress(f"connect: {name} {what}")
    if wait_s > 0:
        client.wait_running(list(done), wait_s)
        progress(f"connect: {', '.join(done)} RUNNING")
    return done


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from aos_gateway.connect.rest import ConnectClient

    if args.action == "apply":
        done = apply(settings, args.dir, args.wait, progress)
        if args.json:
            print(json.dumps(done, indent=2))
        return 0
    st = ConnectClient(settings.connect.url, settings.connect.request_timeout_s).status()
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    if not st:
        print(f"no connectors at {settings.connect.url}; run `aos connect apply`")
        return 1
    ok = True
    for name, s in sorted(st.items()):
        cstate = s.get("connector", {}).get("state", "?")
        print(f"{name:<28} {cstate}")
        for t in s.get("tasks", []):
            line = f"  task {t.get('id')} {t.get('state')}"
            if t.get("state") == "FAILED":
                trace = str(t.get("trace", "")).strip().splitlines()
                line += f": {trace[0] if trace else '?'}"
            print(line)
            ok = ok and t.get("state") == "RUNNING"
        ok = ok and cstate == "RUNNING"
    return 0 if ok else 1
