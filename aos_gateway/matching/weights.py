"""The learned matching state as an ``aos.weights.v1`` record, and back."""

from __future__ import annotations

from aos_gateway.contracts.records import Weights
from aos_gateway.errors import ValidationError
from aos_gateway.matching.learned import FORMAT, LearnedState

NAME = "matching.ranker"
# a state holds up to a few thousand float16 task vectors: records of several MB
MAX_RECORD_BYTES = 64 * 1024 * 1024


def to_record(state: LearnedState, created_at: int) -> Weights:
    payload = state.to_bytes()
    if len(payload) > MAX_RECORD_BYTES:
        raise ValidationError(
            f"learned matching state is {len(payload)} bytes, over {MAX_RECORD_BYTES}: lower the memory per agent"
        )
    meta = dict(state.metadata)
    meta |= {
        "agents": str(len(state.agent_ids)),
        "memories": str(state.memory.shape[0]),
        "successes": str(state.successes),
        "dim": str(state.dim),
    }
    return Weights(
        name=NAME, version=state.version, format=FORMAT, payload=payload, created_at=created_at, metadata=meta
    )


def expect(record: Weights, name: str, fmt: str) -> None:
    """A ValidationError unless the record holds ``name`` weights in format ``fmt``."""
    if record["name"] != name:
        raise ValidationError(f"weights {record['name']!r} are not {name!r}")
    if record["format"] != fmt:
        raise ValidationError(f"weights {name!r} v{record['version']}: unknown format {record['format']!r}")


def from_record(record: Weights) -> LearnedState:
    expect(record, NAME, FORMAT)
    state = LearnedState.from_bytes(record["payload"])
    state.version = record["version"]
    return state
