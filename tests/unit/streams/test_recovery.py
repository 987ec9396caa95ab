"""OrderedRecovery: no stream partition is resumed or seeked while records can still be delivered.

The consumer here is a recorder (no broker): what matters is the order Faust's recovery calls it
in. The same check on Faust's own ``Recovery`` shows the upstream order this class exists for; if
a Faust release fixes it, that test fails and the override can go.
"""

from __future__ import annotations

import asyncio
from typing import Any

import faust
from faust.tables.recovery import Recovery

from aos_gateway.streams.recovery import AosTableManager, OrderedRecovery


class RecordingConsumer:
    def __init__(self, app: faust.App, assignment: set[Any]) -> None:
        self.app, self._assignment = app, assignment
        self.flow_active = True
        self.calls: list[tuple[str, bool, bool]] = []  # (call, consumer flow on, flow control on)

    def _note(self, name: str) -> None:
        self.calls.append((name, self.flow_active, self.app.flow_control.is_active()))

    def assignment(self) -> set[Any]:
        return self._assignment

    def stop_flow(self) -> None:
        self.flow_active = False
        self._note("stop_flow")

    def resume_flow(self) -> None:
        self.flow_active = True
        self._note("resume_flow")

    def resume_partitions(self, tps: Any) -> None:
        self._note("resume_partitions")

    async def perform_seek(self) -> None:
        self._note("perform_seek")


class Fetcher:
    async def maybe_start(self) -> None:
        return None


def _complete(recovery_cls: type[Recovery]) -> RecordingConsumer:
    app = faust.App("aos-test-recovery")
    tp = faust.types.TP("aos.tasks.v1", 0)
    consumer = RecordingConsumer(app, {tp})
    app.consumer = consumer  # type: ignore[assignment]
    app.__dict__["_fetcher"] = Fetcher()  # a cached property: no transport needed
    recovery = recovery_cls(app, app.tables)
    app.flow_control.resume()  # as during changelog reading: flow running
    asyncio.run(recovery.on_recovery_completed(generation_id=app.consumer_generation_id))
    return consumer


def test_the_app_recovers_with_ordered_recovery() -> None:
    app = faust.App("aos-test-recovery", TableManager=AosTableManager)
    assert isinstance(app.tables.recovery, OrderedRecovery)  # type: ignore[attr-defined]


def test_stream_partitions_are_resumed_and_seeked_with_the_flow_stopped() -> None:
    calls = _complete(OrderedRecovery).calls
    names = [c[0] for c in calls]
    assert names.index("stop_flow") < names.index("resume_partitions") < names.index("perform_seek")
    for name, consumer_flow, flow_control in calls:
        if name in ("resume_partitions", "perform_seek"):
            assert (consumer_flow, flow_control) == (False, False), name
    assert calls[-1][0] == "resume_flow" and calls[-1][1:] == (True, True)  # and running again after


def test_fausts_own_recovery_resumes_stream_partitions_while_records_flow() -> None:
    calls = _complete(Recovery).calls
    resumed = next(c for c in calls if c[0] == "resume_partitions")
    assert resumed[1:] == (True, True)  # the window OrderedRecovery closes
