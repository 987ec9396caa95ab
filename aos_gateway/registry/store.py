"""Agent metadata in PostgreSQL: every card version, and the latest state of each agent.

Written by the registry consumer from ``aos.agents.v1``. Idempotent: a record is identified
by its partition and offset (redelivery adds nothing), and a card identical to the agent's
latest version adds no new version.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from aos_gateway.contracts.records import AgentCard
from aos_gateway.errors import NotFoundError, StoreError, ValidationError


@dataclass(frozen=True)
class CardVersion:
    """One row of an agent's history."""

    agent_id: str
    version: int
    card: dict[str, Any] | None
    deregistered: bool
    source_partition: int
    source_offset: int
    recorded_at: datetime


def _migrations() -> list[tuple[str, str]]:
    folder = resources.files("aos_gateway.registry") / "migrations"
    files = sorted((p.name, p.read_text(encoding="utf-8")) for p in folder.iterdir() if p.name.endswith(".sql"))
    return files


def migrate(conninfo: str) -> list[str]:
    """Apply the migrations not applied yet; returns their names."""
    applied: list[str] = []
    try:
        with psycopg.connect(conninfo, autocommit=False) as conn:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            conn.execute("SELECT pg_advisory_xact_lock(424242)")
            done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations")}
            for name, sql in _migrations():
                if name in done:
                    continue
                conn.execute(sql.encode("utf-8"))
                conn.execute("INSERT INTO schema_migrations (name) VALUES (%s)", (name,))
                applied.append(name)
            conn.commit()
    except psycopg.Error as exc:
        raise StoreError(f"migration failed: {exc}") from exc
    return applied


def card_sha256(card: AgentCard) -> str:
    """A content hash of a card, ignoring when it was sent."""
    body = {k: v for k, v in card.items() if k != "updated_at"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def agent_id_of(key: bytes | None, card: AgentCard | None) -> str:
    """The agent id of a registry record (its key), checked before anything is stored.

    The record_card stage retries a store error until PostgreSQL takes the record, so what it would
    refuse on every try (a NUL character, a NaN in the card's JSON) must be refused here, once,
    and dead-lettered.

    Raises:
        ValidationError: no key, a key that is not UTF-8 or holds a NUL, a card that breaks
            :func:`~aos_gateway.matching.cards.check_card`, or one whose agent_id is not the key.
    """
    from aos_gateway.matching.cards import check_card

    if not key:
        raise ValidationError("registry record without a key (agent id)")
    try:
        agent_id = key.decode("utf-8")
    except UnicodeDecodeError:
        raise ValidationError(f"registry key {key[:100]!r} is not UTF-8") from None
    if "\x00" in agent_id:
        raise ValidationError(f"registry key {key[:100]!r} contains a NUL character")
    if card is not None:
        check_card(card)
        if card["agent_id"] != agent_id:
            raise ValidationError(f"card agent_id {card['agent_id']!r} does not match the key {key!r}")
    return agent_id


def record_card_event(
    conn: psycopg.Connection[Any], agent_id: str, card: AgentCard | None, partition: int, offset: int
) -> int | None:
    """Store one registry event; returns the new version, or None when nothing changed."""
    sha = card_sha256(card) if card is not None else None
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (agent_id,))
        seen = conn.execute(
            "SELECT 1 FROM agent_card_versions WHERE source_partition=%s AND source_offset=%s",
            (partition, offset),
        ).fetchone()
        if seen:
            return None
        last = conn.execute(
            "SELECT version, card_sha256, deregistered FROM agent_card_versions "
            "WHERE agent_id=%s ORDER BY version DESC LIMIT 1",
            (agent_id,),
        ).fetchone()
        if last is not None and ((card is None and last[2]) or (card is not None and last[1] == sha)):
            return None
        if last is None and card is None:
            return None
        version = (last[0] if last else 0) + 1
        conn.execute(
            "INSERT INTO agent_card_versions (agent_id, version, card, card_sha256, deregistered, "
            "source_partition, source_offset) VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (agent_id, version, Jsonb(card) if card is not None else None, sha, card is None, partition, offset),
        )
        if card is not None:
            conn.execute(
                "INSERT INTO agents (agent_id, name, tenant, status, version, deregistered, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, false, now()) ON CONFLICT (agent_id) DO UPDATE SET "
                "name=EXCLUDED.name, tenant=EXCLUDED.tenant, status=EXCLUDED.status, "
                "version=EXCLUDED.version, deregistered=false, updated_at=now()",
                (agent_id, card["name"], card["tenant"], card["status"], version),
            )
        else:
            conn.execute(
                "UPDATE agents SET deregistered=true, version=%s, updated_at=now() WHERE agent_id=%s",
                (version, agent_id),
            )
    return version


def history(conn: psycopg.Connection[Any], agent: str) -> list[CardVersion]:
    """Every version of one agent (by id or name), oldest first."""
    rows = conn.execute(
        "SELECT v.agent_id, v.version, v.card, v.deregistered, v.source_partition, v.source_offset, v.recorded_at "
        "FROM agent_card_versions v WHERE v.agent_id = %s OR v.agent_id IN "
        "(SELECT agent_id FROM agents WHERE name = %s) ORDER BY v.agent_id, v.version",
        (agent, agent),
    ).fetchall()
    if not rows:
        raise NotFoundError(f"no agent {agent!r} in the registry history")
    return [CardVersion(*r) for r in rows]


def connect(conninfo: str) -> psycopg.Connection[Any]:
    """A connection, with a clear error when the database is not there."""
    try:
        return psycopg.connect(conninfo, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StoreError(
            f"cannot reach PostgreSQL ({exc.args[0].splitlines()[0] if exc.args else exc}); "
            "is the stack up? run `aos dev up`"
        ) from exc
