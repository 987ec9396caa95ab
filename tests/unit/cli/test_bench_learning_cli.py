"""``aos bench learning``: refused without --yes before anything is started; --checkpoints checked by argparse."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.bench import learning
from aos_gateway.cli import argtypes
from aos_gateway.cli.main import main


@pytest.fixture
def data(tmp_path: Path) -> Path:
    for name in ("agents", "train", "dev"):
        (tmp_path / f"{name}.jsonl").write_text("")
    return tmp_path


@pytest.fixture
def runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The bench's runs (none reaches Kafka): a fake report, its cleanup complete unless told."""
    calls: list[dict[str, Any]] = []

    def run(_settings: Any, data: Path, checkpoints: list[int], *args: Any) -> dict[str, Any]:
        calls.append({"data": data, "checkpoints": checkpoints})
        left = ["simulator agent cards still registered: Kafka down"] if checkpoints == [7] else []
        return {"curve": [], "cleanup": {"left": left}}

    monkeypatch.setattr(learning, "run", run)
    monkeypatch.setattr(learning, "format_report", lambda r: "report")
    return calls


def test_without_yes_it_is_refused_before_anything_starts(
    data: Path, runs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "learning", "--data", str(data)]) == 2
    err = capsys.readouterr().err.strip()
    assert runs == []
    assert len(err.splitlines()) == 1 and err.startswith("aos bench learning: error: ")
    assert "learned state" in err and "simulator agents" in err and "--yes" in err


def test_the_help_says_what_it_changes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "learning", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--yes" in out and "learned state" in out and "not restored" in out


def test_with_yes_it_runs_at_the_checkpoints_given(data: Path, runs: list[dict[str, Any]]) -> None:
    assert main(["bench", "learning", "--data", str(data), "--yes", "--checkpoints", "0,20,40"]) == 0
    assert runs[-1]["checkpoints"] == [0, 20, 40]
    assert main(["bench", "learning", "--data", str(data), "--yes"]) == 0
    assert runs[-1]["checkpoints"] == [0, 1000, 5000, 10000]


def test_a_cleanup_left_incomplete_is_a_failure(data: Path, runs: list[dict[str, Any]]) -> None:
    assert main(["bench", "learning", "--data", str(data), "--yes", "--checkpoints", "7"]) == 1


@pytest.mark.parametrize("bad", ["abc", "5,1", "0,20,20", "-1,5", "", "1,,2", "1.5"])
def test_a_bad_checkpoint_list_is_a_usage_error(
    bad: str, data: Path, runs: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "learning", "--data", str(data), "--yes", f"--checkpoints={bad}"])  # "-1,5" is no option
    assert exc.value.code == 2 and runs == []
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("aos bench learning: error: argument --checkpoints: ")


def test_ascending_counts() -> None:
    assert argtypes.ascending_counts("0,20,40") == [0, 20, 40]
    assert argtypes.ascending_counts(" 5 , 10") == [5, 10]
    assert argtypes.ascending_counts("3") == [3]
    for bad, says in (
        ("abc", "not a whole number"),
        ("5,1", "ascending"),
        ("1,1", "ascending"),
        ("-1", ">= 0"),
        ("", "not a whole number"),
    ):
        with pytest.raises(argparse.ArgumentTypeError, match=says):
            argtypes.ascending_counts(bad)
