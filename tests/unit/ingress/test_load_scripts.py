"""load_tests/{kafka_load,http_load}.py: their shared report, and the HTTP load against the app in-process."""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from aos_gateway.contracts.records import TaskRequest
from aos_gateway.errors import KafkaError
from aos_gateway.ingress.api import create_app
from aos_gateway.ingress.results import TaskStore
from tests.unit.ingress.fakes import FakeFeed, plan, settings

LOAD_TESTS = Path(__file__).resolve().parents[3] / "load_tests"


@pytest.fixture
def scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    # the scripts import their sibling _report as `python load_tests/x.py` does: from their own folder
    monkeypatch.syspath_prepend(str(LOAD_TESTS))
    mods = {name: importlib.import_module(name) for name in ("_report", "http_load", "kafka_load")}
    yield mods
    for name in mods:
        sys.modules.pop(name, None)


def test_percentiles_agree_with_numpy(scripts: dict[str, ModuleType]) -> None:
    xs = [float(x) for x in np.random.default_rng(0).exponential(50, 999)]
    got = scripts["_report"].percentiles(xs)
    for q in (50, 95, 99):
        assert got[f"p{q}"] == pytest.approx(np.percentile(xs, q), abs=0.06)
    assert got["max"] == round(max(xs), 1)
    assert scripts["_report"].percentiles([])["p50"] is None


def test_texts_are_unique_from_templates_or_a_file(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    texts = scripts["_report"].texts
    assert len(set(texts(None, 500))) == 500
    f = tmp_path / "t.jsonl"
    f.write_text('{"text": "weather in Rome"}\nplain line\n\n')
    got = texts(f, 5)
    assert got[:2] == ["weather in Rome", "plain line"] and len(set(got)) == 5


def test_the_summary_counts_outcomes(scripts: dict[str, ModuleType]) -> None:
    r = scripts["_report"]
    samples = [r.Sample(0.0, 10.0, "PLANNED"), r.Sample(0.1, 30.0, "NO_MATCH"), r.Sample(0.2, None, "missing")]
    samples.append(r.Sample(0.3, None, "POST 503"))
    rep = r.summarize("x", samples, rate=10, duration=0.4, send_span_s=0.4, ok={"PLANNED", "NO_MATCH"})
    assert (rep["sent"], rep["answered"], rep["ok"], rep["missing"], rep["errors"]) == (4, 2, 2, 1, 1)
    assert rep["latency_ms"]["p50"] == 20.0 and rep["send_rate_per_s"] == 10.0
    assert rep["samples"][2] == [0.2, None, "missing"]


class AutoPlanner:
    """A sender that 'plans' every task at once (and refuses every fifth, as a busy Kafka would)."""

    def __init__(self, store: TaskStore) -> None:
        self.store = store
        self.n = 0

    async def send(self, task: TaskRequest) -> None:
        self.n += 1
        if self.n % 5 == 0:
            raise KafkaError("the producer's queue is full; try again shortly")
        self.store.put("plan", plan(task["task_id"], task["tenant"]))

    def close(self) -> None:
        pass


async def test_http_load_drives_the_app_and_reports(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    import httpx

    s = settings()
    store = TaskStore(1000, 1000)
    app = create_app(s, AutoPlanner(store), FakeFeed(), store=store)
    texts = scripts["_report"].texts(None, 20)
    transport = httpx.ASGITransport(app=app)
    rep = await scripts["http_load"].run("http://ingress", "key-a", 100.0, 0.2, "plan", 5.0, texts, 8, transport)
    assert rep["sent"] == 20 and rep["ok"] == 16 and rep["errors"] == 4 and rep["missing"] == 0
    assert rep["outcomes"] == {"PLANNED": 16, "POST 503": 4} and "queue is full" in rep["first_error"]
    assert rep["post_ms"]["p50"] is not None and rep["latency_ms"]["p99"] is not None
    [path] = scripts["_report"].write(rep, tmp_path, "r", plot=False)
    assert json.loads(path.read_text())["ok"] == 16
    wrong = await scripts["http_load"].run("http://ingress", "nope", 100.0, 0.05, "plan", 5.0, texts[:3], 8, transport)
    assert wrong["outcomes"] == {"POST 401": 3}


def test_the_plot_is_a_png(scripts: dict[str, ModuleType], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    r = scripts["_report"]
    samples = [r.Sample(i / 10, 20.0 + i % 7, "PLANNED") for i in range(50)] + [r.Sample(5.0, None, "missing")]
    rep = r.summarize("plot", samples, rate=10, duration=5, send_span_s=5, ok={"PLANNED"})
    paths = r.write(rep, tmp_path, "r", plot=True)
    assert paths[1].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_scripts_say_what_to_install(
    scripts: dict[str, ModuleType], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(SystemExit) as exit_:
        scripts["_report"].require_matplotlib()
    assert "pip install 'aos-gateway[load]'" in str(exit_.value)


def test_bad_arguments_exit_2(scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str]) -> None:
    for mod, argv in ((scripts["kafka_load"], ["--rate", "0"]), (scripts["http_load"], ["--duration", "-1"])):
        with pytest.raises(SystemExit) as exit_:
            mod.main(argv)
        assert exit_.value.code == 2 and "must be > 0" in capsys.readouterr().err
