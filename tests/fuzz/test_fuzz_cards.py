"""Agent cards from hostile sources: JSON lines (``aos agents register``) and the registry topic.

Arbitrary JSON gives a card or a ValidationError, and a card it gives is one every consumer can
use: it encodes as an AgentCard, and PostgreSQL could store it (no NUL, no NaN in its JSON). A
registry record (any key, any value) gives the agent id to store, or a ValidationError that the
record_card stage dead-letters; the registry view skips undecodable values without failing.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from aos_gateway.contracts.records import AGENT_CARD, AgentCard
from aos_gateway.contracts.schemas import contract
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.errors import SerializationError, ValidationError
from aos_gateway.matching.cards import card_from_json, card_text, check_card, read_cards
from aos_gateway.matching.index import ExactIndex
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.registry.store import agent_id_of
from aos_gateway.streams.registry_view import RegistryView
from tests.fuzz.strategies import FUZZ_TIMEOUT, any_float, any_text, avro_records, fuzz, json_values

pytestmark = FUZZ_TIMEOUT

CARDS = SingleObjectCodec(AGENT_CARD)
FIELDS = ["agent_id", "name", "description", "capabilities", "modalities", "examples", "tenant", "cost",
          "p95_latency_ms", "status", "invocation_topic", "metadata"]  # fmt: skip


def _usable(card: AgentCard) -> None:
    """A card every consumer can take: the contract, the stores' JSON, the text the encoder embeds."""
    assert CARDS.decode(CARDS.encode(card))["agent_id"] == card["agent_id"]
    text = json.dumps(card, allow_nan=False)  # PostgreSQL's jsonb has no NaN, and no \u0000 ...
    assert "\\u0000" not in text  # ... PostgreSQL's text and jsonb refuse NUL
    card_text(card).encode("utf-8")


def card_objects() -> st.SearchStrategy[Any]:
    """Card-shaped JSON objects (each field maybe missing, maybe of any type), or any JSON at all."""
    fields = {
        "agent_id": st.one_of(st.just("weather"), any_text, json_values),
        "name": st.one_of(any_text, json_values),
        "description": any_text,
        "capabilities": st.one_of(st.lists(any_text, max_size=3), json_values),
        "modalities": st.lists(any_text, max_size=3),
        "examples": st.lists(any_text, max_size=3),
        "tenant": st.one_of(any_text, json_values),
        "cost": st.one_of(any_float, st.integers(), any_text, json_values),
        "p95_latency_ms": st.one_of(st.integers(-(2**70), 2**70), any_float, any_text),
        "status": st.one_of(st.sampled_from(["ACTIVE", "degraded", "Inactive", "DEAD"]), json_values),
        "invocation_topic": st.one_of(st.none(), any_text, json_values),
        "metadata": st.one_of(st.dictionaries(any_text, json_values, max_size=3), json_values),
    }
    optional = {k: v for k, v in fields.items() if k != "agent_id"}
    card = st.fixed_dictionaries({"agent_id": fields["agent_id"]}, optional=optional)
    return st.one_of(card, json_values)


@fuzz(200)
@given(card_objects())
def test_arbitrary_json_is_a_usable_card_or_a_validation_error(obj: Any) -> None:
    try:
        card = card_from_json(obj, now_ms=1)
    except ValidationError:
        return
    _usable(card)


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ('{"agent_id": "a", "p95_latency_ms": 1e999}', "must be numbers"),  # int(inf): OverflowError
        ('{"agent_id": "a", "p95_latency_ms": 1e30}', "between 0 and"),  # no Avro int
        ('{"agent_id": "a", "p95_latency_ms": 2147483648}', "between 0 and"),
        ('{"agent_id": "a", "cost": NaN}', "finite"),
        ('{"agent_id": "a", "cost": Infinity}', "finite"),
        ('{"agent_id": "\\ud800"}', "lone surrogate"),
        ('{"agent_id": "a", "metadata": {"k": "\\udfff"}}', "lone surrogate"),
        ('{"agent_id": "a", "name": "x\\u0000y"}', "NUL"),
    ],
)
def test_cards_the_contract_or_the_stores_cannot_hold_are_refused(line: str, why: str) -> None:
    """Regressions: each of these was a card (or an OverflowError) that failed later, in the Avro
    encoder (a traceback from `aos agents register`) or in PostgreSQL (the registry stage retried it forever)."""
    with pytest.raises(ValidationError, match=why):
        card_from_json(json.loads(line))


@fuzz(80)
@given(st.lists(st.one_of(st.binary(max_size=80), card_objects().map(lambda o: json.dumps(o).encode())), max_size=5))
def test_a_jsonl_file_of_anything_gives_cards_or_a_validation_error(tmp_path_factory: Any, lines: list[bytes]) -> None:
    path = Path(tmp_path_factory.mktemp("cards")) / "agents.jsonl"
    path.write_bytes(b"\n".join(lines))
    try:
        cards = list(read_cards(path))
    except ValidationError as exc:
        assert str(exc).startswith(f"{path}:")
        return
    for card in cards:
        _usable(card)


def test_a_file_that_is_not_utf8_or_nested_too_deeply_names_the_line(tmp_path: Path) -> None:
    """Regressions: UnicodeDecodeError and RecursionError escaped read_cards()."""
    path = tmp_path / "agents.jsonl"
    path.write_bytes(b'{"agent_id": "a"}\n\xff\xfe\n')
    with pytest.raises(ValidationError, match=r"agents.jsonl:2: not UTF-8"):
        list(read_cards(path))
    path.write_bytes(b"[" * 100_000)
    with pytest.raises(ValidationError, match=r"agents.jsonl:1: not JSON: nested too deeply"):
        list(read_cards(path))


# -- the registry topic --


def registry_cards() -> st.SearchStrategy[dict[str, Any]]:
    """Any AgentCard a producer can write: NaN costs, NUL characters, negative latencies included."""
    return avro_records(contract(AGENT_CARD).parsed)


@fuzz(300)
@given(st.one_of(st.none(), st.binary(max_size=40), any_text.map(lambda t: t.encode("utf-8", "surrogatepass"))),
       st.one_of(st.none(), registry_cards()))  # fmt: skip
def test_a_registry_record_gives_a_storable_agent_id_or_a_validation_error(
    key: bytes | None, card: dict[str, Any] | None
) -> None:
    try:
        agent_id = agent_id_of(key, card)  # type: ignore[arg-type]
    except ValidationError:
        return
    assert key is not None and agent_id.encode("utf-8") == key and "\x00" not in agent_id
    if card is not None:
        assert card["agent_id"] == agent_id
        _usable(card)  # type: ignore[arg-type]


@fuzz(200)
@given(registry_cards())
def test_a_card_whose_key_matches_is_checked_like_a_json_card(card: dict[str, Any]) -> None:
    key = card["agent_id"].encode("utf-8")
    try:
        agent_id_of(key, card)  # type: ignore[arg-type]
    except ValidationError:
        return
    _usable(card)  # type: ignore[arg-type]


def test_registry_keys_and_cards_postgresql_would_refuse_are_validation_errors() -> None:
    """Regressions: a tombstone whose key was not UTF-8 raised UnicodeDecodeError outside the stage's
    per-event try (a crash loop); a card with a NUL or a NaN went to PostgreSQL, which refused it on
    every retry (the registry stage stuck on that record for ever)."""
    ok: dict[str, Any] = {
        "agent_id": "a", "name": "A", "description": "", "capabilities": [], "modalities": ["text"],
        "examples": [], "tenant": "public", "cost": 0.0, "p95_latency_ms": 10, "status": "ACTIVE",
        "invocation_topic": None, "updated_at": 1, "metadata": {},
    }  # fmt: skip
    assert agent_id_of(b"a", ok) == "a" and agent_id_of(b"a", None) == "a"  # type: ignore[arg-type]
    for key, card, why in [
        (b"\xff", None, "not UTF-8"),
        (b"a\x00", None, "NUL"),
        (None, ok, "without a key"),
        (b"b", ok, "does not match"),
        (b"a", {**ok, "name": "A\x00"}, "NUL"),
        (b"a", {**ok, "metadata": {"k\x00": "v"}}, "NUL"),
        (b"a", {**ok, "cost": math.nan}, "finite"),
        (b"a", {**ok, "p95_latency_ms": -1}, "between"),
    ]:
        with pytest.raises(ValidationError, match=why):
            agent_id_of(key, card)  # type: ignore[arg-type]


class _Msg:
    def __init__(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        self._key, self._value, self._offset = key, value, offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def offset(self) -> int:
        return self._offset


def _embed(texts: list[str]) -> FloatArray:
    out = np.zeros((len(texts), 8), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, len(t) % 8] = 1.0
    return out


@fuzz(100)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.binary(max_size=12)),
            st.one_of(st.none(), st.binary(max_size=120), registry_cards().map(CARDS.encode)),
        ),
        max_size=6,
    )
)
def test_the_registry_view_skips_what_it_cannot_decode_or_use(records: list[tuple[bytes | None, bytes | None]]) -> None:
    index = ExactIndex(8)
    view = RegistryView({}, "aos.agents.v1", index, _embed, CARDS)
    view.apply([_Msg(k, v, i) for i, (k, v) in enumerate(records)])
    refused = 0
    for _, value in records:
        if value is not None:
            try:
                check_card(CARDS.decode(value))
            except (SerializationError, ValidationError):
                refused += 1
    assert view.skipped == refused
    assert len(index) <= len(records)
