"""Learning flows back into matching: a learned state published to aos.weights.v1 is hot-reloaded
by the running worker and changes which agent a task goes to."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from aos_gateway.cli.learn_cmds import publish
from aos_gateway.client import GatewayClient
from aos_gateway.matching.learned import empty_state
from aos_gateway.settings import Settings
from tests.integration.conftest import run_aos, write_cards

pytestmark = pytest.mark.integration

ASK = "Show me the quarterly revenue numbers of ACME Corp"
PARAPHRASES = [
    "Show me the quarterly revenue numbers of ACME Corp",
    "Show me the quarterly revenue figures of ACME Corp",
    "What are the quarterly revenue numbers of ACME Corp?",
    "Give me ACME Corp's quarterly revenue numbers",
    "List the quarterly revenue of ACME Corp",
]


def _agent_for(client: GatewayClient, text: str, tenant: str) -> str:
    plan = client.submit_and_wait(text, timeout=30, tenant=tenant)
    assert plan["status"] == "PLANNED", plan
    return plan["steps"][0]["agent_id"]


def test_published_weights_reroute_tasks_in_the_running_worker(
    tmp_path: Path, settings: Settings, stack_env: dict[str, str], worker: subprocess.Popen[bytes]
) -> None:
    tag = uuid.uuid4().hex[:6]
    ids = {"finance": f"Finance-{tag}", "sql": f"SQL-{tag}", "news": f"News-{tag}"}
    tenant = f"learn-{tag}"  # these agents are seen by this test's tasks only
    cards = [
        {"agent_id": ids["finance"], "description": "Company financials: revenue, earnings and balance sheets."},
        {"agent_id": ids["sql"], "description": "Converts a natural language question into an SQL query."},
        {"agent_id": ids["news"], "description": "The latest news headlines about companies and markets."},
    ]
    cards_file = write_cards(tmp_path / "cards.jsonl", [{**c, "tenant": tenant} for c in cards])
    run_aos(stack_env, "agents", "register", str(cards_file), "--wait")
    with GatewayClient(settings) as client:
        before = _agent_for(client, ASK, tenant)
        # experience says otherwise: such tasks were right for an agent the cards do not favour
        target = ids["news"] if before != ids["news"] else ids["finance"]
        train = tmp_path / "train.jsonl"
        train.write_text(
            "".join(
                json.dumps({"task_id": f"t{i}", "text": t, "gold": [target]}) + "\n" for i, t in enumerate(PARAPHRASES)
            )
        )
        try:
            out = run_aos(stack_env, "learn", "matching", "--agents", str(cards_file), "--train", str(train), "--json")
            report = json.loads(out.stdout)
            assert report["memories"] == len(PARAPHRASES) and report["version"] > 0
            deadline = time.monotonic() + 60
            after = before
            while after != target and time.monotonic() < deadline:  # the worker reloads asynchronously
                time.sleep(1)
                after = _agent_for(client, ASK, tenant)
            assert after == target, f"still {after} after the learned state was published"
            # a task unlike the experience is not pulled to the learned agent
            assert _agent_for(client, "Write an SQL query listing the customers from Berlin", tenant) != target
        finally:  # later tests match without this state
            publish(settings, empty_state(list(ids.values()), 384))
