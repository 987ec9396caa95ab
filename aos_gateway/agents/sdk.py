"""The agent SDK: declare a card and a handler; the runner does the Kafka side.

    from aos_gateway.agents import Agent, Request

    def handle(req: Request) -> str:
        return req.text.upper()

    shout = Agent(agent_id="shout", name="Shouter", description="upper-cases text",
                  capabilities=["text.transform"], handler=handle)

``aos agents run mymodule:shout`` (run from the folder of ``mymodule.py``, or with that folder on
``PYTHONPATH``) then, for as long as it runs:

- registers the card on ``aos.agents.v1`` (with its invocation topic) — matchers index it. A card
  ``aos agents register`` would refuse (a negative cost, an unknown modality ...) is refused when the
  :class:`Agent` is built, with the same message;
- consumes ``aos.agents.<agent id>.invocations`` (one consumer group per set of agents, so more
  processes running the same agents share the work) and runs each invocation's handler in its own
  thread, up to ``agents.concurrency`` (``AOS_AGENTS__CONCURRENCY``) at once for the whole process:
  a slow handler holds one of these slots, not the other agents' invocations. At the limit the runner
  stops taking invocations (it pauses its partitions) until a slot frees. It replies on the
  invocation's ``reply_to`` topic (``aos.invocations.results.v1``);
- heartbeats every ``agents.heartbeat_interval_s`` on ``aos.agents.heartbeats.v1`` (the dispatcher
  skips agents whose heartbeat is stale);
- on SIGINT/SIGTERM starts no more invocations, waits up to ``agents.stop_grace_s`` seconds (10) for the running
  ones (abandoning those still running then: their invocations are not committed and the dispatcher
  times them out), heartbeats INACTIVE and deregisters the card (a tombstone on the compacted
  registry). Deregistering a running agent (``aos agents deregister``) removes its card until its
  process restarts.

Delivery is at least once: an invocation's offset is committed only once its reply was delivered
(offsets are committed in order per partition, so one slow invocation holds back the commits of
later ones on its partition, not their replies); an invocation redelivered after a crash or
rebalance is answered from the recent-replies memory instead of being run again (idempotent by
invocation id). An invocation whose deadline has passed when it arrives or when a slot frees for it
is not run and gets no reply: the dispatcher has stopped waiting for it.

A handler still running ``ABANDON_AFTER_S`` past its invocation's deadline is abandoned: the
invocation gets a TIMED_OUT reply (so its offset commits) and its slot is freed for the next one.
Python cannot stop a thread, so the handler runs on; what it returns then is dropped (logged). If
the abandoned handlers still running reach ``max(8, 4 x agents.concurrency)`` the runner stops
(a handler that never returns would otherwise pile up threads): only a restart frees them.

A handler returns the output text (or a :class:`Reply` with a cost and metadata). Raising
:class:`~aos_gateway.errors.AgentError` (or any exception) fails the invocation and the dispatcher
may retry; :class:`~aos_gateway.errors.PermanentAgentError` says a retry on this agent is pointless.
So does a reply the runner cannot send: a :class:`Reply` whose output is not a str, whose metadata
is not str → str, whose cost is negative or not finite, or an output larger than the broker takes
(``output too large: N bytes > M``): the invocation FAILS with that message and the runner goes on.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.records import AgentCard, Heartbeat, Invocation, InvocationResult
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.errors import AgentError, AosError, ConfigError, KafkaError, PermanentAgentError, ValidationError
from aos_gateway.matching.cards import card_from_json
from aos_gateway.settings import Settings

log = logging.getLogger("aos_gateway.agents")

#: librdkafka's default ``message.max.bytes``: the largest record the producer sends
PRODUCER_MAX_MESSAGE_BYTES = 1_000_000
#: room left in a reply record for its other fields (ids, error, metadata) next to the output
REPLY_HEADROOM_BYTES = 64 * 1024
#: a handler still running this long past its invocation's deadline is abandoned (see the module doc)
ABANDON_AFTER_S = 1.0
#: the largest handler output (UTF-8 bytes) :func:`handle_one` accepts by default; the runner derives
#: its limit from its producer's ``message.max.bytes`` the same way
MAX_OUTPUT_BYTES = PRODUCER_MAX_MESSAGE_BYTES - REPLY_HEADROOM_BYTES


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
    """What a handler may return instead of a str: the output, the invocation's cost (``None``: the
    card's cost; else a finite number >= 0) and metadata (str → str)."""

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
        """Raises:
        ConfigError: No agent_id or name.
        ValidationError: A card ``aos agents register`` would refuse, with its message.
        """
        if not isinstance(self.agent_id, str) or not self.agent_id.strip():
            raise ConfigError("an agent needs a non-empty agent_id")
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"agent {self.agent_id}: a name is required")
        if self.agent_id != self.agent_id.strip():
            raise ValidationError(f"agent {self.agent_id!r}: 'agent_id' must not start or end with whitespace")
        self.card(0)  # the checks of `aos agents register`

    def card(self, updated_at: int) -> AgentCard:
        """The card, checked as ``aos agents register`` checks a card (:func:`card_from_json`).

        Raises:
            ValidationError: A card the registry would refuse (negative cost, unknown modality ...).
        """
        obj = {
            "agent_id": self.agent_id,
            "name": self.name,
            "description": self.description,
            "capabilities": self.capabilities,
            "modalities": self.modalities,
            "examples": self.examples,
            "tenant": self.tenant,
            "cost": self.cost,
            "p95_latency_ms": self.p95_latency_ms,
            "status": "ACTIVE",
            "invocation_topic": topics.invocation_topic(self.agent_id),
            "metadata": self.metadata,
        }
        for key in ("cost", "p95_latency_ms"):  # float("3") and int(2.7) would pass card_from_json
            if isinstance(obj[key], bool) or not isinstance(obj[key], int | float):
                raise ValidationError(f"agent {self.agent_id!r}: {key!r} must be a number, got {obj[key]!r}")
        try:
            return card_from_json(obj, now_ms=updated_at)
        except ValidationError as exc:
            raise ValidationError(f"agent {self.agent_id!r}: {exc}") from exc


def _check_reply(out: Reply, default_cost: float) -> tuple[str, dict[str, str], float]:
    """A handler's Reply as a reply record takes it: (output, metadata, cost).

    Raises:
        TypeError: The output is not a str, the metadata not str → str.
        ValueError: The cost is negative or not finite.
    """
    if not isinstance(out.output, str):
        raise TypeError(f"Reply.output must be str, got {type(out.output).__name__}")
    if not isinstance(out.metadata, dict):
        raise TypeError(f"Reply.metadata must be a dict of str to str, got {type(out.metadata).__name__}")
    for k, v in out.metadata.items():
        if not isinstance(k, str):
            raise TypeError(f"Reply.metadata must map str to str; key {k!r} is {type(k).__name__}")
        if not isinstance(v, str):
            raise TypeError(f"Reply.metadata must map str to str; {k!r} maps to {type(v).__name__}")
    if out.cost is None:
        return out.output, dict(out.metadata), default_cost
    cost = out.cost
    if isinstance(cost, bool) or not isinstance(cost, int | float):
        raise TypeError(f"Reply.cost must be a number or None, got {type(cost).__name__}")
    if not records.is_cost(cost):
        raise ValueError(f"Reply.cost must be a finite number >= 0, got {cost}")
    return out.output, dict(out.metadata), float(cost)


def handle_one(agent: Agent, inv: Invocation, max_output_bytes: int = MAX_OUTPUT_BYTES) -> InvocationResult:
    """Run the handler on one invocation and build the reply.

    Whatever the handler raises (an :class:`Exception`) or returns, this returns a reply: a
    FAILED one for an exception, a return that is neither str nor :class:`Reply`, a Reply with a
    non-str output or metadata or a negative/non-finite cost, or an output over
    ``max_output_bytes`` UTF-8 bytes (``output too large: N bytes > M``).
    """
    t0 = time.perf_counter()
    status: records.InvocationStatus = "SUCCEEDED"
    output: str | None = None
    error: str | None = None
    cost = agent.cost
    meta: dict[str, str] = {}
    try:
        out = agent.handler(Request(inv))
        if isinstance(out, Reply):
            text, meta_out, cost_out = _check_reply(out, agent.cost)
        elif isinstance(out, str):
            text, meta_out, cost_out = out, {}, agent.cost
        else:
            raise TypeError(f"the handler returned {type(out).__name__}, not str or Reply")
        size = len(text.encode("utf-8"))  # a lone surrogate: UnicodeEncodeError, a failure too
        if size > max_output_bytes:
            raise ValueError(f"output too large: {size} bytes > {max_output_bytes}")
        output, meta, cost = text, meta_out, cost_out
    except Exception as exc:  # a handler's failure is a reply, not a crash
        status, error = "FAILED", f"{type(exc).__name__}: {exc}"[:2000]
        if isinstance(exc, PermanentAgentError):
            meta["retryable"] = "false"
        log.info("%s: invocation %s failed: %s", agent.agent_id, inv["invocation_id"], error)
    latency = int((time.perf_counter() - t0) * 1000)
    return _reply(inv, agent.agent_id, status, output, error, latency, cost, now_ms(), meta)


def _reply(
    inv: Invocation,
    agent_id: str,
    status: records.InvocationStatus,
    output: str | None,
    error: str | None,
    latency_ms: int,
    cost: float,
    finished_at: int,
    metadata: dict[str, str],
) -> InvocationResult:
    """The reply record to an invocation."""
    return InvocationResult(
        invocation_id=inv["invocation_id"],
        task_id=inv["task_id"],
        plan_id=inv["plan_id"],
        step_id=inv["step_id"],
        agent_id=agent_id,
        status=status,
        output=output,
        error=error,
        latency_ms=latency_ms,
        cost=cost,
        finished_at=finished_at,
        source="agent",
        metadata=metadata,
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


@dataclass
class _Entry:
    """A consumed invocation message: its offset is committable once ``done`` (its reply delivered,
    or it needed none) and every earlier one of its partition is too."""

    offset: int
    done: bool = False


class AgentRunner:
    """Serves one or more agents in this process until :meth:`stop`.

    One serving thread polls the agents' invocation topics and starts each invocation's handler in a
    thread of its own, at most ``settings.agents.concurrency`` at once; a handler's thread sends its
    reply. Offsets are committed per partition up to the first invocation not yet answered.
    """

    def __init__(
        self,
        agents: Sequence[Agent],
        settings: Settings,
        *,
        deregister_on_exit: bool = True,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> None:
        from aos_gateway.streams.kafka import producer_config

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
        max_message = int(producer_config(settings.kafka).get("message.max.bytes", PRODUCER_MAX_MESSAGE_BYTES))
        self.max_output_bytes = max(1, max_message - REPLY_HEADROOM_BYTES)
        self.concurrency = settings.agents.concurrency
        self.stop_grace_s = settings.agents.stop_grace_s
        self.replies = RecentReplies()
        self._stop = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._producer: Any = None
        self._lock = threading.Lock()
        # the serving thread's bookkeeping (only it touches these)
        self._tracks: dict[tuple[str, int], deque[_Entry]] = {}
        self._waiting: dict[str, list[_Entry]] = {}  # invocation id -> its messages (a redelivery adds one)
        self._pending: deque[tuple[Agent, Invocation]] = deque()  # consumed, not started
        # started, reply not delivered yet: invocation id -> (agent, invocation, start on the monotonic clock)
        self._running: dict[str, tuple[Agent, Invocation, float]] = {}
        # handler threads and the serving thread (under _lock): who answers an overdue invocation
        self._abandoned: set[str] = set()  # given a TIMED_OUT reply; their handlers still run
        self._answering: set[str] = set()  # their handlers returned and are replying
        self.max_abandoned = max(8, 4 * self.concurrency)
        self.abandoned = 0
        self._paused = False
        self._last_commit = 0.0
        # handler threads and delivery callbacks -> the serving thread: (invocation id, reply to resend or None)
        self._outcomes: queue.SimpleQueue[tuple[str, tuple[InvocationResult, str] | None]] = queue.SimpleQueue()
        self._in_flight = 0
        self.handled = 0
        self.skipped_late = 0
        self.redelivered = 0
        self.error: BaseException | None = None

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        """Set the agents up, register their cards and start serving.

        Raises:
            ConfigError: An agent's ``setup`` failed (naming the agent).
        """
        from aos_gateway.streams.kafka import ensure_topics, make_producer

        for a in self.agents.values():
            if a.setup is not None:
                self.progress(f"agents: setting up {a.agent_id}")
                try:
                    a.setup()
                except Exception as exc:
                    raise ConfigError(f"agent {a.agent_id}: setup failed: {type(exc).__name__}: {exc}") from exc
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
        """Start no more invocations, wait up to ``stop_grace_s`` for the running ones, say INACTIVE,
        deregister (if asked) and close. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        for th in self._threads:
            th.join(timeout=self.stop_grace_s + 30)
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
    def _produce(
        self, topic: str, key: str, value: bytes | None, on_delivery: Callable[[Any, Any], None] | None = None
    ) -> None:
        extra = {} if on_delivery is None else {"on_delivery": on_delivery}
        while True:
            try:
                self._producer.produce(topic, key=key.encode(), value=value, **extra)
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

    # -- replies (any thread) ------------------------------------------------------------------
    def _send_reply(self, res: InvocationResult, reply_to: str, last_try: bool = False) -> None:
        """Produce a reply; one the producer refuses (too large, not encodable) or that is not
        delivered is replaced by a FAILED reply saying why (``last_try``: that replacement). Its
        invocation counts as answered once the broker has it (or the replacement failed too)."""
        iid = res["invocation_id"]

        def delivered(err: Any, _msg: Any) -> None:
            if err is None:
                self._outcomes.put((iid, None))
            elif last_try:
                log.error("%s: the reply to %s was not delivered: %s", res["agent_id"], iid, err)
                self._outcomes.put((iid, None))
            else:
                self._outcomes.put((iid, (_undeliverable(res, err), reply_to)))

        try:
            self._produce(reply_to, res["task_id"], self.codecs["result"].encode(res), delivered)
        except Exception as exc:  # SerializationError, KafkaException MSG_SIZE_TOO_LARGE ...
            if last_try:
                log.error("%s: the reply to %s cannot be sent: %s", res["agent_id"], iid, exc)
                self._outcomes.put((iid, None))
            else:
                log.warning("%s: the reply to %s cannot be sent: %s", res["agent_id"], iid, exc)
                failed = _undeliverable(res, exc)
                self.replies.put(failed)  # a redelivery gets this one
                self._send_reply(failed, reply_to, last_try=True)

    def _run(self, agent: Agent, inv: Invocation) -> None:
        """A handler thread: run the invocation, remember and send its reply (unless it was abandoned)."""
        iid = inv["invocation_id"]
        try:
            res = handle_one(agent, inv, self.max_output_bytes)
            with self._lock:
                late = iid in self._abandoned
                if late:
                    self._abandoned.discard(iid)
                else:
                    self._answering.add(iid)
            if late:
                log.warning(
                    "%s: the abandoned invocation %s finished after %d ms (%s); its result is dropped",
                    agent.agent_id,
                    iid,
                    res["latency_ms"],
                    res["status"],
                )
                return
            self.replies.put(res)
            with self._lock:
                self.handled += 1
            self._send_reply(res, inv["reply_to"])
        except BaseException:  # handle_one does not raise: a bug here must not leave the slot taken
            log.exception("%s: invocation %s", agent.agent_id, iid)
            self._outcomes.put((iid, None))

    # -- serving (the serving thread) ----------------------------------------------------------
    def _serve(self) -> None:
        from confluent_kafka import Consumer

        from aos_gateway.streams.kafka import consumer_config, poll_batch

        # from the earliest: an invocation sent while the group formed is not missed (old ones are past
        # their deadline and skipped unrun)
        consumer = Consumer(consumer_config(self.settings.kafka, group=self.group))
        consumer.subscribe(list(self.by_topic), on_revoke=self._on_revoke)
        try:
            while not self._stop.is_set():
                self._settle(consumer)
                room = self.concurrency - len(self._running)
                if room <= 0 or self._pending:
                    # no more invocations until a slot frees (each time: a rebalance may have assigned more)
                    consumer.pause(consumer.assignment())
                    self._paused = True
                    msgs = [m for m in [consumer.poll(0.05)] if m is not None]  # rebalances, liveness
                else:
                    if self._paused:
                        consumer.resume(consumer.assignment())
                        self._paused = False
                    msgs = poll_batch(consumer, room, 0.1)
                for m in msgs:
                    if m.error() is None:
                        self._accept(m)
            self._pending.clear()  # not started: not committed, so redelivered to the next runner
            deadline = time.monotonic() + self.stop_grace_s
            while self._running and time.monotonic() < deadline:
                self._settle(consumer, wait=0.05)
            if self._running:
                log.warning("agents: abandoning %d invocations still running", len(self._running))
            if self._abandoned:
                log.warning("agents: %d abandoned handlers are still running", len(self._abandoned))
            self._commit_done(consumer, force=True)
        finally:
            consumer.close()

    def _accept(self, m: Any) -> None:
        """One consumed message: track its offset, and queue, answer or skip its invocation."""
        entry = _Entry(m.offset())
        self._tracks.setdefault((m.topic(), m.partition()), deque()).append(entry)
        agent = self.by_topic.get(m.topic())
        try:
            inv: Invocation = self.codecs["invocation"].decode(m.value())  # type: ignore[assignment]
        except AosError as exc:  # nothing to reply to: say so and go on
            log.warning("%s[%d]@%d: undecodable invocation dropped: %s", m.topic(), m.partition(), m.offset(), exc)
            entry.done = True
            return
        if agent is None:
            entry.done = True
            return
        iid = inv["invocation_id"]
        if iid in self._waiting:  # redelivered while queued or running: answered with it
            self.redelivered += 1
            self._waiting[iid].append(entry)
            return
        done = self.replies.get(iid)
        if done is not None:
            self.redelivered += 1
            self._waiting[iid] = [entry]
            self._send_reply(done, inv["reply_to"])
        elif inv["deadline_at"] < now_ms():
            self.skipped_late += 1
            log.info("%s: invocation %s arrived after its deadline; not run", agent.agent_id, iid)
            entry.done = True
        else:
            self._waiting[iid] = [entry]
            self._pending.append((agent, inv))

    def _settle(self, consumer: Any, wait: float = 0.0) -> None:
        """Take in finished invocations, start queued ones while there is room, commit."""
        self._producer.poll(0)  # delivery callbacks
        try:
            outcomes = [self._outcomes.get(timeout=wait)] if wait > 0 else []
        except queue.Empty:
            outcomes = []
        while True:
            try:
                outcomes.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        for iid, resend in outcomes:
            if resend is not None:
                self.replies.put(resend[0])
                self._send_reply(*resend, last_try=True)
                continue
            self._running.pop(iid, None)
            with self._lock:
                self._answering.discard(iid)
            for entry in self._waiting.pop(iid, []):
                entry.done = True
        while self._pending and len(self._running) < self.concurrency and not self._stop.is_set():
            agent, inv = self._pending.popleft()
            iid = inv["invocation_id"]
            if inv["deadline_at"] < now_ms():  # waited for a slot past its deadline: nobody waits for it
                self.skipped_late += 1
                log.info("%s: invocation %s reached its deadline while queued; not run", agent.agent_id, iid)
                for entry in self._waiting.pop(iid, []):
                    entry.done = True
                continue
            self._running[iid] = (agent, inv, time.monotonic())
            threading.Thread(
                target=self._run, args=(agent, inv), name=f"aos-agent-{agent.agent_id}", daemon=True
            ).start()
        self._abandon_overdue()
        self._in_flight = len(self._running)
        self._commit_done(consumer)

    def _abandon_overdue(self) -> None:
        """Reply TIMED_OUT for handlers running ``ABANDON_AFTER_S`` past their deadline, freeing their
        slots once the reply is delivered; stop the runner when too many such handlers pile up."""
        now = now_ms()
        for iid, (agent, inv, started) in list(self._running.items()):
            if inv["deadline_at"] + ABANDON_AFTER_S * 1000 > now:
                continue
            with self._lock:
                if iid in self._answering or iid in self._abandoned:
                    continue
                self._abandoned.add(iid)
                stuck = len(self._abandoned)
            self.abandoned += 1
            ran_ms = int((time.monotonic() - started) * 1000)
            why = (
                f"the handler was still running {ran_ms} ms after it started, past the invocation's deadline: "
                "abandoned (its result will be dropped)"
            )
            res = _reply(inv, agent.agent_id, "TIMED_OUT", None, why, ran_ms, agent.cost, now, {})
            log.warning(
                "%s: invocation %s still running %d ms past its deadline: replied TIMED_OUT and freed its slot "
                "(%d abandoned handlers still running; the runner stops at %d)",
                agent.agent_id,
                iid,
                now - inv["deadline_at"],
                stuck,
                self.max_abandoned,
            )
            self.replies.put(res)  # a redelivery gets this one
            self._send_reply(res, inv["reply_to"])
            if stuck >= self.max_abandoned:
                self.error = AgentError(
                    f"{stuck} abandoned handlers are still running (a handler that does not return?); "
                    "stopping, as only a restart frees their threads"
                )
                log.error("agents: %s", self.error)
                self._stop.set()

    def _commit_done(self, consumer: Any, force: bool = False, keys: Sequence[tuple[str, int]] | None = None) -> None:
        """Commit each partition up to its first invocation not yet answered (at most every 0.2 s)."""
        from confluent_kafka import TopicPartition

        if not force and time.monotonic() - self._last_commit < 0.2:
            return
        offsets = []
        for key in list(self._tracks) if keys is None else keys:
            track = self._tracks.get(key)
            last = None
            while track and track[0].done:
                last = track.popleft().offset
            if last is not None:
                offsets.append(TopicPartition(key[0], key[1], last + 1))
        if offsets:
            self._commit(consumer, offsets)
        self._last_commit = time.monotonic()

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        """A rebalance takes partitions away: commit what is answered, forget the rest (their
        invocations still running still reply; the next owner gets the unanswered ones again)."""
        keys = [(p.topic, p.partition) for p in partitions]
        self._commit_done(consumer, force=True, keys=keys)
        for key in keys:
            self._tracks.pop(key, None)

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
            log.warning("agents: offsets not committed (%s); they go with a later commit", err)


def _undeliverable(res: InvocationResult, why: object) -> InvocationResult:
    """The FAILED reply that replaces one the broker did not take."""
    return InvocationResult(
        invocation_id=res["invocation_id"],
        task_id=res["task_id"],
        plan_id=res["plan_id"],
        step_id=res["step_id"],
        agent_id=res["agent_id"],
        status="FAILED",
        output=None,
        error=f"the agent's reply could not be sent: {why}"[:2000],
        latency_ms=res["latency_ms"],
        cost=res["cost"] if records.is_cost(res["cost"]) else 0.0,
        finished_at=res["finished_at"],
        source="agent",
        metadata={},
        trace_id=res["trace_id"],
    )


def parse_target(target: str) -> tuple[str, str]:
    """``module:attribute`` → (module, attribute).

    Raises:
        ConfigError: Not of that form (a usage error for the command line).
    """
    mod_name, sep, attr = target.partition(":")
    if not sep or not attr or not mod_name or not all(p.isidentifier() for p in mod_name.split(".")):
        raise ConfigError(f"{target!r}: expected MODULE:ATTRIBUTE, e.g. aos_gateway.agents.reference:calculator")
    if not attr.isidentifier():
        raise ConfigError(f"{target!r}: {attr!r} is not a Python name (expected MODULE:ATTRIBUTE)")
    return mod_name, attr


def resolve(target: str, settings: Settings) -> list[Agent]:
    """``module:attribute`` → agents. The attribute is an Agent, a sequence of them, or a
    callable taking the settings (or nothing) and returning either."""
    import importlib
    import inspect

    mod_name, attr = parse_target(target)
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        missing = isinstance(exc, ModuleNotFoundError) and (mod_name + ".").startswith(f"{exc.name}.")
        top = mod_name.split(".")[0]
        hint = f" (run from the folder holding {top}, or add that folder to PYTHONPATH)" if missing else ""
        raise ConfigError(f"cannot import {mod_name}: {exc}{hint}") from exc
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
