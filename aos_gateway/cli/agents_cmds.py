"""``aos agents run MODULE:AGENT``: serve agents with the SDK until interrupted."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from aos_gateway.agents.sdk import AgentRunner, parse_target, resolve
from aos_gateway.errors import ConfigError, StackError
from aos_gateway.settings import Settings

PROG = "aos agents run"


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from aos_gateway.cli import worker_proc

    if args.action == "stop":
        if worker_proc.running_pid(settings, "agents") is None:
            progress("agents: none running in the background")
        worker_proc.stop(settings, progress, name="agents")
        return 0
    try:
        parse_target(args.target)
    except ConfigError as exc:  # a usage error: one line, exit status 2 (as argparse's)
        print(f"{PROG}: error: {exc} (see `{PROG} --help`)", file=sys.stderr)
        return 2
    cwd_on_path()  # `aos agents run mymodule:agent` finds mymodule.py here, as `python -m` would
    agents = resolve(args.target, settings)  # a bad target fails here, in the foreground
    if args.detach:
        pid = worker_proc.running_pid(settings, "agents")
        if pid is not None:
            running = _target_of(pid)
            raise StackError(
                f"agents already run in the background (pid {pid}{', ' + running if running else ''}); "
                "one set of background agents per stack home: stop it with `aos agents stop`, "
                f"or run {args.target} in the foreground (without --detach)"
            )
        argv = [sys.executable, "-m", "aos_gateway.cli.main", "agents", "run", args.target]
        argv += ["--keep-registered"] if args.keep_registered else []
        # the child imports the target from this folder too
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
        worker_proc.start_detached(settings, "", progress, name="agents", argv=argv, env=env)
        return 0
    runner = AgentRunner(agents, settings, deregister_on_exit=not args.keep_registered, progress=progress)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        progress(f"agents: {signal.Signals(signum).name} received, stopping")
        runner.request_stop()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        runner.start()
        progress(f"agents: serving {len(agents)} agent(s); Ctrl-C to stop")
        runner.wait()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        runner.stop()
    if runner.error is not None:
        progress(f"agents: stopped after an error: {type(runner.error).__name__}: {runner.error}")
        return 1
    return 0


def cwd_on_path() -> None:
    """Put the current folder first on ``sys.path`` (the console script does not; ``python -m`` does)."""
    cwd = os.getcwd()
    if not any(p in ("", cwd) for p in sys.path):
        sys.path.insert(0, cwd)


def _target_of(pid: int) -> str:
    """The MODULE:AGENT a background ``aos agents run`` serves ('' when it cannot be read)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return ""
    for i, arg in enumerate(argv[:-2]):
        if arg == "agents" and argv[i + 1] == "run":
            return argv[i + 2]
    return ""
