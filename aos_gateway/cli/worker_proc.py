"""Detached processes of the local stack: the Faust worker (``aos worker --detach`` / ``--stop``) and
reference agents (``aos agents run ... --detach``), each with a pid file and a log under the stack home."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aos_gateway.settings import Settings


def _pidfile(settings: Settings, name: str = "worker") -> Path:
    return settings.stack.home.resolve() / f"{name}.pid"


def running_pid(settings: Settings, name: str = "worker") -> int | None:
    path = _pidfile(settings, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def worker_argv(loglevel: str) -> list[str]:
    """The Faust worker command. ``--without-web``: Faust's CLI turns its web server on by default
    (port 6066, whatever the app says), so two workers on one host (a demo and the tests) clashed."""
    return [sys.executable, "-m", "faust", "-A", "aos_gateway.app", "worker", "--without-web", "-l", loglevel]


def start_detached(
    settings: Settings,
    loglevel: str,
    progress: Callable[[str], None],
    name: str = "worker",
    argv: list[str] | None = None,
) -> int:
    """Start ``argv`` (default: the worker) in the background unless ``name`` already runs."""
    pid = running_pid(settings, name)
    if pid is not None:
        progress(f"{name}: already running (pid {pid})")
        return pid
    home = settings.stack.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = (home / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv or worker_argv(loglevel),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pidfile(settings, name).write_text(str(proc.pid))
    progress(f"{name}: started (pid {proc.pid}, log {home / f'{name}.log'})")
    return proc.pid


def stop(settings: Settings, progress: Callable[[str], None], timeout: float = 20.0, name: str = "worker") -> None:
    pid = running_pid(settings, name)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.2)
    else:
        os.kill(pid, signal.SIGKILL)
    _pidfile(settings, name).unlink(missing_ok=True)
    progress(f"{name}: stopped (pid {pid})")


def wait_ready(settings: Settings, timeout: float, progress: Callable[[str], None]) -> bool:
    """Wait until the worker's consumer group is stable with every task-topic partition assigned.

    Tasks produced while a starting worker's group is still rebalancing were seen to wait until
    the next restart (a Faust rebalance race, see docs); waiting for the group first avoids it.
    """
    from confluent_kafka import ConsumerGroupState

    from aos_gateway import topics
    from aos_gateway.streams.kafka import admin

    group = settings.worker.app_id
    want = {(topics.TASKS.name, p) for p in range(settings.worker.topic_partitions)}
    client = admin(settings.kafka)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            desc = client.describe_consumer_groups([group])[group].result(timeout=10)
        except Exception:  # the group does not exist yet, or the broker is busy: ask again
            time.sleep(1)
            continue
        if desc.state == ConsumerGroupState.STABLE:
            assigned = {
                (tp.topic, tp.partition)
                for m in desc.members
                if m.assignment is not None
                for tp in m.assignment.topic_partitions
            }
            if want <= assigned:
                progress(f"worker: consumer group {group} is stable, {len(desc.members)} member(s)")
                return True
        time.sleep(1)
    return False
