"""Trace ids and spans: W3C ids from records' trace ids, spans per stage, and one task's trace id on every
record the stages emit (perceived, matched, plan, invocation, invocation result, execution result,
experience, dead letter), without a broker."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import numpy as np
import pytest
from opentelemetry.sdk.trace.export import ConsoleSpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aos_gateway import topics
from aos_gateway.agents.sdk import Agent, handle_one
from aos_gateway.client import new_task
from aos_gateway.errors import MissingExtraError, ValidationError
from aos_gateway.matching.index import ExactIndex
from aos_gateway.matching.matcher import Matcher
from aos_gateway.network.planner import plan_network
from aos_gateway.perception.task import perceive
from aos_gateway.settings import MetricsSettings, Settings, TracingSettings
from aos_gateway.streams.deadletter import dead_letter
from aos_gateway.streams.dispatch import Dispatcher
from aos_gateway.streams.metrics import Metrics
from aos_gateway.streams.tracing import StageTracer, make_exporter, sampled, trace_id_for, w3c_trace_id
from tests.unit.perception.test_task import FakeEncoder


def test_w3c_trace_ids() -> None:
    hex_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    assert w3c_trace_id(hex_id) == hex_id
    assert w3c_trace_id(hex_id.upper()) == hex_id
    for odd in ("trace-1", "0" * 32, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736"):
        derived = w3c_trace_id(odd)
        assert len(derived) == 32 and int(derived, 16) != 0 and derived == w3c_trace_id(odd)
    assert w3c_trace_id(None, "task-1") == w3c_trace_id("", "task-1") != w3c_trace_id(None, "task-2")
    assert trace_id_for("mine", "task-1") == "mine"
    assert trace_id_for(None, "task-1") == w3c_trace_id(None, "task-1")
    assert w3c_trace_id(trace_id_for(None, "task-1")) == trace_id_for(None, "task-1")  # a fixed point


def test_sampling_is_decided_by_the_trace_id() -> None:
    ids = [w3c_trace_id(f"t{i}") for i in range(2000)]
    assert all(sampled(i, 1.0) for i in ids) and not any(sampled(i, 0.0) for i in ids)
    share = sum(sampled(i, 0.25) for i in ids) / len(ids)
    assert 0.2 < share < 0.3
    assert [sampled(i, 0.25) for i in ids] == [sampled(i, 0.25) for i in ids]


def test_no_exporter_means_no_spans() -> None:
    tracer = StageTracer.from_settings(TracingSettings())
    assert not tracer.enabled
    tracer.span("plan", "t", "task", 1, 2)  # a no-op
    tracer.shutdown()


def test_spans_join_the_task_trace_under_one_virtual_parent() -> None:
    mem = InMemorySpanExporter()
    tracer = StageTracer(mem, batch=False)
    t0 = time.time_ns()
    tracer.span("perceive", "trace-1", "task-1", t0, t0 + 5_000_000)
    tracer.span("plan", "trace-1", "task-1", t0 + 6_000_000, t0 + 7_000_000, ValidationError("no"), {"k": 1})
    tracer.span("plan", None, "task-2", t0, t0)
    a, b, c = mem.get_finished_spans()
    want = int(w3c_trace_id("trace-1"), 16)
    assert a.context.trace_id == b.context.trace_id == want
    assert c.context.trace_id == int(w3c_trace_id(None, "task-2"), 16)
    assert a.parent is not None and b.parent is not None and a.parent.span_id == b.parent.span_id
    assert a.parent.is_remote and a.kind is SpanKind.CONSUMER and a.context.span_id != b.context.span_id
    assert (a.name, a.start_time, a.end_time) == ("perceive", t0, t0 + 5_000_000)
    assert a.attributes is not None and a.attributes["aos.task_id"] == "task-1"
    assert a.attributes["aos.trace_id"] == "trace-1" and a.status.status_code is StatusCode.UNSET
    assert b.status.status_code is StatusCode.ERROR and b.attributes is not None and b.attributes["k"] == 1
    assert [e.name for e in b.events] == ["exception"]
    assert a.resource.attributes["service.name"] == "aos-gateway"
    tracer.shutdown()


def test_exporters_by_settings() -> None:
    assert isinstance(make_exporter(TracingSettings(exporter="console")), ConsoleSpanExporter)
    tracer = StageTracer.from_settings(TracingSettings(exporter="console"))
    assert tracer.enabled
    tracer.shutdown()
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError:
        with pytest.raises(MissingExtraError, match=r"aos-gateway\[otel\]"):
            make_exporter(TracingSettings(exporter="otlp"))
    else:
        assert make_exporter(TracingSettings(exporter="otlp", otlp_endpoint="http://127.0.0.1:1/v1/traces"))


class FakePipe:
    """What the dispatcher uses of the pipeline: sends (recorded, acknowledged at once) and metrics."""

    def __init__(self, tracer: StageTracer | None = None) -> None:
        self.metrics = Metrics(MetricsSettings(port=0), tracer)
        self.sent: list[tuple[str, Any]] = []

    async def producer_knows(self, topic: str) -> None:
        return None

    async def send(self, topic: str, key: Any, record: Any) -> Any:
        self.sent.append((topic, record))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


def _card(aid: str) -> Any:
    return {"agent_id": aid, "name": aid.upper(), "description": "", "capabilities": [], "modalities": ["text"],
            "examples": [], "tenant": "public", "cost": 0.01, "p95_latency_ms": 100, "status": "ACTIVE",
            "invocation_topic": None, "updated_at": 0, "metadata": {}}  # fmt: skip


async def test_one_task_trace_id_is_on_every_record_the_stages_emit() -> None:
    mem = InMemorySpanExporter()
    pipe = FakePipe(StageTracer(mem, batch=False))
    req = new_task("abcd", tenant="acme")
    trace = req["trace_id"]
    assert trace is not None
    (perceived,) = perceive([req], ["abcd"], FakeEncoder(), 1, "float32")
    index = ExactIndex(4)
    index.upsert(_card("calc"), np.array([1.0, 0, 0, 0]))
    (matched,) = Matcher(index, min_similarity=0.1).match([perceived], 2)
    plan = plan_network(matched, int(time.time() * 1000))
    assert plan["status"] == "PLANNED" and plan["steps"][0]["agent_id"] == "calc"

    d = Dispatcher(pipe, Settings(), {})  # type: ignore[arg-type]  # a dict for the Faust table
    await d.on_plan(plan)
    ((topic, raw),) = pipe.sent
    assert topic == topics.invocation_topic("calc")
    inv: Any = d.inv_codec.decode(raw)
    reply = handle_one(Agent(agent_id="calc", name="Calc", handler=lambda r: "84"), inv)
    assert pipe.metrics.registry.get_sample_value("aos_executions_in_flight") == 1
    await d.on_reply(reply)
    by_topic: dict[str, list[Any]] = {}
    for t, rec in pipe.sent[1:]:
        by_topic.setdefault(t, []).append(rec)
    (result,) = by_topic[topics.RESULTS.name]
    assert result["status"] == "SUCCEEDED" and len(by_topic[topics.EXPERIENCE.name]) == 2
    dl = dead_letter(stage="plan", error=ValueError("x"), topic="t", partition=0, offset=1, key=None, value=None,
                     task_id=req["task_id"], trace_id=plan["trace_id"])  # fmt: skip
    chain = [perceived, matched, plan, inv, reply, result, *by_topic[topics.EXPERIENCE.name], dl]
    assert [r["trace_id"] for r in chain] == [trace] * len(chain)

    assert pipe.metrics.registry.get_sample_value("aos_execution_results_total", {"status": "SUCCEEDED"}) == 1
    assert pipe.metrics.registry.get_sample_value("aos_executions_in_flight") == 0
    assert pipe.metrics.registry.get_sample_value("aos_stage_events_out_total", {"stage": "dispatch"}) == 4
    (execute,) = mem.get_finished_spans()  # the whole execution, in the task's trace
    assert execute.name == "execute" and execute.context.trace_id == int(trace, 16)
    pipe.metrics.tracer.shutdown()


async def test_a_plan_without_a_trace_id_gets_one_for_its_results() -> None:
    pipe = FakePipe()
    req = new_task("abcd")
    (perceived,) = perceive([req], ["abcd"], FakeEncoder(), 1, "float32")
    (matched,) = Matcher(ExactIndex(4)).match([perceived], 2)  # no agents: NO_MATCH
    plan = {**plan_network(matched, int(time.time() * 1000)), "trace_id": None}
    d = Dispatcher(pipe, Settings(), {})  # type: ignore[arg-type]
    await d.on_plan(plan)  # type: ignore[arg-type]
    ((topic, result),) = pipe.sent
    assert topic == topics.RESULTS.name and result["status"] == "FAILED"
    assert result["trace_id"] == trace_id_for(None, req["task_id"])
    assert pipe.metrics.registry.get_sample_value("aos_execution_results_total", {"status": "FAILED"}) == 1
