"""The worker's Prometheus metrics (prometheus-client), served on ``metrics.host:port``/metrics.

One :class:`Metrics` per pipeline, with its own ``CollectorRegistry`` (not the process-wide default:
several apps in one process, as in the tests, do not clash). Stages hold a :class:`StageMetrics`
each, whose labelled children are bound once, so an event costs a few counter increments and one
histogram observation (about a microsecond each). Values that exist anyway are read at scrape time
instead of being counted on the hot path: the encoders' cache hits and misses, the executions in
flight. Consumer lag per partition is measured from Faust's consumer on a timer.

Names and labels (also in docs/operations.md)::

    aos_stage_events_in_total{stage}             events a stage took from its topic
    aos_stage_events_out_total{stage}            records a stage produced (or, for project-*, stored)
    aos_stage_latency_seconds{stage}             time from a (micro-)batch's start to its outputs' ack
    aos_stage_errors_total{stage,error_type}     failures: dead letters, store retries, failed ticks
    aos_dead_letters_total{stage}                events sent to aos.deadletter.v1
    aos_plans_total{status}                      plans by status (PLANNED, NO_MATCH, REJECTED)
    aos_execution_results_total{status}          final results by status (SUCCEEDED, PARTIAL, FAILED)
    aos_executions_in_flight                     executions the dispatcher is running
    aos_consumer_lag{topic,partition}            high watermark - committed offset (messages)
    aos_tenant_tasks_over_rate_total{tenant}     tasks over their tenant's rate (AOS_LIMITS__*), perceived anyway
    aos_registry_cards_rejected_total{reason}    cards refused (AOS_SECURITY__REQUIRE_SIGNED_CARDS)
    aos_encoder_cache_hits_total{encoder}        content-hash cache hits (text, image, audio)
    aos_encoder_cache_misses_total{encoder}
    aos_encoder_cache_hit_ratio{encoder}         hits / (hits + misses) since start
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from aos_gateway.settings import MetricsSettings
from aos_gateway.streams.tracing import StageTracer

if TYPE_CHECKING:
    import faust

log = logging.getLogger("aos_gateway.metrics")

#: stage latencies run from about a millisecond (match, plan) to seconds (a cold model, a slow store)
#: distinct tenant label values at most (tenants come from records: a hostile producer could invent any)
MAX_TENANT_LABELS = 1000

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class StageMetrics:
    """One stage's counters and histogram, with the labelled children bound once."""

    __slots__ = ("_dead", "_errors", "_in", "_latency", "_metrics", "_out", "name", "tracer")

    def __init__(self, metrics: Metrics, stage: str) -> None:
        self.name = stage
        self.tracer = metrics.tracer
        self._metrics = metrics
        self._in = metrics.events_in.labels(stage)
        self._out = metrics.events_out.labels(stage)
        self._latency = metrics.latency.labels(stage)
        self._dead = metrics.dead_letters.labels(stage)  # at 0 from the start: rate() works from the first one
        self._errors: dict[str, Any] = {}

    def received(self, n: int = 1) -> None:
        self._in.inc(n)

    def emitted(self, n: int = 1) -> None:
        self._out.inc(n)

    def error(self, error: BaseException | str) -> None:
        """A failure of this stage (the label is the error's type name)."""
        kind = error if isinstance(error, str) else type(error).__name__
        child = self._errors.get(kind)
        if child is None:
            child = self._errors[kind] = self._metrics.errors.labels(self.name, kind)
        child.inc()

    def dead_letter(self, error: BaseException | str) -> None:
        self._dead.inc()
        self.error(error)

    def done(self, start_ns: int, n: int = 1, traced: Iterable[Mapping[str, Any]] = ()) -> int:
        """``n`` events took from ``start_ns`` (``time.time_ns()``) until now: each observes that latency,
        and each record in ``traced`` (its ``trace_id`` and ``task_id``) gets a span. Returns now."""
        end_ns = time.time_ns()
        seconds = (end_ns - start_ns) / 1e9
        observe = self._latency.observe
        for _ in range(n):
            observe(seconds)
        if self.tracer.enabled:
            for rec in traced:
                self.tracer.span(self.name, rec.get("trace_id"), str(rec.get("task_id") or ""), start_ns, end_ns)
        return end_ns


class _Caches(Collector):
    """Encoder cache hits and misses, read from the encoders' own counters at scrape time."""

    def __init__(self) -> None:
        self.sources: dict[str, Callable[[], Any]] = {}

    def collect(self) -> Iterator[Metric]:
        hits = CounterMetricFamily("aos_encoder_cache_hits", "Encoder content-hash cache hits", labels=["encoder"])
        misses = CounterMetricFamily(
            "aos_encoder_cache_misses", "Encoder content-hash cache misses (model runs)", labels=["encoder"]
        )
        ratio = GaugeMetricFamily(
            "aos_encoder_cache_hit_ratio", "Encoder cache hits / lookups since start", labels=["encoder"]
        )
        for name, source in sorted(self.sources.items()):
            enc = source()
            h, m = getattr(enc, "hits", None), getattr(enc, "misses", None)
            if not isinstance(h, int) or not isinstance(m, int):
                continue  # not configured, or an encoder without a cache
            hits.add_metric([name], h)
            misses.add_metric([name], m)
            if h + m:
                ratio.add_metric([name], h / (h + m))
        yield hits
        yield misses
        yield ratio


class Metrics:
    """The worker's metrics, in a registry of their own."""

    def __init__(self, settings: MetricsSettings | None = None, tracer: StageTracer | None = None) -> None:
        self.settings = settings or MetricsSettings()
        self.tracer = tracer or StageTracer(None)
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("aos_stage_events_in", "Events a stage took from its topic", ["stage"], registry=r)
        self.events_out = Counter(
            "aos_stage_events_out", "Records a stage produced (project-*: stored)", ["stage"], registry=r
        )
        self.latency = Histogram(
            "aos_stage_latency_seconds",
            "Time from a stage's (micro-)batch start until its outputs were acknowledged, per event",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "aos_stage_errors",
            "Stage failures (dead letters, store retries, failed ticks)",
            ["stage", "error_type"],
            registry=r,
        )
        self.dead_letters = Counter("aos_dead_letters", "Events sent to the dead-letter topic", ["stage"], registry=r)
        self.plans = Counter("aos_plans", "Plans by status", ["status"], registry=r)
        self.results = Counter("aos_execution_results", "Final execution results by status", ["status"], registry=r)
        self.in_flight = Gauge("aos_executions_in_flight", "Executions the dispatcher is running", registry=r)
        self.consumer_lag = Gauge(
            "aos_consumer_lag",
            "Messages not yet committed by this worker: high watermark - committed offset",
            ["topic", "partition"],
            registry=r,
        )
        self.over_rate = Counter(
            "aos_tenant_tasks_over_rate",
            "Tasks over their tenant's rate (AOS_LIMITS__*) at the perceive stage: metered, not dropped",
            ["tenant"],
            registry=r,
        )
        self.learning_pass = Histogram(
            "aos_learning_pass_seconds",
            "Wall time of the worker's learning passes (kind: full = the whole history, incremental = "
            "what arrived since the last pass)",
            ["kind"],
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.learning_new = Gauge(
            "aos_learning_pass_new_records", "Experience records the last learning pass learned from", registry=r
        )
        self._over_rate: dict[str, Any] = {}
        self._caches = _Caches()
        r.register(self._caches)
        self._stages: dict[str, StageMetrics] = {}
        self._by_status: dict[tuple[Counter, str], Any] = {}
        self._lag_keys: set[tuple[str, str]] = set()
        self._server: Any = None
        self.port: int | None = None

    def stage(self, name: str) -> StageMetrics:
        st = self._stages.get(name)
        if st is None:
            st = self._stages[name] = StageMetrics(self, name)
        return st

    def planned(self, status: str) -> None:
        self._status(self.plans, status)

    def finished(self, status: str) -> None:
        """A final execution result."""
        self._status(self.results, status)

    def _status(self, counter: Counter, status: str) -> None:
        child = self._by_status.get((counter, status))  # labels() costs several times an inc()
        if child is None:
            child = self._by_status[(counter, status)] = counter.labels(status)
        child.inc()

    def learned(self, info: dict[str, Any]) -> None:
        """A learning pass's summary (:attr:`aos_gateway.streams.learner.PeriodicLearner.last_pass`)."""
        if "seconds" in info:
            self.learning_pass.labels(str(info.get("kind", "full"))).observe(float(info["seconds"]))
            self.learning_new.set(int(info.get("new", 0)))

    def tenant_over_rate(self, tenant: str) -> None:
        """A task over its tenant's rate (past MAX_TENANT_LABELS tenants, counted as ``_other``)."""
        child = self._over_rate.get(tenant)
        if child is None:
            if len(self._over_rate) >= MAX_TENANT_LABELS:
                tenant = "_other"
            child = self._over_rate.get(tenant) or self.over_rate.labels(tenant)
            self._over_rate[tenant] = child
        child.inc()

    def watch_caches(self, sources: Mapping[str, Callable[[], Any]]) -> None:
        """Encoders by name, as callables returning the encoder (or None): read at scrape time."""
        self._caches.sources.update(sources)

    def watch_in_flight(self, count: Callable[[], int]) -> None:
        self.in_flight.set_function(count)

    def render(self) -> bytes:
        """The text exposition format, as /metrics serves it."""
        return generate_latest(self.registry)

    def serve(self) -> int | None:
        """Serve /metrics in a daemon thread; the port, or None when off or the port is taken (logged)."""
        s = self.settings
        if not s.enabled or s.port == 0:
            log.info("metrics: no endpoint (AOS_METRICS__ENABLED=false or AOS_METRICS__PORT=0)")
            return None
        if self._server is not None:
            return self.port
        try:
            self._server, _ = start_http_server(s.port, s.host, registry=self.registry)
        except OSError as exc:
            log.error(
                "metrics: cannot listen on %s:%d (%s) - another worker on this host? This worker runs on "
                "without /metrics; give each worker its own AOS_METRICS__PORT (0: none)",
                s.host,
                s.port,
                exc.strerror or exc,
            )
            return None
        self.port = int(self._server.server_address[1])
        log.info("metrics: serving http://%s:%d/metrics", s.host, self.port)
        return self.port

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    async def measure_lag(self, consumer: Any, internal_prefix: str | None = None) -> int:
        """Set the lag gauge for every partition the consumer has (table changelogs and Faust's own topics,
        named ``internal_prefix``..., left out).

        The lag is Faust's high watermark for the partition minus the offset it last committed (the next
        one to process); before its first commit, its read offset, else the consumer's fetch position.
        Partitions no longer assigned (a rebalance) lose their series. Returns the partitions measured.
        """
        try:
            assigned = consumer.assignment()
        except Exception:  # the consumer is not started yet
            return 0
        seen: set[tuple[str, str]] = set()
        for tp in sorted(assigned):
            if tp.topic.endswith("-changelog") or (internal_prefix and tp.topic.startswith(internal_prefix)):
                continue
            try:
                high = consumer.highwater(tp)
                if high is None:
                    continue  # nothing fetched for it yet
                done = consumer._committed_offset.get(tp)  # Faust's own record of its last commit
                if done is None:
                    read = consumer._read_offset.get(tp)
                    done = read + 1 if read is not None else await asyncio.wait_for(consumer.position(tp), 2.0)
                if done is None:
                    continue
            except Exception as exc:
                log.debug("metrics: no lag for %s[%d]: %s", tp.topic, tp.partition, exc)
                continue
            key = (tp.topic, str(tp.partition))
            self.consumer_lag.labels(*key).set(max(0, int(high) - int(done)))
            seen.add(key)
        for key in self._lag_keys - seen:
            self.consumer_lag.remove(*key)
        self._lag_keys = seen
        return len(seen)


def install(app: faust.App, metrics: Metrics) -> None:
    """Serve the endpoint when the worker starts, and measure consumer lag on a timer."""
    if not metrics.settings.enabled:
        return

    @app.task  # type: ignore[untyped-decorator]
    async def serve_metrics() -> None:
        metrics.serve()

    @app.timer(interval=metrics.settings.lag_interval_s)  # type: ignore[untyped-decorator]
    async def measure_consumer_lag() -> None:
        try:
            await metrics.measure_lag(app.consumer, f"{app.conf.id}-")
        except Exception:  # never let the timer die
            log.exception("metrics: measuring consumer lag failed")
