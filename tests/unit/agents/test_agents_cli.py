"""``aos agents run``'s command side without a broker: usage errors, the current folder, --detach twice."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.cli import agents_cmds, worker_proc
from aos_gateway.errors import StackError
from aos_gateway.settings import Settings

AGENT_MODULE = """
from aos_gateway.agents import Agent

agent = Agent(agent_id="cwd-agent", name="Cwd", handler=lambda r: r.text)
"""


def args(target: str, detach: bool = False) -> argparse.Namespace:
    return argparse.Namespace(action="run", target=target, detach=detach, keep_registered=False)


@pytest.mark.parametrize("target", ["badcards", "badcards:", ":agent"])
def test_a_malformed_target_is_a_usage_error(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Regression (M13): exit status 1 instead of the documented 2 for a bad argument."""
    assert agents_cmds.run(args(target), Settings(), lambda _m: None) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"aos agents run: error: {target!r}: expected MODULE:ATTRIBUTE")


@pytest.fixture
def module_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A folder holding cwdagentmod.py, as the current folder, and not on sys.path (as for the console script)."""
    (tmp_path / "cwdagentmod.py").write_text(AGENT_MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    monkeypatch.delenv("PYTHONPATH", raising=False)
    yield tmp_path
    sys.modules.pop("cwdagentmod", None)


def test_a_module_in_the_current_folder_is_found_and_the_background_child_finds_it_too(
    module_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (M2): `aos agents run mymodule:agent` did not find mymodule.py in the current folder."""
    started: list[dict[str, Any]] = []

    def start_detached(_settings: Settings, _level: str, _progress: Any, **kw: Any) -> int:
        started.append({**kw, "PYTHONPATH": (kw.get("env") or os.environ).get("PYTHONPATH"), "cwd": os.getcwd()})
        return 4242

    monkeypatch.setattr(worker_proc, "running_pid", lambda *_a, **_k: None)
    monkeypatch.setattr(worker_proc, "start_detached", start_detached)
    assert agents_cmds.run(args("cwdagentmod:agent", detach=True), Settings(), lambda _m: None) == 0
    [call] = started
    assert call["argv"][-1] == "cwdagentmod:agent" and call["cwd"] == str(module_here)
    assert (call["PYTHONPATH"] or "").split(os.pathsep)[0] == str(module_here)
    assert "PYTHONPATH" not in os.environ  # only for the child


def test_a_second_detached_set_is_refused_naming_the_running_one(
    module_here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (M1): "already running", exit status 0, and the new agents not started."""
    monkeypatch.setattr(worker_proc, "running_pid", lambda *_a, **_k: 8566)
    with pytest.raises(StackError) as err:
        agents_cmds.run(args("cwdagentmod:agent", detach=True), Settings(), lambda _m: None)
    msg = str(err.value)
    assert "pid 8566" in msg and "`aos agents stop`" in msg and "without --detach" in msg
