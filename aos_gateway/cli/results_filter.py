"""Which plans or execution results ``aos results`` prints, and in what order."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

PLAN_STATUSES = ("PLANNED", "NO_MATCH", "REJECTED")
EXECUTION_STATUSES = ("SUCCEEDED", "PARTIAL", "FAILED")


@dataclass(frozen=True)
class ResultFilter:
    """``task``: a task id or its first characters; ``tenant``, ``status``: exact; ``last``: the newest N."""

    task: str | None = None
    tenant: str | None = None
    status: str | None = None
    last: int | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ResultFilter:
        """From the command's options; a status that the chosen topic never carries is a usage error.

        Raises:
            argparse.ArgumentError: ``--status`` names no status of plans (or of execution results).
        """
        status = args.status.upper() if args.status else None
        allowed = EXECUTION_STATUSES if args.executions else PLAN_STATUSES
        if status is not None and status not in allowed:
            what = "an execution result's" if args.executions else "a plan's (--executions for results)"
            raise argparse.ArgumentError(None, f"--status {args.status}: {what} status is one of {', '.join(allowed)}")
        return cls(args.task, args.tenant, status, args.last)

    def keeps(self, record: dict[str, Any]) -> bool:
        if self.task is not None and not str(record.get("task_id", "")).startswith(self.task):
            return False
        if self.tenant is not None and record.get("tenant") != self.tenant:
            return False
        return self.status is None or record.get("status") == self.status


def when(record: dict[str, Any]) -> int:
    """When a plan was made or an execution ended (epoch ms): the order results are printed in."""
    return int(record.get("finished_at") or record.get("created_at") or 0)


def select(records: Iterable[dict[str, Any]], f: ResultFilter) -> list[dict[str, Any]]:
    """The records ``f`` keeps, oldest first (the topic's partitions interleaved by time), the newest
    ``f.last`` of them when set."""
    kept = sorted((r for r in records if f.keeps(r)), key=when)
    return kept[-f.last :] if f.last else kept
