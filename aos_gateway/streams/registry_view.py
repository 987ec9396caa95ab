"""The capability index, materialised from the compacted registry topic.

Every matcher reads ``aos.agents.v1`` from the beginning on start (no consumer group
offsets: the compacted topic *is* the state), embeds each card and keeps the index current
from then on. A tombstone removes the agent. Bad records are skipped here and logged; the
``record_card`` stage dead-letters them. With ``security.require_signed_cards`` a card that is not
signed by a key bound to its agent id (or tenant) is not indexed either: it is logged and counted
by reason (:mod:`aos_gateway.security.cards`), and the agent's earlier good card stays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast

from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError
from aos_gateway.matching.cards import card_text, check_card
from aos_gateway.matching.index import CapabilityIndex
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.streams.compacted import CompactedView

if TYPE_CHECKING:
    from aos_gateway.contracts.records import AgentCard
    from aos_gateway.security.cards import CardVerifier

log = logging.getLogger("aos_gateway.registry")


class RegistryView(CompactedView):
    """A background thread that keeps an index equal to the registry topic."""

    name = "registry view"

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topic: str,
        index: CapabilityIndex,
        embed: Callable[[list[str]], FloatArray],
        codec: RecordCodec,
        extra: list[tuple[CapabilityIndex, Callable[[list[str]], FloatArray]]] | None = None,
        verifier: CardVerifier | Literal["settings"] | None = "settings",
    ) -> None:
        """``verifier``: checks each card's signature (None: every card is taken); by default the
        process settings' (``security.require_signed_cards``, ``security.card_trust_file``)."""
        super().__init__(consumer_conf, topic)
        if verifier == "settings":
            from aos_gateway.security.cards import CardVerifier
            from aos_gateway.settings import get_settings

            verifier = CardVerifier.from_settings(get_settings())
        self.verifier: CardVerifier | None = verifier
        self.index = index
        self._embed = embed
        self._codec = codec
        # more vector spaces kept equal to the registry (e.g. the CLIP text space for image tasks)
        self._spaces = [(index, embed), *(extra or [])]
        self.skipped = 0
        # each indexed agent's capabilities, local whatever the index backend (the planner's fallbacks)
        self.capabilities: dict[str, tuple[str, ...]] = {}

    def caught_up_message(self, seconds: float) -> str:
        return f"registry: {len(self.index)} agents indexed in {seconds:.1f}s"

    def apply(self, msgs: list[Any]) -> None:
        latest: dict[str, Any] = {}
        for m in msgs:
            key = m.key().decode("utf-8", "replace") if m.key() else None
            if m.value() is None:
                if key:
                    latest[key] = None
                continue
            try:
                card = self._codec.decode(m.value())
                # a card the record_card stage dead-letters (a NaN cost, a NUL) is not indexed
                check_card(cast("AgentCard", card))
            except AosError as exc:
                self.skipped += 1
                log.warning("registry: skipping offset %s: %s", m.offset(), exc)
                continue
            if self.verifier is not None:
                reason = self.verifier.check(card, key)
                if reason is not None:
                    aid = card["agent_id"]
                    log.warning("registry: card of %r at offset %s not indexed: %s", aid, m.offset(), reason)
                    continue
            latest[card["agent_id"]] = card
        upserts = [(aid, c) for aid, c in latest.items() if c is not None]
        for aid, c in latest.items():
            if c is None:
                self.capabilities.pop(aid, None)
            else:
                self.capabilities[aid] = tuple(c["capabilities"])
        for index, embed in self._spaces:
            if upserts:
                vecs = embed([card_text(c) for _, c in upserts])
                for (_, card), vec in zip(upserts, vecs, strict=True):
                    index.upsert(card, vec)
            for aid, c in latest.items():
                if c is None:
                    index.remove(aid)
