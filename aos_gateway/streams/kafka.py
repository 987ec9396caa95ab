"""confluent-kafka helpers shared by the CLI, the client and the workers: admin, producer, topics."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from aos_gateway.errors import KafkaError
from aos_gateway.settings import KafkaSettings
from aos_gateway.topics import ALL, TopicSpec


class RdkafkaLog:
    """librdkafka's log lines through Python logging (the ``logger`` config entry), instead of raw
    ``%3|...|FAIL|...`` lines on stderr: with Kafka down, a CLI command printed a hundred of them
    before its one-line error.

    confluent-kafka hands the lines over on ``poll``/``flush`` (already mapped to Python levels) and
    calls :meth:`log`. By default (CLI commands, agents) a line is logged at INFO at most, so it shows
    only with ``AOS_LOG_LEVEL=INFO`` or ``DEBUG``; the worker (:func:`librdkafka_worker_mode`) keeps
    librdkafka's own level. Either way each client and facility (``FAIL``, ``ERROR``, ...) gets one
    line per ``window_s`` at that level; the others within the window are DEBUG and counted in the next.
    """

    def __init__(self, logger: logging.Logger, window_s: float = 60.0) -> None:
        self.logger = logger
        self.window_s = window_s
        self.worker = False
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], tuple[float, int]] = {}

    def log(self, level: int, msg: str, *args: Any) -> None:
        fac, name = (str(args[0]), str(args[1])) if len(args) >= 2 else ("", "")
        if not self.worker:
            level = min(level, logging.INFO)
        now = time.monotonic()
        with self._lock:
            last, held = self._last.get((name, fac), (-self.window_s, 0))
            if now - last < self.window_s:
                self._last[(name, fac)] = (last, held + 1)
                self.logger.debug(msg, *args)
                return
            self._last[(name, fac)] = (now, 0)
        if held:
            msg = f"{msg} ({held} more like it in the last {self.window_s:.0f}s at debug level)"
        self.logger.log(level, msg, *args)


#: the one librdkafka log sink of the process (its counters span the clients)
LIBRDKAFKA_LOG = RdkafkaLog(logging.getLogger("aos_gateway.librdkafka"))


def librdkafka_worker_mode() -> None:
    """Keep librdkafka's own log levels (the worker's log shows warnings and errors, bounded)."""
    LIBRDKAFKA_LOG.worker = True


def client_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """The settings every confluent-kafka client of the gateway starts from (logs through :data:`LIBRDKAFKA_LOG`)."""
    conf = kafka.librdkafka_config()
    conf["logger"] = LIBRDKAFKA_LOG
    conf.update(extra)
    return conf


def producer_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """An idempotent producer; murmur2 keys land on the partitions Java and Faust pick."""
    conf = client_config(kafka)
    conf.update(
        {
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": 2,
        }
    )
    conf.update(extra)
    return conf


def make_producer(kafka: KafkaSettings, **extra: Any) -> Producer:
    return Producer(producer_config(kafka, **extra))


def consumer_config(kafka: KafkaSettings, group: str | None = None, **extra: Any) -> dict[str, Any]:
    conf = client_config(kafka)
    conf.update(
        {
            "group.id": group or f"aos-reader-{uuid.uuid4().hex[:12]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    conf.update(extra)
    return conf


def poll_batch(consumer: Any, max_messages: int, timeout: float) -> list[Any]:
    """Up to ``max_messages``, returning as soon as one is there.

    ``Consumer.consume(n, timeout)`` waits for all n messages or the whole timeout, which adds
    the timeout to every message's latency under light load; this waits only for the first.
    """
    first = consumer.poll(timeout)
    if first is None:
        return []
    return [first, *consumer.consume(num_messages=max_messages - 1, timeout=0)] if max_messages > 1 else [first]


def watermarks(consumer: Any, topic: str, partition: int, timeout: float = 10.0) -> tuple[int, int]:
    """Low and high offsets of a partition, retried while the broker settles (new topics
    answer NOT_LEADER_FOR_PARTITION for a moment after creation)."""

    from confluent_kafka import TopicPartition

    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            if not getattr(err, "retriable", lambda: False)() and err.name() not in (
                "NOT_LEADER_FOR_PARTITION",
                "LEADER_NOT_AVAILABLE",
                "UNKNOWN_TOPIC_OR_PART",
                "_TIMED_OUT",
            ):
                raise KafkaError(f"cannot read offsets of {topic}[{partition}]: {err}") from exc
            if time.monotonic() > deadline:
                raise KafkaError(f"cannot read offsets of {topic}[{partition}]: {err}") from exc
            time.sleep(0.2)


def end_offsets(consumer: Any, topic: str, partitions: Iterable[int], timeout: float) -> dict[int, int]:
    """The high watermark of every partition that holds records now: where "caught up" is."""
    ends: dict[int, int] = {}
    for p in partitions:
        low, high = watermarks(consumer, topic, p, timeout)
        if high > low:
            ends[p] = high
    return ends


def strike_reached(ends: dict[int, int], msgs: Iterable[Any]) -> None:
    """Remove from ``ends`` the partitions whose last record before the end was read."""
    for m in msgs:
        part, off = m.partition(), m.offset()
        if part is not None and part in ends and off is not None and off + 1 >= ends[part]:
            del ends[part]


def admin(kafka: KafkaSettings) -> AdminClient:
    return AdminClient(client_config(kafka))


def existing_topics(kafka: KafkaSettings, timeout: float | None = None) -> set[str]:
    return set(partition_counts(kafka, timeout))


def partition_counts(kafka: KafkaSettings, timeout: float | None = None) -> dict[str, int]:
    """Each existing topic's number of partitions."""
    try:
        md = admin(kafka).list_topics(timeout=timeout or kafka.request_timeout_s)
    except KafkaException as exc:
        raise KafkaError(
            f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc.args[0]}; is the stack up? run `aos dev up`"
        ) from exc
    return {name: len(t.partitions) for name, t in md.topics.items()}


def ensure_topics(kafka: KafkaSettings, specs: Iterable[TopicSpec] = ALL, partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet (idempotent); returns the names created."""
    specs = list(specs)
    have = existing_topics(kafka)
    todo = [s for s in specs if s.name not in have]
    if not todo:
        return []
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partitions_for(partitions),
            replication_factor=1,
            config=s.configs(),
        )
        for s in todo
    ]
    created: list[str] = []
    client = admin(kafka)  # keep a reference: the futures fail if the client is collected
    for name, fut in client.create_topics(new, request_timeout=kafka.request_timeout_s).items():
        try:
            fut.result()
            created.append(name)
        except KafkaException as exc:
            err = exc.args[0]
            if getattr(err, "name", lambda: "")() == "TOPIC_ALREADY_EXISTS":
                continue
            raise KafkaError(f"cannot create topic {name}: {err}") from exc
    return created


def read_to_end(kafka: KafkaSettings, topic: str, timeout: float = 30.0) -> list[Any]:
    """Every message on a topic now, from the beginning to the current end (one pass)."""
    return read_range(kafka, topic, lambda marks: {p: low for p, (low, _high) in marks.items()}, timeout)[0]


#: where to start reading each partition, given each partition's (low, high) watermarks
StartAt = Callable[[dict[int, tuple[int, int]]], dict[int, int]]


def read_range(
    kafka: KafkaSettings, topic: str, start_at: StartAt, timeout: float = 30.0
) -> tuple[list[Any], dict[int, tuple[int, int]]]:
    """The messages of each partition from ``start_at(watermarks)[p]`` (clipped to the partition's
    offsets; a partition it leaves out is not read) to its current end, and the watermarks read
    to (partition -> (low, high): ``high`` is where the next read starts)."""

    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(consumer_config(kafka))
    try:
        md = consumer.list_topics(topic, timeout=kafka.request_timeout_s)
    except KafkaException as exc:
        consumer.close()
        raise KafkaError(f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc.args[0]}") from exc
    try:
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None:
            raise KafkaError(f"topic {topic} does not exist; run `aos topics create`")
        marks = {p: watermarks(consumer, topic, p, kafka.request_timeout_s) for p in sorted(meta.partitions)}
        starts = start_at(dict(marks))
        targets: dict[int, int] = {}
        assign = []
        for p, (low, high) in marks.items():
            if p not in starts:
                continue
            first = min(max(starts[p], low), high)
            if first < high:
                targets[p] = high
                assign.append(TopicPartition(topic, p, first))
        out: list[Any] = []
        if not assign:
            return out, marks
        consumer.assign(assign)
        deadline = time.monotonic() + timeout
        while targets and time.monotonic() < deadline:
            good = [m for m in poll_batch(consumer, 1000, 0.5) if m.error() is None]
            out.extend(good)
            strike_reached(targets, good)
        if targets:
            raise KafkaError(f"timed out reading {topic} to its end")
        return out, marks
    finally:
        consumer.close()
