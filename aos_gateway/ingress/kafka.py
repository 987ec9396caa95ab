"""The ingress's Kafka side: one producer for tasks, one consumer for what comes back.

:class:`KafkaTaskSender` produces with the client's own building blocks (``new_task``'s record,
the tasks topic's codec, :func:`~aos_gateway.streams.kafka.make_producer`), and a POST is
answered only once the broker has acknowledged its task: a 202 means the task is durable.

:class:`KafkaRecordFeed` is the one consumer per server process. Like
:class:`~aos_gateway.client.ResultReader` it is assigned every partition of its topics from
their current end (resolved before the server accepts anything, so no record of an accepted task
can slip past it) and needs no consumer group; unlike it, it reads the plans, the execution
results and the dead letters with one consumer and hands each batch to a callback.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from aos_gateway import topics
from aos_gateway.contracts.records import DEAD_LETTER, EXECUTION_RESULT, PLAN, TASK_REQUEST, TaskRequest
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.errors import AosError, KafkaError
from aos_gateway.ingress.results import Batch, Kind
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import consumer_config, make_producer, poll_batch, watermarks

log = logging.getLogger("aos_gateway.ingress")

#: what the feed reads: topic -> (record, kind)
FEED_TOPICS: dict[str, tuple[str, Kind]] = {
    topics.PLANS.name: (PLAN, "plan"),
    topics.RESULTS.name: (EXECUTION_RESULT, "result"),
    topics.DEADLETTER.name: (DEAD_LETTER, "dead_letter"),
}


def _partitions(client: Any, topic: str, timeout: float, bootstrap: str) -> list[int]:
    try:
        md = client.list_topics(topic, timeout=timeout)
    except KafkaException as exc:
        raise KafkaError(f"cannot reach Kafka at {bootstrap}: {exc}") from exc
    meta = md.topics.get(topic)
    if meta is None or meta.error is not None or not meta.partitions:
        raise KafkaError(f"topic {topic} does not exist; run `aos topics create` (or `aos dev up`)")
    return sorted(meta.partitions)


class KafkaTaskSender:
    """Produces tasks; :meth:`send` returns once the broker has them."""

    def __init__(self, settings: Settings) -> None:
        # linger 0: every POST waits for its own acknowledgement, so waiting to batch would only add
        # latency; under load librdkafka still batches what queues up while a request is in flight
        self._producer = make_producer(settings.kafka, **{"linger.ms": 0})
        self._codec: RecordCodec = codec_for(TASK_REQUEST, topics.TASKS.name, settings.schema_registry)
        self._timeout = settings.ingress.send_timeout_s
        kafka = settings.kafka
        _partitions(self._producer, topics.TASKS.name, kafka.request_timeout_s, kafka.bootstrap_servers)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="aos-ingress-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.1)  # runs the delivery callbacks as soon as acknowledgements arrive

    async def send(self, task: TaskRequest) -> None:
        """Produce a task and wait for the broker's acknowledgement.

        Raises:
            KafkaError: the producer is full, the broker refused the task, or did not answer in time.
        """
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle(err: Any, _msg: Any) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        value = self._codec.encode(task)
        try:
            self._producer.produce(topics.TASKS.name, key=task["task_id"].encode(), value=value, on_delivery=settle)
        except BufferError:
            raise KafkaError("the producer's queue is full; try again shortly") from None
        except KafkaException as exc:
            raise KafkaError(f"Kafka refused the task: {exc.args[0]}") from exc
        try:
            await asyncio.wait_for(done, self._timeout)
        except TimeoutError:
            raise KafkaError(
                f"Kafka did not acknowledge the task within {self._timeout:g}s (it may still arrive)"
            ) from None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        left = self._producer.flush(5)
        if left:
            log.warning("%d tasks not acknowledged at shutdown", left)


def _settle(fut: asyncio.Future[None], err: Any) -> None:
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(KafkaError(f"Kafka refused the task: {err}"))


class KafkaRecordFeed:
    """One consumer over the plans, execution results and dead letters, from their current end."""

    def __init__(self, settings: Settings, feed_topics: dict[str, tuple[str, Kind]] | None = None) -> None:
        self._topics = feed_topics or FEED_TOPICS
        self._codecs: dict[str, tuple[RecordCodec, Kind]] = {
            topic: (codec_for(record, topic, settings.schema_registry), kind)
            for topic, (record, kind) in self._topics.items()
        }
        kafka = settings.kafka
        self._consumer = Consumer(consumer_config(kafka))
        parts: list[TopicPartition] = []
        for topic in self._topics:
            for p in _partitions(self._consumer, topic, kafka.request_timeout_s, kafka.bootstrap_servers):
                # resolve "end" now: records produced before the first poll are not skipped
                _, high = watermarks(self._consumer, topic, p, kafka.request_timeout_s)
                parts.append(TopicPartition(topic, p, high))
        self._consumer.assign(parts)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self, deliver: Callable[[Batch], None]) -> None:
        """Read in a thread; ``deliver`` gets every batch of decoded records (from that thread)."""
        self._thread = threading.Thread(target=self._run, args=(deliver,), name="aos-ingress-feed", daemon=True)
        self._thread.start()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self, deliver: Callable[[Batch], None]) -> None:
        try:
            while not self._stop.is_set():
                batch: Batch = []
                for m in poll_batch(self._consumer, 500, 0.2):
                    if m.error() is not None or m.value() is None:
                        continue
                    codec, kind = self._codecs[m.topic()]
                    try:
                        batch.append((kind, codec.decode(m.value())))
                    except AosError as exc:
                        self.errors += 1
                        log.warning("undecodable record on %s[%s]@%s: %s", m.topic(), m.partition(), m.offset(), exc)
                if batch:
                    deliver(batch)
        except Exception:
            log.exception("the result feed stopped")
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        else:
            self._consumer.close()
