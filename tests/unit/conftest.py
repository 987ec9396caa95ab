"""Fixtures shared by unit tests."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from aos_gateway.settings import get_settings


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A clean ``AOS_`` environment: no setting from the caller's, the cold store and the stack home
    under ``tmp_path`` (returned), the settings cache cleared before and after."""
    for k in list(os.environ):
        if k.startswith("AOS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AOS_EXPERIENCE__COLD_DIR", str(tmp_path / "cold"))
    monkeypatch.setenv("AOS_STACK__HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()
