"""The agent SDK: declare a card and a handler; the runner does the Kafka side.

    from aos_gateway.agents import Agent, Request

    def handle(req: Request) -> str:
        return req.text.upper()

    shout = Agent(agent_id="shout", name="Shouter", description="upper-cases text",
                  capabilities=["text.transform"], handler=handle)

``aos agents run mymodule:shout`` then, for as long as it runs:

- registers the card on ``aos.agents.v1`` (with its invocation topic) — matchers index it;
- consumes ``aos.agents.<agent id>.invocations`` (one consumer group per set of agents, so more
  processes running the same agents share the work), calls the handler in a thread pool, and
  replies on the invocation's ``reply_to`` topic (``aos.invocations.results.v1``);
- heartbeats every ``agents.heartbeat_interval_s`` on ``aos.agents.heartbeats.v1`` (the dispatcher
  skips agents whose heartbeat is stale);
- on SIGINT/SIGTERM finishes what it holds, heartbeats INACTIVE and deregisters the card (a
  tombstone on the compacted registry).

Delivery is at least once: an invocation redelivered after a crash or rebalance is answered from
the recent-replies memory instead of being run again (idempotent by invocation id). An invocation
that arrives after its deadline is not run: the dispatcher has stopped waiting for it.

A handler returns the output text (or a :class:`Reply` with a cost and metadata). Raising
:class:`~aos_gateway.errors.AgentError` (or any exception) fails the invocation and the dispatcher
may retry; :class:`~aos_gateway.errors.PermanentAgentError` says a retry on this agent is pointless.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.records import AgentCard, Heartbeat, Invocation, InvocationResult
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.errors import AosError, ConfigError, KafkaError, PermanentAgentError
from aos_gateway.settings import Settings

log = logging.getLogger("aos_gateway.agents")


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True)
class Request:
    """One invocation, as a handler sees it."""

    invocation: Invocation

    @property
    def text(self) -> str:
        return self.invocation["text"] or ""

    @property
    def role(self) -> str | None:
        """The part of the task this step serves (a clause of the task), when the planner knows it."""
        return self.invocation["role"]

    @property
    def inputs(self) -> dict[str, str]:
        """Outputs of the steps this one depends on, by step id."""
        return self.invocation["inputs"]

    @property
    def task_id(self) -> str:
        return self.invocation["task_id"]

    @property
    def tenant(self) -> str:
        return self.invocation["tenant"]

    @property
    def remaining_s(self) -> float:
        """Seconds left before the dispatcher stops waiting for this reply."""
        return max(0.0, (self.invocation["deadline_at"] - now_ms()) / 1000)


@dataclass
class Reply:
    output: str
    cost: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], "str | Reply"]


@dataclass
class Agent:
    """An agent: its card and its handler. ``setup`` (optional) runs once before serving,
    e.g. to load a model."""

    agent_id: str
    name: str
    handler: Handler
    description: str = ""
    capabilities: list[str] = field(default_factory=list)
    modalities: list[str] = field(default_factory=lambda: ["text"])
    examples: list[str] = field(default_factory=list)
    tenant: str = "public"
    cost: float = 0.0
    p95_latency_ms: int = 1000
    metadata: dict[str, str] = field(default_factory=dict)
    setup: Callable[[], None] | None = None

    def __post_init__(self) -> None:
        if not self.agent_id.strip():
            raise ConfigError("an agent needs a non-empty agent_id")
        if not self.name.strip():
            raise ConfigError(f"agent {self.agent_id}: a name is required")

    def card(self, updated_at: int) -> AgentCard:
        return AgentCard(
            agent_id=self.agent_id,
            name=self.name,
            description=self.description,
            capabilities=list(self.capabilities),
            modalities=list(self.modalities),
            examples=list(self.examples),
            tenant=self.tenant,
            cost=self.cost,
            p95_latency_ms=self.p95_latency_ms,
            status="ACTIVE",
            invocation_topic=topics.invocation_topic(self.agent_id),
            updated_at=updated_at,
            metadata=dict(self.metadata),
        )


def handle_one(agent: Agent, inv: Invocation) -> InvocationResult:
    """Run the handler on one invocation and build the reply (never raises)."""
    t0 = time.perf_counter()
    status: records.InvocationStatus = "SUCCEEDED"
    output: str | None = None
    error: str | None = None
    cost = agent.cost
    meta: dict[str, str] = {}
    try:
        out = agent.handler(Request(inv))
        if isinstance(out, Reply):
            output, meta = out.output, dict(out.metadata)
            cost = agent.cost if out.cost is None else out.cost
        elif isinstance(out, str):
            output = out
        else:
            raise TypeError(f"the handler returned {type(out).__name__}, not str or Reply")
    except Exception as exc:  # a handler's failure is a reply, not a crash
        status, error = "FAILED", f"{type(exc).__name__}: {exc}"[:2000]
        if isinstance(exc, PermanentAgentError):
            meta["retryable"] = "false"
        log.info("%s: invocation %s failed: %s", agent.agent_id, inv["invocation_id"], error)
    return InvocationResult(
        invocation_id=inv["invocation_id"],
        task_id=inv["task_id"],
        plan_id=inv["plan_id"],
        step_id=inv["step_id"],
        agent_id=agent.agent_id,
        status=status,
        output=output,
        error=error,
        latency_ms=int((time.perf_counter() - t0) * 1000),
        cost=cost,
        finished_at=now_ms(),
        source="agent",
        metadata=meta,
        trace_id=inv.get("trace_id"),
    )


class RecentReplies:
    """The last replies by invocation id: a redelivered invocation gets the same reply."""

    def __init__(self, size: int = 10_000) -> None:
        self.size = size
        self._d: OrderedDict[str, InvocationResult] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, invocation_id: str) -> InvocationResult | None:
        with self._lock:
            return self._d.get(invocation_id)

    def put(self, res: InvocationResult) -> None:
        with self._lock:
            self._d[res["invocation_id"]] = res
            self._d.move_to_end(res["invocation_id"])
            while len(self._d) > self.size:
                self._d.popitem(last=False)


class AgentRunner:
    """Serves one or more agents in this process until :meth:`stop`."""

    def __init__(
        self,
        agents: Sequence[Agent],
        settings: Settings,
        *,
        deregister_on_exit: bool = True,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> None:
        if not agents:
            raise ConfigError("no agents to run")
        ids = [a.agent_id for a in agents]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"agent ids must be unique: {sorted(i for i in set(ids) if ids.count(i) > 1)}")
        self.agents = {a.agent_id: a for a in agents}
        self.by_topic = {topics.invocation_topic(a.agent_id): a for a in agents}
        self.settings = settings
        self.deregister_on_exit = deregister_on_exit
        self.progress = progress
        self.instance_id = uuid.uuid4().hex[:12]
        self.group = "aos-agents-" + hashlib.sha1(",".join(sorted(ids)).encode()).hexdigest()[:16]
        reg = settings.schema_registry
        self.codecs: dict[str, RecordCodec] = {
            "invocation": codec_for(records.INVOCATION, "aos.agents.invocations", reg),
            "result": codec_for(records.INVOCATION_RESULT, topics.INVOCATION_RESULTS.name, reg),
            "card": codec_for(records.AGENT_CARD, topics.AGENTS.name, reg),
            "heartbeat": codec_for(records.HEARTBEAT, topics.HEARTBEATS.name, reg),
        }
        self.replies = RecentReplies()
        self.pool = ThreadPoolExecutor(max_workers=settings.agents.concurrency, thread_name_prefix="aos-agent")
        self._stop = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._producer: Any = None
        self._in_flight = 0
        self.handled = 0
        self.skipped_late = 0
        self.redelivered = 0
        self.error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        from aos_gateway.streams.kafka import ensure_topics, make_producer

        for a in self.agents.values():
            if a.setup is not None:
                self.progress(f"agents: setting up {a.agent_id}")
                a.setup()
        ensure_topics(
            self.settings.kafka,
            [topics.AGENTS, topics.HEARTBEATS, topics.INVOCATION_RESULTS]
            + [topics.invocation_spec(a) for a in self.agents],
        )
        self._producer = make_producer(self.settings.kafka)
        self._heartbeat("ACTIVE")
        t = now_ms()
        for a in self.agents.values():
            self._produce(topics.AGENTS.name, a.agent_id, self.codecs["card"].encode(a.card(t)))
        self._flush()
        self.progress(f"agents: registered {', '.join(self.agents)} (instance {self.instance_id})")
        for target, name in ((self._serve, "serve"), (self._beat, "heartbeat")):
            th = threading.Thread(target=self._guard(target), name=f"aos-agent-{name}", daemon=True)
            th.start()
            self._threads.append(th)

    def stop(self) -> None:
        """Finish in-flight invocations, say INACTIVE, deregister (if asked) and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for th in self._threads:
            th.join(timeout=30)
        self.pool.shutdown(wait=True)
        if self._producer is not None:
            self._heartbeat("INACTIVE")
            if self.deregister_on_exit:
                for a in self.agents:
                    self._produce(topics.AGENTS.name, a, None)
            self._flush()
            self.progress(
                f"agents: stopped{' and deregistered' if self.deregister_on_exit else ''} {', '.join(self.agents)}"
            )

    def request_stop(self) -> None:
        """Ask the runner to stop (safe from a signal handler); :meth:`stop` then cleans up."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until stopped (or a serving thread failed); True if stopped."""
        return self._stop.wait(timeout)

    def _guard(self, fn: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                self.error = exc
                log.exception("agent runner thread failed")
                self._stop.set()

        return run

    # -- kafka ---------------------------------------------------------------------------------
    def _produce(self, topic: str, key: str, value: bytes | None) -> None:
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value)
                self._producer.poll(0)
                return
            except BufferError:
                self._producer.poll(0.1)

    def _flush(self, timeout: float = 30.0) -> None:
        left = self._producer.flush(timeout)
        if left:
            raise KafkaError(f"{left} records not delivered within {timeout:.0f}s")

    def _heartbeat(self, status: records.AgentStatus) -> None:
        t = now_ms()
        interval = int(self.settings.agents.heartbeat_interval_s * 1000)
        for a in self.agents:
            hb = Heartbeat(
                agent_id=a,
                instance_id=self.instance_id,
                status=status,
                in_flight=self._in_flight,
                handled=self.handled,
                sent_at=t,
                interval_ms=interval,
            )
            self._produce(topics.HEARTBEATS.name, f"{a}|{self.instance_id}", self.codecs["heartbeat"].encode(hb))
        self._producer.poll(0)

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.agents.heartbeat_interval_s):
            self._heartbeat("ACTIVE")

    def _serve(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from aos_gateway.streams.kafka import consumer_config, poll_batch

        # from the earliest: an invocation sent while the group formed is not missed (old ones are past
        # their deadline and skipped unrun)
        consumer = Consumer(consumer_config(self.settings.kafka, group=self.group))
        consumer.subscribe(list(self.by_topic))
        try:
            while not self._stop.is_set():
                msgs = [m for m in poll_batch(consumer, 64, 0.5) if m.error() is None]
                if not msgs:
                    continue
                replies = self._handle_batch(msgs)
                for res, reply_to in replies:
                    self._produce(reply_to, res["task_id"], self.codecs["result"].encode(res))
                self._flush()
                offsets: dict[tuple[str, int], int] = {}
                for m in msgs:
                    k = (m.topic(), m.partition())
                    offsets[k] = max(offsets.get(k, -1), m.offset() + 1)
                self._commit(consumer, [TopicPartition(t, p, o) for (t, p), o in offsets.items()])
        finally:
            consumer.close()

    @staticmethod
    def _commit(consumer: Any, offsets: list[Any]) -> None:
        """Commit, riding out a broker restart or a rebalance (COORDINATOR_LOAD_IN_PROGRESS right
        after a restart stopped the runner and deregistered its agents): an offset not committed
        only means a redelivery, answered from the recent replies. Authorization and fatal errors
        still stop the runner."""
        from confluent_kafka import KafkaError as RdKafkaError
        from confluent_kafka import KafkaException

        try:
            consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0]
            denied = (RdKafkaError.GROUP_AUTHORIZATION_FAILED, RdKafkaError.TOPIC_AUTHORIZATION_FAILED)
            if not isinstance(err, RdKafkaError) or err.fatal() or err.code() in denied:
                raise
            log.warning("agents: offsets not committed (%s); they go with a later batch", err)

    def _handle_batch(self, msgs: list[Any]) -> list[tuple[InvocationResult, str]]:
        todo: list[tuple[Agent, Invocation]] = []
        out: list[tuple[InvocationResult, str]] = []
        for m in msgs:
            agent = self.by_topic.get(m.topic())
            try:
                inv: Invocation = self.codecs["invocation"].decode(m.value())  # type: ignore[assignment]
            except AosError as exc:  # nothing to reply to: say so and go on
                log.warning("%s[%d]@%d: undecodable invocation dropped: %s", m.topic(), m.partition(), m.offset(), exc)
                continue
            if agent is None:
                continue
            done = self.replies.get(inv["invocation_id"])
            if done is not None:
                self.redelivered += 1
                out.append((done, inv["reply_to"]))
            elif inv["deadline_at"] < now_ms():
                self.skipped_late += 1
                log.info("%s: invocation %s arrived after its deadline; not run", agent.agent_id, inv["invocation_id"])
            else:
                todo.append((agent, inv))
        self._in_flight = len(todo)
        for (_agent, inv), res in zip(todo, self.pool.map(lambda ai: handle_one(*ai), todo), strict=True):
            self.replies.put(res)
            self.handled += 1
            out.append((res, inv["reply_to"]))
        self._in_flight = 0
        return out


def resolve(target: str, settings: Settings) -> list[Agent]:
    """``module:attribute`` → agents. The attribute is an Agent, a sequence of them, or a
    callable taking the settings (or nothing) and returning either."""
    import importlib
    import inspect

    mod_name, _, attr = target.partition(":")
    if not mod_name or not attr:
        raise ConfigError(f"{target!r}: expected MODULE:ATTRIBUTE, e.g. aos_gateway.agents.reference:calculator")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {mod_name}: {exc}") from exc
    obj = getattr(mod, attr, None)
    if obj is None:
        raise ConfigError(f"{mod_name} has no attribute {attr!r}")
    if callable(obj) and not isinstance(obj, Agent):
        try:
            obj = obj(settings) if inspect.signature(obj).parameters else obj()
        except AosError:
            raise
        except Exception as exc:
            raise ConfigError(f"{target}: calling it failed: {type(exc).__name__}: {exc}") from exc
    items = [obj] if isinstance(obj, Agent) else list(obj) if isinstance(obj, list | tuple) else None
    if not items or not all(isinstance(a, Agent) for a in items):
        raise ConfigError(f"{target} is not an Agent, a list of Agents, or a function returning them")
    return items
