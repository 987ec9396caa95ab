"""The pipeline's Faust agents: thin wiring around the pure stage logic.

perceive_task   aos.tasks.v1           -> aos.tasks.perceived.v1   (micro-batched text/image/audio encoding)
match_agents    aos.tasks.perceived.v1 -> aos.tasks.matched.v1     (capability index from the registry)
plan_task       aos.tasks.matched.v1   -> aos.plans.v1 / reply_to  (deduplicated by task id); unsure
                                          decisions also to aos.review.v1 (network/review.py)
record_card     aos.agents.v1          -> PostgreSQL card history
dispatch_plans  aos.plans.v1 + replies -> agents' invocation topics, aos.results.v1, aos.experience.v1
                (streams/dispatch.py; on unless execution.enabled is false)
project_*       aos.experience.v1      -> the experience stores; feedback_to_experience: aos.feedback.v1
                -> aos.experience.v1 (streams/projections.py)

Each event is decoded and processed inside its own try: a failure becomes a DeadLetter on
``aos.deadletter.v1`` and the stream goes on. Outputs are awaited before the source offset
is acknowledged (at-least-once); the plan stage drops a task id it has already planned.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import faust
from faust.types import EventT

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.wire import RecordCodec, codec_for
from aos_gateway.errors import AosError, StoreError
from aos_gateway.experience import learning
from aos_gateway.limits import Limits
from aos_gateway.matching.index import CapabilityIndex, ExactIndex, make_index
from aos_gateway.matching.matcher import Matcher
from aos_gateway.network import quality as network_quality
from aos_gateway.network.planner import plan_network, planner_settings_from
from aos_gateway.network.quality import QualityModel
from aos_gateway.network.review import review_reason
from aos_gateway.network.sequential import plan_sequential
from aos_gateway.perception.task import Perceiver, validate_request
from aos_gateway.perception.text import TextEncoder
from aos_gateway.settings import Settings
from aos_gateway.streams.deadletter import as_bytes, dead_letter
from aos_gateway.streams.kafka import consumer_config
from aos_gateway.streams.metrics import Metrics
from aos_gateway.streams.metrics import install as install_metrics
from aos_gateway.streams.registry_view import RegistryView
from aos_gateway.streams.tracing import StageTracer, trace_id_for
from aos_gateway.streams.weights_view import WeightsView

log = logging.getLogger("aos_gateway.stages")


def now_ms() -> int:
    return int(time.time() * 1000)


class BatchStats:
    """Micro-batch sizes and model time of the perceive stage, logged every ``interval_s``."""

    def __init__(self, interval_s: float = 60.0) -> None:
        self.interval_s = interval_s
        self.batches = 0
        self.items = 0
        self.model_s = 0.0
        self._last_log = time.monotonic()

    def add(self, items: int, seconds: float) -> None:
        self.batches += 1
        self.items += items
        self.model_s += seconds
        now = time.monotonic()
        if now - self._last_log >= self.interval_s:
            log.info(
                "perceive: %d tasks in %d batches (mean %.1f), model %.1f ms per batch",
                self.items,
                self.batches,
                self.items / self.batches,
                1000 * self.model_s / self.batches,
            )
            self.batches, self.items, self.model_s, self._last_log = 0, 0, 0.0, now


class Pipeline:
    """The resources one worker shares between its stages (loaded once)."""

    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        reg = settings.schema_registry
        self.codecs: dict[str, RecordCodec] = {
            spec.name: codec_for(spec.record, spec.name, reg) for spec in topics.CATALOG
        }
        self.model_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aos-model")
        self.io_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="aos-io")
        p = settings.perception
        self.encoder = TextEncoder(p.text_model, p.device, p.cache_size, p.torch_threads, p.quantize_int8)
        self.perceiver = Perceiver.from_settings(settings, self.encoder)
        self.index: CapabilityIndex | None = None
        self.spaces: dict[str, CapabilityIndex] = {}
        self.view: RegistryView | None = None
        self.weights_view: WeightsView | None = None
        #: the network quality predictor, from aos.weights.v1 (None: fit only, reliability 1)
        self.quality: QualityModel | None = None
        self.topics = {
            spec.name: app.topic(spec.name, value_serializer="raw", key_serializer="raw") for spec in topics.CATALOG
        }
        self.dead_letters = 0
        self._producer_topics: set[str] = set()
        self.dispatcher: Any = None  # streams.dispatch.Dispatcher when execution is enabled
        self.stats = BatchStats(settings.worker.stats_interval_s)
        self.metrics = Metrics(settings.metrics, StageTracer.from_settings(settings.tracing))
        self.metrics.watch_caches(
            {"text": lambda: self.encoder, "image": lambda: self.perceiver.image, "audio": lambda: self.perceiver.audio}
        )

    async def producer_knows(self, topic: str) -> None:
        """Make the producer fetch and keep a topic's metadata.

        Faust partitions some records itself from its producer's metadata (table changelogs with
        ``use_partitioner``). aiokafka fetches metadata for every topic until it is first asked
        for one it does not know (e.g. an agent's new invocation topic); from then on only for
        the topics in its tracked set, which a topic known at start never joined: it drops out,
        and partitioning for it fails ("'NoneType' object is not iterable"). So the topic is
        added to the tracked set explicitly. Raises if the topic does not exist.
        """
        if topic in self._producer_topics:
            return
        producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]  # aiokafka's
        await asyncio.wait_for(producer.client.add_topic(topic), timeout=5.0)
        await asyncio.wait_for(producer.partitions_for(topic), timeout=5.0)
        self._producer_topics.add(topic)

    async def producer_knows_tables(self) -> None:
        """:meth:`producer_knows` for every table's changelog (waiting for Faust to create them)."""
        for table in list(self.app.tables.values()):
            changelog = table.changelog_topic.get_topic_name()
            for attempt in range(60):
                try:
                    await self.producer_knows(changelog)
                    break
                except Exception as exc:
                    if attempt == 59:
                        raise
                    log.info("waiting for %s (%s)", changelog, exc)
                    await asyncio.sleep(1.0)

    async def in_model_thread(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.model_pool, fn, *args)

    def capabilities(self, agent_id: str) -> tuple[str, ...]:
        """A registered agent's capabilities (none when it is not indexed)."""
        return self.view.capabilities.get(agent_id, ()) if self.view is not None else ()

    async def start_registry_view(self) -> RegistryView:
        """Load the encoder and index every registered card before matching starts."""
        if self.view is None:
            await self.in_model_thread(self.perceiver.load)
            self.index = make_index(self.settings, self.encoder.dim)
            extra: list[tuple[CapabilityIndex, Callable[[list[str]], Any]]] = []
            image = self.perceiver.image
            if image is not None:  # cards in the CLIP text space too, for image-only tasks
                clip_index = ExactIndex(image.dim)
                self.spaces[image.name] = clip_index
                extra.append((clip_index, image.encode_texts))
            self.view = RegistryView(
                consumer_config(self.settings.kafka),
                topics.AGENTS.name,
                self.index,
                self.encoder.encode,
                self.codecs[topics.AGENTS.name],
                extra,
            )
            if self.view.verifier is not None:  # signed cards required: count the ones refused, by reason
                from aos_gateway.security.cards import RejectedCardsCollector

                self.metrics.registry.register(RejectedCardsCollector(self.view.verifier))
            self.view.start()
            timeout = self.settings.matching.registry_catchup_timeout_s
            ok = await asyncio.get_running_loop().run_in_executor(None, self.view.wait_caught_up, timeout)
            if not ok:
                log.warning(
                    "registry view did not catch up in %.0fs; matching with %d agents", timeout, len(self.index)
                )
        return self.view

    async def start_weights_view(self, matcher: Matcher) -> WeightsView | None:
        """Follow aos.weights.v1: the latest learned matching state and network quality predictor
        now, and every new one later."""
        if self.weights_view is None and self.settings.matching.follow_weights:
            self.weights_view = WeightsView(
                consumer_config(self.settings.kafka),
                topics.WEIGHTS.name,
                self.codecs[topics.WEIGHTS.name],
                matcher.set_state,
                extra={
                    network_quality.NAME: (network_quality.from_record, self._set_quality),
                    learning.ANOMALIES: (learning.penalties_from_record, matcher.set_penalties),
                    learning.CANDIDATE: (learning.candidate_from_record, matcher.set_candidate),
                },
            )
            self.weights_view.start()
            timeout = self.settings.matching.registry_catchup_timeout_s
            ok = await asyncio.get_running_loop().run_in_executor(None, self.weights_view.wait_caught_up, timeout)
            if not ok:
                log.warning("weights view did not catch up in %.0fs; matching with what it has", timeout)
        return self.weights_view

    def _set_quality(self, model: QualityModel) -> None:
        self.quality = model  # one reference swap: the next plan uses it

    async def send(self, topic: str, key: str | bytes | None, record: dict[str, Any] | Any) -> Awaitable[Any]:
        value = self.codecs[topic].encode(record) if topic in self.codecs else record
        k = key.encode() if isinstance(key, str) else key
        target = self.topics.get(topic)
        if target is None:
            target = self.topics[topic] = self.app.topic(topic, value_serializer="raw", key_serializer="raw")
        # force=True: publish now. Faust would otherwise hold the record until the source
        # offset is committed (every few seconds); the stages await delivery before acking,
        # which keeps at-least-once without that delay.
        return await target.send(key=k, value=value, force=True)

    async def send_dead_letter(
        self,
        stage: str,
        event: EventT[Any],
        error: BaseException,
        task_id: str | None = None,
        tenant: str | None = None,
        trace_id: str | None = None,
    ) -> Awaitable[Any]:
        msg = event.message
        if tenant is None and msg.topic in self.codecs:
            # a decoded record that broke a rule (e.g. a task's negative top_k) still names its tenant
            try:
                record = self.decode(msg.topic, event)
            except Exception:  # undecodable: no tenant to tell
                record = None
            if isinstance(record, dict) and isinstance(record.get("tenant"), str):
                tenant = record["tenant"]
        trace_id = trace_id_for(trace_id, task_id) if task_id else trace_id
        dl = dead_letter(
            stage=stage,
            error=error,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            key=as_bytes(msg.key),
            value=as_bytes(msg.value),
            task_id=task_id,
            tenant=tenant,
            trace_id=trace_id,
        )
        self.dead_letters += 1
        self.metrics.stage(stage).dead_letter(error)
        if self.metrics.tracer.enabled and task_id:
            now = time.time_ns()
            self.metrics.tracer.span(stage, trace_id, task_id, now, now, error, {"aos.dead_letter": True})
        log.warning("%s: dead-lettered %s[%d]@%d: %s", stage, msg.topic, msg.partition, msg.offset, dl["reason"])
        return await self.send(topics.DEADLETTER.name, dl["dead_letter_id"], dl)

    def decode(self, topic: str, event: EventT[Any]) -> Any:
        raw = event.message.value
        if raw is None:
            raise AosError("empty event (null value)")
        return self.codecs[topic].decode(raw)


async def _settle(futures: Sequence[Awaitable[Any]]) -> None:
    """Wait until every produced record is acknowledged by the broker."""
    if futures:
        await asyncio.gather(*futures)


def build(app: faust.App, settings: Settings) -> Pipeline:
    """Declare the pipeline's agents on ``app``."""
    pipe = Pipeline(app, settings)
    install_metrics(app, pipe.metrics)
    p = settings.perception
    planning = settings.planning
    tasks_topic = pipe.topics[topics.TASKS.name]
    perceived_topic = pipe.topics[topics.PERCEIVED.name]
    matched_topic = pipe.topics[topics.MATCHED.name]
    agents_topic = pipe.topics[topics.AGENTS.name]
    planned = app.Table(
        "aos-plan-dedupe",
        default=None,
        key_type=str,
        value_type=int,
        use_partitioner=True,
        partitions=settings.worker.topic_partitions,
    )

    limits = Limits(settings)

    @app.agent(tasks_topic, name="perceive_task")
    async def perceive_task(stream: faust.StreamT[Any]) -> None:
        st = pipe.metrics.stage("perceive")
        async for events in stream.take_events(  # type: ignore[attr-defined]
            p.batch_max, within=p.batch_window_ms / 1000
        ):
            t0 = time.time_ns()
            st.received(len(events))
            futures: list[Awaitable[Any]] = []
            ok: list[tuple[EventT[Any], records.TaskRequest, str]] = []
            sent: list[records.PerceivedTask] = []
            for event in events:
                req = None
                try:
                    req = pipe.decode(topics.TASKS.name, event)
                    req["trace_id"] = trace_id_for(req["trace_id"], req["task_id"])  # every later record has it
                    text = validate_request(req, p.max_text_chars)
                    limits.check_size(req)  # the tenant's own size limits: dead-lettered like any rule
                    if limits.admit(req["tenant"], now=req["submitted_at"] / 1000):  # in the tasks' own time
                        pipe.metrics.tenant_over_rate(req["tenant"])  # metered, not dropped (see aos_gateway.limits)
                    ok.append((event, req, text))
                except Exception as exc:
                    tid = req.get("task_id") if isinstance(req, dict) else None
                    trace = req.get("trace_id") if isinstance(req, dict) else None
                    futures.append(await pipe.send_dead_letter("perceive", event, exc, tid, trace_id=trace))
            if ok:
                try:
                    t_model = time.perf_counter()
                    out = await pipe.in_model_thread(
                        pipe.perceiver.perceive, [r for _, r, _ in ok], [t for _, _, t in ok], now_ms()
                    )
                    pipe.stats.add(len(ok), time.perf_counter() - t_model)
                    for (event, req, _), res in zip(ok, out, strict=True):
                        if isinstance(res, AosError):  # this task's media: dead-lettered alone
                            futures.append(
                                await pipe.send_dead_letter(
                                    "perceive", event, res, req["task_id"], req["tenant"], req["trace_id"]
                                )
                            )
                        else:
                            futures.append(await pipe.send(topics.PERCEIVED.name, res["task_id"], res))
                            sent.append(res)
                except Exception as exc:
                    for event, req, _ in ok:
                        futures.append(
                            await pipe.send_dead_letter(
                                "perceive", event, exc, req["task_id"], req["tenant"], req["trace_id"]
                            )
                        )
            await _settle(futures)
            st.emitted(len(sent))
            st.done(t0, len(events), sent)

    @app.agent(perceived_topic, name="match_agents")
    async def match_agents(stream: faust.StreamT[Any]) -> None:
        await pipe.start_registry_view()
        assert pipe.index is not None
        m = settings.matching
        matcher = Matcher.from_settings(pipe.index, m, spaces=pipe.spaces)
        matcher.ab_share = settings.experience.ab_share
        await pipe.start_weights_view(matcher)
        st = pipe.metrics.stage("match")
        async for events in stream.take_events(  # type: ignore[attr-defined]
            p.batch_max, within=p.batch_window_ms / 1000
        ):
            t0 = time.time_ns()
            st.received(len(events))
            futures: list[Awaitable[Any]] = []
            ok: list[tuple[EventT[Any], records.PerceivedTask]] = []
            sent: list[records.MatchedTask] = []
            for event in events:
                try:
                    ok.append((event, pipe.decode(topics.PERCEIVED.name, event)))
                except Exception as exc:
                    futures.append(await pipe.send_dead_letter("match", event, exc))
            for event, task in ok:
                try:
                    (matched,) = matcher.match([task], now_ms())
                    futures.append(await pipe.send(topics.MATCHED.name, matched["task_id"], matched))
                    sent.append(matched)
                except Exception as exc:
                    futures.append(
                        await pipe.send_dead_letter(
                            "match", event, exc, task["task_id"], task["tenant"], task.get("trace_id")
                        )
                    )
            await _settle(futures)
            st.emitted(len(sent))
            st.done(t0, len(events), sent)

    planner_settings = planner_settings_from(planning)

    @app.agent(matched_topic, name="plan_task")
    async def plan_task(stream: faust.StreamT[Any]) -> None:
        await pipe.producer_knows_tables()
        st = pipe.metrics.stage("plan")
        async for event in stream.events():
            t0 = time.time_ns()
            st.received()
            futures: list[Awaitable[Any]] = []
            task = None
            try:
                task = pipe.decode(topics.MATCHED.name, event)
                if planned.get(task["task_id"]) is not None:
                    log.info("plan: task %s already planned; duplicate dropped", task["task_id"])
                    continue
                if planning.planner == "network" and len(task.get("roles") or []) > 1:
                    # several roles: enumeration or the GA, up to tens of ms of CPU, off the event loop
                    plan = await asyncio.to_thread(
                        plan_network, task, now_ms(), planner_settings, pipe.quality, 0, pipe.capabilities
                    )
                elif planning.planner == "network":  # one role: a pick among a few options, inline
                    plan = plan_network(task, now_ms(), planner_settings, pipe.quality, capabilities=pipe.capabilities)
                else:
                    plan = plan_sequential(
                        task,
                        now_ms(),
                        planning.max_steps,
                        step_timeout_ms=planning.step_timeout_ms,
                        retries=planning.step_retries,
                        fallback_min_similarity=planning.fallback_min_similarity,
                        capabilities=pipe.capabilities,
                    )
                target = task["reply_to"] or topics.PLANS.name
                if target not in pipe.codecs:
                    pipe.codecs[target] = codec_for(records.PLAN, target, settings.schema_registry)
                futures.append(await pipe.send(target, plan["task_id"], plan))
                why = review_reason(plan, settings.experience.review_threshold)
                if why is not None:
                    flagged = {**plan, "notes": [*plan["notes"], f"review: {why}"]}
                    futures.append(await pipe.send(topics.REVIEW.name, plan["task_id"], flagged))
                await _settle(futures)
                planned[task["task_id"]] = plan["created_at"]
                st.emitted(len(futures))
                pipe.metrics.planned(plan["status"])
                st.done(t0, 1, (plan,))
            except Exception as exc:
                tid = task.get("task_id") if isinstance(task, dict) else None
                trace = task.get("trace_id") if isinstance(task, dict) else None
                await _settle([await pipe.send_dead_letter("plan", event, exc, tid, trace_id=trace)])

    @app.timer(interval=60.0)  # type: ignore[untyped-decorator]
    async def prune_plan_dedupe() -> None:
        horizon = now_ms() - planning.dedupe_retention_s * 1000
        old = [k for k, v in list(planned.items()) if v is not None and v < horizon]
        for k in old:
            del planned[k]

    @app.agent(agents_topic, name="record_card")
    async def record_card(stream: faust.StreamT[Any]) -> None:
        import psycopg

        from aos_gateway.registry import store

        loop = asyncio.get_running_loop()
        conn: Any = None
        st = pipe.metrics.stage("registry")
        async for event in stream.events():
            t0 = time.time_ns()
            st.received()
            msg = event.message
            try:
                card = None if msg.value is None else pipe.decode(topics.AGENTS.name, event)
                # what PostgreSQL would refuse on every retry below is dead-lettered here, once
                agent_id = store.agent_id_of(as_bytes(msg.key), card)
            except Exception as exc:
                await _settle([await pipe.send_dead_letter("registry", event, exc)])
                continue
            delay = 0.5
            while True:  # the database being away is no reason to drop or skip a card: wait for it
                try:
                    if conn is None:
                        conn = await loop.run_in_executor(pipe.io_pool, store.connect, settings.postgres.conninfo())
                    await loop.run_in_executor(
                        pipe.io_pool, store.record_card_event, conn, agent_id, card, msg.partition, msg.offset
                    )
                    st.emitted()
                    st.done(t0)
                    break
                except (StoreError, psycopg.Error) as exc:
                    st.error(exc)
                    log.warning("registry: PostgreSQL unavailable (%s); retrying in %.1fs", exc, delay)
                    conn = None
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    if settings.execution.enabled:
        from aos_gateway.streams.dispatch import build_dispatcher

        pipe.dispatcher = build_dispatcher(app, pipe, settings)
    from aos_gateway.streams.projections import build_projections

    build_projections(app, pipe, settings)
    if settings.connect.sinks:
        from aos_gateway.streams.sinks import build_sinks

        build_sinks(app, pipe)
    return pipe
