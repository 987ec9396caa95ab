"""``aos deadletter list | replay``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from aos_gateway.client import read_dead_letters as dead_letters
from aos_gateway.contracts.records import DeadLetter
from aos_gateway.errors import AosError, KafkaError
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import make_producer


def _jsonable(dl: DeadLetter) -> dict[str, Any]:
    d: dict[str, Any] = dict(dl)
    for k in ("key", "value"):
        raw = d[k]
        d[k] = None if raw is None else raw.hex()
    return d


def run(args: argparse.Namespace, settings: Settings) -> int:
    items = dead_letters(settings)
    if args.stage:
        items = [d for d in items if d["stage"] == args.stage]
    if args.action == "list":
        shown = items[-args.limit :] if args.limit > 0 else items
        if args.json:
            print(json.dumps([_jsonable(d) for d in shown], indent=2))
            return 0
        for d in shown:
            src = f"{d['source_topic']}[{d['source_partition']}]@{d['source_offset']}"
            print(f"{d['dead_letter_id'][:12]}  {d['stage']:<9} {src:<30} {d['error_type']}: {d['reason'][:80]}")
        print(f"{len(shown)} of {len(items)} dead letters")
        return 0
    if not args.ids and not args.all:
        raise AosError("name the dead-letter ids to replay, or pass --all")
    chosen = [d for d in items if args.all or any(d["dead_letter_id"].startswith(i) for i in args.ids)]
    if args.ids and not chosen:
        raise AosError("no dead letter matches those ids")
    latest = {d["dead_letter_id"]: d for d in chosen}  # one replay per failed event, even if listed twice
    producer = make_producer(settings.kafka)
    for d in latest.values():
        producer.produce(d["source_topic"], key=d["key"], value=d["value"])
    if producer.flush(30):
        raise KafkaError("replayed events were not delivered in time")
    print(f"replayed {len(latest)} events to their source topics")
    return 0
