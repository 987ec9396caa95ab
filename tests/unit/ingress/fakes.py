"""In-process stand-ins for the ingress's Kafka side (unit tests only), and record factories."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient
from pydantic import SecretStr

from aos_gateway.contracts.records import TaskRequest
from aos_gateway.ingress.api import create_app
from aos_gateway.ingress.results import Batch, Kind
from aos_gateway.settings import IngressSettings, Settings

KEYS = {"key-a": "tenant-a", "key-b": "tenant-b"}
A = {"Authorization": "Bearer key-a"}
B = {"X-API-Key": "key-b"}


class FakeSender:
    def __init__(self, fail: Exception | None = None) -> None:
        self.sent: list[TaskRequest] = []
        self.fail = fail
        self.closed = False

    async def send(self, task: TaskRequest) -> None:
        if self.fail is not None:
            raise self.fail
        self.sent.append(task)

    def close(self) -> None:
        self.closed = True


class FakeFeed:
    def __init__(self) -> None:
        self.deliver: Callable[[Batch], None] | None = None
        self.closed = False

    def start(self, deliver: Callable[[Batch], None]) -> None:
        self.deliver = deliver

    def alive(self) -> bool:
        return self.deliver is not None and not self.closed

    def close(self) -> None:
        self.closed = True

    def push(self, kind: Kind, record: dict[str, Any]) -> None:
        assert self.deliver is not None, "the app has not started the feed"
        self.deliver([(kind, record)])

    def push_later(self, delay: float, kind: Kind, record: dict[str, Any]) -> threading.Timer:
        timer = threading.Timer(delay, self.push, args=(kind, record))
        timer.start()
        return timer


def plan(task_id: str, tenant: str, status: str = "PLANNED") -> dict[str, Any]:
    return {
        "plan_id": f"plan-{task_id}",
        "task_id": task_id,
        "tenant": tenant,
        "submitted_at": 1,
        "created_at": 2,
        "status": status,
        "reason": None,
        "planner": "network-exact",
        "steps": [{"step_id": "s1", "agent_id": "weather", "agent_name": "Weather", "stage": 0}],
        "predicted_quality": 0.9,
        "estimated_duration_ms": 1000,
        "trace_id": None,
        "transcript": None,
        "modalities": ["text"],
        "notes": [],
        "timings": {"submitted": 1, "planned": 2},
        "task_vector": {"name": "fused", "data": b"\x00\x01"},
    }


def result(task_id: str, tenant: str, status: str = "SUCCEEDED") -> dict[str, Any]:
    return {
        "task_id": task_id,
        "plan_id": f"plan-{task_id}",
        "tenant": tenant,
        "status": status,
        "reason": None,
        "output": "sunny",
        "steps": [],
        "started_at": 3,
        "finished_at": 4,
        "deadline_at": 5,
        "cost": 0.0,
        "trace_id": None,
    }


def dead_letter(task_id: str, tenant: str) -> dict[str, Any]:
    return {"task_id": task_id, "tenant": tenant, "stage": "perceive", "reason": "image: cannot decode"}


def settings(**ingress: Any) -> Settings:
    ingress.setdefault("api_keys", SecretStr(json.dumps(KEYS)))
    return Settings(ingress=IngressSettings(**ingress))


@contextmanager
def client(
    s: Settings | None = None, sender: FakeSender | None = None
) -> Iterator[tuple[TestClient, FakeSender, FakeFeed]]:
    sender = sender or FakeSender()
    feed = FakeFeed()
    app = create_app(s or settings(), sender, feed)
    with TestClient(app) as c:
        yield c, sender, feed
    assert feed.closed and sender.closed
