"""The peer benchmark driver's pure parts: report parsing, differences, ratios and the table."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType

import pytest

_PATH = Path(__file__).resolve().parents[3] / "load_tests" / "peer_compare.py"


@pytest.fixture(scope="module")
def pc() -> ModuleType:
    # load_tests/ is not a package: load the driver from its file, as `python load_tests/peer_compare.py` does
    spec = importlib.util.spec_from_file_location("peer_compare", _PATH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


OURS = {"top1": 0.837, "r5": 0.958, "mrr": 0.89, "p95_ms": 20.0}
PEER = {"top1": 0.785, "r5": 0.9, "mrr": 0.82, "p50_ms": 30.0, "p95_ms": 60.0, "p99_ms": 80.0, "nones": 0}


def test_ratios_are_points_and_peer_over_ours(pc: ModuleType) -> None:
    r = pc.ratios(OURS, PEER)
    assert r["top1_diff"] == pytest.approx(5.2)
    assert r["r5_diff"] == pytest.approx(5.8)
    assert r["mrr_diff"] == pytest.approx(0.07)
    assert r["p95_ms_ratio"] == pytest.approx(3.0)
    assert math.isnan(r["p50_ms_ratio"])  # ours reports no p50: no ratio, not a made-up one


def test_ratio_of_a_zero_or_missing_latency_is_nan(pc: ModuleType) -> None:
    assert math.isnan(pc.ratios({"p95_ms": 0}, {"p95_ms": 5})["p95_ms_ratio"])
    assert math.isnan(pc.ratios({}, {})["top1_diff"])


def test_table_formats_and_marks_what_a_report_lacks(pc: ModuleType) -> None:
    lines = pc.table([("ours", OURS), ("peer", PEER)]).splitlines()
    rows = {line[:20].strip(): line[20:].split("  ") for line in lines[1:]}
    cells = {label: [c.strip() for c in row if c.strip()] for label, row in rows.items()}
    assert lines[0].split() == ["ours", "peer"]
    assert cells["top-1"] == ["83.7%", "78.5%"]
    assert cells["MRR"] == ["0.890", "0.820"]
    assert cells["p50 per task"] == ["n/a", "30.0 ms"]  # ours reports no p50
    assert cells["no answer (None)"] == ["n/a", "0"]
    assert len({len(line) for line in lines[1:] if not line.endswith("n/a")}) == 1  # right-aligned columns


def test_summary_reads_as_points_and_times(pc: ModuleType) -> None:
    s = pc.summary(OURS, PEER, "ours")
    assert "top-1 +5.2 pts" in s
    assert "p95 3.00x" in s
    assert "p50" not in s  # no p50 on our side


def test_report_is_the_last_json_line(pc: ModuleType) -> None:
    out = 'noise\n{"a": 1}\nmore noise\n{"top1": 0.5}\n\n'
    assert pc.last_json_object(out) == {"top1": 0.5}
    with pytest.raises(ValueError):
        pc.last_json_object("no report here\n")


def test_json_has_no_nan(pc: ModuleType) -> None:
    assert pc.jsonable({"a": math.nan, "b": [1.0, math.nan], "c": (math.nan,)}) == {
        "a": None,
        "b": [1.0, None],
        "c": [None],
    }
