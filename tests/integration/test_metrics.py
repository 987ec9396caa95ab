"""Metrics and traces on the real stack: a private Prometheus (Debian's, 2.42) scrapes the session's
worker, and one task's trace id is followed across every topic its records pass through.

Nothing is installed here: ``/usr/bin/prometheus`` comes from the Debian package ``prometheus``
(``scripts/setup``). This module's Prometheus is its own process, with its own configuration,
storage in a temporary directory and a free loopback port (never the system service).
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_gateway import topics
from aos_gateway.agents.reference import calculator
from aos_gateway.agents.sdk import Agent, AgentRunner
from aos_gateway.cli.deadletter_cmds import dead_letters
from aos_gateway.client import GatewayClient, new_task
from aos_gateway.contracts import records
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import DeadLetteredError
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import read_to_end
from tests.ports import free_port

pytestmark = pytest.mark.integration

PROMETHEUS = Path("/usr/bin/prometheus")
SUFFIX = uuid.uuid4().hex[:8]
TENANT = f"it-metrics-{SUFFIX}"
CALC = f"it-mcalc-{SUFFIX}"
SKILL = f"math.metrics-{SUFFIX}"  # only this module's calculator has it: tasks requiring it match it alone


def _get_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@pytest.fixture(scope="module")
def prometheus(
    stack_env: dict[str, str], worker: subprocess.Popen[bytes], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    if not PROMETHEUS.exists():
        pytest.fail("/usr/bin/prometheus is missing: apt-get install prometheus (scripts/setup installs it)")
    home = tmp_path_factory.mktemp("prometheus")
    port = free_port()
    config = home / "prometheus.yml"
    config.write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: aos-worker\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['127.0.0.1:{stack_env['AOS_METRICS__PORT']}']\n"
    )
    log_path = home / "prometheus.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [
            str(PROMETHEUS),
            f"--config.file={config}",
            f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--storage.tsdb.retention.time=1h",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prometheus did not start; log:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    """An instant query's result vector."""
    body = _get_json(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def wait_for(url: str, expr: str, ok: Callable[[list[dict[str, Any]]], bool], timeout: float = 60) -> list[Any]:
    deadline = time.monotonic() + timeout
    while True:
        res = query(url, expr)
        if ok(res):
            return res
        if time.monotonic() > deadline:
            raise AssertionError(f"{expr}: {res}")
        time.sleep(1.0)


def _positive(res: list[dict[str, Any]]) -> bool:
    return bool(res) and all(float(r["value"][1]) > 0 for r in res)


@pytest.fixture(scope="module")
def agents(settings: Settings, worker: subprocess.Popen[bytes]) -> Iterator[AgentRunner]:
    calc = Agent(
        agent_id=CALC,
        name=calculator.name,
        description=calculator.description,
        capabilities=[*calculator.capabilities, SKILL],
        examples=calculator.examples,
        tenant=TENANT,
        cost=0.01,
        p95_latency_ms=calculator.p95_latency_ms,
        handler=calculator.handler,
    )
    runner = AgentRunner([calc], settings)
    runner.start()
    try:
        yield runner
    finally:
        runner.stop()


def _records(settings: Settings, topic: str, record: str, task_id: str) -> list[Any]:
    codec = codec_for(record, topic)
    out = [codec.decode(m.value()) for m in read_to_end(settings.kafka, topic)]
    return [r for r in out if r["task_id"] == task_id]


def test_one_task_is_followed_by_its_trace_id_across_stages(settings: Settings, agents: AgentRunner) -> None:
    with GatewayClient(settings) as client:
        client.listen(executions=True)
        deadline = time.monotonic() + 90
        while True:  # until the registry view has indexed this module's calculator
            req = new_task("What is 12 * 7?", tenant=TENANT, required_capabilities=[SKILL])
            plan = client.wait(client.submit(req), 30)
            if plan["status"] == "PLANNED" or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        assert plan["status"] == "PLANNED", plan["reason"]
        assert plan["steps"][0]["agent_id"] == CALC
        result = client.wait_execution(req["task_id"], 60)
    assert result["status"] == "SUCCEEDED", result["reason"]
    trace, tid = req["trace_id"], req["task_id"]
    assert trace and plan["trace_id"] == trace and result["trace_id"] == trace

    experience: list[Any] = []
    deadline = time.monotonic() + 20
    while len(experience) < 2 and time.monotonic() < deadline:  # EXECUTION + one STEP
        experience = _records(settings, topics.EXPERIENCE.name, records.EXPERIENCE, tid)
        time.sleep(0.5)
    assert sorted(r["kind"] for r in experience) == ["EXECUTION", "STEP"]
    along = {
        "perceived": _records(settings, topics.PERCEIVED.name, records.PERCEIVED_TASK, tid),
        "matched": _records(settings, topics.MATCHED.name, records.MATCHED_TASK, tid),
        "plan": _records(settings, topics.PLANS.name, records.PLAN, tid),
        "invocation": _records(settings, topics.invocation_topic(CALC), records.INVOCATION, tid),
        "invocation result": _records(settings, topics.INVOCATION_RESULTS.name, records.INVOCATION_RESULT, tid),
        "execution result": _records(settings, topics.RESULTS.name, records.EXECUTION_RESULT, tid),
        "experience": experience,
    }
    assert all(along.values()), {k: len(v) for k, v in along.items()}
    wrong = {k: [r["trace_id"] for r in v if r["trace_id"] != trace] for k, v in along.items()}
    assert not any(wrong.values()), (trace, wrong)

    # a task that fails validation: its dead letter carries the task's trace id too
    bad = new_task("   ", tenant=TENANT, task_id=f"it-metrics-bad-{SUFFIX}")
    with GatewayClient(settings) as client:
        client.submit(bad, listen=False)
        client.flush()
    found: list[Any] = []
    deadline = time.monotonic() + 30
    while not found and time.monotonic() < deadline:
        found = [d for d in dead_letters(settings) if d["task_id"] == bad["task_id"]]
        time.sleep(0.5)
    assert [(d["stage"], d["trace_id"]) for d in found] == [("perceive", bad["trace_id"])]
    # and a client waiting for its plan is told why none comes, not only that none came
    with GatewayClient(settings) as client, pytest.raises(DeadLetteredError, match="refused at stage perceive: "):
        client.wait(bad["task_id"], timeout=0.5)


def test_prometheus_scrapes_stage_counters_latency_and_lag(
    settings: Settings, prometheus: str, agents: AgentRunner
) -> None:
    with GatewayClient(settings) as client:
        ids = [client.submit("Convert 3 miles into kilometres", tenant=TENANT) for _ in range(3)]
        client.submit(new_task("", tenant=TENANT), listen=False)  # empty: a dead letter
        for tid in ids:
            client.wait(tid, 30)

    wait_for(prometheus, 'up{job="aos-worker"}', lambda r: bool(r) and r[0]["value"][1] == "1")
    for stage in ("perceive", "match", "plan", "dispatch"):
        wait_for(prometheus, f'aos_stage_events_in_total{{stage="{stage}"}}', _positive)
        wait_for(prometheus, f'aos_stage_events_out_total{{stage="{stage}"}}', _positive)
    buckets = wait_for(
        prometheus, 'aos_stage_latency_seconds_bucket{stage="perceive"}', lambda r: len(r) >= 15
    )  # 14 bounds and +Inf
    assert {b["metric"]["le"] for b in buckets} >= {"0.001", "1.0", "+Inf"}
    wait_for(prometheus, 'aos_stage_latency_seconds_count{stage="plan"}', _positive)
    p50 = wait_for(
        prometheus,
        'histogram_quantile(0.5, sum by (le) (aos_stage_latency_seconds_bucket{stage="plan"}))',
        lambda r: bool(r) and r[0]["value"][1] not in ("NaN", "+Inf"),
    )
    assert 0 < float(p50[0]["value"][1]) < 30
    lag = wait_for(prometheus, "aos_consumer_lag", lambda r: len(r) >= settings.worker.topic_partitions)
    assert topics.TASKS.name in {s["metric"]["topic"] for s in lag}
    assert all(float(s["value"][1]) >= 0 for s in lag)
    wait_for(prometheus, 'aos_encoder_cache_hits_total{encoder="text"}', _positive)  # the same text thrice
    wait_for(prometheus, 'aos_encoder_cache_hit_ratio{encoder="text"}', _positive)
    wait_for(prometheus, "aos_execution_results_total", _positive)
    wait_for(prometheus, "aos_executions_in_flight", lambda r: len(r) == 1)
    wait_for(prometheus, 'aos_dead_letters_total{stage="perceive"}', _positive)
    wait_for(prometheus, 'aos_stage_errors_total{stage="perceive",error_type="ValidationError"}', _positive)
