"""Simulated agents for load and learning tests: latency and success drawn per task type.

``AOS_AGENTS__SIMULATOR_FILE=sim.json aos agents run aos_gateway.agents.simulator:agents``

The file (JSON)::

    {
      "seed": 0,
      "labels": {"what's the weather in Paris": "weather"},   # task text -> task type (optional)
      "labels_file": "labels.jsonl",                           # or lines {"text": ..., "type": ...}
      "agents": [
        {"agent_id": "sim-weather", "name": "WeatherSim", "description": "...", "capabilities": ["weather"],
         "cost": 0.01, "latency_ms": {"median": 120, "p95": 400},
         "success": {"default": 0.05, "by_type": {"weather": 0.95}}}
      ]
    }

A task's type is looked up by its exact text (the step's role, then the task text); unknown
tasks have type ``default``. Latency is log-normal with the given median and p95 (capped by
the invocation's deadline); success is a Bernoulli draw. Both are seeded by the invocation id,
so a rerun of the same invocations behaves the same. The hidden skill (``by_type``) is what a
learner has to discover from success/failure alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aos_gateway.agents.sdk import Agent, Reply, Request
from aos_gateway.errors import AgentError, ConfigError
from aos_gateway.settings import Settings


@dataclass(frozen=True)
class Behaviour:
    median_ms: float = 100.0
    p95_ms: float = 300.0
    default_success: float = 0.5
    by_type: dict[str, float] = field(default_factory=dict)

    @property
    def sigma(self) -> float:
        return max(0.0, math.log(max(self.p95_ms, self.median_ms) / max(self.median_ms, 1e-3)) / 1.6449)

    def success_p(self, task_type: str) -> float:
        return self.by_type.get(task_type, self.default_success)


def _rng(seed: int, invocation_id: str) -> random.Random:
    digest = hashlib.sha256(f"{seed}:{invocation_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def simulate(b: Behaviour, task_type: str, seed: int, invocation_id: str) -> tuple[bool, float]:
    """(succeeds, latency ms) for one invocation: deterministic in the seed and invocation id."""
    rng = _rng(seed, invocation_id)
    latency = b.median_ms * math.exp(b.sigma * rng.gauss(0.0, 1.0))
    return rng.random() < b.success_p(task_type), latency


def make_handler(b: Behaviour, labels: dict[str, str], seed: int) -> Any:
    def handle(req: Request) -> Reply:
        task_type = labels.get((req.role or "").strip()) or labels.get(req.text.strip()) or "default"
        ok, latency = simulate(b, task_type, seed, req.invocation["invocation_id"])
        time.sleep(min(latency / 1000, req.remaining_s + 0.05))
        if not ok:
            raise AgentError(f"simulated failure (task type {task_type})")
        return Reply(f"simulated answer for {task_type}", metadata={"task_type": task_type})

    return handle


def load(path: Path) -> list[Agent]:
    """The simulated agents described by ``path``."""
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read the simulator file {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(spec, dict) or not isinstance(spec.get("agents"), list) or not spec["agents"]:
        raise ConfigError(f"{path}: expected an object with a non-empty 'agents' list")
    seed = int(spec.get("seed", 0))
    labels: dict[str, str] = {str(k).strip(): str(v) for k, v in (spec.get("labels") or {}).items()}
    if spec.get("labels_file"):
        lf = Path(spec["labels_file"])
        lf = lf if lf.is_absolute() else path.parent / lf
        for n, line in enumerate(lf.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                    labels[str(row["text"]).strip()] = str(row["type"])
                except (json.JSONDecodeError, KeyError, TypeError) as exc:
                    raise ConfigError(f"{lf}:{n}: expected {{'text': ..., 'type': ...}}") from exc
    out: list[Agent] = []
    for i, a in enumerate(spec["agents"]):
        try:
            lat = a.get("latency_ms", {})
            suc = a.get("success", {})
            b = Behaviour(
                median_ms=float(lat.get("median", 100)),
                p95_ms=float(lat.get("p95", lat.get("median", 100) * 3)),
                default_success=float(suc.get("default", 0.5)),
                by_type={str(k): float(v) for k, v in (suc.get("by_type") or {}).items()},
            )
            out.append(
                Agent(
                    agent_id=str(a["agent_id"]),
                    name=str(a.get("name", a["agent_id"])),
                    description=str(a.get("description", "")),
                    capabilities=[str(c) for c in a.get("capabilities", [])],
                    examples=[str(e) for e in a.get("examples", [])],
                    tenant=str(a.get("tenant", "public")),
                    cost=float(a.get("cost", 0.0)),
                    p95_latency_ms=int(b.p95_ms),
                    metadata={"simulated": "true"},
                    handler=make_handler(b, labels, seed),
                )
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path}: agent #{i + 1} is not valid: {exc}") from exc
    return out


def agents(settings: Settings) -> list[Agent]:
    """The agents of the file named by ``agents.simulator_file`` (``AOS_AGENTS__SIMULATOR_FILE``)."""
    if settings.agents.simulator_file is None:
        raise ConfigError("set AOS_AGENTS__SIMULATOR_FILE to the simulator's JSON file")
    return load(settings.agents.simulator_file)
