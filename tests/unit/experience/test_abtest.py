"""A/B rollout: arms by task id, the significance test and its verdicts."""

from __future__ import annotations

import random
from typing import Any

from aos_gateway.experience.abtest import KEY, arm_of, compare, label


def execs(arm: str, version: int, n: int, rate: float, seed: int) -> list[Any]:
    rng = random.Random(seed)
    return [
        {
            "experience_id": f"{arm}-{seed}-{i}",
            "kind": "EXECUTION",
            "outcome": "SUCCEEDED" if rng.random() < rate else "FAILED",
            "feedback_score": None,
            "metadata": {KEY: label(arm, version)},  # type: ignore[arg-type]
        }
        for i in range(n)
    ]


def test_arms_are_stable_and_sized_by_the_share() -> None:
    ids = [f"t{i}" for i in range(20_000)]
    share = sum(arm_of(t, 0.1) == "candidate" for t in ids) / len(ids)
    assert 0.09 < share < 0.11
    assert all(arm_of(t, 0.1) == arm_of(t, 0.1) for t in ids[:100])
    assert all(arm_of(t, 0.0) == "control" for t in ids[:100])


def test_a_better_candidate_is_promoted() -> None:
    v = compare(execs("control", 1, 1000, 0.60, 1) + execs("candidate", 2, 400, 0.75, 2), 2, 200, 0.05)
    assert v.action == "promote" and v.p_better < 0.05


def test_a_worse_candidate_is_retired() -> None:
    v = compare(execs("control", 1, 1000, 0.75, 3) + execs("candidate", 2, 400, 0.55, 4), 2, 200, 0.05)
    assert v.action == "retire"


def test_too_few_samples_wait() -> None:
    v = compare(execs("control", 1, 1000, 0.5, 5) + execs("candidate", 2, 50, 0.9, 6), 2, 200, 0.05)
    assert v.action == "wait" and "need 200" in v.reason


def test_an_older_candidates_records_do_not_count() -> None:
    v = compare(execs("control", 1, 1000, 0.5, 7) + execs("candidate", 1, 400, 0.9, 8), 2, 200, 0.05)
    assert v.candidate == (0, 0) and v.action == "wait"


def test_equal_arms_wait_then_promote_after_enough() -> None:
    few = compare(execs("control", 1, 400, 0.6, 9) + execs("candidate", 2, 300, 0.6, 10), 2, 200, 0.05)
    assert few.action == "wait"
    many = compare(execs("control", 1, 1500, 0.6, 11) + execs("candidate", 2, 1100, 0.6, 12), 2, 200, 0.05)
    assert many.action == "promote" and many.reason.startswith("not worse")
