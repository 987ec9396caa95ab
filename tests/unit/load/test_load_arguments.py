"""The load scripts check --out, --texts (and peer_compare its files) before any load, and say an
unreachable ingress in one line: exit 2 for a bad argument, 1 for a failure, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

LOAD_TESTS = Path(__file__).resolve().parents[3] / "load_tests"

CLOSED = "http://127.0.0.1:1"  # nothing listens on port 1


def _exit_2(capsys: pytest.CaptureFixture[str], fn: Callable[..., Any], *args: object) -> str:
    with pytest.raises(SystemExit) as exit_:
        fn(*args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def _run(script: str, *argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(LOAD_TESTS / script), *argv], cwd=cwd, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("script", ["kafka_load", "http_load"])
def test_out_must_be_a_folder_checked_before_the_load(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str], tmp_path: Path, script: str
) -> None:
    mod = load_scripts[script]
    a_file = tmp_path / "env.sh"
    a_file.write_text("export X=1\n")
    assert "--out" in _exit_2(capsys, mod._args, ["--out", str(a_file), "--no-plot"])
    assert "cannot write" in _exit_2(capsys, mod._args, ["--out", "/proc/nope", "--no-plot"])
    assert "cannot write" in _exit_2(capsys, mod._args, ["--out", str(a_file / "below"), "--no-plot"])
    # a folder to be made is fine, and made
    args = mod._args(["--out", str(tmp_path / "new" / "reports"), "--no-plot"])
    assert args.out.is_dir()


@pytest.mark.parametrize("script", ["kafka_load", "http_load"])
def test_texts_must_be_readable_and_hold_texts(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str], tmp_path: Path, script: str
) -> None:
    mod = load_scripts[script]
    assert "nope.txt" in _exit_2(capsys, mod._args, ["--texts", str(tmp_path / "nope.txt"), "--out", str(tmp_path)])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    assert "no texts" in _exit_2(capsys, mod._args, ["--texts", str(empty), "--out", str(tmp_path)])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": \n')
    assert "bad.jsonl:2" in _exit_2(capsys, mod._args, ["--texts", str(bad), "--out", str(tmp_path)])


def test_kafka_load_refuses_a_file_as_out_before_touching_kafka(tmp_path: Path) -> None:
    # the review's case: the whole load ran, then a FileExistsError traceback lost the report
    (tmp_path / "env.sh").write_text("")
    argv = ["--no-plot", "--out", "env.sh", "--duration", "5", "--rate", "2", "--bootstrap", "127.0.0.1:1"]
    proc = _run("kafka_load.py", *argv, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "kafka_load.py: error: --out env.sh: not a folder"
    missing = _run("kafka_load.py", "--no-plot", "--texts", "nope.txt", "--bootstrap", "127.0.0.1:1", cwd=tmp_path)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "nope.txt" in missing.stderr


def test_soak_checks_out_before_starting(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str], tmp_path: Path, metatool: Path
) -> None:
    soak = load_scripts["soak"]
    a_file = tmp_path / "env.sh"
    a_file.write_text("")
    assert "not a folder" in _exit_2(capsys, soak._args, ["--data", str(metatool), "--out", str(a_file)])
    assert "cannot write" in _exit_2(capsys, soak._args, ["--data", str(metatool), "--out", "/proc/nope"])
    assert soak._args(["--data", str(metatool), "--out", str(tmp_path / "r")]).out.is_dir()


def test_peer_compare_checks_its_files_before_either_run(
    load_scripts: dict[str, ModuleType], capsys: pytest.CaptureFixture[str], tmp_path: Path, metatool: Path
) -> None:
    pc = load_scripts["peer_compare"]
    data = ["--agents", str(metatool / "agents.jsonl"), "--train", str(metatool / "train.jsonl")]
    data += ["--peer-python", str(tmp_path / "no-python")]
    aos = ["--aos", sys.executable]  # an executable that exists
    assert "--test" in _exit_2(capsys, pc.main, [*data, "--test", str(tmp_path / "nope.jsonl"), *aos])
    data += ["--test", str(metatool / "dev.jsonl")]
    assert "--aos" in _exit_2(capsys, pc.main, [*data, "--aos", str(tmp_path / "no-aos")])
    assert "no folder" in _exit_2(capsys, pc.main, [*data, *aos, "--json-out", str(tmp_path / "no" / "r.json")])
    assert "a folder" in _exit_2(capsys, pc.main, [*data, *aos, "--json-out", str(tmp_path)])
    assert "--limit" in _exit_2(capsys, pc.main, [*data, *aos, "--limit", "0"])


def test_http_load_says_an_unreachable_url_in_one_line(tmp_path: Path) -> None:
    proc = _run("http_load.py", "--url", CLOSED, "--rate", "2", "--duration", "2", "--no-plot", cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    [error] = [line for line in proc.stderr.splitlines() if "error" in line]
    assert error.startswith(f"http_load: error: cannot reach {CLOSED}") and "aos serve" in error
    assert not list(tmp_path.iterdir())  # no report of a load that never ran


def test_http_load_probes_before_the_warm_up(load_scripts: dict[str, ModuleType]) -> None:
    import asyncio

    http_load = load_scripts["http_load"]
    with pytest.raises(http_load.Unreachable, match="cannot reach"):
        asyncio.run(http_load.run(CLOSED, None, 2.0, 1.0, "plan", 5.0, ["a task"], 4, warmup=0))
    with pytest.raises(SystemExit) as exit_:
        http_load._args(["--url", "localhost:8080"])
    assert exit_.value.code == 2
