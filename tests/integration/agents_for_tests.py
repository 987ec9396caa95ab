"""Agents the execution tests run in a separate process (``aos agents run`` on this module).

Ids end with ``AOS_TEST_SUFFIX`` so each test session has its own agents.
"""

from __future__ import annotations

import os
import time

from aos_gateway.agents.sdk import Agent, Request

SUFFIX = os.environ.get("AOS_TEST_SUFFIX", "local")


def _sleep_long(req: Request) -> str:
    time.sleep(60)  # killed long before this
    return "too late"


def slow_agents() -> list[Agent]:
    return [
        Agent(
            agent_id=f"it-slow-{SUFFIX}",
            name="SlowPoke",
            description="takes its time",
            tenant=f"it-exec-{SUFFIX}",
            handler=_sleep_long,
        )
    ]
