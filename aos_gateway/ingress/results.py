"""The memory of recent tasks (plan, execution result, dead letter) and the requests waiting on it.

One background consumer feeds every record it reads into :class:`TaskStore` on the server's
event loop; long polls and event streams wait for *their* task only (a waiter is woken when a
record of its task arrives, not on every record). The memory is a bounded LRU: a busy server
forgets the oldest tasks first; waiters are kept apart from it, so a task evicted while someone
waits for it is still delivered when its record comes.

Single-threaded by design: every method runs on the event loop (the consumer thread hands its
records over with ``loop.call_soon_threadsafe``), so there are no locks.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from aos_gateway.ingress.tasks import RequestError

Kind = Literal["plan", "result", "dead_letter"]
Until = Literal["plan", "result"]
Status = Literal["pending", "planned", "done", "failed"]
#: what the consumer hands over: (kind, decoded record) pairs
Batch = list[tuple[Kind, dict[str, Any]]]


@dataclass
class TaskEntry:
    """What is known of one task."""

    task_id: str
    tenant: str | None = None
    submitted_at: int | None = None
    plan: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    error: str | None = None

    @property
    def status(self) -> Status:
        """``done``: the execution's final result is in; ``failed``: a stage dead-lettered the task
        (``error`` says why); ``planned``: the plan is in; ``pending``: nothing yet."""
        if self.result is not None:
            return "done"
        if self.error is not None:
            return "failed"
        return "planned" if self.plan is not None else "pending"

    def reached(self, until: Until) -> bool:
        """Whether a waiter for ``until`` can stop waiting (an error ends every wait)."""
        if self.result is not None or self.error is not None:
            return True
        return until == "plan" and self.plan is not None


class TaskStore:
    """Recent tasks by id (LRU, ``capacity`` at most) and the waiters on them (``max_waiters``)."""

    def __init__(self, capacity: int, max_waiters: int) -> None:
        self.capacity = capacity
        self.max_waiters = max_waiters
        self._entries: OrderedDict[str, TaskEntry] = OrderedDict()
        self._waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._waiting = 0
        self.received = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def waiting(self) -> int:
        return self._waiting

    def _entry(self, task_id: str) -> TaskEntry:
        entry = self._entries.get(task_id)
        if entry is None:
            entry = self._entries[task_id] = TaskEntry(task_id)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(task_id)
        return entry

    def submitted(self, task_id: str, tenant: str, submitted_at: int) -> TaskEntry:
        """Remember a task this server accepted, so it reads as pending (and whose it is) at once."""
        entry = self._entry(task_id)
        entry.tenant = tenant
        entry.submitted_at = submitted_at
        return entry

    def get(self, task_id: str) -> TaskEntry | None:
        return self._entries.get(task_id)

    def forget(self, task_id: str) -> None:
        """Drop a task the server could not hand to Kafka after all (its POST failed)."""
        self._entries.pop(task_id, None)

    def readable(self, task_id: str, tenant: str) -> TaskEntry | None:
        """The task if it belongs to ``tenant``; another tenant's task looks exactly like an unknown one."""
        entry = self._entries.get(task_id)
        return entry if entry is not None and entry.tenant == tenant else None

    def put(self, kind: Kind, record: dict[str, Any]) -> None:
        """A record from the result topics; the first plan and result of a task win (redeliveries
        of an at-least-once stream change nothing)."""
        task_id = record.get("task_id")
        if not task_id:
            return
        self.received += 1
        entry = self._entry(task_id)
        if entry.tenant is None:
            entry.tenant = record.get("tenant")
        if kind == "plan":
            if entry.plan is not None:
                return
            entry.plan = {k: v for k, v in record.items() if k != "task_vector"}  # internal, and most of its bytes
        elif kind == "result":
            if entry.result is not None:
                return
            entry.result = record
        else:
            if entry.error is not None:
                return
            entry.error = f"{record.get('stage') or 'a stage'} refused the task: {record.get('reason') or 'unknown'}"
        self._wake(task_id)

    def put_many(self, batch: Batch) -> None:
        for kind, record in batch:
            self.put(kind, record)

    def _wake(self, task_id: str) -> None:
        for fut in self._waiters.pop(task_id, ()):
            if not fut.done():
                fut.set_result(None)

    async def wait(self, task_id: str, until: Until, timeout: float) -> TaskEntry | None:
        """The task once it has reached ``until`` (or failed), or as it is after ``timeout`` seconds.

        Raises:
            RequestError: 503, ``max_waiters`` requests are waiting already.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            entry = self._entries.get(task_id)
            left = deadline - loop.time()
            if (entry is not None and entry.reached(until)) or left <= 0:
                return entry
            if self._waiting >= self.max_waiters:
                raise RequestError(f"too many requests waiting ({self.max_waiters}); try again shortly", 503)
            fut: asyncio.Future[None] = loop.create_future()
            waiters = self._waiters.setdefault(task_id, set())
            waiters.add(fut)
            self._waiting += 1
            try:
                await asyncio.wait([fut], timeout=left)
            finally:
                self._waiting -= 1
                still = self._waiters.get(task_id)
                if still is not None:
                    still.discard(fut)
                    if not still:
                        del self._waiters[task_id]


def public(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A record as the API shows it: without the task vector (internal, and bytes), bytes as hex."""
    if record is None:
        return None
    return {k: _jsonable(v) for k, v in record.items() if k != "task_vector"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    return value


def view(entry: TaskEntry) -> dict[str, Any]:
    """The body of ``GET /v1/tasks/{id}``."""
    return {
        "task_id": entry.task_id,
        "status": entry.status,
        "plan": public(entry.plan),
        "result": public(entry.result),
        "error": entry.error,
    }
