"""load_tests/soak.py: the per-minute windows, the RSS slope and the four verdicts, from made-up samples."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LOAD_TESTS = Path(__file__).resolve().parents[3] / "load_tests"


@pytest.fixture
def soak(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(LOAD_TESTS))
    mod = importlib.import_module("soak")
    yield mod
    for name in ("soak", "kafka_load", "_report"):
        sys.modules.pop(name, None)


def _tasks(soak: ModuleType, minutes: int, rate: float, latency: Any) -> list[Any]:
    n = int(minutes * 60 * rate)
    return [soak.Sample(i / rate, latency(i / rate), "SUCCEEDED") for i in range(n)]


def _load(tasks: list[Any]) -> dict[str, Any]:
    answered = sum(t.latency_ms is not None for t in tasks)
    return {"sent": len(tasks), "answered": answered, "missing": len(tasks) - answered, "errors": 0}


def _samples(minutes: int, rss: Any, lag: Any) -> list[dict[str, Any]]:
    return [{"t_s": t, "rss_worker_mb": rss(t), "lag": lag(t)} for t in range(0, minutes * 60, 10)]


def test_windows_count_and_percentiles_per_minute(soak: ModuleType) -> None:
    tasks = _tasks(soak, 3, 2.0, lambda t: 100.0 if t < 120 else 700.0)
    wins = soak.windows(tasks)
    assert [w["sent"] for w in wins] == [120, 120, 120]
    assert [w["p95_ms"] for w in wins] == [100.0, 100.0, 700.0]
    assert [w["answered"] for w in wins] == [120, 120, 119]  # the last task answers after the third minute
    assert wins[0]["per_s"] == 2.0


def test_slope_is_mb_per_ten_minutes(soak: ModuleType) -> None:
    assert soak.slope_per_10min([(t, 500 + t / 60) for t in range(0, 1200, 10)]) == pytest.approx(10.0)
    assert soak.slope_per_10min([(0, 1.0), (1, 1.0)]) is None


def test_a_steady_run_passes_every_verdict(soak: ModuleType) -> None:
    tasks = _tasks(soak, 10, 2.0, lambda t: 100.0 + (t % 7))
    v = soak.verdicts(_load(tasks), soak.windows(tasks), _samples(10, lambda t: 900.0, lambda t: 3), 2.0, 20.0, 60)
    assert all(d["ok"] for d in v.values()), v


def test_each_verdict_fails_on_its_own_symptom(soak: ModuleType) -> None:
    # latency climbing (a backlog), memory leaking 50 MB per 10 min, lag growing past the limit
    tasks = _tasks(soak, 10, 2.0, lambda t: 100.0 + t * 10)
    leak = _samples(10, lambda t: 900.0 + t / 12, lambda t: t)
    v = soak.verdicts(_load(tasks), soak.windows(tasks), leak, 2.0, 20.0, 60)
    assert not v["p95_steady"]["ok"] and v["p95_steady"]["ratio"] > 1.5
    assert not v["memory_flat"]["ok"]
    assert v["memory_flat"]["slope_mb_per_10min_second_half"]["rss_worker_mb"] == pytest.approx(50.0)
    assert not v["lag_bounded"]["ok"] and v["lag_bounded"]["max"] == 590
    assert v["throughput_held"]["ok"]
    # a task never answered, and a minute answering half the rate
    lost = tasks[:]
    lost[5] = soak.Sample(lost[5].sent_s, None, "missing")
    for i in range(300, 360, 2):
        lost[i] = soak.Sample(lost[i].sent_s, None, "missing")
    v = soak.verdicts(_load(lost), soak.windows(lost), leak, 2.0, 20.0, 60)
    assert not v["throughput_held"]["ok"]
    assert v["throughput_held"]["minutes_below_95pct"] == [3]


def test_learning_passes_read_from_a_metrics_endpoint(soak: ModuleType) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    reg = CollectorRegistry()
    hist = Histogram("aos_learning_pass_seconds", "pass", ["kind"], registry=reg)
    hist.labels(kind="full").observe(12.0)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = generate_latest(reg)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        before = soak.learning_passes("127.0.0.1", port)
        assert before == {"full": {"count": 1.0, "seconds": 12.0}}
        hist.labels(kind="incremental").observe(30.0)
        hist.labels(kind="incremental").observe(20.0)
        after = soak.learning_passes("127.0.0.1", port)
    finally:
        server.shutdown()
        server.server_close()
    assert soak.passes_between(before, after) == {
        "full": {"count": 0, "seconds": 0.0, "mean_s": None},
        "incremental": {"count": 2, "seconds": 50.0, "mean_s": 25.0},
    }
    # unreadable: no endpoint, or metrics off
    assert soak.learning_passes("127.0.0.1", port, tries=2, timeout=1.0) is None
    assert soak.learning_passes("127.0.0.1", 0) is None
    assert soak.passes_between(None, after) is None
