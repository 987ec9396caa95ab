"""load_tests/ is not a package: its scripts are imported from their own folder, as `python load_tests/x.py` does."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

LOAD_TESTS = Path(__file__).resolve().parents[3] / "load_tests"
SCRIPTS = ("_report", "kafka_load", "http_load", "soak", "peer_compare")


@pytest.fixture
def load_scripts(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, ModuleType]]:
    monkeypatch.syspath_prepend(str(LOAD_TESTS))
    for name in SCRIPTS:
        sys.modules.pop(name, None)
    mods = {name: importlib.import_module(name) for name in SCRIPTS}
    yield mods
    for name in SCRIPTS:
        sys.modules.pop(name, None)


@pytest.fixture
def metatool(tmp_path: Path) -> Path:
    """A MetaTool folder with the three files soak.py asks for."""
    data = tmp_path / "metatool"
    data.mkdir()
    (data / "agents.jsonl").write_text('{"agent_id": "a", "name": "A"}\n')
    for name in ("train.jsonl", "dev.jsonl"):
        (data / name).write_text('{"text": "what is 1 + 1?", "gold": ["a"]}\n')
    return data
