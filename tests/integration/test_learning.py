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


def test_prototypes_learned_from_unlabelled_tasks_reach_the_running_worker(
    tmp_path: Path, settings: Settings, stack_env: dict[str, str], worker: subprocess.Popen[bytes]
) -> None:
    tag = uuid.uuid4().hex[:6]
    tenant = f"adapt-{tag}"
    cards = [
        {"agent_id": f"Finance-{tag}", "description": "Company financials: revenue, earnings and balance sheets."},
        {"agent_id": f"News-{tag}", "description": "The latest news headlines about companies and markets."},
    ]
    cards_file = write_cards(tmp_path / "cards.jsonl", [{**c, "tenant": tenant} for c in cards])
    run_aos(stack_env, "agents", "register", str(cards_file), "--wait")
    tasks = tmp_path / "tasks.jsonl"  # what users asked, no outcome known: no "gold"
    tasks.write_text("".join(json.dumps({"text": t}) + "\n" for t in PARAPHRASES))
    with GatewayClient(settings) as client:
        before = client.submit_and_wait(ASK, timeout=30, tenant=tenant)
        assert before["status"] == "PLANNED", before
        try:
            out = run_aos(
                stack_env, "learn", "matching", "--agents", str(cards_file), "--train", str(tasks),
                "--feedback", "none", "--json",
            )  # fmt: skip
            report = json.loads(out.stdout)
            assert report["prototypes"] and report["memories"] == 0 and report["version"] > 0
            want = f"control:v{report['version']}"
            deadline = time.monotonic() + 60
            after = before
            while after["weights"].get("matching.ranker") != want and time.monotonic() < deadline:
                time.sleep(1)  # the worker reloads asynchronously
                after = client.submit_and_wait(ASK, timeout=30, tenant=tenant)
            assert after["weights"].get("matching.ranker") == want, after["weights"]
            assert after["status"] == "PLANNED"
            # the ranking now takes similarities to the prototypes: the same task scores otherwise
            assert after["steps"][0]["score"] != before["steps"][0]["score"]
        finally:  # later tests match without this state
            publish(settings, empty_state([c["agent_id"] for c in cards], 384))


def test_learned_reliability_moves_the_plan_to_the_agent_that_succeeds(
    tmp_path: Path, settings: Settings, stack_env: dict[str, str], worker: subprocess.Popen[bytes]
) -> None:
    from confluent_kafka import Producer

    from aos_gateway import topics
    from aos_gateway.cli.learn_cmds import publish_record
    from aos_gateway.contracts.records import EXPERIENCE
    from aos_gateway.contracts.wire import codec_for
    from aos_gateway.network import quality
    from aos_gateway.streams.kafka import ensure_topics, producer_config

    tag = uuid.uuid4().hex[:6]
    tenant = f"quality-{tag}"
    flaky, steady = f"Forecast-{tag}", f"Weather-{tag}"
    cards = [
        {"agent_id": flaky, "description": "Weather forecasts for any city, today and tomorrow."},
        {"agent_id": steady, "description": "Weather forecasts and current conditions for cities worldwide."},
    ]
    run_aos(
        stack_env,
        "agents",
        "register",
        str(write_cards(tmp_path / "c.jsonl", [{**c, "tenant": tenant} for c in cards])),
        "--wait",
    )
    ask = "What's the weather forecast for Paris tomorrow?"
    with GatewayClient(settings) as client:
        before = client.submit_and_wait(ask, timeout=30, tenant=tenant)
        first = before["steps"][0]["agent_id"]
        other = steady if first == flaky else flaky
        # experience: the agent chosen first failed 40 times, the other succeeded 40 times
        ensure_topics(settings.kafka, [topics.EXPERIENCE])
        codec = codec_for(EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
        producer = Producer(producer_config(settings.kafka))
        now = int(time.time() * 1000)
        for i in range(80):
            agent, ok = (first, False) if i % 2 else (other, True)
            rec = {
                "experience_id": f"{tag}-{i}",
                "task_id": f"{tag}-t{i}",
                "tenant": tenant,
                "kind": "STEP",
                "plan_id": None,
                "agent_id": agent,
                "agent_ids": [agent],
                "outcome": "SUCCEEDED" if ok else "FAILED",
                "latency_ms": 100,
                "cost": 0.0,
                "task_vector": None,
                "error": None if ok else "boom",
                "feedback_score": None,
                "occurred_at": now,
                "trace_id": None,
                "metadata": {},
            }
            producer.produce(topics.EXPERIENCE.name, key=rec["task_id"].encode(), value=codec.encode(rec))
        assert producer.flush(30) == 0
        try:
            out = run_aos(stack_env, "learn", "network", "--json")
            report = json.loads(out.stdout)
            assert report["steps"] >= 80 and report["version"] > 0
            deadline = time.monotonic() + 60
            after = before
            while after["steps"][0]["agent_id"] != other and time.monotonic() < deadline:  # reloaded asynchronously
                time.sleep(1)
                after = client.submit_and_wait(ask, timeout=30, tenant=tenant)
            assert after["steps"][0]["agent_id"] == other, after
            assert after["steps"][0]["fallback_agent_id"] == first
        finally:  # later tests plan without learned reliability (unknown agents: reliability 1)
            v = int(time.time() * 1000)
            publish_record(settings, quality.to_record(quality.QualityModel(prior=1.0, version=v), v))
