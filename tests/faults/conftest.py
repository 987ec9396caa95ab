"""The fault suite's own local stack, worker and agents, started once for ``tests/faults/``.

Everything runs on free loopback ports in a temporary home (never a developer's ``.aos/`` stack,
never the integration tests' stack): Kafka, PostgreSQL, QuestDB and Kafka Connect with the
dashboards' sink applied; one Faust worker in a subprocess the scenarios kill and restart with
the same app id and data dir; the reference calculator in one ``aos agents run`` process and a
backup calculator (the plans' fallback) in another. The stack is torn down when the package ends,
so it does not stay up beside the integration tests' stack.

Knobs: ``AOS_FAULTS_RATE`` (tasks/s, default 4), ``AOS_FAULTS_OUTAGE_S`` (how long PostgreSQL and
QuestDB stay down, default 30), ``AOS_FAULTS_REPORT`` (a file the report table is written to).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.cli.worker_proc import worker_argv
from aos_gateway.devstack import LocalStack
from aos_gateway.settings import (
    ConnectSettings,
    ExperienceSettings,
    KafkaSettings,
    PostgresSettings,
    Settings,
    StackSettings,
    TimeSeriesSettings,
    WorkerSettings,
)
from tests.faults.agents import BACKUP_ID
from tests.faults.harness import TASK_TEXT, Proc, Row, Scenario, say
from tests.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
SUFFIX = uuid.uuid4().hex[:6]
REFERENCE_ID = "ref-calculator"  # aos_gateway.agents.reference:calculator
RATE = float(os.environ.get("AOS_FAULTS_RATE", "4"))
OUTAGE_S = float(os.environ.get("AOS_FAULTS_OUTAGE_S", "30"))

#: the report rows, in the order the scenarios ran
ROWS: list[Row] = []


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "faults: a fault injected into the real local stack under load (tests/faults, its own stack)"
    )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not ROWS:
        return
    lines = [Row.HEADER, Row.RULE, *(r.line() for r in ROWS)]
    terminalreporter.write_sep("=", "fault suite")
    for line in lines:
        terminalreporter.write_line(line)
    out = os.environ.get("AOS_FAULTS_REPORT")
    if out:
        Path(out).write_text("\n".join(lines) + "\n")


@dataclass
class Faults:
    """What a scenario gets: the stack, the worker and agent processes, and a scenario factory."""

    settings: Settings
    env: dict[str, str]
    stack: LocalStack
    worker: Proc
    #: the agent process the plans' steps go to (killed by the agent scenario), and their fallback's
    primary: Proc
    backup: Proc
    primary_id: str
    backup_id: str
    weights_label: str | None = None
    rate: float = RATE
    outage_s: float = OUTAGE_S
    rows: list[Row] = field(default_factory=lambda: ROWS)

    def scenario(self, fault: str, hot_store: bool = True) -> Scenario:
        slug = re.sub(r"[^a-z0-9]+", "-", fault.lower()).strip("-")
        return Scenario(
            settings=self.settings,
            fault=fault,
            tenant=f"faults-{slug}-{SUFFIX}",
            rate=self.rate,
            expected_agent=self.primary_id,
            weights_label=self.weights_label,
            hot_store=hot_store,
        )

    def probe(self, timeout: float = 240.0, any_agent: bool = False) -> dict[str, Any]:
        """Submit arithmetic tasks until one comes back SUCCEEDED (through the primary agent, unless
        ``any_agent``); its plan."""
        from aos_gateway.client import GatewayClient

        deadline = time.monotonic() + timeout
        last: Any = None
        with GatewayClient(self.settings) as client:
            client.listen(executions=True)
            while True:
                tid = client.submit(TASK_TEXT.format(a=6, b=7), tenant=f"faults-probe-{SUFFIX}")
                try:
                    plan = client.wait(tid, 30)
                    res = client.wait_execution(tid, 30)
                    last = (plan["status"], [s["agent_id"] for s in plan["steps"]], res["status"], res["reason"])
                    if res["status"] == "SUCCEEDED" and (any_agent or res["steps"][0]["agent_id"] == self.primary_id):
                        return dict(plan)
                except Exception as exc:  # not ready yet
                    last = f"{type(exc).__name__}: {exc}"
                assert self.worker.alive, f"the worker exited; log:\n{self.worker.tail()}"
                assert time.monotonic() < deadline, f"no probe task succeeded within {timeout:g}s; last: {last}"
                time.sleep(1.0)

    def add(self, row: Row) -> None:
        self.rows.append(row)


@pytest.fixture(scope="package")
def faults() -> Iterator[Faults]:
    home = Path(tempfile.mkdtemp(prefix="aos-faults-"))
    home.chmod(0o755)  # the postgres system user must traverse it when tests run as root
    kport, cport, pport = free_port(), free_port(), free_port()
    qhttp, qpg, qilp, connect_port = free_port(), free_port(), free_port(), free_port()
    start_timeout = float(os.environ.get("AOS_STACK__START_TIMEOUT_S", "240"))
    env = {
        "AOS_STACK__HOME": str(home / "stack"),
        "AOS_STACK__KAFKA_PORT": str(kport),
        "AOS_STACK__KAFKA_CONTROLLER_PORT": str(cport),
        "AOS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kport}",
        "AOS_POSTGRES__PORT": str(pport),
        "AOS_WORKER__APP_ID": f"aos-faults-{SUFFIX}",
        "AOS_WORKER__DATA_DIR": str(home / "worker"),
        "AOS_PERCEPTION__BATCH_WINDOW_MS": "5",
        "AOS_METRICS__PORT": str(free_port()),
        "AOS_STACK__QUESTDB_HTTP_PORT": str(qhttp),
        "AOS_STACK__QUESTDB_PG_PORT": str(qpg),
        "AOS_STACK__QUESTDB_ILP_PORT": str(qilp),
        "AOS_TIMESERIES__URL": f"http://127.0.0.1:{qhttp}",
        "AOS_TIMESERIES__QUESTDB_PG": f"host=127.0.0.1 port={qpg} user=admin password=quest dbname=qdb",
        "AOS_EXPERIENCE__COLD_DIR": str(home / "experience"),
        "AOS_STACK__CONNECT_PORT": str(connect_port),
        "AOS_CONNECT__URL": f"http://127.0.0.1:{connect_port}",
        "AOS_EXPERIENCE__MINE_INTERVAL_S": "0",  # the suite publishes one learned state and checks it survives
        "AOS_EXPERIENCE__AB_SHARE": "0",
        "PYTHONPATH": str(ROOT),
    }
    settings = Settings(
        stack=StackSettings(
            home=home / "stack",
            kafka_port=kport,
            kafka_controller_port=cport,
            questdb_http_port=qhttp,
            questdb_pg_port=qpg,
            questdb_ilp_port=qilp,
            connect_port=connect_port,
            start_timeout_s=start_timeout,
        ),
        connect=ConnectSettings(url=env["AOS_CONNECT__URL"]),
        kafka=KafkaSettings(bootstrap_servers=env["AOS_KAFKA__BOOTSTRAP_SERVERS"]),
        postgres=PostgresSettings(port=pport),
        worker=WorkerSettings(app_id=env["AOS_WORKER__APP_ID"], data_dir=home / "worker"),
        experience=ExperienceSettings(cold_dir=home / "experience"),
        timeseries=TimeSeriesSettings(url=env["AOS_TIMESERIES__URL"], questdb_pg=env["AOS_TIMESERIES__QUESTDB_PG"]),
    )
    penv = {**os.environ, **env}
    logs = home / "logs"
    logs.mkdir()
    aos = [sys.executable, "-m", "aos_gateway.cli.main"]
    worker = Proc("worker", worker_argv("info"), penv, logs / "worker.log", ROOT)
    reference = Proc(
        "agent ref-calculator",
        [*aos, "agents", "run", "aos_gateway.agents.reference:calculator"],
        penv,
        logs / "reference.log",
        ROOT,
    )
    backup = Proc(
        "agent backup",
        [*aos, "agents", "run", "tests.faults.agents:backup_calculator"],
        penv,
        logs / "backup.log",
        ROOT,
    )
    stack = LocalStack(settings)
    t0 = time.monotonic()
    try:
        stack.up(lambda m: print(m, file=sys.stderr))
        from aos_gateway.cli.connect_cmds import apply
        from aos_gateway.streams.kafka import ensure_topics

        ensure_topics(settings.kafka, partitions=settings.worker.topic_partitions)
        apply(settings, None, 120.0, lambda m: print(m, file=sys.stderr))
        worker.start()
        for agent in (reference, backup):
            agent.start()
        for agent in (reference, backup):
            agent.wait_log("serving", 120)
        f = Faults(settings, penv, stack, worker, reference, backup, REFERENCE_ID, BACKUP_ID)
        # the planner ranks the two calculators by their cards: the one it puts first is the primary
        (step,) = f.probe(any_agent=True)["steps"]
        procs = {REFERENCE_ID: reference, BACKUP_ID: backup}
        assert {step["agent_id"], step["fallback_agent_id"]} == set(procs), step
        f.primary_id, f.backup_id = step["agent_id"], str(step["fallback_agent_id"])
        f.primary, f.backup = procs[f.primary_id], procs[f.backup_id]
        say(f"plans go to {f.primary_id}, falling back to {f.backup_id}")
        f.weights_label = _publish_learned_state(f)
        say(f"set-up done in {time.monotonic() - t0:.0f}s (learned matching state {f.weights_label})")
        yield f
    finally:
        for p in (reference, backup, worker):
            p.stop()
        stack.down(lambda m: print(m, file=sys.stderr))
        if os.environ.get("AOS_FAULTS_KEEP"):
            say(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)


def _publish_learned_state(f: Faults) -> str | None:
    """Learn from the probes' experience and publish it, as the worker's timer would; the label plans
    carry once the worker uses it (every scenario checks it is still in force after its fault)."""
    from aos_gateway.streams import learner

    for _ in range(3):
        f.probe()
    time.sleep(2.0)  # the probes' experience records follow their results
    sent = learner.publish(f.settings, learner.learn_from_history(f.settings))
    if "matching.ranker" not in sent:
        return None
    label = f"control:v{sent['matching.ranker']}"
    deadline = time.monotonic() + 60
    while f.probe().get("weights", {}).get("matching.ranker") != label:
        assert time.monotonic() < deadline, f"the worker did not load {label}"
    return label
