"""The fault suite's second calculator (``aos agents run tests.faults.agents:backup_calculator``).

The other is the reference calculator itself (``aos_gateway.agents.reference:calculator``), run in a
process of its own; this one runs in another process. The planner puts one first and the other as
the step's fallback (the suite reads which from a plan): the agent scenario kills the first.
"""

from __future__ import annotations

from aos_gateway.agents.reference import calculator
from aos_gateway.agents.sdk import Agent

BACKUP_ID = "fault-calculator-backup"

backup_calculator = Agent(
    agent_id=BACKUP_ID,
    name="BackupCalculator",
    description="Evaluates arithmetic in the text (a backup).",
    capabilities=list(calculator.capabilities),
    p95_latency_ms=200,
    handler=calculator.handler,
)
