"""The HTTP ingress end to end: a real ``aos serve`` subprocess, real HTTP, the real broker and worker."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.integration.conftest import run_aos, write_cards

pytestmark = pytest.mark.integration

WEATHER = "What's the weather in Paris tomorrow?"


@pytest.fixture(scope="module")
def tenants() -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    return {"a": f"http-a-{tag}", "b": f"http-b-{tag}", "key_a": f"ka-{uuid.uuid4().hex}", "key_b": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def agents(
    tmp_path_factory: pytest.TempPathFactory,
    stack_env: dict[str, str],
    worker: subprocess.Popen[bytes],
    tenants: dict[str, str],
) -> dict[str, str]:
    tag = uuid.uuid4().hex[:6]
    ids = {"weather": f"Weather-{tag}", "vision": f"Vision-{tag}"}
    cards = [
        {"agent_id": ids["weather"], "description": "Weather forecasts and current conditions for any city."},
        {
            "agent_id": ids["vision"],
            "description": "Describes photos and images: objects, scenes and colours.",
            "modalities": ["text", "image"],
        },
    ]
    for c in cards:
        c["tenant"] = tenants["a"]
    path = write_cards(tmp_path_factory.mktemp("cards") / "cards.jsonl", cards)
    run_aos(stack_env, "agents", "register", str(path), "--wait")
    return ids


@pytest.fixture(scope="module")
def server(
    stack_env: dict[str, str],
    worker: subprocess.Popen[bytes],
    tenants: dict[str, str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """``aos serve`` on a free port (it picks one: --port 0), with two tenants' keys."""
    log_path = tmp_path_factory.mktemp("ingress") / "serve.log"
    keys = {tenants["key_a"]: tenants["a"], tenants["key_b"]: tenants["b"]}
    env = {**os.environ, **stack_env, "AOS_INGRESS__API_KEYS": json.dumps(keys)}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aos_gateway.cli.main", "serve", "--port", "0"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 60
        while "aos serve: http://" not in log_path.read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aos serve did not start:\n{log_path.read_text()[-2000:]}")
            time.sleep(0.1)
        url = log_path.read_text().split("aos serve: ", 1)[1].split(" ", 1)[0]
        assert httpx.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        assert rc == 0 and "aos serve: stopped" in log_path.read_text(), log_path.read_text()[-2000:]
        assert "Traceback" not in log_path.read_text(), log_path.read_text()[-4000:]


@pytest.fixture
def http_a(server: str, tenants: dict[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers={"Authorization": f"Bearer {tenants['key_a']}"}, timeout=200) as c:
        yield c


def _submit(c: httpx.Client, **kw: Any) -> str:
    r = c.post("/v1/tasks", **kw)
    assert r.status_code == 202, r.text
    return str(r.json()["task_id"])


def _wait(c: httpx.Client, tid: str, until: str = "plan", total: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + total
    while True:
        body: dict[str, Any] = c.get(f"/v1/tasks/{tid}", params={"wait": 30, "until": until}).json()
        done = body["status"] in ("done", "failed") or (until == "plan" and body["status"] == "planned")
        if done or time.monotonic() > deadline:
            return body


def test_a_text_task_over_http_gets_a_plan_with_steps(http_a: httpx.Client, agents: dict[str, str]) -> None:
    t0 = time.monotonic()
    tid = _submit(http_a, json={"text": WEATHER})
    body = _wait(http_a, tid)
    assert body["status"] in ("planned", "done"), body
    plan = body["plan"]
    assert plan["task_id"] == tid and plan["status"] == "PLANNED" and plan["steps"], plan
    assert plan["steps"][0]["agent_name"].startswith("Weather")
    assert "task_vector" not in plan and {"submitted", "planned"} <= set(plan["timings"])
    assert time.monotonic() - t0 < 60
    # the final result too: nothing runs behind these cards, so the dispatcher fails the step at once
    body = _wait(http_a, tid, until="result")
    assert body["status"] == "done" and body["result"]["status"] == "FAILED" and body["result"]["task_id"] == tid


def test_an_image_upload_gets_a_plan(http_a: httpx.Client, agents: dict[str, str]) -> None:
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (96, 64), (255, 255, 255))
    ImageDraw.Draw(img).ellipse((20, 10, 70, 50), fill=(200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    tid = _submit(
        http_a,
        data={"text": "What is in this photo?", "top_k": "3"},
        files={"image": ("photo.png", buf.getvalue(), "image/png")},
    )
    body = _wait(http_a, tid)
    assert body["plan"] is not None, body
    plan = body["plan"]
    assert plan["modalities"] == ["text", "image"] and plan["status"] == "PLANNED"
    assert any("RANDOM CLIP weights" in n for n in plan["notes"])


def test_a_corrupt_image_fails_with_the_perceive_stages_reason(http_a: httpx.Client) -> None:
    tid = _submit(
        http_a, data={"text": "look at this"}, files={"image": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}
    )
    body = _wait(http_a, tid, until="result", total=120)
    assert body["status"] == "failed" and body["plan"] is None, body
    assert body["error"].startswith("perceive refused the task: ") and "image" in body["error"]


def test_keys_and_tenants_are_enforced(server: str, http_a: httpx.Client, tenants: dict[str, str]) -> None:
    wrong = httpx.post(f"{server}/v1/tasks", json={"text": WEATHER}, headers={"X-API-Key": "not-a-key"})
    assert wrong.status_code == 401 and wrong.json() == {"error": "invalid API key"}
    assert httpx.post(f"{server}/v1/tasks", json={"text": WEATHER}).status_code == 401
    tid = _submit(http_a, json={"text": WEATHER})
    assert _wait(http_a, tid)["plan"]["tenant"] == tenants["a"]
    with httpx.Client(base_url=server, headers={"X-API-Key": tenants["key_b"]}) as b:
        other = b.get(f"/v1/tasks/{tid}", params={"wait": 1})
        assert other.status_code == 404 and tid in other.json()["error"]
        assert b.get(f"/v1/tasks/{tid}/events").status_code == 404
        own = _submit(b, json={"text": WEATHER})
        assert _wait(b, own)["plan"]["tenant"] == tenants["b"]
        assert http_a.get(f"/v1/tasks/{own}").status_code == 404


def test_malformed_requests_are_4xx_with_a_clear_error(http_a: httpx.Client) -> None:
    bad = http_a.post("/v1/tasks", content=b'{"text": "hi"', headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"].startswith("malformed JSON")
    bad = http_a.post("/v1/tasks", json={"text": "hi", "top_k": "lots"})
    assert bad.status_code == 422 and "top_k" in bad.json()["error"]
    bad = http_a.post("/v1/tasks", json={"text": ""})
    assert bad.status_code == 422 and "empty task" in bad.json()["error"]
    bad = http_a.post("/v1/tasks", files={"image": ("x.txt", b"hello", "text/plain")})
    assert bad.status_code == 415


def test_events_deliver_the_plan_then_the_result(http_a: httpx.Client, agents: dict[str, str]) -> None:
    tid = _submit(http_a, json={"text": WEATHER})
    events: list[tuple[str, dict[str, Any]]] = []
    with http_a.stream("GET", f"/v1/tasks/{tid}/events") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in r.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                events.append((name, json.loads(line.removeprefix("data: "))))
    assert [e for e, _ in events] == ["plan", "result"], events
    assert events[0][1]["task_id"] == tid and events[0][1]["steps"]
    assert events[1][1]["plan_id"] == events[0][1]["plan_id"]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_round_trip(server: str, tenants: dict[str, str], agents: dict[str, str], tmp_path: Path) -> None:
    def curl(*args: str) -> dict[str, Any]:
        out = subprocess.run(
            ["curl", "-sS", "--fail-with-body", "-H", f"X-API-Key: {tenants['key_a']}", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr + out.stdout
        return dict(json.loads(out.stdout))

    accepted = curl("-H", "Content-Type: application/json", "-d", json.dumps({"text": WEATHER}), f"{server}/v1/tasks")
    body = curl(f"{server}/v1/tasks/{accepted['task_id']}?wait=90")
    assert body["status"] in ("planned", "done") and body["plan"]["steps"], body
