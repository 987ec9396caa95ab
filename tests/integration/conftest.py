"""One real local stack (Kafka + PostgreSQL) and one Faust worker per test session.

The stack runs in a temporary home on free loopback ports, so it never touches a developer's
own ``.aos/`` stack. Tests isolate themselves by unique task and agent ids.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.cli.worker_proc import worker_argv
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
from tests.ports import free_port


@pytest.fixture(scope="session")
def stack_env() -> Iterator[dict[str, str]]:
    home = Path(tempfile.mkdtemp(prefix="aos-it-"))
    home.chmod(0o755)  # the postgres system user must traverse it when tests run as root
    kport, cport, pport = free_port(), free_port(), free_port()
    qhttp, qpg, qilp = free_port(), free_port(), free_port()
    connect_port = free_port()
    env = {
        "AOS_STACK__HOME": str(home / "stack"),
        "AOS_STACK__KAFKA_PORT": str(kport),
        "AOS_STACK__KAFKA_CONTROLLER_PORT": str(cport),
        "AOS_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kport}",
        "AOS_POSTGRES__PORT": str(pport),
        "AOS_WORKER__APP_ID": f"aos-it-{uuid.uuid4().hex[:8]}",
        "AOS_WORKER__DATA_DIR": str(home / "worker"),
        "AOS_PERCEPTION__BATCH_WINDOW_MS": "5",
        "AOS_METRICS__PORT": str(free_port()),  # the worker's /metrics, clear of a developer's worker on 9108
        "AOS_STACK__QUESTDB_HTTP_PORT": str(qhttp),
        "AOS_STACK__QUESTDB_PG_PORT": str(qpg),
        "AOS_STACK__QUESTDB_ILP_PORT": str(qilp),
        "AOS_TIMESERIES__URL": f"http://127.0.0.1:{qhttp}",
        "AOS_TIMESERIES__QUESTDB_PG": f"host=127.0.0.1 port={qpg} user=admin password=quest dbname=qdb",
        "AOS_EXPERIENCE__COLD_DIR": str(home / "experience"),
        "AOS_STACK__CONNECT_PORT": str(connect_port),
        "AOS_CONNECT__URL": f"http://127.0.0.1:{connect_port}",
        # tests publish learned states of their own: the worker's periodic learning would replace them
        "AOS_EXPERIENCE__MINE_INTERVAL_S": "0",
        # half the tasks on a candidate state while one is under test (only test_execution publishes one)
        "AOS_EXPERIENCE__AB_SHARE": "0.5",
    }
    # the shared Maven jar cache keeps the test stack from downloading Kafka again
    env["AOS_STACK__HOME"] = str(home / "stack")
    yield env
    import shutil

    shutil.rmtree(home, ignore_errors=True)  # after the stack (a later fixture) is down


@pytest.fixture(scope="session")
def settings(stack_env: dict[str, str]) -> Iterator[Settings]:
    from aos_gateway.devstack import LocalStack

    s = Settings(
        stack=StackSettings(
            home=Path(stack_env["AOS_STACK__HOME"]),
            kafka_port=int(stack_env["AOS_STACK__KAFKA_PORT"]),
            kafka_controller_port=int(stack_env["AOS_STACK__KAFKA_CONTROLLER_PORT"]),
            questdb_http_port=int(stack_env["AOS_STACK__QUESTDB_HTTP_PORT"]),
            questdb_pg_port=int(stack_env["AOS_STACK__QUESTDB_PG_PORT"]),
            questdb_ilp_port=int(stack_env["AOS_STACK__QUESTDB_ILP_PORT"]),
            connect_port=int(stack_env["AOS_STACK__CONNECT_PORT"]),
        ),
        connect=ConnectSettings(url=stack_env["AOS_CONNECT__URL"]),
        kafka=KafkaSettings(bootstrap_servers=stack_env["AOS_KAFKA__BOOTSTRAP_SERVERS"]),
        postgres=PostgresSettings(port=int(stack_env["AOS_POSTGRES__PORT"])),
        worker=WorkerSettings(app_id=stack_env["AOS_WORKER__APP_ID"], data_dir=Path(stack_env["AOS_WORKER__DATA_DIR"])),
        experience=ExperienceSettings(cold_dir=Path(stack_env["AOS_EXPERIENCE__COLD_DIR"])),
        timeseries=TimeSeriesSettings(
            url=stack_env["AOS_TIMESERIES__URL"], questdb_pg=stack_env["AOS_TIMESERIES__QUESTDB_PG"]
        ),
    )
    stack = LocalStack(s)
    stack.up(lambda m: print(m, file=sys.stderr))
    try:
        yield s
    finally:
        stack.down(lambda m: print(m, file=sys.stderr))


def run_aos(
    env: dict[str, str], *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess, pointed at the test stack."""
    full = {**os.environ, **env}
    out = subprocess.run(
        [sys.executable, "-m", "aos_gateway.cli.main", *args], env=full, capture_output=True, text=True, timeout=timeout
    )
    if check and out.returncode != 0:
        raise AssertionError(f"aos {' '.join(args)} exited {out.returncode}: {out.stderr[-2000:]}")
    return out


STARTUP_LOG = "worker-startup.log"


@pytest.fixture(scope="session")
def worker(
    settings: Settings, stack_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    from aos_gateway.client import GatewayClient
    from aos_gateway.streams.kafka import ensure_topics

    ensure_topics(settings.kafka, partitions=settings.worker.topic_partitions)
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        worker_argv("info"),
        env={**os.environ, **stack_env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        # ready = a probe task comes back planned (model loaded, registry read, group joined)
        with GatewayClient(settings) as client:
            deadline = time.monotonic() + 240
            tid = client.submit("readiness probe")
            client.flush()
            while True:
                try:
                    client.wait(tid, 5)
                    break
                except Exception:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"worker not ready; log:\n{log_path.read_text()[-4000:]}") from None
        log.flush()
        (tmp_path_factory.getbasetemp() / STARTUP_LOG).write_bytes(log_path.read_bytes())
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="session")
def worker_startup_log(worker: subprocess.Popen[bytes], tmp_path_factory: pytest.TempPathFactory) -> str:
    """The session worker's log from its start until it planned its first task."""
    return (tmp_path_factory.getbasetemp() / STARTUP_LOG).read_text(encoding="utf-8", errors="replace")


def write_cards(path: Path, cards: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(c) + "\n" for c in cards))
    return path


@pytest.fixture(scope="session")
def sinks(settings: Settings) -> Iterator[None]:
    """The dashboards' JDBC sink connector applied to the session's Kafka Connect (RUNNING)."""
    from aos_gateway.cli.connect_cmds import apply

    apply(settings, None, 90.0, lambda m: print(m, file=sys.stderr))
    yield
