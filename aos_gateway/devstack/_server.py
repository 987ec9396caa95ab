"""What every JVM server of the local stack (Kafka, QuestDB) does alike: its pid file, waiting
until it answers, stopping, checking its ports, the new lines of its logs when it fails."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from aos_gateway.devstack._proc import (
    Progress,
    exit_status,
    file_size,
    pid_alive,
    port_taken,
    process_cmdline,
    quiet,
    read_pid,
    tail,
    terminate,
)
from aos_gateway.errors import StackError


def require_java(server: str) -> str:
    """The ``java`` executable, or a one-line StackError saying how to install it."""
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"Java is not installed; {server} needs Java 17+: run `apt-get install -y openjdk-17-jre-headless`"
        )
    return java


def render_log4j2_properties(name: str, log_file: Path, levels: dict[str, str]) -> str:
    """A log4j2 config for a JVM server of the stack: everything at INFO into ``log_file`` (rolled at
    50 MB, 3 kept), with ``levels`` (logger -> level) quieting its chattiest loggers."""
    lines = [
        "# written by `aos dev up`",
        "status = warn",
        f"name = {name}",
        "appender.file.type = RollingFile",
        "appender.file.name = FILE",
        f"appender.file.fileName = {log_file}",
        f"appender.file.filePattern = {log_file}.%i",
        "appender.file.layout.type = PatternLayout",
        "appender.file.layout.pattern = [%d] %p %m (%c)%n",
        "appender.file.policies.type = Policies",
        "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
        "appender.file.policies.size.size = 50MB",
        "appender.file.strategy.type = DefaultRolloverStrategy",
        "appender.file.strategy.max = 3",
        "rootLogger.level = INFO",
        "rootLogger.appenderRef.file.ref = FILE",
    ]
    for i, (logger, level) in enumerate(levels.items()):
        lines += [f"logger.l{i}.name = {logger}", f"logger.l{i}.level = {level}"]
    return "\n".join([*lines, ""])


class JavaServer:
    """The shared part of a server node; subclasses say how to launch it and when it answers."""

    name: str
    pid_file: Path
    logs_dir: Path

    def __init__(self) -> None:
        self._log_marks: dict[Path, int] = {}  # log sizes at our launch: failures show only new lines

    @property
    def address(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- what a subclass says -----------------------------------------------------------------

    def launch(self, progress: Progress = quiet) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _owns(self, argv: list[str]) -> bool:
        """Whether a live process with this command line is our server (not a reused pid)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _answers(self, deadline: float) -> bool:
        """One readiness probe (``deadline``: the wait's end, on the monotonic clock)."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _ports(self) -> list[tuple[int, str]]:
        """Each port the server binds, with the setting that moves it."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _log_files(self) -> list[tuple[Path, int]]:
        """The logs worth showing when it fails, with how many last lines of each."""
        raise NotImplementedError  # pragma: no cover - abstract

    def _where(self) -> str:
        """Where it answers, as its ready message says."""
        return self.address

    # -- shared ----------------------------------------------------------------------------------

    def running_pid(self) -> int | None:
        """The pid of our server when it is alive, else None."""
        pid = read_pid(self.pid_file)
        if pid is None or not pid_alive(pid):
            return None
        argv = process_cmdline(pid)
        if argv is not None and not self._owns(argv):
            return None  # the pid was reused by an unrelated process
        return pid

    def _mark_logs(self) -> None:
        """Remember the logs' sizes before a launch: a failure shows only what came after."""
        self._log_marks = {p: file_size(p) for p, _ in self._log_files()}

    def wait_ready(self, timeout_s: float, progress: Progress = quiet) -> None:
        """Wait until the server answers.

        Raises:
            StackError: The process died or did not answer in time (it is then stopped).
        """
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while True:
            # whether the launched process lives, not running_pid(): right after posix_spawn the child
            # may not have exec'd java yet, and its command line (still ours) fails the ownership test
            pid = read_pid(self.pid_file)
            if pid is None or not pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                how = (exit_status(pid) if pid is not None else None) or "gone"
                raise StackError(f"{self.name} exited during start-up ({how}); {self._log_tails()}")
            if self._answers(deadline):
                progress(f"{self.name}: ready on {self._where()} in {time.monotonic() - t0:.1f}s")
                return
            if time.monotonic() >= deadline:
                tails = self._log_tails()
                self.stop()
                raise StackError(
                    f"{self.name} did not answer on {self.address} within {timeout_s:.0f}s (stopped it; raise "
                    f"AOS_STACK__START_TIMEOUT_S if the machine is slow); {tails}"
                )
            time.sleep(0.25)

    def start(self, timeout_s: float = 60.0, progress: Progress = quiet) -> None:
        """Start the server (idempotent) and wait until it answers."""
        self.launch(progress)
        self.wait_ready(timeout_s, progress)

    def stop(self, timeout_s: float = 30.0, progress: Progress = quiet) -> None:
        """Stop the server: SIGTERM (a clean shutdown), SIGKILL after ``timeout_s``. Idempotent."""
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return
        t0 = time.monotonic()
        killed = terminate(pid, timeout_s)
        self.pid_file.unlink(missing_ok=True)
        how = "killed (no clean shutdown)" if killed else "stopped"
        progress(f"{self.name}: {how} pid {pid} in {time.monotonic() - t0:.1f}s")

    def check_ports(self) -> None:
        """Fail early when our server is not running and another process holds one of its ports.

        Raises:
            StackError: One line naming the port and the setting that moves it.
        """
        if self.running_pid() is not None:
            return
        for port, env in self._ports():
            if port_taken(port):
                raise StackError(f"port {port} is taken by another process; set {env}")

    def _log_tails(self) -> str:
        parts = []
        for path, n in self._log_files():
            since = self._log_marks.get(path, 0)
            if file_size(path) > since:
                parts.append(f"last lines of {path}:\n{tail(path, n, since)}")
        return "\n".join(parts) if parts else f"nothing in {self.logs_dir}"
