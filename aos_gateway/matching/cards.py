"""Agent cards: read from JSON lines, validated, and turned into the text that gets embedded."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from aos_gateway.contracts.records import AgentCard, is_cost
from aos_gateway.errors import ValidationError

_STATUSES = ("ACTIVE", "DEGRADED", "INACTIVE")
#: what the perceive stage makes of a task (aos_gateway/perception/task.py): a card serves some of these
MODALITIES = ("text", "image", "audio")
#: a legal Kafka topic name: 1 to 249 of these characters, and not "." or ".."
_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")
_MAX_INT = 2**31 - 1  # p95_latency_ms is an Avro int
#: the fields of a card (AgentCard): a card's JSON may have these, and no others (a typo would be lost)
CARD_FIELDS = tuple(AgentCard.__annotations__)


def _str_list(obj: Mapping[str, Any], key: str, default: list[str]) -> list[str]:
    val = obj.get(key, default)
    if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
        raise ValidationError(f"{key!r} must be a list of strings")
    return list(val)


def card_from_json(obj: Mapping[str, Any], now_ms: int | None = None, strict: bool = True) -> AgentCard:
    """A card from a JSON object (the MetaTool agents.jsonl form, plus optional fields).

    Raises:
        ValidationError: Not a card: a bad value, or (``strict``) a field a card does not have (named,
            with the known ones); without ``strict`` such fields are ignored (a dataset's extra columns).
    """
    if not isinstance(obj, Mapping):
        raise ValidationError("an agent card must be a JSON object")
    unknown_fields = [k for k in obj if k not in CARD_FIELDS] if strict else []
    if unknown_fields:
        raise ValidationError(
            f"unknown card field{'s' if len(unknown_fields) > 1 else ''} "
            f"{', '.join(repr(k) for k in unknown_fields)} (known: {', '.join(CARD_FIELDS)})"
        )
    agent_id = obj.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValidationError("'agent_id' must be a non-empty string")
    name = obj.get("name", agent_id)
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("'name' must be a non-empty string")
    desc = obj.get("description", "")
    if not isinstance(desc, str):
        raise ValidationError("'description' must be a string")
    status = str(obj.get("status", "ACTIVE")).upper()
    if status not in _STATUSES:
        raise ValidationError(f"'status' must be one of {', '.join(_STATUSES)}")
    try:
        cost = float(obj.get("cost", 0.0))
        p95 = int(obj.get("p95_latency_ms", 1000))
    except (TypeError, ValueError, OverflowError) as exc:  # OverflowError: int(1e999)
        raise ValidationError(f"'cost' and 'p95_latency_ms' must be numbers: {exc}") from exc
    if cost < 0 or p95 < 0:
        raise ValidationError("'cost' and 'p95_latency_ms' must not be negative")
    meta = obj.get("metadata", {})
    if not isinstance(meta, dict):
        raise ValidationError("'metadata' must be an object")
    topic = obj.get("invocation_topic")
    legal_topic = isinstance(topic, str) and bool(_TOPIC_NAME.fullmatch(topic)) and topic not in (".", "..")
    if topic is not None and topic != "" and not legal_topic:
        raise ValidationError(
            f"'invocation_topic' must be a Kafka topic name (1-249 of a-z A-Z 0-9 . _ -, not '.' or '..'), "
            f"got {topic!r}"
        )
    modalities = _str_list(obj, "modalities", ["text"])
    unknown = [m for m in modalities if m not in MODALITIES]
    if unknown:
        raise ValidationError(f"'modalities' must be among {', '.join(MODALITIES)}; unknown: {', '.join(unknown)}")
    card = AgentCard(
        agent_id=agent_id.strip(),
        name=name.strip(),
        description=desc.strip(),
        capabilities=_str_list(obj, "capabilities", []),
        modalities=modalities,
        examples=_str_list(obj, "examples", []),
        tenant=str(obj.get("tenant", "public")),
        cost=cost,
        p95_latency_ms=p95,
        status=status,  # type: ignore[typeddict-item]
        invocation_topic=str(topic) if topic else None,
        updated_at=now_ms if now_ms is not None else int(time.time() * 1000),
        metadata={str(k): str(v) for k, v in meta.items()},
    )
    check_card(card)
    return card


def check_card(card: AgentCard) -> None:
    """What a card must be for every consumer of the registry, wherever it came from (a JSON file,
    any producer on the topic): numbers the contract and the stores can hold (finite, the latency an
    Avro int), text without NUL characters (PostgreSQL refuses them) or lone surrogates (not UTF-8).
    """
    cost, p95 = card["cost"], card["p95_latency_ms"]
    if not is_cost(cost):
        raise ValidationError(f"'cost' must be a finite number >= 0, got {cost}")
    if not 0 <= p95 <= _MAX_INT:
        raise ValidationError(f"'p95_latency_ms' must be between 0 and {_MAX_INT}, got {p95}")
    meta = card["metadata"]
    texts: list[tuple[str, str]] = [
        ("agent_id", card["agent_id"]),
        ("name", card["name"]),
        ("description", card["description"]),
        ("tenant", card["tenant"]),
        ("invocation_topic", card["invocation_topic"] or ""),
        *(("capabilities", c) for c in card["capabilities"]),
        *(("modalities", m) for m in card["modalities"]),
        *(("examples", e) for e in card["examples"]),
        *(("metadata", t) for kv in meta.items() for t in kv),
    ]
    for field, text in texts:
        if "\x00" in text:
            raise ValidationError(f"{field!r} contains a NUL character")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValidationError(f"{field!r} is not valid Unicode (a lone surrogate)") from None


def read_cards(path: Path, strict: bool = True) -> Iterator[AgentCard]:
    """Cards from a JSON-lines file; a bad line raises with its line number (``strict``: see
    :func:`card_from_json`)."""
    for _, card in _numbered_cards(path, strict):
        yield card


def read_card_file(path: Path, one_per_agent: bool = False, strict: bool = True) -> list[AgentCard]:
    """Every card of a JSON-lines file (:func:`read_cards`); a file without any is an error, and with
    ``one_per_agent`` so is a second card of one agent (registered, it would replace the first on the
    compacted registry topic). Without ``strict``, fields a card does not have are ignored (for
    evaluation files; registering refuses them, as a typo would be lost).

    Raises:
        ValidationError: A bad line, no card, or (``one_per_agent``) an agent id twice, naming both lines.
    """
    cards: list[AgentCard] = []
    first: dict[str, int] = {}
    for lineno, card in _numbered_cards(path, strict):
        seen = first.setdefault(card["agent_id"], lineno)
        if one_per_agent and seen != lineno:
            raise ValidationError(
                f"{path}: agent {card['agent_id']!r} appears twice (lines {seen} and {lineno}); give one card per agent"
            )
        cards.append(card)
    if not cards:
        raise ValidationError(f"no agent cards in {path}")
    return cards


def _numbered_cards(path: Path, strict: bool = True) -> Iterator[tuple[int, AgentCard]]:
    """(line number, card) for each non-blank line; a bad line raises with its number."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValidationError(f"{path}:{lineno}: not UTF-8: {exc.reason} at byte {exc.start}") from None
            if not line.strip():
                continue
            try:
                yield lineno, card_from_json(json.loads(line), strict=strict)
            except json.JSONDecodeError as exc:
                raise ValidationError(f"{path}:{lineno}: not JSON: {exc.msg}") from exc
            except RecursionError:
                raise ValidationError(f"{path}:{lineno}: not JSON: nested too deeply") from None
            except ValidationError as exc:
                raise ValidationError(f"{path}:{lineno}: {exc}") from exc


def card_text(card: AgentCard) -> str:
    """What the text encoder sees of a card."""
    parts = [f"{card['name']}: {card['description']}"]
    if card["capabilities"]:
        parts.append("Capabilities: " + ", ".join(card["capabilities"]) + ".")
    parts.extend(card["examples"][:5])
    return " ".join(parts)
