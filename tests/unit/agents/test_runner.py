"""The SDK runner's serving loop on a fake broker: concurrency, commits, deadlines, stop, bad replies.

The fakes stand in for ``confluent_kafka.Consumer`` and the producer ``make_producer`` returns, so
these run without Kafka.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from aos_gateway import topics
from aos_gateway.agents.sdk import Agent, AgentRunner, Reply, Request
from aos_gateway.contracts.records import Invocation, InvocationResult
from aos_gateway.errors import AgentError, ConfigError
from aos_gateway.settings import AgentSdkSettings, Settings


class FakeMsg:
    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value

    def error(self) -> None:
        return None


class FakeConsumer:
    """One partition per topic; a paused partition's messages stay until it is resumed."""

    def __init__(self) -> None:
        self.msgs: deque[FakeMsg] = deque()
        self.next_offset: dict[str, int] = {}
        self.topics: list[str] = []
        self.paused: set[str] = set()
        self.ever_paused = False
        self.commits: list[tuple[str, int]] = []
        self.lock = threading.Lock()

    def push(self, topic: str, value: bytes) -> None:
        with self.lock:
            off = self.next_offset.get(topic, 0)
            self.next_offset[topic] = off + 1
            self.msgs.append(FakeMsg(topic, off, value))

    def subscribe(self, topics: list[str], **_kw: Any) -> None:
        self.topics = list(topics)

    def assignment(self) -> list[TopicPartition]:
        return [TopicPartition(t, 0) for t in self.topics]

    def pause(self, parts: list[TopicPartition]) -> None:
        self.paused |= {p.topic for p in parts}
        self.ever_paused = self.ever_paused or bool(parts)

    def resume(self, parts: list[TopicPartition]) -> None:
        self.paused -= {p.topic for p in parts}

    def _take(self) -> FakeMsg | None:
        with self.lock:
            for m in self.msgs:
                if m.topic() not in self.paused:
                    self.msgs.remove(m)
                    return m
        return None

    def poll(self, timeout: float = -1) -> FakeMsg | None:
        m = self._take()
        if m is None:
            time.sleep(min(max(timeout, 0), 0.01))
        return m

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMsg]:
        out = []
        while len(out) < num_messages and (m := self._take()) is not None:
            out.append(m)
        return out

    def commit(self, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        with self.lock:
            self.commits.extend((tp.topic, tp.offset) for tp in offsets)

    def committed_to(self, topic: str) -> int:
        with self.lock:
            return max((o for t, o in self.commits if t == topic), default=0)

    def close(self) -> None:
        pass


class FakeProducer:
    """Delivers on poll; refuses a record over ``max_bytes`` as librdkafka does (synchronously)."""

    def __init__(self, max_bytes: int = 1_000_000) -> None:
        self.max_bytes = max_bytes
        self.sent: list[tuple[str, bytes | None]] = []
        self.callbacks: list[Callable[[Any, Any], None]] = []
        self.lock = threading.Lock()

    def produce(
        self, topic: str, key: bytes | None = None, value: bytes | None = None, on_delivery: Any = None, **_kw: Any
    ) -> None:
        if value is not None and len(value) > self.max_bytes:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        with self.lock:
            self.sent.append((topic, value))
            if on_delivery is not None:
                self.callbacks.append(on_delivery)

    def poll(self, timeout: float = 0) -> int:
        with self.lock:
            cbs, self.callbacks = self.callbacks, []
        for cb in cbs:
            cb(None, None)
        return len(cbs)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class Broker:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.consumer = FakeConsumer()
        self.producer = FakeProducer()
        monkeypatch.setattr("confluent_kafka.Consumer", lambda *_a, **_k: self.consumer)
        monkeypatch.setattr("aos_gateway.streams.kafka.make_producer", lambda *_a, **_k: self.producer)
        monkeypatch.setattr("aos_gateway.streams.kafka.ensure_topics", lambda *_a, **_k: None)

    def results(self, runner: AgentRunner) -> dict[str, InvocationResult]:
        codec = runner.codecs["result"]
        with self.producer.lock:
            sent = list(self.producer.sent)
        out: dict[str, InvocationResult] = {}
        for topic, value in sent:
            if topic == topics.INVOCATION_RESULTS.name and value is not None:
                res: InvocationResult = codec.decode(value)  # type: ignore[assignment]
                out[res["invocation_id"]] = res
        return out

    def replies_to(self, runner: AgentRunner, iid: str) -> list[InvocationResult]:
        """Every reply sent for one invocation, in order."""
        codec = runner.codecs["result"]
        with self.producer.lock:
            sent = [v for t, v in self.producer.sent if t == topics.INVOCATION_RESULTS.name and v is not None]
        decoded: list[InvocationResult] = [codec.decode(v) for v in sent]  # type: ignore[misc]
        return [r for r in decoded if r["invocation_id"] == iid]

    def send(self, runner: AgentRunner, agent_id: str, iid: str, deadline_in_s: float = 60.0) -> None:
        inv = Invocation(
            invocation_id=iid,
            task_id=f"t-{iid}",
            plan_id="p1",
            tenant="public",
            step_id="s1",
            attempt=1,
            agent_id=agent_id,
            role=None,
            text=iid,
            inputs={},
            sent_at=int(time.time() * 1000),
            deadline_at=int((time.time() + deadline_in_s) * 1000),
            reply_to=topics.INVOCATION_RESULTS.name,
            trace_id=None,
            metadata={},
        )
        self.consumer.push(topics.invocation_topic(agent_id), runner.codecs["invocation"].encode(inv))


@pytest.fixture
def broker(monkeypatch: pytest.MonkeyPatch) -> Broker:
    return Broker(monkeypatch)


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """Holds the slow handlers until set (always set at the end, so no thread outlives the test long)."""
    ev = threading.Event()
    yield ev
    ev.set()


def wait_until(cond: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def settings(concurrency: int = 4, stop_grace_s: float = 10.0) -> Settings:
    return Settings(
        agents=AgentSdkSettings(concurrency=concurrency, heartbeat_interval_s=60, stop_grace_s=stop_grace_s)
    )


class Slow:
    """A handler that waits for the gate, counting how many run at once."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate, self.lock = gate, threading.Lock()
        self.now = self.most = 0
        self.started: list[str] = []

    def __call__(self, req: Request) -> str:
        with self.lock:
            self.started.append(req.text)
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            self.gate.wait(10)
            return "slow " + req.text
        finally:
            with self.lock:
                self.now -= 1


def stop_within(runner: AgentRunner, seconds: float) -> bool:
    th = threading.Thread(target=runner.stop, daemon=True)
    th.start()
    th.join(seconds)
    return not th.is_alive()


def test_a_slow_handler_does_not_hold_up_other_agents(broker: Broker, gate: threading.Event) -> None:
    """Regression (S2): the batch was handled with pool.map and not polled again until all was done."""
    slow = Agent(agent_id="slow", name="Slow", handler=Slow(gate))
    fast = Agent(agent_id="fast", name="Fast", handler=lambda r: r.text.upper())
    runner = AgentRunner([slow, fast], settings())
    broker.send(runner, "slow", "s1")
    broker.send(runner, "fast", "f1")
    runner.start()
    try:
        assert wait_until(lambda: "f1" in broker.results(runner), 3), "the fast agent waited for the slow one"
        assert broker.results(runner)["f1"]["output"] == "F1" and "s1" not in broker.results(runner)
        broker.send(runner, "fast", "f2")  # still served while the slow one runs
        assert wait_until(lambda: "f2" in broker.results(runner), 3)
        gate.set()
        assert wait_until(lambda: "s1" in broker.results(runner))
    finally:
        gate.set()
        runner.stop()
    assert runner.error is None and runner.handled == 3


def test_at_most_concurrency_invocations_run_and_the_rest_wait(broker: Broker, gate: threading.Event) -> None:
    handler = Slow(gate)
    runner = AgentRunner([Agent(agent_id="slow", name="Slow", handler=handler)], settings(concurrency=2))
    for i in range(5):
        broker.send(runner, "slow", f"s{i}")
    runner.start()
    try:
        assert wait_until(lambda: handler.now == 2)
        time.sleep(0.3)
        assert handler.most == 2 and broker.consumer.ever_paused
        gate.set()
        assert wait_until(lambda: len(broker.results(runner)) == 5)
        assert wait_until(lambda: broker.consumer.committed_to(topics.invocation_topic("slow")) == 5)
    finally:
        gate.set()
        runner.stop()
    assert handler.most == 2 and runner.error is None


def test_offsets_are_committed_only_up_to_the_first_unanswered_one(broker: Broker, gate: threading.Event) -> None:
    """At least once: the fast reply goes out at once, but its offset waits for the slow one before it."""
    slow_handler = Slow(gate)

    def handler(req: Request) -> str:
        return slow_handler(req) if req.text == "s0" else "quick"

    runner = AgentRunner([Agent(agent_id="mixed", name="M", handler=handler)], settings())
    topic = topics.invocation_topic("mixed")
    broker.send(runner, "mixed", "s0")
    broker.send(runner, "mixed", "q1")
    runner.start()
    try:
        assert wait_until(lambda: "q1" in broker.results(runner), 3)
        time.sleep(0.5)  # several commit rounds
        assert broker.consumer.committed_to(topic) == 0
        gate.set()
        assert wait_until(lambda: broker.consumer.committed_to(topic) == 2)
    finally:
        gate.set()
        runner.stop()


def test_an_invocation_whose_deadline_passes_while_queued_is_not_started(broker: Broker, gate: threading.Event) -> None:
    handler = Slow(gate)
    runner = AgentRunner([Agent(agent_id="slow", name="Slow", handler=handler)], settings(concurrency=1))
    topic = topics.invocation_topic("slow")
    broker.send(runner, "slow", "s0")
    broker.send(runner, "slow", "late", deadline_in_s=0.3)
    runner.start()
    try:
        assert wait_until(lambda: handler.now == 1)
        time.sleep(0.6)
        gate.set()
        assert wait_until(lambda: broker.consumer.committed_to(topic) == 2)
    finally:
        gate.set()
        runner.stop()
    assert handler.started == ["s0"] and runner.skipped_late == 1
    assert set(broker.results(runner)) == {"s0"}  # no reply: the dispatcher stopped waiting


def test_a_handler_stuck_past_its_deadline_is_answered_timed_out_and_frees_its_slot(
    broker: Broker, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: a handler that never returned kept its slot for good; with one slot the agent
    answered nothing more while it went on heartbeating."""
    monkeypatch.setattr("aos_gateway.agents.sdk.ABANDON_AFTER_S", 0.2)

    def handler(req: Request) -> str:
        if req.text == "stuck":
            gate.wait(10)
        return "done " + req.text

    runner = AgentRunner([Agent(agent_id="a", name="A", handler=handler)], settings(concurrency=1))
    broker.send(runner, "a", "stuck", deadline_in_s=0.3)
    broker.send(runner, "a", "next")
    runner.start()
    try:
        assert wait_until(lambda: "next" in broker.results(runner)), "the stuck handler kept the only slot"
        (timed_out,) = broker.replies_to(runner, "stuck")
        assert timed_out["status"] == "TIMED_OUT" and "abandoned" in (timed_out["error"] or "")
        assert broker.results(runner)["next"]["output"] == "done next"
        assert wait_until(lambda: broker.consumer.committed_to(topics.invocation_topic("a")) == 2)
        gate.set()  # the abandoned handler returns now: its result is dropped
        assert wait_until(lambda: not runner._abandoned)
        assert [r["status"] for r in broker.replies_to(runner, "stuck")] == ["TIMED_OUT"]
    finally:
        gate.set()
        runner.stop()
    assert runner.error is None and runner.abandoned == 1 and runner.handled == 1


def test_too_many_abandoned_handlers_stop_the_runner(
    broker: Broker, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("aos_gateway.agents.sdk.ABANDON_AFTER_S", 0.1)
    runner = AgentRunner([Agent(agent_id="a", name="A", handler=Slow(gate))], settings(concurrency=1))
    runner.max_abandoned = 2
    runner.start()
    try:
        for i in range(2):  # one at a time: each runs (in the only slot) before its deadline
            broker.send(runner, "a", f"s{i}", deadline_in_s=0.2)
            assert wait_until(lambda: runner.abandoned == i + 1)  # noqa: B023
        assert runner.wait(5), "the runner kept piling up stuck handlers"
        assert isinstance(runner.error, AgentError) and "2 abandoned handlers are still running" in str(runner.error)
    finally:
        gate.set()
        runner.stop()


def test_stop_starts_no_queued_invocation_and_does_not_wait_for_a_stuck_one(
    broker: Broker, gate: threading.Event
) -> None:
    """Regression (S2): Ctrl-C ran every queued 60 s invocation before exiting."""
    handler = Slow(gate)
    runner = AgentRunner([Agent(agent_id="slow", name="Slow", handler=handler)], settings(1, stop_grace_s=0.5))
    for i in range(3):
        broker.send(runner, "slow", f"s{i}")
    runner.start()
    assert wait_until(lambda: handler.now == 1)
    assert stop_within(runner, 5), "stop waited for the stuck handler"
    assert handler.started == ["s0"]
    assert broker.consumer.committed_to(topics.invocation_topic("slow")) == 0  # redelivered to the next runner


def test_a_reply_the_producer_refuses_fails_the_invocation_not_the_runner(broker: Broker) -> None:
    """Regression (S3): MSG_SIZE_TOO_LARGE raised out of the serving thread, which stopped the runner
    (and deregistered every agent of the process)."""
    broker.producer.max_bytes = 10_000

    def handler(req: Request) -> Reply | str:
        return Reply("ok", metadata={"blob": "y" * 20_000}) if req.text == "big" else "fine"

    runner = AgentRunner([Agent(agent_id="a", name="A", handler=handler)], settings())
    broker.send(runner, "a", "big")
    runner.start()
    try:
        assert wait_until(lambda: "big" in broker.results(runner), 3)
        broker.send(runner, "a", "next")
        assert wait_until(lambda: "next" in broker.results(runner), 3)
        assert wait_until(lambda: broker.consumer.committed_to(topics.invocation_topic("a")) == 2)
    finally:
        runner.stop()
    big = broker.results(runner)["big"]
    assert big["status"] == "FAILED" and "could not be sent" in (big["error"] or "")
    assert "MSG_SIZE_TOO_LARGE" in (big["error"] or "")
    assert broker.results(runner)["next"]["output"] == "fine" and runner.error is None


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (Reply(output=object()), "Reply.output must be str"),  # type: ignore[arg-type]
        (Reply("x", metadata={"confidence": 0.9}), "Reply.metadata must map str to str"),  # type: ignore[dict-item]
        (Reply("x", cost=float("nan")), "finite number >= 0, got nan"),
        ("x" * 5_000_000, "output too large: 5000000 bytes > "),
    ],
)
def test_a_bad_reply_fails_its_invocation_and_the_runner_goes_on(broker: Broker, reply: Reply | str, why: str) -> None:
    """Regression (S3): each of these stopped the runner (SerializationError, MSG_SIZE_TOO_LARGE)."""
    runner = AgentRunner(
        [Agent(agent_id="a", name="A", handler=lambda r: reply if r.text == "bad" else "fine")], settings()
    )
    broker.send(runner, "a", "bad")
    broker.send(runner, "a", "good")
    runner.start()
    try:
        assert wait_until(lambda: {"bad", "good"} <= set(broker.results(runner)), 3)
    finally:
        runner.stop()
    bad = broker.results(runner)["bad"]
    assert bad["status"] == "FAILED" and why in (bad["error"] or ""), bad["error"]
    assert broker.results(runner)["good"]["status"] == "SUCCEEDED" and runner.error is None


def test_a_failing_setup_names_the_agent(broker: Broker) -> None:
    """Regression (M13): "aos: unexpected error: RuntimeError: ..." without the agent."""

    def setup() -> None:
        raise RuntimeError("model file missing")

    runner = AgentRunner([Agent(agent_id="a", name="A", handler=lambda r: "", setup=setup)], settings())
    with pytest.raises(ConfigError, match=r"^agent a: setup failed: RuntimeError: model file missing$"):
        runner.start()
    runner.stop()
