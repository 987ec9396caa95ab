"""The capability index, materialised from the compacted registry topic.

Every matcher reads ``aos.agents.v1`` from the beginning on start (no consumer group
offsets: the compacted topic *is* the state), embeds each card and keeps the index current
from then on. A tombstone removes the agent. Bad records are skipped here and logged; the
``record_card`` stage dead-letters them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from aos_gateway.contracts.wire import RecordCodec
from aos_gateway.errors import AosError
from aos_gateway.matching.cards import card_text
from aos_gateway.matching.index import ExactIndex
from aos_gateway.perception.vectors import FloatArray
from aos_gateway.streams.kafka import end_offsets, poll_batch, strike_reached

log = logging.getLogger("aos_gateway.registry")


class RegistryView:
    """A background thread that keeps an ExactIndex equal to the registry topic."""

    def __init__(
        self,
        consumer_conf: dict[str, Any],
        topic: str,
        index: ExactIndex,
        embed: Callable[[list[str]], FloatArray],
        codec: RecordCodec,
    ) -> None:
        self._conf = consumer_conf
        self._topic = topic
        self.index = index
        self._embed = embed
        self._codec = codec
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.skipped = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="aos-registry-view", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_caught_up(self, timeout: float) -> bool:
        """True once every card present at start is in the index."""
        return self._caught_up.wait(timeout)

    def _apply(self, msgs: list[Any]) -> None:
        latest: dict[str, Any] = {}
        for m in msgs:
            key = m.key().decode("utf-8", "replace") if m.key() else None
            if m.value() is None:
                if key:
                    latest[key] = None
                continue
            try:
                card = self._codec.decode(m.value())
            except AosError as exc:
                self.skipped += 1
                log.warning("registry: skipping offset %s: %s", m.offset(), exc)
                continue
            latest[card["agent_id"]] = card
        upserts = [(aid, c) for aid, c in latest.items() if c is not None]
        if upserts:
            vecs = self._embed([card_text(c) for _, c in upserts])
            for (_, card), vec in zip(upserts, vecs, strict=True):
                self.index.upsert(card, vec)
        for aid, c in latest.items():
            if c is None:
                self.index.remove(aid)

    def _run(self) -> None:
        try:
            consumer = Consumer(self._conf)
        except KafkaException as exc:
            self.error = exc
            return
        try:
            md = consumer.list_topics(self._topic, timeout=30)
            parts = sorted(md.topics[self._topic].partitions) if self._topic in md.topics else []
            consumer.assign([TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in parts])
            targets = end_offsets(consumer, self._topic, parts, 30)
            if not targets:
                self._caught_up.set()
            t0 = time.monotonic()
            while not self._stop.is_set():
                msgs = poll_batch(consumer, 500, 0.5)
                good = [m for m in msgs if m.error() is None]
                if good:
                    self._apply(good)
                    strike_reached(targets, good)
                if not targets and not self._caught_up.is_set():
                    log.info("registry: %d agents indexed in %.1fs", len(self.index), time.monotonic() - t0)
                    self._caught_up.set()
        except Exception as exc:  # the thread must report, not vanish
            self.error = exc
            log.exception("registry view stopped")
        finally:
            consumer.close()
