"""Simulated agents: deterministic draws, skill by task type, file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aos_gateway.agents.simulator import Behaviour, load, simulate
from aos_gateway.errors import ConfigError


def test_draws_are_deterministic_and_follow_the_skill() -> None:
    b = Behaviour(median_ms=100, p95_ms=400, default_success=0.1, by_type={"weather": 0.9})
    assert simulate(b, "weather", 0, "x") == simulate(b, "weather", 0, "x")
    good = sum(simulate(b, "weather", 0, f"i{i}")[0] for i in range(2000)) / 2000
    bad = sum(simulate(b, "stocks", 0, f"i{i}")[0] for i in range(2000)) / 2000
    assert 0.87 < good < 0.93 and 0.08 < bad < 0.12
    lat = sorted(simulate(b, "weather", 0, f"i{i}")[1] for i in range(4000))
    assert 90 < lat[2000] < 110 and 340 < lat[3800] < 460  # median and p95


def test_load_reads_agents_and_labels(tmp_path: Path) -> None:
    (tmp_path / "labels.jsonl").write_text(json.dumps({"text": "rain in Paris?", "type": "weather"}) + "\n")
    f = tmp_path / "sim.json"
    f.write_text(
        json.dumps(
            {
                "labels_file": "labels.jsonl",
                "agents": [{"agent_id": "w", "success": {"default": 0.0, "by_type": {"weather": 1.0}}}],
            }
        )
    )
    (agent,) = load(f)
    assert agent.agent_id == "w" and agent.metadata["simulated"] == "true"


@pytest.mark.parametrize("content", ["{", "{}", '{"agents": [{"name": "no id"}]}'])
def test_bad_files_are_config_errors(tmp_path: Path, content: str) -> None:
    f = tmp_path / "sim.json"
    f.write_text(content)
    with pytest.raises(ConfigError):
        load(f)
