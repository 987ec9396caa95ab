"""soak.py: a run too short for a verdict says "not measured" (no FAIL, no PASS), and a Ctrl-C still
writes the report of what was measured, marked partial."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest


def _load(soak: ModuleType, tasks: list[Any]) -> dict[str, Any]:
    """The fields of kafka_load's report that the verdicts and the summary read."""
    answered = [t for t in tasks if t.latency_ms is not None]
    return {
        "sent": len(tasks),
        "answered": len(answered),
        "answered_by_status": {"SUCCEEDED": len(answered)} if answered else {},
        "ok": len(answered),
        "missing": len(tasks) - len(answered),
        "pending": 0,
        "errors": 0,
        "throughput_per_s": 2.0,
        "latency_ms": soak._report.percentiles(t.latency_ms for t in answered),
        "samples": [[t.sent_s, t.latency_ms, t.outcome] for t in tasks],
    }


def _samples(seconds: int) -> list[dict[str, Any]]:
    return [{"t_s": t, "rss_worker_mb": 900.0, "lag": 2} for t in range(0, seconds, 10)]


def _minute(soak: ModuleType, lost: int = 0) -> list[Any]:
    tasks = [soak.Sample(i / 2, 40.0, "SUCCEEDED") for i in range(120)]
    for i in range(lost):
        tasks[i] = soak.Sample(tasks[i].sent_s, None, "missing")
    return tasks


def test_a_one_minute_soak_is_not_measured_not_failed(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]
) -> None:
    soak = load_scripts["soak"]
    tasks = _minute(soak)
    v = soak.verdicts(_load(soak, tasks), soak.windows(tasks), _samples(70), 2.0, 20.0, 60)
    assert v["throughput_held"]["ok"] is None and v["p95_steady"]["ok"] is None
    assert v["throughput_held"]["note"] == "not measured (needs a run of at least 2 minutes)"
    assert v["p95_steady"]["note"] == "not measured (needs a run of at least 7 minutes)"
    assert v["memory_flat"]["ok"] is True and v["lag_bounded"]["ok"] is True  # measurable in a minute
    report = {
        "load": _load(soak, tasks),
        "verdicts": v,
        "windows": soak.windows(tasks),
        "samples": _samples(70),
        "sample_errors": 0,
        "learning_passes": None,
    }
    assert soak.exit_status(report) == 0
    soak.print_summary(report, [])
    out = capsys.readouterr().out
    assert "FAIL" not in out and "PASS throughput_held" not in out
    assert "NOT MEASURED throughput_held: not measured (needs a run of at least 2 minutes)" in out
    assert "NOT MEASURED p95_steady" in out


def test_a_lost_task_fails_throughput_even_in_a_short_run(load_scripts: dict[str, ModuleType]) -> None:
    soak = load_scripts["soak"]
    tasks = _minute(soak, lost=1)
    v = soak.verdicts(_load(soak, tasks), soak.windows(tasks), _samples(70), 2.0, 20.0, 60)
    assert v["throughput_held"]["ok"] is False and "note" not in v["throughput_held"]
    assert soak.exit_status({"verdicts": v}) == 3


def test_unmeasured_memory_and_lag_are_said_so(load_scripts: dict[str, ModuleType]) -> None:
    soak = load_scripts["soak"]
    tasks = _minute(soak)
    few = [{"t_s": 0, "rss_worker_mb": 900.0, "lag": None}, {"t_s": 10, "rss_worker_mb": 950.0, "lag": None}]
    v = soak.verdicts(_load(soak, tasks), soak.windows(tasks), few, 2.0, 20.0, 60)
    assert v["memory_flat"]["ok"] is None and "rss_worker_mb" in v["memory_flat"]["note"]
    assert v["lag_bounded"]["ok"] is None and v["lag_bounded"]["note"].startswith("not measured")
    # a slope over the limit on one process fails, even when another could not be measured
    leak = [{"t_s": t, "rss_worker_mb": 900.0 + t, "rss_agents_mb": None if t > 30 else 1.0} for t in range(0, 90, 10)]
    v = soak.verdicts(_load(soak, tasks), soak.windows(tasks), leak, 2.0, 20.0, 60)
    assert v["memory_flat"]["ok"] is False


def test_kafka_load_reports_the_tasks_sent_before_an_interrupt_as_pending(load_scripts: dict[str, ModuleType]) -> None:
    kafka_load = load_scripts["kafka_load"]
    settings = SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers="k:9092"))
    rows = [("t0", (0, 10.0)), ("t1", (1, 10.5)), ("t2", (2, 11.0))]
    answers = {"t0": (10.2, "SUCCEEDED")}
    rep = kafka_load.report(rows, answers, {}, 10.0, "result", 2.0, 60.0, 1.0, True, settings, 0)
    assert rep["interrupted"] is True
    assert (rep["sent"], rep["answered"], rep["pending"], rep["missing"], rep["errors"]) == (3, 1, 2, 0, 0)
    done = kafka_load.report(rows, answers, {}, 10.0, "result", 2.0, 60.0, 1.0, False, settings, 0)
    assert (done["pending"], done["missing"]) == (0, 2)


@contextlib.contextmanager
def _signal_handlers_kept() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in saved.items():
            signal.signal(s, h)


def test_ctrl_c_during_the_soak_writes_a_partial_report(
    load_scripts: dict[str, ModuleType],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    metatool: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """main() end to end without Kafka: the stack's pieces faked, the load interrupted by a real SIGINT."""
    import aos_gateway.bench.learning as learning

    soak, kafka_load = load_scripts["soak"], load_scripts["kafka_load"]
    sim_exits: list[bool] = []

    @contextlib.contextmanager
    def fake_agents(*_a: Any, **_k: Any) -> Iterator[Any]:
        try:
            yield SimpleNamespace(pid=None)
        finally:
            sim_exits.append(True)

    class FakeLag:
        def __init__(self, *_a: Any) -> None:
            pass

        def sample(self) -> tuple[int, dict[str, int]]:
            return 1, {"aos.tasks.v1": 1}

        def close(self) -> None:
            pass

    def fake_run(settings: Any, rate: float, duration: float, *_a: Any) -> dict[str, Any]:
        # kafka_load.run's own shape: the signal lands in the send loop, the tasks sent so far come back
        t0 = time.perf_counter()
        rows = [(f"t{i}", (i, t0 + i / rate)) for i in range(6)]
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)
            raise AssertionError("the SIGINT did not interrupt the load")
        except KeyboardInterrupt:
            pass
        answers = {f"t{i}": (t0 + i / rate + 0.05, "SUCCEEDED") for i in range(4)}
        settings = SimpleNamespace(kafka=SimpleNamespace(bootstrap_servers="k:9092"))
        rep: dict[str, Any] = kafka_load.report(rows, answers, {}, t0, "result", rate, duration, 3.0, True, settings, 0)
        return rep

    monkeypatch.setattr(learning, "simulator_agents", fake_agents)
    monkeypatch.setattr(soak, "_pids", lambda _s: {"worker": os.getpid(), "broker": None})
    monkeypatch.setattr(soak, "GroupLag", FakeLag)
    monkeypatch.setattr(soak, "learning_passes", lambda *_a, **_k: None)
    monkeypatch.setattr(kafka_load, "run", fake_run)
    out = tmp_path / "reports"
    with _signal_handlers_kept():
        code = soak.main(["--data", str(metatool), "--rate", "2", "--duration", "60", "--out", str(out), "--no-plot"])
    assert code == 128 + signal.SIGINT
    assert sim_exits == [True]  # the simulator agents were stopped
    [partial] = sorted(out.glob("soak-partial-*.json"))
    report = json.loads(partial.read_text())
    assert report["partial"] is True and report["stopped_by_signal"] == signal.SIGINT
    assert report["load"]["sent"] == 6 and report["load"]["answered"] == 4 and report["load"]["pending"] == 2
    assert report["samples"]  # the sampler's readings until then
    [tasks] = sorted(out.glob("soak-tasks-partial-*.json"))
    assert len(json.loads(tasks.read_text())["samples"]) == 6
    printed = capsys.readouterr().out
    assert "PARTIAL: stopped by signal 2" in printed and "2 pending (interrupted)" in printed


def test_reports_fall_back_to_the_temporary_folder(
    load_scripts: dict[str, ModuleType], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    soak = load_scripts["soak"]
    monkeypatch.setattr(soak.tempfile, "gettempdir", lambda: str(tmp_path))
    tasks = _minute(soak)
    load = _load(soak, tasks)
    args = SimpleNamespace(rate=2.0, duration=60.0, rss_slope=20.0)
    report = soak.build_report(args, load, _samples(70), 0, None, 60, None)
    a_file = tmp_path / "gone"
    a_file.write_text("")  # --out became a file after it was checked
    paths, where_asked = soak.write_reports(report, load, a_file, "soak-x", False)
    assert not where_asked and all(p.parent == tmp_path and p.is_file() for p in paths) and len(paths) == 2
