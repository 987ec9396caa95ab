"""The worker's Prometheus metrics without a broker: counters, histogram, caches, lag, the endpoint."""

from __future__ import annotations

import logging
import time
import urllib.request
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from faust.types import TP

from aos_gateway.app import create_app
from aos_gateway.errors import ValidationError
from aos_gateway.settings import KafkaSettings, MetricsSettings, Settings
from aos_gateway.streams.metrics import LATENCY_BUCKETS, Metrics
from aos_gateway.streams.tracing import w3c_trace_id
from tests.ports import free_port


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    m = Metrics(MetricsSettings(port=free_port()))
    yield m
    m.close()


def value(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_stage_events_latency_and_errors(metrics: Metrics) -> None:
    st = metrics.stage("perceive")
    assert metrics.stage("perceive") is st  # bound once
    st.received(3)
    st.emitted(2)
    st.done(time.time_ns() - 20_000_000, 3)  # a batch of three took ~20 ms
    st.dead_letter(ValidationError("empty task"))
    st.error("KafkaError")
    assert value(metrics, "aos_stage_events_in_total", stage="perceive") == 3
    assert value(metrics, "aos_stage_events_out_total", stage="perceive") == 2
    assert value(metrics, "aos_stage_latency_seconds_count", stage="perceive") == 3
    assert value(metrics, "aos_stage_latency_seconds_bucket", stage="perceive", le="0.01") == 0
    assert value(metrics, "aos_stage_latency_seconds_bucket", stage="perceive", le="0.025") == 3
    assert 0.06 <= (value(metrics, "aos_stage_latency_seconds_sum", stage="perceive") or 0) < 1.0
    assert value(metrics, "aos_dead_letters_total", stage="perceive") == 1
    assert value(metrics, "aos_stage_errors_total", stage="perceive", error_type="ValidationError") == 1
    assert value(metrics, "aos_stage_errors_total", stage="perceive", error_type="KafkaError") == 1
    text = metrics.render().decode()
    buckets = [ln for ln in text.splitlines() if ln.startswith("aos_stage_latency_seconds_bucket{")]
    assert len(buckets) == len(LATENCY_BUCKETS) + 1 and all('stage="perceive"' in b for b in buckets)  # and +Inf
    assert LATENCY_BUCKETS[0] == 0.001 and LATENCY_BUCKETS[-1] >= 10


def test_plans_and_results_by_status(metrics: Metrics) -> None:
    metrics.planned("PLANNED")
    metrics.planned("PLANNED")
    metrics.planned("NO_MATCH")
    metrics.finished("FAILED")
    assert value(metrics, "aos_plans_total", status="PLANNED") == 2
    assert value(metrics, "aos_plans_total", status="NO_MATCH") == 1
    assert value(metrics, "aos_execution_results_total", status="FAILED") == 1
    assert value(metrics, "aos_execution_results_total", status="SUCCEEDED") is None


def test_each_pipeline_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()  # the same names twice would clash in one registry
    a.stage("plan").received()
    assert value(a, "aos_stage_events_in_total", stage="plan") == 1
    assert value(b, "aos_stage_events_in_total", stage="plan") is None


def test_cache_hits_and_in_flight_are_read_at_scrape_time(metrics: Metrics) -> None:
    text = SimpleNamespace(hits=3, misses=1)
    image: Any = None
    metrics.watch_caches({"text": lambda: text, "image": lambda: image, "audio": lambda: object()})
    live: dict[str, int] = {"t1": 1, "t2": 2}
    metrics.watch_in_flight(lambda: len(live))
    assert value(metrics, "aos_encoder_cache_hits_total", encoder="text") == 3
    assert value(metrics, "aos_encoder_cache_misses_total", encoder="text") == 1
    assert value(metrics, "aos_encoder_cache_hit_ratio", encoder="text") == 0.75
    assert value(metrics, "aos_encoder_cache_hits_total", encoder="image") is None  # not configured
    assert value(metrics, "aos_encoder_cache_hits_total", encoder="audio") is None  # no counters
    assert value(metrics, "aos_executions_in_flight") == 2
    text.hits, image = 7, SimpleNamespace(hits=0, misses=0)
    live.clear()
    assert value(metrics, "aos_encoder_cache_hit_ratio", encoder="text") == 7 / 8
    assert value(metrics, "aos_encoder_cache_hits_total", encoder="image") == 0
    assert value(metrics, "aos_encoder_cache_hit_ratio", encoder="image") is None  # no lookups yet
    assert value(metrics, "aos_executions_in_flight") == 0


class FakeConsumer:
    """What Metrics.measure_lag reads from Faust's consumer."""

    def __init__(self) -> None:
        self.tps = {
            TP("aos.tasks.v1", 0): (10, 7, None, None),  # highwater, committed, read offset, position
            TP("aos.tasks.v1", 1): (5, None, 3, None),  # not committed yet: read offset + 1
            TP("aos.feedback.v1", 0): (4, None, None, 4),  # idle: the fetch position
            TP("aos.plans.v1", 0): (None, None, None, None),  # nothing fetched yet
            TP("aos-it-aos-executions-changelog", 0): (9, None, None, 0),  # a table's changelog: left out
            TP("aos-it-__assignor-__leader", 0): (2, None, None, 0),  # Faust's own: left out
        }
        self._committed_offset = {tp: v[1] for tp, v in self.tps.items() if v[1] is not None}
        self._read_offset = {tp: v[2] for tp, v in self.tps.items() if v[2] is not None}

    def assignment(self) -> set[TP]:
        return set(self.tps)

    def highwater(self, tp: TP) -> int | None:
        return self.tps[tp][0]

    async def position(self, tp: TP) -> int | None:
        return self.tps[tp][3]


async def test_consumer_lag_per_partition(metrics: Metrics) -> None:
    consumer = FakeConsumer()
    assert await metrics.measure_lag(consumer, "aos-it-") == 3
    assert value(metrics, "aos_consumer_lag", topic="aos.tasks.v1", partition="0") == 3
    assert value(metrics, "aos_consumer_lag", topic="aos.tasks.v1", partition="1") == 1
    assert value(metrics, "aos_consumer_lag", topic="aos.feedback.v1", partition="0") == 0
    assert value(metrics, "aos_consumer_lag", topic="aos.plans.v1", partition="0") is None
    assert "changelog" not in metrics.render().decode() and "__leader" not in metrics.render().decode()
    del consumer.tps[TP("aos.tasks.v1", 1)]  # revoked in a rebalance: its series goes
    assert await metrics.measure_lag(consumer, "aos-it-") == 2
    assert value(metrics, "aos_consumer_lag", topic="aos.tasks.v1", partition="1") is None


async def test_lag_of_a_consumer_that_has_not_started_is_nothing(metrics: Metrics) -> None:
    class NotStarted:
        def assignment(self) -> set[TP]:
            raise RuntimeError("consumer not started")

    assert await metrics.measure_lag(NotStarted()) == 0


def test_endpoint_serves_and_a_taken_port_is_logged_not_fatal(
    metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    port = metrics.serve()
    assert port == metrics.settings.port
    metrics.stage("match").received(2)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        body = resp.read().decode()
    assert 'aos_stage_events_in_total{stage="match"} 2.0' in body
    other = Metrics(MetricsSettings(port=port))  # a second worker on the same host
    with caplog.at_level(logging.ERROR, logger="aos_gateway.metrics"):
        assert other.serve() is None
    assert f"cannot listen on 127.0.0.1:{port}" in caplog.text and "AOS_METRICS__PORT" in caplog.text
    assert Metrics(MetricsSettings(port=0)).serve() is None
    assert Metrics(MetricsSettings(enabled=False)).serve() is None


async def test_dead_letters_count_and_carry_the_trace_id() -> None:
    s = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:1"), metrics=MetricsSettings(port=0))
    _app, pipe = create_app(s)
    sent: list[tuple[str, Any]] = []

    async def send(topic: str, key: Any, record: Any) -> Any:
        sent.append((topic, record))
        return None

    pipe.send = send  # type: ignore[method-assign]
    msg = SimpleNamespace(topic="aos.tasks.v1", partition=1, offset=9, key=b"t1", value=b"junk")
    event: Any = SimpleNamespace(message=msg)
    await pipe.send_dead_letter("perceive", event, ValidationError("empty task"), "t1", "acme", "abc")
    await pipe.send_dead_letter("perceive", event, ValidationError("empty task"), "t2")  # no trace id: derived
    await pipe.send_dead_letter("match", event, ValueError("not Avro"))  # unreadable: no task, no trace
    assert [r["trace_id"] for _, r in sent] == ["abc", w3c_trace_id(None, "t2"), None]
    assert {t for t, _ in sent} == {"aos.deadletter.v1"}
    assert value(pipe.metrics, "aos_dead_letters_total", stage="perceive") == 2
    assert value(pipe.metrics, "aos_stage_errors_total", stage="match", error_type="ValueError") == 1
