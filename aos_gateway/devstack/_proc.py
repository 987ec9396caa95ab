"""Process and port helpers shared by the stack's parts (POSIX only)."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from aos_gateway.errors import StackError

Progress = Callable[[str], None]

LOOPBACK = "127.0.0.1"


def quiet(message: str) -> None:
    """A progress callback that drops every message."""


def port_taken(port: int, host: str = LOOPBACK) -> bool:
    """Whether some socket already holds ``host:port`` (listening or bound).

    SO_REUSEADDR makes leftover TIME_WAIT connections not count, as for the servers we start.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return True
            raise
    return False


def port_answers(port: int, host: str = LOOPBACK, timeout_s: float = 0.5) -> bool:
    """Whether a TCP connect to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def read_pid(path: Path) -> int | None:
    """The pid in a pid file, or None when the file is missing or garbled."""
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    if not text.isdigit() or int(text) <= 0:
        return None
    return int(text)


#: how our own children that pid_alive reaped ended (pid -> wait status)
_EXITED: dict[int, int] = {}


def exit_status(pid: int) -> str | None:
    """How a child that :func:`pid_alive` reaped ended (``exit code N`` / ``killed by signal N``), if known."""
    status = _EXITED.get(pid)
    if status is None:
        return None
    if os.WIFSIGNALED(status):
        return f"killed by signal {os.WTERMSIG(status)}"
    return f"exit code {os.waitstatus_to_exitcode(status)}"


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` is a live process; reaps it when it is our own exited child."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, owned by another user
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            _EXITED[pid] = status
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True
    state = stat.rsplit(")", 1)[-1].split()
    return not (state and state[0] in ("Z", "X"))


def process_cmdline(pid: int) -> list[str] | None:
    """A process's argv from /proc, or None where /proc cannot tell."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def file_size(path: Path) -> int:
    """A file's size, 0 when it is missing."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def tail(path: Path, lines: int = 20, since: int = 0) -> str:
    """The last lines of a text file written after byte offset ``since``, or a note that there are none."""
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(since if since <= size else 0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return f"({path} does not exist)"
    out = data.splitlines()[-lines:]
    return "\n".join(out) if out else f"({path} is empty)"


def spawn_detached(argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> int:
    """Start ``argv`` in its own session with stdout and stderr appended to ``log_path``.

    posix_spawn rather than Popen: no Popen object to outlive (and warn about) a server that is
    meant to outlive us. ``argv[0]`` must be an absolute path.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    try:
        return os.posix_spawn(
            argv[0], list(argv), dict(os.environ if env is None else env), file_actions=actions, setsid=True
        )
    except OSError as exc:
        raise StackError(f"cannot start {argv[0]}: {exc}") from exc


def terminate(pid: int, timeout_s: float) -> bool:
    """SIGTERM ``pid``, SIGKILL it after ``timeout_s``; True when it had to be killed."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_dead(pid, timeout_s):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    wait_dead(pid, 10.0)
    return True


def wait_dead(pid: int, timeout_s: float) -> bool:
    """Wait until ``pid`` is gone; False on timeout."""
    deadline = time.monotonic() + timeout_s
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def run(
    argv: Sequence[str], *, what: str, timeout_s: float, cwd: Path | None = None, tail_lines: int = 15
) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; StackError with the end of its output when it fails."""
    try:
        out = subprocess.run(
            list(argv),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError as exc:
        raise StackError(f"{what} failed: {argv[0]} not found") from exc
    except subprocess.TimeoutExpired as exc:
        raise StackError(f"{what} did not finish within {timeout_s:.0f}s") from exc
    if out.returncode != 0:
        last = "\n".join(out.stdout.strip().splitlines()[-tail_lines:])
        raise StackError(f"{what} failed (exit {out.returncode}):\n{last}")
    return out


def memory_mb(pid: int, field: str = "VmRSS") -> float | None:
    """A process's memory from /proc/<pid>/status in MB (``VmRSS`` now, ``VmHWM`` its peak), or
    None when it is gone or /proc cannot tell."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None
