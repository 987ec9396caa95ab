"""The stalled-partition watchdog's decision (the timer that acts on it runs in the fault suite)."""

from __future__ import annotations

from aos_gateway.streams.watchdog import StallWatch


def test_a_partition_with_records_waiting_that_does_not_move_is_stalled_after_the_limit() -> None:
    w = StallWatch(stall_s=60)
    assert w.check(0, {"p0": (10, 50)}) == []
    assert w.check(59, {"p0": (10, 50)}) == []
    assert w.check(60, {"p0": (10, 50)}) == ["p0"]
    assert w.check(61, {"p0": (10, 50)}) == []  # reported once per limit while it stays stalled
    assert w.check(120, {"p0": (10, 50)}) == ["p0"]


def test_moving_or_caught_up_partitions_are_not_stalled() -> None:
    w = StallWatch(stall_s=60)
    w.check(0, {"moving": (10, 50), "done": (50, 50)})
    assert w.check(30, {"moving": (20, 60), "done": (50, 50)}) == []
    assert w.check(80, {"moving": (30, 70), "done": (50, 50)}) == []
    assert w.check(200, {"moving": (30, 70), "done": (50, 50)}) == ["moving"]  # stopped after 80


def test_a_partition_revoked_and_assigned_again_starts_afresh() -> None:
    w = StallWatch(stall_s=60)
    w.check(0, {"p0": (10, 50)})
    w.check(30, {})  # revoked
    assert w.check(70, {"p0": (10, 50)}) == []
    assert w.check(130, {"p0": (10, 50)}) == ["p0"]
