"""``aos results``: which records it prints, in what order (aos_gateway/cli/results_filter.py)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from aos_gateway.cli.results_filter import ResultFilter, select


def plan(task: str, tenant: str, status: str, created_at: int) -> dict[str, Any]:
    return {"task_id": task, "tenant": tenant, "status": status, "created_at": created_at}


PLANS = [  # as read from a four-partition topic: partition by partition, not in time order
    plan("t-3", "acme", "PLANNED", 30),
    plan("t-1", "acme", "NO_MATCH", 10),
    plan("t-4", "beta", "PLANNED", 40),
    plan("t-2", "beta", "PLANNED", 20),
]


def test_oldest_first_whatever_the_partitions() -> None:
    assert [p["task_id"] for p in select(PLANS, ResultFilter())] == ["t-1", "t-2", "t-3", "t-4"]


def test_filters_combine_and_last_keeps_the_newest() -> None:
    assert [p["task_id"] for p in select(PLANS, ResultFilter(tenant="beta"))] == ["t-2", "t-4"]
    assert [p["task_id"] for p in select(PLANS, ResultFilter(status="PLANNED", last=2))] == ["t-3", "t-4"]
    assert [p["task_id"] for p in select(PLANS, ResultFilter(task="t-1"))] == ["t-1"]
    assert select(PLANS, ResultFilter(tenant="acme", status="REJECTED")) == []


def test_execution_results_are_ordered_by_their_end() -> None:
    res = [
        {"task_id": "a", "finished_at": 50, "status": "FAILED"},
        {"task_id": "b", "finished_at": 5, "status": "FAILED"},
    ]
    assert [r["task_id"] for r in select(res, ResultFilter(status="FAILED"))] == ["b", "a"]


def _args(**kw: Any) -> argparse.Namespace:
    base = {"task": None, "tenant": None, "status": None, "last": None, "executions": False}
    return argparse.Namespace(**{**base, **kw})


def test_a_status_the_topic_never_carries_is_a_usage_error() -> None:
    assert ResultFilter.from_args(_args(status="planned")).status == "PLANNED"
    assert ResultFilter.from_args(_args(status="failed", executions=True)).status == "FAILED"
    with pytest.raises(argparse.ArgumentError, match="one of PLANNED, NO_MATCH, REJECTED"):
        ResultFilter.from_args(_args(status="FAILED"))
