"""Faults injected into the real local stack while tasks flow at a steady rate.

Each scenario: load under a tenant of its own, the fault, more load, a drain; then every
submitted task must have exactly one final result (SUCCEEDED, PARTIAL, or FAILED with a reason),
no experience record may be missing from or counted twice in agent_stats (PostgreSQL), the
Parquet cold store, the QuestDB hot store or the dashboards' sink_results table, and plans made
after the fault must route as before under the learned state in force before it. The time to
recover is printed, and the table goes to ``docs/reliability.md``.

    .venv/bin/python -m pytest tests/faults -q -s
"""

from __future__ import annotations

import time

import pytest

from tests.faults.conftest import Faults
from tests.faults.harness import Scenario, say, send_poison, wait_until

pytestmark = pytest.mark.faults

BEFORE_S = 8.0  # load before the fault
AFTER_S = 8.0  # load after the recovery


def _finish(faults: Faults, s: Scenario, recovery_s: float | None, what: str) -> None:
    row = s.verify(recovery_s, what)
    faults.add(row)
    for proc in (faults.worker, faults.primary, faults.backup):
        assert proc.alive, f"{proc.name} died; log:\n{proc.tail()}"
    s.check_state(s.fault_end_ms or 0)
    assert row.lost == 0, row.details
    assert row.duplicated_effects == 0, row.details


def test_poison_messages_fill_a_partition(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario("poison messages (200 on one partition)")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        s.poison_keys = send_poison(faults.settings, f"poison-{s.tenant}", 200, partition=0)
        s.fault_ended()
        time.sleep(AFTER_S)
    recovery = s.backlog_drained()
    _finish(faults, s, recovery, "backlog drained")
    dls = s.verify_dead_letters()
    assert dls["distinct"] == len(s.poison_keys) and dls["from_tasks_topic"] == dls["records"], dls


def test_agent_killed_mid_plan(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario("agent kill -9 mid-plan (fallback in another process)")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        faults.primary.kill9()
        time.sleep(20.0)  # past the dispatcher's liveness timeout (15 s): the fallback serves alone
        faults.primary.start()
        faults.primary.wait_log("serving", 120)
        s.fault_ended()
        recovery = s.first_result_after_end(lambda r: any(st["agent_id"] == faults.primary_id for st in r["steps"]))
        time.sleep(AFTER_S)
    _finish(faults, s, recovery, "agent restarted -> serves again")
    d = s.final_details
    assert d["failed_dispatched"] == 0, d  # the fallback answered for the dead agent
    assert d["failed_undispatched"] == [], d  # every load text matches both cards (harness.TASK_TEXT)


def test_postgres_down(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario(f"PostgreSQL stopped {faults.outage_s:g} s")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        faults.stack.postgres.stop()
        time.sleep(max(0.0, faults.outage_s - (time.time() * 1000 - (s.fault_start_ms or 0)) / 1000))
        faults.stack.postgres.start(120)
        s.fault_ended()
        recovery = s.store_caught_up("stats")
        time.sleep(AFTER_S)
    _finish(faults, s, recovery, "agent_stats caught up")


def test_timeseries_store_down(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario(f"QuestDB (time-series store) stopped {faults.outage_s:g} s")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        faults.stack.questdb.stop()
        time.sleep(max(0.0, faults.outage_s - (time.time() * 1000 - (s.fault_start_ms or 0)) / 1000))
        faults.stack.questdb.start(120)
        s.fault_ended()
        recovery = s.store_caught_up("hot")
        time.sleep(AFTER_S)
    _finish(faults, s, recovery, "hot store caught up")


def test_broker_restart(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario("Kafka broker restart")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        faults.stack.kafka.stop()
        faults.stack.kafka.start(faults.stack.start_timeout_s)
        s.fault_ended()
        first = s.first_result_after_end()
        say(f"broker restart: first final result {first:.1f}s after the broker was back")
        time.sleep(AFTER_S)
    recovery = s.backlog_drained()
    _finish(faults, s, recovery, "backlog drained")


def test_worker_killed_mid_batch(faults: Faults) -> None:
    faults.probe()
    s = faults.scenario("worker kill -9 mid-batch, restart")
    with s.load():
        time.sleep(BEFORE_S)
        s.fault_started()
        faults.worker.kill9()
        faults.worker.start()  # the same app id and data dir
        s.fault_ended()
        first = s.first_result_after_end(timeout=300)
        say(f"worker kill: first final result {first:.1f}s after the restart")
        time.sleep(AFTER_S)
    recovery = s.backlog_drained(timeout=300)
    _finish(faults, s, recovery, "backlog drained")
    wait_until("the worker answers probes", lambda: bool(faults.probe()), 120)
