"""kafka_load/http_load: "ok" counts only the tasks that got what they asked for, and the summary lists
every answer by status (never "answered 40, ok 40" next to 29 FAILED)."""

from __future__ import annotations

from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from aos_gateway.contracts.records import TaskRequest
from aos_gateway.ingress.api import create_app
from aos_gateway.ingress.results import TaskStore
from tests.unit.ingress.fakes import FakeFeed, plan, result, settings


def test_kafka_load_counts_failed_results_as_answers_not_ok(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    kafka_load, report = load_scripts["kafka_load"], load_scripts["_report"]
    rows = [(f"t{i}", (i, 100.0 + i / 2)) for i in range(40)]
    answers = {f"t{i}": (100.0 + i / 2 + 0.1, "SUCCEEDED" if i < 11 else "FAILED") for i in range(40)}
    cfg = SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers="k:9092"))
    rep = kafka_load.report(rows, answers, {}, 100.0, "result", 2.0, 20.0, 20.0, False, cfg, 0)
    assert (rep["answered"], rep["ok"], rep["missing"], rep["errors"]) == (40, 11, 0, 0)
    assert rep["answered_by_status"] == {"FAILED": 29, "SUCCEEDED": 11} and rep["ok_means"] == ["SUCCEEDED"]
    report.print_summary(rep, [])
    line = capsys.readouterr().out.splitlines()[0]
    assert "answered 40 (FAILED 29, SUCCEEDED 11)" in line and "ok 40" not in line
    plans = kafka_load.report(
        rows, {"t0": (100.1, "PLANNED"), "t1": (100.6, "NO_MATCH")}, {}, 100.0, "plan", 2.0, 20.0, 20.0, False, cfg, 0
    )
    assert (plans["answered"], plans["ok"], plans["missing"]) == (2, 1, 38)


def test_a_dead_letter_is_an_error_not_an_answer(load_scripts: dict[str, ModuleType]) -> None:
    kafka_load = load_scripts["kafka_load"]
    cfg = SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers="k:9092"))
    rows = [("a", (0, 1.0)), ("b", (1, 1.5))]
    rep = kafka_load.report(
        rows, {"a": (1.1, "PLANNED"), "b": (1.7, "dead_letter")}, {}, 1.0, "plan", 2.0, 1.0, 1.0, False, cfg, 0
    )
    assert (rep["answered"], rep["ok"], rep["errors"]) == (1, 1, 1)


class AutoRunner:
    """A sender that plans and 'runs' every task at once, every other one FAILED."""

    def __init__(self, store: TaskStore) -> None:
        self.store, self.n = store, 0

    async def send(self, task: TaskRequest) -> None:
        self.n += 1
        self.store.put("plan", plan(task["task_id"], task["tenant"]))
        self.store.put("result", result(task["task_id"], task["tenant"], "FAILED" if self.n % 2 else "SUCCEEDED"))

    def close(self) -> None:
        pass


async def test_http_load_ok_counts_only_succeeded(load_scripts: dict[str, ModuleType]) -> None:
    import httpx

    store = TaskStore(1000, 1000)
    app: Any = create_app(settings(), AutoRunner(store), FakeFeed(), store=store)
    texts = load_scripts["_report"].texts(None, 10)
    rep = await load_scripts["http_load"].run(
        "http://ingress", "key-a", 100.0, 0.1, "result", 5.0, texts, 8, httpx.ASGITransport(app=app)
    )
    assert rep["answered"] == 10 and rep["ok"] == 5 and rep["errors"] == 0
    assert rep["answered_by_status"] == {"FAILED": 5, "SUCCEEDED": 5}
