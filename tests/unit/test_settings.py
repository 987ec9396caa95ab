"""Settings that follow one another (aos_gateway/settings.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aos_gateway.settings import Settings


def test_the_worker_data_and_cold_store_follow_the_stack_home(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Regression: with only AOS_STACK__HOME set (README: one place whatever the folder) the worker's
    data dir stayed '.aos/worker' under the current folder, and the worker failed to start there."""
    monkeypatch.delenv("AOS_EXPERIENCE__COLD_DIR")
    monkeypatch.setenv("AOS_STACK__HOME", "/srv/aos")
    s = Settings()
    assert s.worker.data_dir == Path("/srv/aos/worker") and s.experience.cold_dir == Path("/srv/aos/experience")
    assert s.audio.models_dir == Path("/srv/aos/models")
    monkeypatch.setenv("AOS_WORKER__DATA_DIR", "/data/w")
    monkeypatch.setenv("AOS_EXPERIENCE__COLD_DIR", "/data/cold")
    s = Settings()
    assert s.worker.data_dir == Path("/data/w") and s.experience.cold_dir == Path("/data/cold")  # set: kept


def test_the_defaults_are_unchanged_without_a_stack_home(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AOS_STACK__HOME", "AOS_EXPERIENCE__COLD_DIR"):
        monkeypatch.delenv(name)
    s = Settings()
    assert s.worker.data_dir == Path(".aos/worker") and s.experience.cold_dir == Path(".aos/experience")
