"""The memory of recent tasks and its waiters: LRU, first record wins, waking only the right waiters."""

from __future__ import annotations

import asyncio

import pytest

from aos_gateway.ingress.results import TaskStore, public, view
from aos_gateway.ingress.tasks import RequestError
from tests.unit.ingress.fakes import dead_letter, plan, result


def test_the_memory_is_bounded_and_forgets_the_least_recent() -> None:
    store = TaskStore(capacity=2, max_waiters=10)
    store.submitted("t1", "a", 1)
    store.submitted("t2", "a", 2)
    store.put("plan", plan("t1", "a"))  # t1 touched: t2 is now the oldest
    store.submitted("t3", "a", 3)
    assert len(store) == 2 and store.get("t2") is None
    assert store.get("t1") is not None and store.get("t3") is not None


def test_the_first_record_of_each_kind_wins_and_the_submitted_tenant_stays() -> None:
    store = TaskStore(10, 10)
    store.submitted("t", "a", 1)
    store.put("plan", plan("t", "a", status="PLANNED"))
    store.put("plan", plan("t", "x", status="REJECTED"))  # a redelivery, or a stranger: ignored
    entry = store.get("t")
    assert entry is not None and entry.plan is not None
    assert entry.plan["status"] == "PLANNED" and entry.tenant == "a"
    store.put("result", {"no": "task id"})
    assert store.received == 2


def test_status_follows_the_records() -> None:
    store = TaskStore(10, 10)
    entry = store.submitted("t", "a", 1)
    assert entry.status == "pending" and not entry.reached("plan")
    store.put("plan", plan("t", "a"))
    assert entry.status == "planned" and entry.reached("plan") and not entry.reached("result")
    store.put("dead_letter", dead_letter("t", "a"))
    assert entry.status == "failed" and entry.reached("result")
    assert entry.error == "perceive refused the task: image: cannot decode"
    store.put("result", result("t", "a"))
    assert entry.status == "done"


def test_readable_only_by_the_tenant() -> None:
    store = TaskStore(10, 10)
    store.submitted("t", "a", 1)
    assert store.readable("t", "a") is not None
    assert store.readable("t", "b") is None and store.readable("nope", "a") is None
    store.put("plan", plan("seen", "b"))  # not submitted here: the record's tenant owns it
    assert store.readable("seen", "b") is not None and store.readable("seen", "a") is None


async def test_a_waiter_wakes_on_its_task_only() -> None:
    store = TaskStore(10, 10)
    store.submitted("t", "a", 1)
    waiter = asyncio.create_task(store.wait("t", "plan", 5))
    await asyncio.sleep(0.05)
    assert store.waiting == 1
    store.put("plan", plan("other", "a"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    store.put("plan", plan("t", "a"))
    entry = await asyncio.wait_for(waiter, 1)
    assert entry is not None and entry.status == "planned" and store.waiting == 0


async def test_waiting_for_the_result_is_not_ended_by_the_plan() -> None:
    store = TaskStore(10, 10)
    store.submitted("t", "a", 1)
    waiter = asyncio.create_task(store.wait("t", "result", 5))
    store.put("plan", plan("t", "a"))
    await asyncio.sleep(0.05)
    assert not waiter.done()
    store.put("result", result("t", "a"))
    entry = await asyncio.wait_for(waiter, 1)
    assert entry is not None and entry.status == "done"


async def test_a_wait_times_out_with_the_task_as_it_is() -> None:
    store = TaskStore(10, 10)
    store.submitted("t", "a", 1)
    entry = await store.wait("t", "plan", 0.05)
    assert entry is not None and entry.status == "pending"
    assert await store.wait("unknown", "plan", 0.01) is None
    assert store.waiting == 0


async def test_a_task_forgotten_while_waited_for_is_still_delivered() -> None:
    store = TaskStore(capacity=1, max_waiters=10)
    store.submitted("t", "a", 1)
    waiter = asyncio.create_task(store.wait("t", "plan", 5))
    await asyncio.sleep(0.01)
    store.submitted("u", "a", 2)  # evicts t
    assert store.get("t") is None
    store.put("plan", plan("t", "a"))
    entry = await asyncio.wait_for(waiter, 1)
    assert entry is not None and entry.tenant == "a" and entry.plan is not None


async def test_too_many_waiters_is_a_503() -> None:
    store = TaskStore(10, max_waiters=1)
    first = asyncio.create_task(store.wait("t", "plan", 5))
    await asyncio.sleep(0.01)
    with pytest.raises(RequestError) as err:
        await store.wait("u", "plan", 5)
    assert err.value.status == 503
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert store.waiting == 0


def test_public_records_lose_the_vector_and_show_bytes_as_hex() -> None:
    rec = {**plan("t", "a"), "extra": {"raw": b"\xff"}, "parts": [b"\x01"]}
    out = public(rec)
    assert out is not None and "task_vector" not in out
    assert out["extra"] == {"raw": "ff"} and out["parts"] == ["01"]
    assert public(None) is None
    store = TaskStore(10, 10)
    entry = store.submitted("t", "a", 1)
    assert view(entry) == {"task_id": "t", "status": "pending", "plan": None, "result": None, "error": None}
