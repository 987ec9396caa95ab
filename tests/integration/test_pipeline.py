"""The text pipeline end to end on a real broker, database and Faust worker."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from aos_gateway import topics
from aos_gateway.cli.deadletter_cmds import dead_letters
from aos_gateway.client import GatewayClient, new_task
from aos_gateway.contracts.records import PLAN, TASK_REQUEST
from aos_gateway.contracts.wire import SingleObjectCodec
from aos_gateway.settings import Settings
from aos_gateway.streams.kafka import producer_config, read_to_end
from tests.integration.conftest import run_aos, write_cards

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def agents(
    tmp_path_factory: pytest.TempPathFactory, stack_env: dict[str, str], worker: subprocess.Popen[bytes]
) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    ids = {"weather": f"Weather-{tag}", "sql": f"SQL-{tag}", "news": f"News-{tag}"}
    cards = [
        {"agent_id": ids["weather"], "description": "Weather forecasts and current conditions for any city."},
        {"agent_id": ids["sql"], "description": "Converts a natural language question into an SQL query."},
        {"agent_id": ids["news"], "description": "The latest news headlines about companies and markets."},
    ]
    path = write_cards(tmp_path_factory.mktemp("cards") / "cards.jsonl", cards)
    run_aos(stack_env, "agents", "register", str(path), "--wait")
    return ids


def _produce_raw(settings: Settings, items: list[tuple[bytes, bytes]]) -> list[tuple[int, int]]:
    producer = Producer(producer_config(settings.kafka))
    where: list[tuple[int, int]] = [(-1, -1)] * len(items)

    def cb(i: int):  # type: ignore[no-untyped-def]
        return lambda err, msg: where.__setitem__(i, (msg.partition(), msg.offset()))

    for i, (key, value) in enumerate(items):
        producer.produce(topics.TASKS.name, key=key, value=value, on_delivery=cb(i))
    assert producer.flush(30) == 0
    return where


def test_the_worker_starts_without_error_lines(worker_startup_log: str) -> None:
    """Regression: a fresh worker logged a dozen "Topic aos-gateway-aos-plan-dedupe-changelog not found
    in cluster metadata" ERROR lines (its tables' changelogs were created by Faust after it subscribed)."""
    errors = [line for line in worker_startup_log.splitlines() if "[ERROR]" in line or "Traceback" in line]
    assert errors == [], "\n".join(errors[:20])


def test_topics_list_shows_partitions_and_the_dead_letters_have_one(stack_env: dict[str, str], worker: object) -> None:
    out = run_aos(stack_env, "topics", "list").stdout
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert "exists (1 p)" in lines[topics.DEADLETTER.name], out
    assert "exists (4 p)" in lines[topics.TASKS.name], out


def test_submit_wait_json_names_the_right_agent(stack_env: dict[str, str], agents: dict[str, str]) -> None:
    t0 = time.monotonic()
    out = run_aos(stack_env, "submit", "--text", "What's the weather in Paris tomorrow?", "--wait", "--json")
    plan = json.loads(out.stdout)
    assert plan["status"] == "PLANNED"
    assert plan["steps"][0]["agent_id"] == agents["weather"]
    assert {"submitted", "perceived", "matched", "planned"} <= set(plan["timings"])
    assert time.monotonic() - t0 < 30
    # the same plan, found among all on the topic by its id (the first characters are enough)
    found = run_aos(stack_env, "results", "--task", plan["task_id"][:12], "--json").stdout.splitlines()
    assert [json.loads(line)["task_id"] for line in found] == [plan["task_id"]]


def test_python_client_round_trip_with_constraints(settings: Settings, agents: dict[str, str]) -> None:
    with GatewayClient(settings) as client:
        plan = client.submit_and_wait("Write an SQL query listing the customers from Berlin", timeout=30)
        assert plan["steps"][0]["agent_id"] == agents["sql"]
        none = client.submit_and_wait("Weather in Rome", timeout=30, required_capabilities=["teleportation"])
        assert none["status"] == "NO_MATCH" and "constraints" in (none["reason"] or "")


def test_a_two_part_task_gets_a_network_of_two_agents(settings: Settings, agents: dict[str, str]) -> None:
    with GatewayClient(settings) as client:
        both = client.submit_and_wait(
            "What's the weather in Paris tomorrow? Also, write an SQL query listing the customers from Berlin.",
            timeout=30,
        )
        chain = client.submit_and_wait(
            "Get the latest news headlines about Tesla, then turn them into an SQL query.", timeout=30
        )
    assert both["status"] == "PLANNED" and both["planner"].startswith("network")
    steps = {s["agent_id"]: s for s in both["steps"]}
    assert set(steps) == {agents["weather"], agents["sql"]}
    assert all(s["stage"] == 0 and s["depends_on"] == [] for s in steps.values())  # independent: in parallel
    assert both["predicted_quality"] is not None and both["predicted_quality"] > 0
    steps = {s["agent_id"]: s for s in chain["steps"]}
    assert set(steps) == {agents["news"], agents["sql"]}
    news, sql = steps[agents["news"]], steps[agents["sql"]]
    assert sql["depends_on"] == [news["step_id"]] and sql["stage"] == news["stage"] + 1  # "then": in sequence
    assert chain["estimated_duration_ms"] == news["expected_latency_ms"] + sql["expected_latency_ms"]


def test_bad_events_are_dead_lettered_and_the_stream_goes_on(settings: Settings, agents: dict[str, str]) -> None:
    codec = SingleObjectCodec(TASK_REQUEST)
    tag = uuid.uuid4().hex[:8]
    bad = [
        (f"{tag}-garbage".encode(), b"\x00\x01 definitely not avro"),
        (
            f"{tag}-schema".encode(),
            SingleObjectCodec(PLAN).encode(
                {
                    "plan_id": "p",
                    "task_id": "x",
                    "tenant": "d",
                    "submitted_at": 1,
                    "created_at": 1,
                    "status": "PLANNED",
                    "reason": None,
                    "planner": "x",
                    "steps": [],
                    "predicted_quality": None,
                    "estimated_duration_ms": 0,
                    "trace_id": None,
                    "transcript": None,
                    "modalities": [],
                    "notes": [],
                    "timings": {},
                }
            ),
        ),
        (f"{tag}-empty".encode(), codec.encode(new_task("   ", task_id=f"{tag}-empty"))),
        (f"{tag}-oversize".encode(), codec.encode(new_task("x" * 20_000, task_id=f"{tag}-oversize"))),
    ]
    good = new_task("Weather in Oslo this weekend", task_id=f"{tag}-good")
    with GatewayClient(settings) as client:
        client.listen()  # before producing, so the plan cannot slip past
        where = _produce_raw(settings, [*bad, (good["task_id"].encode(), codec.encode(good))])
        plan = client.wait(good["task_id"], timeout=30)  # produced after the bad ones: the stream went on
    assert plan["status"] == "PLANNED"
    by_key: dict[bytes, dict] = {}  # type: ignore[type-arg]
    deadline = time.monotonic() + 20
    while len(by_key) < len(bad) and time.monotonic() < deadline:
        by_key = {d["key"]: d for d in dead_letters(settings) if d["key"] and d["key"].startswith(tag.encode())}
        time.sleep(0.5)
    extra = {k: (d["stage"], d["reason"]) for k, d in by_key.items() if k not in {b for b, _ in bad}}
    assert set(by_key) == {k for k, _ in bad}, extra
    for (key, value), (part, off) in zip(bad, where, strict=False):
        dl = by_key[key]
        assert dl["stage"] == "perceive" and dl["source_topic"] == topics.TASKS.name
        assert (dl["source_partition"], dl["source_offset"]) == (part, off) and dl["value"] == value
    assert "magic bytes" in by_key[bad[0][0]]["reason"]
    assert "is a aos.plans.Plan" in by_key[bad[1][0]]["reason"]
    assert "empty task" in by_key[bad[2][0]]["reason"]
    assert "limit is" in by_key[bad[3][0]]["reason"]


def test_duplicate_submissions_give_one_plan(settings: Settings, agents: dict[str, str]) -> None:
    task = new_task("Latest news about Tesla", task_id=f"dup-{uuid.uuid4().hex[:8]}")
    with GatewayClient(settings) as client:
        client.submit(task)
        client.submit(task)
        client.wait(task["task_id"], timeout=30)
    time.sleep(3)  # room for a second plan to show up if dedupe failed
    codec = SingleObjectCodec(PLAN)
    plans = [codec.decode(m.value()) for m in read_to_end(settings.kafka, topics.PLANS.name)]
    assert sum(p["task_id"] == task["task_id"] for p in plans) == 1


def test_card_versions_and_deregistration_in_postgres(
    stack_env: dict[str, str], tmp_path: Path, worker: object
) -> None:
    aid = f"Versioned-{uuid.uuid4().hex[:6]}"
    f = tmp_path / "c.jsonl"
    write_cards(f, [{"agent_id": aid, "description": "first description"}])
    run_aos(stack_env, "agents", "register", str(f), "--wait")
    run_aos(stack_env, "agents", "register", str(f), "--wait")  # unchanged: no new version
    write_cards(f, [{"agent_id": aid, "description": "second description"}])
    run_aos(stack_env, "agents", "register", str(f), "--wait")
    run_aos(stack_env, "agents", "deregister", aid)
    deadline = time.monotonic() + 20
    while True:
        hist = json.loads(run_aos(stack_env, "agents", "history", aid, "--json").stdout)
        if len(hist) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [h["version"] for h in hist] == [1, 2, 3]
    assert [h["deregistered"] for h in hist] == [False, False, True]
    assert hist[1]["card"]["description"] == "second description"
    listed = run_aos(stack_env, "agents", "list", "--json").stdout
    assert aid not in {c["agent_id"] for c in json.loads(listed)}


def test_deadletter_list_and_replay_cli(settings: Settings, stack_env: dict[str, str], agents: dict[str, str]) -> None:
    codec = SingleObjectCodec(TASK_REQUEST)
    tid = f"replay-{uuid.uuid4().hex[:8]}"
    _produce_raw(settings, [(tid.encode(), codec.encode(new_task("", task_id=tid)))])

    def mine() -> list[dict]:  # type: ignore[type-arg]
        return [
            d
            for d in json.loads(run_aos(stack_env, "deadletter", "list", "--json", "--limit", "0").stdout)
            if d["task_id"] == tid
        ]

    deadline = time.monotonic() + 20
    while not mine() and time.monotonic() < deadline:
        time.sleep(0.5)
    first = mine()
    assert len(first) == 1 and first[0]["stage"] == "perceive"
    out = run_aos(stack_env, "deadletter", "replay", first[0]["dead_letter_id"][:12])
    assert "replayed 1" in out.stdout
    deadline = time.monotonic() + 20
    while len(mine()) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    again = mine()  # still invalid: dead-lettered again, from its new position
    src = [(d["source_partition"], d["source_offset"], d["key"]) for d in again]
    assert len(again) == 2, src
    assert again[1]["dead_letter_id"] != again[0]["dead_letter_id"], src
    assert again[1]["source_partition"] == again[0]["source_partition"], src
    assert again[1]["source_offset"] > again[0]["source_offset"], src


def test_card_is_stored_once_postgres_is_back(
    settings: Settings, stack_env: dict[str, str], tmp_path: Path, worker: subprocess.Popen[bytes]
) -> None:
    from aos_gateway.devstack import LocalStack

    stack = LocalStack(settings)
    aid = f"Outage-{uuid.uuid4().hex[:6]}"
    stack.postgres.stop()
    try:
        run_aos(stack_env, "agents", "register", str(write_cards(tmp_path / "c.jsonl", [{"agent_id": aid}])))
        time.sleep(3)  # the registry stage meets the outage and waits
        assert worker.poll() is None, "the worker must survive a database outage"
    finally:
        stack.postgres.start()
    deadline = time.monotonic() + 60
    while True:
        out = run_aos(stack_env, "agents", "history", aid, "--json", check=False)
        if out.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert out.returncode == 0, out.stderr
    assert [h["version"] for h in json.loads(out.stdout)] == [1]
