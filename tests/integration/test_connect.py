"""Kafka Connect's JDBC sink on the real stack: the worker's rows land in PostgreSQL, upserted by key."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from aos_gateway.cli.connect_cmds import apply
from aos_gateway.client import GatewayClient
from aos_gateway.connect import rows
from aos_gateway.connect.rest import ConnectClient
from aos_gateway.devstack import LocalStack
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import make_producer
from tests.integration.conftest import run_aos, write_cards

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sink(settings: Settings, sinks: None) -> ConnectClient:
    return ConnectClient(settings.connect.url)


def _wait_rows(
    settings: Settings, sql: str, args: tuple[Any, ...], ok: Callable[[list[Any]], bool], timeout: float = 60
) -> list[Any]:
    deadline = time.monotonic() + timeout
    last: list[Any] = []
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        while time.monotonic() < deadline:
            try:
                last = conn.execute(sql, args).fetchall()
            except psycopg.errors.UndefinedTable:
                last = []
            if ok(last):
                return last
            time.sleep(0.2)
    raise AssertionError(f"rows not as expected within {timeout}s: {last}")


def _produce(settings: Settings, table: rows.SinkTable, items: list[dict[str, Any]]) -> None:
    p = make_producer(settings.kafka)
    for row in items:
        key, value = table.encode(row)
        p.produce(table.topic, key=key, value=value)
    assert p.flush(30) == 0


def _result(task_id: str, steps_ok: int) -> dict[str, Any]:
    now = int(time.time() * 1000)
    return {
        "task_id": task_id,
        "plan_id": f"plan-{task_id}",
        "tenant": "connect-test",
        "status": "SUCCEEDED",
        "reason": None,
        "started_at": now - 250,
        "finished_at": now,
        "duration_ms": 250,
        "cost": 0.25,
        "steps": 2,
        "steps_succeeded": steps_ok,
    }


def test_apply_is_idempotent(settings: Settings, sink: ConnectClient) -> None:
    again = apply(settings, None, 30.0, print)
    assert set(again.values()) == {"unchanged"}
    st = sink.status()["aos-dashboard-sink"]
    assert st["connector"]["state"] == "RUNNING" and [t["state"] for t in st["tasks"]] == ["RUNNING"]


def test_redelivery_and_a_connect_restart_never_duplicate_rows(settings: Settings, sink: ConnectClient) -> None:
    ids = [f"ct-{uuid.uuid4().hex[:8]}" for _ in range(20)]
    # every row three times (redelivery), the last copy wins
    _produce(settings, rows.RESULTS, [_result(t, n) for n in (0, 1, 2) for t in ids])
    sql = "SELECT task_id, steps_succeeded FROM sink_results WHERE task_id = ANY(%s)"
    got = _wait_rows(settings, sql, (ids,), lambda r: len(r) == 20 and all(x[1] == 2 for x in r))
    assert sorted(x[0] for x in got) == sorted(ids)

    stack = LocalStack(settings)
    stack.connect.stop()
    stack.connect.start(90.0)
    ConnectClient(settings.connect.url).wait_running(["aos-dashboard-sink"], 90.0)
    more = [f"ct-{uuid.uuid4().hex[:8]}" for _ in range(10)]
    _produce(settings, rows.RESULTS, [_result(t, 1) for t in ids[:5] + more])
    got = _wait_rows(
        settings,
        sql,
        (ids + more,),
        lambda r: len(r) == 30 and sum(1 for x in r if x[1] == 1) == 15,
    )
    with psycopg.connect(settings.postgres.conninfo(), autocommit=True) as conn:
        n = conn.execute(
            "SELECT count(*), count(DISTINCT task_id) FROM sink_results WHERE task_id = ANY(%s)", (ids + more,)
        )
        assert n.fetchone() == (30, 30)


def test_a_bad_record_goes_to_connects_dead_letter_topic_and_the_sink_goes_on(
    settings: Settings, sink: ConnectClient
) -> None:
    p = make_producer(settings.kafka)
    p.produce(rows.RESULTS.topic, key=b'{"not": "an envelope"', value=b"garbage")
    assert p.flush(10) == 0
    tid = f"ct-{uuid.uuid4().hex[:8]}"
    _produce(settings, rows.RESULTS, [_result(tid, 2)])
    _wait_rows(settings, "SELECT 1 FROM sink_results WHERE task_id = %s", (tid,), lambda r: len(r) == 1)
    st = sink.status()["aos-dashboard-sink"]
    assert [t["state"] for t in st["tasks"]] == ["RUNNING"]
    from aos_gateway.streams.kafka import read_to_end

    dlq = read_to_end(settings.kafka, "aos.connect.deadletter.v1", timeout=10)
    assert any(m.value() == b"garbage" for m in dlq)


def test_the_pipeline_lands_decisions_results_experience_and_agent_stats(
    settings: Settings, stack_env: dict[str, str], sink: ConnectClient, worker: subprocess.Popen[bytes], tmp_path: Any
) -> None:
    tag = uuid.uuid4().hex[:6]
    # a domain no other test's agents cover (the registry is shared by the session's tests)
    agent = f"Glacier-{tag}"
    card = {"agent_id": agent, "description": "Measures how fast glaciers and ice sheets melt, from satellite data."}
    path = write_cards(tmp_path / "cards.jsonl", [card])
    run_aos(stack_env, "agents", "register", str(path), "--wait")
    with GatewayClient(settings) as client:
        plan = client.submit_and_wait(f"How fast is the Jakobshavn glacier melting this year? ({tag})", timeout=60)
    tid = plan["task_id"]
    got = _wait_rows(
        settings,
        "SELECT status, top_agent, top_score, total_ms, text FROM sink_decisions WHERE task_id = %s",
        (tid,),
        lambda r: len(r) == 1,
    )
    status, top_agent, top_score, total_ms, text = got[0]
    assert status == plan["status"] == "PLANNED"
    assert top_agent == agent and top_score == pytest.approx(max(s["score"] for s in plan["steps"]))
    assert total_ms is not None and total_ms >= 0 and tag in text
    # nothing serves the agent: the dispatcher ends the task FAILED, with experience records
    res = _wait_rows(settings, "SELECT status FROM sink_results WHERE task_id = %s", (tid,), lambda r: len(r) == 1)
    assert res[0][0] in ("FAILED", "PARTIAL")
    _wait_rows(
        settings,
        "SELECT kind FROM sink_experience WHERE task_id = %s",
        (tid,),
        lambda r: {"EXECUTION", "STEP"} <= {x[0] for x in r},
    )
    stats = _wait_rows(
        settings,
        "SELECT calls, failures + timeouts FROM sink_agent_stats WHERE agent_id = %s",
        (agent,),
        lambda r: len(r) == 1 and r[0][0] >= 1,
    )
    assert stats[0][1] >= 1
