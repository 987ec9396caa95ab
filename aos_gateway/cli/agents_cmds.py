"""``aos agents run MODULE:AGENT``: serve agents with the SDK until interrupted."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from types import FrameType

from aos_gateway.agents.sdk import AgentRunner, resolve
from aos_gateway.settings import Settings


def run(args: argparse.Namespace, settings: Settings, progress: Callable[[str], None]) -> int:
    from aos_gateway.cli import worker_proc

    if args.action == "stop":
        if worker_proc.running_pid(settings, "agents") is None:
            progress("agents: none running in the background")
        worker_proc.stop(settings, progress, name="agents")
        return 0
    agents = resolve(args.target, settings)  # a bad target fails here, in the foreground
    if args.detach:
        argv = [sys.executable, "-m", "aos_gateway.cli.main", "agents", "run", args.target]
        argv += ["--keep-registered"] if args.keep_registered else []
        worker_proc.start_detached(settings, "", progress, name="agents", argv=argv)
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
