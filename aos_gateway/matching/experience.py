"""From experience records to the matcher's memory: (task vector, agent, right or not).

A record counts when it names one agent (a STEP record's ``agent_id``, or an EXECUTION record
with exactly one agent, when its task has no STEP records) and carries the task vector.
SUCCEEDED and PARTIAL are successes, FAILED and TIMED_OUT failures; a ``feedback_score``
overrides the outcome (>= 0.5: success).
Records are deduplicated by ``experience_id`` (delivery is at least once). A STEP record of an
agent that was never invoked (down when its turn came: metadata ``invoked`` "false") does not
count: it says nothing of whether the agent fits the task.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.matching.learned import LearnedState, cap_memory, empty_state, fit_classifier
from aos_gateway.perception.vectors import FloatArray, unpack

SUCCESS = ("SUCCEEDED", "PARTIAL")


@dataclass(frozen=True)
class Memory:
    vector: FloatArray
    agent_id: str
    success: bool
    model: str
    task_id: str = ""
    from_execution: bool = False  # an EXECUTION record's (its task had no STEP records)


def memories(records: Iterable[ExperienceRecord]) -> tuple[list[Memory], dict[str, int]]:
    """Usable memories, in order, and counts of what was skipped and why."""
    seen: set[str] = set()
    out: list[Memory] = []
    skipped = {"duplicate": 0, "no_vector": 0, "no_single_agent": 0, "has_steps": 0, "not_invoked": 0}
    records = list(records)
    with_steps = {r["task_id"] for r in records if r["kind"] == "STEP"}
    for rec in records:
        if rec["experience_id"] in seen:
            skipped["duplicate"] += 1
            continue
        seen.add(rec["experience_id"])
        if rec["kind"] == "EXECUTION" and rec["task_id"] in with_steps:
            skipped["has_steps"] += 1  # its STEP records say who did what
            continue
        if rec["kind"] == "STEP" and rec["metadata"].get("invoked") == "false":
            skipped["not_invoked"] += 1
            continue
        agent = rec["agent_id"] if rec["kind"] == "STEP" else None
        if agent is None and len(rec["agent_ids"]) == 1:
            agent = rec["agent_ids"][0]
        if agent is None:
            skipped["no_single_agent"] += 1
            continue
        vec = rec["task_vector"]
        if vec is None:
            skipped["no_vector"] += 1
            continue
        score = rec["feedback_score"]
        ok = score >= 0.5 if score is not None else rec["outcome"] in SUCCESS
        out.append(Memory(unpack(vec), agent, ok, vec["model"], rec["task_id"], rec["kind"] != "STEP"))
    return out, skipped


def learn_from_memories(
    mems: Sequence[Memory],
    agent_ids: Sequence[str] = (),
    per_agent: int = 1000,
    c: float = 10.0,
    warm: LearnedState | None = None,
    max_iter: int = 3000,
) -> LearnedState:
    """A state from memories; the catalogue is ``agent_ids`` plus every agent met in them.

    Memories from another encoder than the most common one are left out (their vectors live
    in another space); the state records the encoder as metadata ``model``. ``warm`` and
    ``max_iter``: see :func:`~aos_gateway.matching.learned.fit_classifier`.
    """
    if not mems:
        raise ValueError("no usable experience to learn from")
    models = [m.model for m in mems]
    model = max(set(models), key=models.count)
    mems = [m for m in mems if m.model == model and m.vector.shape == mems[0].vector.shape]
    ids = list(dict.fromkeys([*agent_ids, *(m.agent_id for m in mems)]))
    pos = {a: i for i, a in enumerate(ids)}
    state = empty_state(ids, mems[0].vector.shape[0])
    state.memory = np.stack([m.vector for m in mems]).astype(np.float32)
    state.memory_agent = np.array([pos[m.agent_id] for m in mems], dtype=np.int32)
    state.memory_success = np.array([m.success for m in mems], dtype=np.bool_)
    state.metadata = {"model": model}
    return fit_classifier(cap_memory(state, per_agent), c=c, warm=warm, max_iter=max_iter)
