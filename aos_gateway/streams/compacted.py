"""A background thread that follows a compacted topic from its beginning.

A compacted topic *is* state (the registry, learned weights): each reader reads it from
offset 0 on start, without a consumer group, then keeps following it. ``wait_caught_up``
says when everything present at start has been applied. Subclasses implement ``apply``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from aos_gateway.streams.kafka import end_offsets, poll_batch, strike_reached

log = logging.getLogger("aos_gateway.streams")


class CompactedView:
    """Reads ``topic`` from the beginning in a daemon thread, passing batches to ``apply``."""

    name = "view"

    def __init__(self, consumer_conf: dict[str, Any], topic: str) -> None:
        self._conf = consumer_conf
        self._topic = topic
        self._caught_up = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def apply(self, msgs: list[Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"aos-{self.name}", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def wait_caught_up(self, timeout: float) -> bool:
        """True once every record present at start has been applied."""
        return self._caught_up.wait(timeout)

    def caught_up_message(self, seconds: float) -> str:
        return f"{self.name}: caught up in {seconds:.1f}s"

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
                    self.apply(good)
                    strike_reached(targets, good)
                if not targets and not self._caught_up.is_set():
                    log.info("%s", self.caught_up_message(time.monotonic() - t0))
                    self._caught_up.set()
        except Exception as exc:  # the thread must report, not vanish
            self.error = exc
            log.exception("%s stopped", self.name)
        finally:
            consumer.close()
