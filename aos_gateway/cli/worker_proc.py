"""Detached processes of the local stack: the Faust worker (``aos worker --detach`` / ``--stop``) and
reference agents (``aos agents run ... --detach``), each with a pid file and a log under the stack home."""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aos_gateway.settings import Settings


def _pidfile(settings: Settings, name: str = "worker") -> Path:
    return settings.stack.home.resolve() / f"{name}.pid"


def log_file(settings: Settings, name: str = "worker") -> Path:
    """Where a process started with :func:`start_detached` logs."""
    return settings.stack.home.resolve() / f"{name}.log"


def running_pid(settings: Settings, name: str = "worker") -> int | None:
    path = _pidfile(settings, name)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def worker_argv(loglevel: str) -> list[str]:
    """The Faust worker command (Faust's command line, run by :func:`worker_main`). ``--without-web``:
    Faust's CLI turns its web server on by default (port 6066, whatever the app says), so two workers
    on one host (a demo and the tests) clashed."""
    faust_args = ["-A", "aos_gateway.app", "worker", "--without-web", "-l", loglevel]
    return [sys.executable, "-m", "aos_gateway.cli.worker_proc", *faust_args]


class OneLineAosErrors(logging.Filter):
    """Drops the traceback of a log record about an :class:`~aos_gateway.errors.AosError`: the worker's
    start-up failure (Kafka unreachable, a bad setting) ends its log with one line, as the CLI says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aos_gateway.errors import AosError

        if record.exc_info and isinstance(record.exc_info[1], AosError):
            record.exc_info = None
            record.exc_text = None
        return True


def worker_main(args: list[str]) -> None:
    """Faust's command line (``faust ARGS``) with the gateway's logging: librdkafka's warnings and errors
    in the log (bounded), and the worker's fatal AosError as one line instead of a traceback."""
    from aos_gateway.streams.kafka import librdkafka_worker_mode

    librdkafka_worker_mode()
    one_line = OneLineAosErrors()
    for name in ("faust.worker", "mode.worker"):  # mode's Worker logs a start-up failure with its traceback
        logging.getLogger(name).addFilter(one_line)
    from faust.cli.faust import cli

    cli.main(args=args, prog_name="faust")


#: the processes this process started (kept: so they are reaped, and Popen does not warn that they still run)
_STARTED: dict[str, subprocess.Popen[bytes]] = {}

#: how long ``--detach`` watches a new process before it says it started
SETTLE_S = 3.0


def _last_error_line(log: Path, start: int) -> str | None:
    """The last line of ``log`` (from byte ``start``) that reads as an error, else the last non-empty one."""
    try:
        with log.open("rb") as f:
            f.seek(start)
            text = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)  # the terminal codes Faust writes (cursor on/off)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower():
            return ln
    return lines[-1] if lines else None


def start_detached(
    settings: Settings,
    loglevel: str,
    progress: Callable[[str], None],
    name: str = "worker",
    argv: list[str] | None = None,
    settle_s: float = SETTLE_S,
    check_kafka: bool = True,
    env: dict[str, str] | None = None,
) -> int:
    """Start ``argv`` (default: the worker) in the background unless ``name`` already runs
    (``env``: its environment, default this process's).

    Both need Kafka: an unreachable broker fails here, before anything starts. A process that exits
    within ``settle_s`` seconds (a bad setting, the broker gone meanwhile) fails too, with its log's
    last error line, rather than "started" and a dead process.

    Raises:
        KafkaError: Kafka cannot be reached.
        StackError: The process exited right after its start.
    """
    from aos_gateway.errors import StackError
    from aos_gateway.streams.kafka import existing_topics

    pid = running_pid(settings, name)
    if pid is not None:
        progress(f"{name}: already running (pid {pid})")
        return pid
    if check_kafka:
        existing_topics(settings.kafka)  # KafkaError "cannot reach Kafka at ...; run `aos dev up`"
    log_path = log_file(settings, name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        start = log.tell()
        proc = subprocess.Popen(
            argv or worker_argv(loglevel),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env=env,
        )
    _pidfile(settings, name).write_text(str(proc.pid))
    _STARTED[name] = proc
    deadline = time.monotonic() + settle_s
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    rc = proc.poll()
    if rc is not None:
        del _STARTED[name]
        _pidfile(settings, name).unlink(missing_ok=True)
        last = _last_error_line(log_path, start) or "no output"
        raise StackError(f"{name} exited right after its start (exit status {rc}): {last} (log {log_path})")
    progress(f"{name}: started (pid {proc.pid}, log {log_path})")
    return proc.pid


def stop(settings: Settings, progress: Callable[[str], None], timeout: float = 20.0, name: str = "worker") -> None:
    pid = running_pid(settings, name)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    child = _STARTED.pop(name, None)
    own = child if child is not None and child.pid == pid else None  # our child: reap it (a zombie answers kill 0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if own is not None:
            if own.poll() is not None:
                break
        else:
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


if __name__ == "__main__":
    worker_main(sys.argv[1:])
