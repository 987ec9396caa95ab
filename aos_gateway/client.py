"""GatewayClient: submit tasks to the gateway and get their plans back, from Python.

The client starts reading the result topic at its current end *before* it sends anything,
so no result can slip past it; results are kept by task id until asked for.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaException, TopicPartition

from aos_gateway import topics
from aos_gateway.contracts.records import (
    DEAD_LETTER,
    EXECUTION_RESULT,
    PLAN,
    TASK_REQUEST,
    DeadLetter,
    ExecutionResult,
    MediaPart,
    Plan,
    TaskRequest,
)
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.errors import AosError, DeadLetteredError, KafkaError, ResultTimeoutError
from aos_gateway.settings import Settings, get_settings
from aos_gateway.streams.kafka import consumer_config, make_producer, poll_batch, read_to_end, watermarks


def new_task(
    text: str | None = None,
    *,
    task_id: str | None = None,
    tenant: str = "default",
    image: MediaPart | None = None,
    audio: MediaPart | None = None,
    required_capabilities: Sequence[str] = (),
    max_cost: float | None = None,
    max_latency_ms: int | None = None,
    top_k: int | None = None,
    reply_to: str | None = None,
    metadata: dict[str, str] | None = None,
) -> TaskRequest:
    """A TaskRequest with a fresh id and the current time."""
    return TaskRequest(
        task_id=task_id or uuid.uuid4().hex,
        tenant=tenant,
        submitted_at=int(time.time() * 1000),
        text=text,
        image=image,
        audio=audio,
        required_capabilities=list(required_capabilities),
        max_cost=max_cost,
        max_latency_ms=max_latency_ms,
        top_k=top_k,
        reply_to=reply_to,
        trace_id=uuid.uuid4().hex,
        metadata=dict(metadata or {}),
    )


class ResultReader:
    """Reads a result topic in a thread and keeps its records (plans, or execution results) by task id."""

    def __init__(self, settings: Settings, topic: str, from_beginning: bool = False, record: str = PLAN) -> None:
        self._codec: RecordCodec = codec_for(record, topic, settings.schema_registry)
        self._what = "plan" if record == PLAN else "result"
        self._consumer = Consumer(consumer_config(settings.kafka))
        self._topic = topic
        self._plans: dict[str, Any] = {}
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self.errors = 0
        try:
            md = self._consumer.list_topics(topic, timeout=settings.kafka.request_timeout_s)
        except KafkaException as exc:
            raise KafkaError(f"cannot reach Kafka at {settings.kafka.bootstrap_servers}: {exc}") from exc
        meta = md.topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            raise KafkaError(f"topic {topic} does not exist; run `aos topics create` (or `aos dev up`)")
        start = OFFSET_BEGINNING if from_beginning else OFFSET_END
        parts = [TopicPartition(topic, p, start) for p in sorted(meta.partitions)]
        if not from_beginning:
            # resolve "end" now, so results produced before the first poll are not skipped
            for tp in parts:
                _, high = watermarks(self._consumer, topic, tp.partition, settings.kafka.request_timeout_s)
                tp.offset = high
        self._consumer.assign(parts)
        self._thread = threading.Thread(target=self._run, name="aos-results", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            msgs = poll_batch(self._consumer, 500, 0.2)
            got: list[Any] = []
            for m in msgs:
                if m.error() is not None or m.value() is None:
                    continue
                try:
                    got.append(self._codec.decode(m.value()))
                except AosError:
                    self.errors += 1
            if got:
                with self._cond:
                    for plan in got:
                        self._plans.setdefault(plan["task_id"], plan)
                    self._cond.notify_all()
        self._consumer.close()

    def wait(self, task_id: str, timeout: float) -> Any:
        deadline = time.monotonic() + timeout
        with self._cond:
            while task_id not in self._plans:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ResultTimeoutError(
                        f"no {self._what} for task {task_id} within {timeout:g}s; is a worker running? (`aos worker`)"
                    )
                self._cond.wait(left)
            return self._plans.pop(task_id)  # handed over: a long-lived client keeps nothing

    def drain(self) -> list[Any]:
        with self._cond:
            out = list(self._plans.values())
            self._plans.clear()
            return out

    def next_batch(self, timeout: float) -> list[Any]:
        with self._cond:
            if not self._plans:
                self._cond.wait(timeout)
            out = list(self._plans.values())
            self._plans.clear()
            return out

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class GatewayClient:
    """Submit tasks and await their plans. Use as a context manager."""

    def __init__(self, settings: Settings | None = None, result_topic: str = topics.PLANS.name) -> None:
        self.settings = settings or get_settings()
        self._producer = make_producer(self.settings.kafka)
        self._codec = codec_for(TASK_REQUEST, topics.TASKS.name, self.settings.schema_registry)
        self._result_topic = result_topic
        self._reader: ResultReader | None = None
        self._exec_reader: ResultReader | None = None
        self._delivery_errors: list[str] = []

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def listen(self, executions: bool = False) -> None:
        """Start reading results now: plans (and, with ``executions``, execution results) produced
        from here on can be awaited."""
        self._ensure_reader()
        if executions:
            self._ensure_exec_reader()

    def _ensure_exec_reader(self) -> ResultReader:
        if self._exec_reader is None:
            self._exec_reader = ResultReader(self.settings, topics.RESULTS.name, record=EXECUTION_RESULT)
        return self._exec_reader

    def _ensure_reader(self) -> ResultReader:
        if self._reader is None:
            self._reader = ResultReader(self.settings, self._result_topic)
        return self._reader

    def _on_delivery(self, err: Any, msg: Any) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def submit(self, task: TaskRequest | str | None = None, *, listen: bool = True, **fields: Any) -> str:
        """Send a task (a TaskRequest, or text and/or media plus new_task's fields); returns its id."""
        if listen:
            self._ensure_reader()  # before the task is stamped: its latency starts at the send
        req = task if isinstance(task, dict) else new_task(task, **fields)
        value = self._codec.encode(req)
        self._producer.produce(
            topics.TASKS.name, key=req["task_id"].encode(), value=value, on_delivery=self._on_delivery
        )
        self._producer.poll(0)
        return req["task_id"]

    def flush(self, timeout: float = 10.0) -> None:
        left = self._producer.flush(timeout)
        if left:
            raise KafkaError(f"{left} tasks not delivered within {timeout:g}s; is Kafka up? (`aos dev status`)")
        if self._delivery_errors:
            errs, self._delivery_errors = self._delivery_errors, []
            raise KafkaError(f"{len(errs)} tasks failed to send: {errs[0]}")

    def wait(self, task_id: str, timeout: float = 30.0) -> Plan:
        """The plan of a submitted task.

        Raises:
            DeadLetteredError: No plan came within ``timeout`` and a stage refused the task (the
                dead letter's stage and reason in the message).
            ResultTimeoutError: No plan came within ``timeout``.
        """
        return self._await(self._ensure_reader, task_id, timeout)  # type: ignore[no-any-return]

    def wait_execution(self, task_id: str, timeout: float = 60.0) -> ExecutionResult:
        """The final outcome of running a task's plan (``aos.results.v1``); call :meth:`listen`
        with ``executions=True`` before submitting, or results that arrive first are missed.
        Raises as :meth:`wait` does."""
        return self._await(self._ensure_exec_reader, task_id, timeout)  # type: ignore[no-any-return]

    def _await(self, reader: Callable[[], ResultReader], task_id: str, timeout: float) -> Any:
        """Flush, then the task's record from ``reader()``; a timeout names the task's dead letter if
        a stage refused the task (or its plan)."""
        self.flush()
        try:
            return reader().wait(task_id, timeout)
        except ResultTimeoutError:
            self._raise_if_dead_lettered(task_id)
            raise

    def _raise_if_dead_lettered(self, task_id: str) -> None:
        """After a wait timed out: the task's latest dead letter, if a stage refused it (or its plan)."""
        try:
            found = [d for d in read_dead_letters(self.settings) if d["task_id"] == task_id]
        except AosError:
            return  # the timeout says enough
        if found:
            dl = found[-1]
            raise DeadLetteredError(
                f"task {task_id} was refused at stage {dl['stage']}: {dl['reason']} "
                f"(`aos deadletter list --stage {dl['stage']}`)"
            )

    def submit_and_wait(self, text: str | None, timeout: float = 30.0, **fields: Any) -> Plan:
        return self.wait(self.submit(text, **fields), timeout)

    def close(self) -> None:
        try:
            self._producer.flush(5)
        finally:
            for reader in (self._reader, self._exec_reader):
                if reader is not None:
                    reader.close()


def read_dead_letters(settings: Settings) -> list[DeadLetter]:
    """Every dead letter on ``aos.deadletter.v1``, in the order they failed (undecodable ones left out)."""
    codec = codec_for(DEAD_LETTER, topics.DEADLETTER.name, settings.schema_registry)
    out: list[DeadLetter] = []
    for m in read_to_end(settings.kafka, topics.DEADLETTER.name):
        if m.value() is None:
            continue
        try:
            out.append(codec.decode(m.value()))  # type: ignore[arg-type]
        except AosError:
            continue
    # the topic may have several partitions: show them in the order they failed
    out.sort(key=lambda d: (d["failed_at"], d["source_topic"], d["source_partition"], d["source_offset"]))
    return out


def follow_results(
    settings: Settings, from_beginning: bool = False, poll_s: float = 0.5, executions: bool = False
) -> Iterator[Any]:
    """Plans (or execution results) as they arrive on the result topic (forever)."""
    if executions:
        reader = ResultReader(settings, topics.RESULTS.name, from_beginning=from_beginning, record=EXECUTION_RESULT)
    else:
        reader = ResultReader(settings, topics.PLANS.name, from_beginning=from_beginning)
    try:
        while True:
            yield from reader.next_batch(poll_s)
    finally:
        reader.close()
