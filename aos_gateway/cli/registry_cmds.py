"""``aos agents ...``: register, list, deregister, history."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

from aos_gateway import topics
from aos_gateway.contracts.records import AGENT_CARD, AgentCard
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import AosError, KafkaError, StoreError
from aos_gateway.matching.cards import read_card_file
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import ensure_topics, make_producer, read_to_end
from aos_gateway.streams.liveness import Liveness, read_liveness


def current_cards(settings: Settings) -> dict[str, AgentCard]:
    """The registry as it is now: the latest card per agent, deregistered ones left out."""
    codec = codec_for(AGENT_CARD, topics.AGENTS.name, settings.schema_registry)
    cards: dict[str, AgentCard | None] = {}
    for m in read_to_end(settings.kafka, topics.AGENTS.name):
        key = m.key().decode("utf-8", "replace") if m.key() else None
        if key is None:
            continue
        if m.value() is None:
            cards[key] = None
            continue
        try:
            cards[key] = codec.decode(m.value())  # type: ignore[assignment]
        except AosError:
            continue
    return {k: v for k, v in cards.items() if v is not None}


def liveness(settings: Settings) -> Liveness:
    """The agents' heartbeats as they are now (none when no agent ever ran with the SDK)."""
    from aos_gateway.streams.kafka import existing_topics

    if topics.HEARTBEATS.name not in existing_topics(settings.kafka):
        return Liveness(settings.execution.liveness_timeout_s)
    return read_liveness(settings)


def _produce(settings: Settings, items: list[tuple[str, bytes | None]]) -> None:
    ensure_topics(settings.kafka, [topics.AGENTS])
    producer = make_producer(settings.kafka)
    errors: list[str] = []

    def on_delivery(err: Any, _msg: Any) -> None:
        if err is not None:
            errors.append(str(err))

    for key, value in items:
        producer.produce(topics.AGENTS.name, key=key.encode(), value=value, on_delivery=on_delivery)
        producer.poll(0)
    if producer.flush(settings.kafka.request_timeout_s * 3):
        raise KafkaError("registry records were not delivered in time; is Kafka up? (`aos dev status`)")
    if errors:
        raise KafkaError(f"{len(errors)} registry records failed: {errors[0]}")


def _wait_stored(settings: Settings, ids: list[str], timeout: float, progress: Callable[[str], None]) -> None:
    from aos_gateway.registry import store

    deadline = time.monotonic() + timeout
    with store.connect(settings.postgres.conninfo()) as conn:
        while True:
            row = conn.execute("SELECT count(*) FROM agents WHERE agent_id = ANY(%s)", (ids,)).fetchone()
            have = int(row[0]) if row else 0
            if have >= len(ids):
                progress(f"registry: {have} agents stored in PostgreSQL")
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"only {have} of {len(ids)} agents stored after {timeout:g}s; is a worker running? (`aos worker`)"
                )
            time.sleep(0.5)


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    codec = codec_for(AGENT_CARD, topics.AGENTS.name, settings.schema_registry)
    if args.action == "register":
        cards = read_card_file(args.file, one_per_agent=True)
        if args.tenant:
            from aos_gateway.security.cards import SIG

            signed = [c["agent_id"] for c in cards if SIG in c["metadata"] and c["tenant"] != args.tenant]
            if signed:  # the tenant is part of what is signed: such cards would be refused later, far from here
                raise argparse.ArgumentError(
                    None,
                    f"--tenant {args.tenant} would break the signatures of {len(signed)} signed cards "
                    f"(first: {signed[0]}); sign them for that tenant instead (`aos security cards sign`)",
                )
            for c in cards:
                c["tenant"] = args.tenant
        existing = current_cards(settings)
        changed = [c for c in cards if _differs(existing.get(c["agent_id"]), c)]
        _produce(settings, [(c["agent_id"], codec.encode(c)) for c in changed])
        print(f"registered {len(changed)} agents ({len(cards) - len(changed)} unchanged) on {topics.AGENTS.name}")
        if args.wait:
            _wait_stored(settings, [c["agent_id"] for c in cards], args.timeout, progress)
        return 0
    if args.action == "list":
        cards_now = sorted(current_cards(settings).values(), key=lambda c: c["agent_id"])
        if args.json:
            print(json.dumps(cards_now, indent=2))
        else:
            live = liveness(settings)
            now = int(time.time() * 1000)
            states = {c["agent_id"]: live.describe(c["agent_id"], now) for c in cards_now}
            for c in cards_now:
                print(
                    f"{c['agent_id']:<28} {c['status']:<8} {c['tenant']:<10} {states[c['agent_id']]:<36} "
                    f"{c['description'][:60]}"
                )
            running = sum(s.startswith("running") for s in states.values())
            down = sum(s.startswith("down") for s in states.values())
            silent = len(cards_now) - running - down
            print(f"{len(cards_now)} agents: {running} running, {down} down, {silent} without heartbeats")
        return 0
    if args.action == "deregister":
        known = current_cards(settings)
        missing = [a for a in args.agent_ids if a not in known]
        if missing:
            raise AosError(f"not registered: {', '.join(missing)}")
        _produce(settings, [(a, None) for a in args.agent_ids])
        print(f"deregistered {len(args.agent_ids)} agents")
        return 0
    from aos_gateway.registry import store

    with store.connect(settings.postgres.conninfo()) as conn:
        versions = store.history(conn, args.agent)
    if args.json:
        print(json.dumps([{**v.__dict__, "recorded_at": v.recorded_at.isoformat()} for v in versions], indent=2))
        return 0
    for v in versions:
        what = "deregistered" if v.deregistered else (v.card or {}).get("description", "")[:60]
        when = f"{v.recorded_at:%Y-%m-%d %H:%M:%S}"
        print(f"{v.agent_id:<24} v{v.version:<3} {when} offset {v.source_partition}/{v.source_offset:<6} {what}")
    return 0


def _differs(old: AgentCard | None, new: AgentCard) -> bool:
    if old is None:
        return True
    return {k: v for k, v in old.items() if k != "updated_at"} != {k: v for k, v in new.items() if k != "updated_at"}
