"""confluent-kafka helpers shared by the CLI, the client and the workers: admin, producer, topics."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from aos_gateway.errors import KafkaError
from aos_gateway.settings import KafkaSettings
from aos_gateway.topics import ALL, TopicSpec


def producer_config(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """An idempotent producer; murmur2 keys land on the partitions Java and Faust pick."""
    conf = kafka.librdkafka_config()
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
    conf = kafka.librdkafka_config()
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
    import time

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
    return AdminClient(kafka.librdkafka_config())


def existing_topics(kafka: KafkaSettings, timeout: float | None = None) -> set[str]:
    try:
        md = admin(kafka).list_topics(timeout=timeout or kafka.request_timeout_s)
    except KafkaException as exc:
        raise KafkaError(
            f"cannot reach Kafka at {kafka.bootstrap_servers}: {exc.args[0]}; is the stack up? run `aos dev up`"
        ) from exc
    return set(md.topics)


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
            num_partitions=partitions if partitions and not s.compacted else s.partitions,
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
    import time

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
