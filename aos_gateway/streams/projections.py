"""Projections of the experience stream, and feedback into it.

project_<store>   aos.experience.v1 -> a store (one Faust agent each: a store that is down holds
                                       back only its own projection)
feedback_to_experience  aos.feedback.v1 -> aos.experience.v1 (a feedback record per feedback)
learn_from_experience   a timer (``experience.mine_interval_s``): the history -> aos.weights.v1

Each projection takes micro-batches (``experience.projection_batch`` records or one second),
writes them in an I/O thread and only then moves on (at-least-once); every store is idempotent by
``experience_id`` (Parquet deduplicates on read and compaction, QuestDB/InfluxDB by series and
time, PostgreSQL statistics by an applied-ids table), so a redelivered batch changes nothing. A
store that is unreachable is retried with a capped back-off — records are never dropped for it. A
record that cannot be decoded goes to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import faust
from faust.types import EventT

from aos_gateway import topics
from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.experience.feedback import feedback_record
from aos_gateway.settings import Settings

if TYPE_CHECKING:
    from aos_gateway.streams.stages import Pipeline

log = logging.getLogger("aos_gateway.projections")

#: a store's writer: called in an I/O thread with a batch; raises on failure (the batch is retried)
Writer = Callable[[list[ExperienceRecord]], Any]


def writers(pipe: Pipeline, settings: Settings) -> dict[str, Writer]:
    """The stores the settings ask for, by name."""
    from aos_gateway.experience.cold import ColdStore

    x = settings.experience
    cold = ColdStore(x.cold_dir)
    out: dict[str, Writer] = {"cold": cold.write, "stats": StatsWriter(pipe, settings).write}
    if settings.timeseries.enabled:
        from aos_gateway.experience.hot import HotStore

        out["hot"] = HotStore.from_settings(settings).write
    return out


class StatsWriter:
    """Agent statistics per task cluster in PostgreSQL (:mod:`aos_gateway.experience.stats`).

    A task's cluster is the one of the network quality model in force (the clusters the planner's
    reliability estimates use; -1 before one is learned). Cluster ids are those of that model's
    version: after a new model, ``aos experience reset`` and a replay rebuild the table on one.
    """

    def __init__(self, pipe: Pipeline, settings: Settings) -> None:
        self.pipe = pipe
        self.conninfo = settings.postgres.conninfo()
        self.conn: Any = None
        #: after each batch, the touched agents' totals go to aos.sink.agent_stats.v1 (Kafka Connect)
        self.sink = AgentStatsSink(settings) if settings.connect.sinks else None

    def cluster_of(self, rec: ExperienceRecord) -> int | None:
        from aos_gateway.perception.vectors import unpack

        model = self.pipe.quality
        vec = rec["task_vector"]
        return None if model is None or vec is None else model.cluster_of(unpack(vec))

    def write(self, batch: list[ExperienceRecord]) -> int:
        from aos_gateway.experience import stats
        from aos_gateway.registry import store

        if self.conn is None or self.conn.closed:
            self.conn = store.connect(self.conninfo)
        try:
            n = stats.apply(self.conn, batch, self.cluster_of)
            if self.sink is not None:  # also after a redelivered batch: the totals are the same rows
                self.sink.publish(stats.totals(self.conn, self.sink.touched(batch)))
            return n
        except Exception:
            self.conn = None  # reconnect on the retry
            raise


class AgentStatsSink:
    """Publishes agents' totals as ``sink_agent_stats`` rows, from the statistics just counted.

    Runs in the statistics projection's I/O thread, right after the batch is counted (so a row
    never shows less than PostgreSQL holds) and before the batch is acknowledged: a crash in
    between re-publishes the same totals on redelivery, and the sink upserts them by agent.
    """

    def __init__(self, settings: Settings) -> None:
        self.kafka = settings.kafka
        self._producer: Any = None  # made on first use: declaring the worker's agents connects to nothing

    @property
    def producer(self) -> Any:
        if self._producer is None:
            from aos_gateway.streams.kafka import make_producer

            self._producer = make_producer(self.kafka)
        return self._producer

    @staticmethod
    def touched(batch: list[ExperienceRecord]) -> list[tuple[str, str]]:
        from aos_gateway.experience.stats import countable

        return sorted({(r["tenant"], r["agent_id"]) for r in countable(batch) if r["agent_id"]})

    def publish(self, totals: dict[tuple[str, str], dict[str, Any]]) -> None:
        """Produce one row per agent and wait for the broker's acknowledgement.

        Raises:
            KafkaError: The broker did not take every row within 30 s.
        """
        from aos_gateway.connect.rows import AGENT_STATS, agent_stats_row
        from aos_gateway.errors import KafkaError

        if not totals:
            return
        now = int(time.time() * 1000)
        errors: list[str] = []

        def done(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))

        for (tenant, agent), t in sorted(totals.items()):
            key, value = AGENT_STATS.encode(agent_stats_row(tenant, agent, t, now))
            self.producer.produce(AGENT_STATS.topic, value=value, key=key, on_delivery=done)
        left = self.producer.flush(30.0)
        if left or errors:
            raise KafkaError(f"agent statistics rows not delivered: {left} pending, {errors[:3]}")


def build_projections(app: faust.App, pipe: Pipeline, settings: Settings) -> dict[str, Writer]:
    """Declare a projection agent per store, and the feedback agent, on ``app``."""
    x = settings.experience
    exp_topic = pipe.topics[topics.EXPERIENCE.name]
    fb_topic = pipe.topics[topics.FEEDBACK.name]
    ws = writers(pipe, settings) if x.projections else {}

    def declare(name: str, write: Writer) -> None:
        async def project(stream: faust.StreamT[Any]) -> None:
            loop = asyncio.get_running_loop()
            st = pipe.metrics.stage(f"project-{name}")
            async for events in stream.take_events(x.projection_batch, within=1.0):  # type: ignore[attr-defined]
                start_ns = time.time_ns()
                st.received(len(events))
                batch: list[ExperienceRecord] = []
                bad: list[Awaitable[Any]] = []
                for event in events:
                    try:
                        batch.append(pipe.decode(topics.EXPERIENCE.name, event))
                    except Exception as exc:
                        bad.append(await pipe.send_dead_letter(f"project-{name}", event, exc))
                delay = 0.5
                while batch:
                    try:
                        t0 = time.perf_counter()
                        await loop.run_in_executor(pipe.io_pool, write, batch)
                        log.debug(
                            "project-%s: %d records in %.0f ms", name, len(batch), 1e3 * (time.perf_counter() - t0)
                        )
                        st.emitted(len(batch))
                        break
                    except Exception as exc:  # the store is away: wait for it, drop nothing
                        st.error(exc)
                        log.warning("project-%s: %s: %s; retrying in %.1fs", name, type(exc).__name__, exc, delay)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, 30.0)
                if bad:
                    await asyncio.gather(*bad)
                st.done(start_ns, len(events), batch)

        app.agent(exp_topic, name=f"project_{name}")(project)

    for name, write in ws.items():
        declare(name, write)

    @app.agent(fb_topic, name="feedback_to_experience")
    async def feedback_to_experience(stream: faust.StreamT[Any]) -> None:
        st = pipe.metrics.stage("feedback")
        async for event in stream.events():
            start_ns = time.time_ns()
            st.received()
            await _feedback(pipe, event)
            st.done(start_ns)

    if x.projections and "cold" in ws:
        from aos_gateway.experience.cold import ColdStore

        cold = ColdStore(x.cold_dir)

        @app.timer(interval=3600.0)  # type: ignore[untyped-decorator]
        async def cold_maintenance() -> None:
            """Compact the days before today into one file each, and drop days past retention."""
            from aos_gateway.experience.cold import day_of

            now = int(time.time() * 1000)
            loop = asyncio.get_running_loop()
            try:
                done = await loop.run_in_executor(pipe.io_pool, cold.compact_all, day_of(now))
                gone = await loop.run_in_executor(pipe.io_pool, cold.prune, now, x.cold_retention_days)
                if done or gone:
                    log.info("cold store: compacted %s, pruned %s", done, gone)
            except Exception:
                log.exception("cold store maintenance failed")

    if x.mine_interval_s > 0:
        from aos_gateway.streams.learner import pass_in_child

        @app.timer(interval=x.mine_interval_s)  # type: ignore[untyped-decorator]
        async def learn_from_experience() -> None:
            """Mine the experience history and publish the learned states that changed (in a child
            process: see :func:`aos_gateway.streams.learner.pass_in_child`)."""
            try:
                done = await pass_in_child(max(x.mine_interval_s, 600.0))
                pipe.metrics.learned(done.info)
                if done.published:
                    log.info("learning pass published %s", ", ".join(f"{k} v{v}" for k, v in done.published.items()))
            except Exception:
                log.exception("learning pass failed")

    return ws


async def _feedback(pipe: Pipeline, event: EventT[Any]) -> None:
    fb = None
    try:
        fb = pipe.decode(topics.FEEDBACK.name, event)
        rec = feedback_record(fb)
        await asyncio.gather(await pipe.send(topics.EXPERIENCE.name, rec["task_id"], rec))
        pipe.metrics.stage("feedback").emitted()
    except Exception as exc:
        tid = fb.get("task_id") if isinstance(fb, dict) else None
        await asyncio.gather(await pipe.send_dead_letter("feedback", event, exc, tid))
