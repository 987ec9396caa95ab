"""A detached Faust worker for the local stack (``aos worker --detach`` / ``--stop``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from aos_gateway.settings import Settings


def _pidfile(settings: Settings) -> Path:
    return settings.stack.home.resolve() / "worker.pid"


def running_pid(settings: Settings) -> int | None:
    path = _pidfile(settings)
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


def start_detached(settings: Settings, loglevel: str, progress: Callable[[str], None]) -> int:
    pid = running_pid(settings)
    if pid is not None:
        progress(f"worker: already running (pid {pid})")
        return pid
    home = settings.stack.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    log = (home / "worker.log").open("ab")
    proc = subprocess.Popen(
        worker_argv(loglevel),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _pidfile(settings).write_text(str(proc.pid))
    progress(f"worker: started (pid {proc.pid}, log {home / 'worker.log'})")
    return proc.pid


def stop(settings: Settings, progress: Callable[[str], None], timeout: float = 20.0) -> None:
    pid = running_pid(settings)
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
    _pidfile(settings).unlink(missing_ok=True)
    progress(f"worker: stopped (pid {pid})")
