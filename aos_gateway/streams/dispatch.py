"""The dispatcher: runs every plan on ``aos.plans.v1`` with the agents, over Kafka.

dispatch_plans   aos.plans.v1 + aos.invocations.results.v1  -> aos.agents.<id>.invocations,
                                                                aos.results.v1, aos.experience.v1

One Faust agent reads plans and agents' replies (both keyed by task id, so one task's plan and
replies meet in the same partition and worker); a timer moves executions on with the clock
(step timeouts, retry back-offs, the plan deadline). The rules live in the pure
:mod:`aos_gateway.execution.engine`; here they are wired to topics and a changelogged table.

State: the executions in progress live in memory (the working copy, changed only synchronously on
the event loop, so the stream and the timer never act on stale copies) and in the Faust table
``aos-executions`` (the changelogged copy, recovered after a restart or rebalance). A finished
execution leaves a marker in the table until ``execution.dedupe_retention_s`` has passed, so a
redelivered plan is not run twice; a redelivered or duplicated reply finds its invocation settled
and changes nothing. Records are sent (and acknowledged) before the table is updated: after a
crash the same transition is recomputed and re-sent with the same ids (invocation ids are derived
from plan, step and attempt; agents answer a known id from memory; the final result and the
experience records carry stable ids).

A plan that is not PLANNED (NO_MATCH, REJECTED) gets its final result at once: FAILED with the
plan's reason, so every task that reaches ``aos.plans.v1`` ends with one record on ``aos.results.v1``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import faust

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.records import ExecutionResult, Plan
from aos_gateway.contracts.wire import codec_for
from aos_gateway.execution import engine
from aos_gateway.execution.engine import Actions, Execution, Policy
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import consumer_config
from aos_gateway.streams.liveness import HeartbeatView, Liveness
from aos_gateway.streams.tracing import trace_id_for

if TYPE_CHECKING:
    from aos_gateway.streams.stages import Pipeline

log = logging.getLogger("aos_gateway.dispatch")
DONE = "done:"


def now_ms() -> int:
    return int(time.time() * 1000)


def unplanned_result(plan: Plan, now: int) -> ExecutionResult:
    """The final result of a plan that cannot run (NO_MATCH / REJECTED)."""
    return ExecutionResult(
        task_id=plan["task_id"],
        plan_id=plan["plan_id"],
        tenant=plan["tenant"],
        status="FAILED",
        reason=f"{plan['status']}: {plan['reason'] or 'no reason given'}",
        output=None,
        steps=[],
        started_at=now,
        finished_at=now,
        deadline_at=now,
        cost=0.0,
        trace_id=plan["trace_id"],
    )


class Dispatcher:
    """The dispatcher's state and its sends (the Faust agent and timer call it)."""

    def __init__(self, pipe: Pipeline, settings: Settings, table: Any) -> None:
        self.pipe = pipe
        x = settings.execution
        self.policy = Policy(
            deadline_factor=x.deadline_factor,
            min_deadline_ms=x.min_deadline_ms,
            max_deadline_ms=x.max_deadline_ms,
            retry_backoff_ms=x.retry_backoff_ms,
            max_output_chars=x.max_output_chars,
        )
        self.table = table
        self.live: dict[str, Execution] = {}
        self.liveness = Liveness(x.liveness_timeout_s)
        self.view: HeartbeatView | None = None
        self.inv_codec = codec_for(records.INVOCATION, "aos.agents.invocations", settings.schema_registry)
        self.settings = settings
        self.results = 0
        self.resync_until = time.monotonic() + 60.0
        self._last_resync = 0.0
        self.existing_topics: set[str] = set()
        self.topics_known = False
        self.metrics = pipe.metrics.stage("dispatch")
        pipe.metrics.watch_in_flight(lambda: len(self.live))

    def alive(self, agent_id: str) -> bool | None:
        """From heartbeats; an agent never heard of whose invocation topic does not exist is down
        (nothing could consume its invocations)."""
        seen = self.liveness.alive(agent_id)
        if seen is None and self.topics_known and topics.invocation_topic(agent_id) not in self.existing_topics:
            return False
        return seen

    def _watch_topics(self) -> None:
        from aos_gateway.streams.kafka import existing_topics

        while True:
            try:
                self.existing_topics = existing_topics(self.settings.kafka)
                self.topics_known = True
            except Exception as exc:  # keep the last list; the broker may be restarting
                log.warning("dispatch: cannot list topics: %s", exc)
            time.sleep(10.0)

    async def start_view(self) -> None:
        if self.view is None:
            self.view = HeartbeatView(
                consumer_config(self.settings.kafka),
                topics.HEARTBEATS.name,
                self.pipe.codecs[topics.HEARTBEATS.name],
                self.liveness,
            )
            self.view.start()
            import threading

            threading.Thread(target=self._watch_topics, name="aos-dispatch-topics", daemon=True).start()
            await self.pipe.producer_knows_tables()
            await asyncio.get_running_loop().run_in_executor(None, self.view.wait_caught_up, 30.0)

    def working_copy(self, task_id: str) -> Execution | str | None:
        """The execution in progress, a DONE marker, or None (never seen)."""
        ex = self.live.get(task_id)
        if ex is not None:
            return ex
        raw = self.table.get(task_id)
        if raw is None:
            return None
        if raw.startswith(DONE):
            return str(raw)
        ex = self.live[task_id] = Execution.from_json(raw)
        return ex

    async def apply(self, ex: Execution, acts: Actions) -> None:
        """Send what a transition asks for, then persist the execution."""
        futures: list[Awaitable[Any]] = []
        for inv in acts.invocations:
            topic = topics.invocation_topic(inv["agent_id"])
            try:
                await self.pipe.producer_knows(topic)
                futures.append(await self.pipe.send(topic, inv["task_id"], self.inv_codec.encode(inv)))
            except Exception as exc:  # no such topic (or the broker refused): the attempt times out
                self.existing_topics.discard(topic)
                log.warning("dispatch: cannot send invocation %s to %s: %s", inv["invocation_id"], topic, exc)

        if acts.result is not None:
            futures.append(await self.pipe.send(topics.RESULTS.name, ex.task_id, acts.result))
            for rec in acts.experience:
                futures.append(await self.pipe.send(topics.EXPERIENCE.name, rec["task_id"], rec))
        if futures:
            await asyncio.gather(*futures)
            self.metrics.emitted(len(futures))
        if acts.result is not None:
            self.results += 1
            self._finished(acts.result)
            self.live.pop(ex.task_id, None)
            self.table[ex.task_id] = f"{DONE}{acts.result['finished_at']}"
            log.info(
                "dispatch: task %s %s in %d ms%s",
                ex.task_id,
                acts.result["status"],
                acts.result["finished_at"] - acts.result["started_at"],
                f" ({acts.result['reason']})" if acts.result["reason"] else "",
            )
        elif acts.invocations or ex.task_id in self.live:
            self.table[ex.task_id] = ex.to_json()

    def _finished(self, result: ExecutionResult) -> None:
        self.pipe.metrics.finished(result["status"])
        tracer = self.metrics.tracer
        if tracer.enabled:  # the whole execution, from the plan's start to its final result
            tracer.span(
                "execute",
                result["trace_id"],
                result["task_id"],
                result["started_at"] * 1_000_000,
                result["finished_at"] * 1_000_000,
                None if result["status"] == "SUCCEEDED" else f"{result['status']}: {result['reason']}",
                {"aos.status": result["status"], "aos.plan_id": result["plan_id"]},
            )

    async def on_plan(self, plan: Plan) -> None:
        if not plan["trace_id"]:  # a plan sent straight to the topic: its results still share one trace
            plan = {**plan, "trace_id": trace_id_for(None, plan["task_id"])}
        seen = self.working_copy(plan["task_id"])
        if seen is not None:
            log.info("dispatch: task %s already executed or running; duplicate plan dropped", plan["task_id"])
            return
        age_s = (now_ms() - plan["created_at"]) / 1000
        if plan["status"] == "PLANNED" and age_s > self.settings.execution.max_plan_age_s:
            plan = {
                **plan,
                "status": "REJECTED",
                "reason": f"expired: planned {age_s:.0f}s before it reached the "
                f"dispatcher (execution.max_plan_age_s={self.settings.execution.max_plan_age_s:g})",
            }
        if plan["status"] != "PLANNED" or not plan["steps"]:
            if plan["status"] == "PLANNED":
                plan = {**plan, "status": "REJECTED", "reason": "the plan has no steps"}
            result = unplanned_result(plan, now_ms())
            await asyncio.gather(await self.pipe.send(topics.RESULTS.name, plan["task_id"], result))
            self.metrics.emitted()
            self.results += 1
            self._finished(result)
            self.table[plan["task_id"]] = f"{DONE}{result['finished_at']}"
            return
        ex, acts = engine.start(plan, now_ms(), self.policy, self.alive)
        self.live[ex.task_id] = ex
        await self.apply(ex, acts)

    async def on_reply(self, res: records.InvocationResult) -> None:
        ex = self.working_copy(res["task_id"])
        if not isinstance(ex, Execution):
            return  # finished (a late or duplicated reply) or unknown
        await self.apply(ex, engine.on_result(ex, res, now_ms(), self.policy, self.alive))

    async def tick(self) -> None:
        now = now_ms()
        mono = time.monotonic()
        if mono < self.resync_until and mono - self._last_resync > 5.0:
            # for a minute after a start or rebalance (the table recovers from its changelog
            # meanwhile): executions in the table, back in memory
            self._last_resync = mono
            for key, raw in list(self.table.items()):
                if key not in self.live and raw is not None and not raw.startswith(DONE):
                    try:
                        self.live[key] = Execution.from_json(raw)
                    except (ValueError, TypeError, KeyError) as exc:
                        log.error("dispatch: execution %s in the table cannot be read (%s); dropped", key, exc)
                        del self.table[key]
        for ex in [e for e in self.live.values() if engine.next_due(e) <= now]:
            acts = engine.on_tick(ex, now, self.policy, self.alive)
            if acts.invocations or acts.result is not None:
                await self.apply(ex, acts)
            else:
                self.table[ex.task_id] = ex.to_json()

    def prune(self) -> None:
        horizon = now_ms() - self.settings.execution.dedupe_retention_s * 1000
        for key, raw in list(self.table.items()):
            if raw is not None and raw.startswith(DONE) and int(raw[len(DONE) :]) < horizon:
                del self.table[key]


def build_dispatcher(app: faust.App, pipe: Pipeline, settings: Settings) -> Dispatcher:
    """Declare the dispatcher's agent, table and timers on ``app``."""
    table = app.Table(
        "aos-executions",
        default=None,
        key_type=str,
        value_type=str,
        use_partitioner=True,
        partitions=settings.worker.topic_partitions,
    )
    d = Dispatcher(pipe, settings, table)
    source = app.topic(topics.PLANS.name, topics.INVOCATION_RESULTS.name, value_serializer="raw", key_serializer="raw")

    @app.agent(source, name="dispatch_plans")
    async def dispatch_plans(stream: faust.StreamT[Any]) -> None:
        await d.start_view()
        st = d.metrics
        async for event in stream.events():
            t0 = time.time_ns()
            st.received()
            topic = event.message.topic
            rec: Any = None
            trace: str | None = None
            try:
                rec = pipe.decode(topic, event)
                trace = rec.get("trace_id") or getattr(d.live.get(rec["task_id"]), "trace_id", None)
                if topic == topics.PLANS.name:
                    await d.on_plan(rec)
                else:
                    await d.on_reply(rec)
                st.done(t0, 1, ({"task_id": rec["task_id"], "trace_id": trace},))
            except Exception as exc:
                tid = rec.get("task_id") if isinstance(rec, dict) else None
                await asyncio.gather(await pipe.send_dead_letter("dispatch", event, exc, tid, trace_id=trace))

    @app.timer(interval=settings.execution.tick_interval_s)  # type: ignore[untyped-decorator]
    async def dispatch_tick() -> None:
        try:
            await d.tick()
        except Exception as exc:  # the timer must keep ticking: log and go on
            d.metrics.error(exc)
            log.exception("dispatch: tick failed")

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def prune_executions() -> None:
        d.prune()

    def _forget_working_copies(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        d.live.clear()  # re-read from the table on next use: another worker may own them now
        d.resync_until = time.monotonic() + 60.0

    app.on_partitions_revoked.connect(_forget_working_copies)

    return d
