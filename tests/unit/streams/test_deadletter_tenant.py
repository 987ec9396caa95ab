"""A dead letter of a decoded record names the record's tenant (it said ``"tenant": null``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aos_gateway import topics
from aos_gateway.client import new_task
from aos_gateway.contracts.records import TASK_REQUEST
from aos_gateway.contracts.wire import codec_for
from aos_gateway.errors import ValidationError
from aos_gateway.perception.task import validate_request
from aos_gateway.streams.stages import Pipeline


class _Stage:
    def dead_letter(self, _error: BaseException) -> None:
        pass


def _pipe() -> tuple[Any, list[dict[str, Any]]]:
    sent: list[dict[str, Any]] = []

    async def send(topic: str, key: str, record: dict[str, Any]) -> None:
        assert topic == topics.DEADLETTER.name
        sent.append(record)

    pipe: Any = SimpleNamespace(
        codecs={topics.TASKS.name: codec_for(TASK_REQUEST, topics.TASKS.name)},
        dead_letters=0,
        metrics=SimpleNamespace(stage=lambda _s: _Stage(), tracer=SimpleNamespace(enabled=False)),
        send=send,
    )
    pipe.decode = lambda topic, event: Pipeline.decode(pipe, topic, event)
    return pipe, sent


def _event(value: bytes | None, topic: str = topics.TASKS.name) -> Any:
    return SimpleNamespace(message=SimpleNamespace(topic=topic, partition=0, offset=7, key=b"k", value=value))


def _dead_letter(pipe: Any, event: Any, exc: BaseException, task_id: str | None) -> None:
    asyncio.run(Pipeline.send_dead_letter(pipe, "perceive", event, exc, task_id))


def test_a_task_that_breaks_a_rule_is_dead_lettered_with_its_tenant() -> None:
    task = new_task("hello", tenant="default", top_k=-1)
    with_tenant = new_task("hello", tenant="acme", top_k=-1)
    pipe, sent = _pipe()
    codec = pipe.codecs[topics.TASKS.name]
    for t in (task, with_tenant):
        try:
            validate_request(t, 8_000)
            raise AssertionError("a negative top_k is refused")
        except ValidationError as exc:
            assert "top_k must not be negative" in str(exc)
            _dead_letter(pipe, _event(codec.encode(t)), exc, t["task_id"])
    assert [d["tenant"] for d in sent] == ["default", "acme"]
    assert sent[0]["task_id"] == task["task_id"] and sent[0]["source_offset"] == 7


def test_undecodable_events_still_have_no_tenant() -> None:
    pipe, sent = _pipe()
    for value in (b"garbage", None):
        _dead_letter(pipe, _event(value), ValidationError("bad"), None)
    _dead_letter(pipe, _event(b"{}", topic="aos.sink.results.v1"), ValidationError("bad"), None)
    assert [d["tenant"] for d in sent] == [None, None, None]


def test_a_tenant_given_by_the_stage_wins() -> None:
    pipe, sent = _pipe()
    codec = pipe.codecs[topics.TASKS.name]
    asyncio.run(
        Pipeline.send_dead_letter(
            pipe, "perceive", _event(codec.encode(new_task("x"))), ValidationError("bad"), "t", "other"
        )
    )
    assert sent[0]["tenant"] == "other"
