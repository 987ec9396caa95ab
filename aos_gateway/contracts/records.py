"""Python mirrors of the Avro records (a test checks they agree with ``schemas/``).

Records are plain dicts at run time (fastavro reads and writes dicts); these TypedDicts give
them types. Timestamps are epoch milliseconds (UTC). Record names are the schemas' full names.
"""

from __future__ import annotations

import math
from typing import Literal, NotRequired, TypedDict

TASK_REQUEST = "aos.tasks.TaskRequest"
PERCEIVED_TASK = "aos.tasks.PerceivedTask"
MATCHED_TASK = "aos.tasks.MatchedTask"
PLAN = "aos.plans.Plan"
AGENT_CARD = "aos.agents.AgentCard"
EXPERIENCE = "aos.experience.ExperienceRecord"
FEEDBACK = "aos.feedback.Feedback"
DEAD_LETTER = "aos.deadletter.DeadLetter"
WEIGHTS = "aos.weights.Weights"
INVOCATION = "aos.invocations.Invocation"
INVOCATION_RESULT = "aos.invocations.InvocationResult"
EXECUTION_RESULT = "aos.results.ExecutionResult"
HEARTBEAT = "aos.agents.Heartbeat"


def is_cost(value: float) -> bool:
    """A cost a card or a reply may carry: finite and >= 0 (JSON and the stores hold no NaN, and a
    negative cost would lower a task's)."""
    return math.isfinite(value) and value >= 0


def task_text(text: str | None, transcript: str | None) -> str:
    """What a task says: its typed text, then what was heard in its audio (one line each)."""
    return "\n".join(t for t in (text, transcript) if t)


VectorDType = Literal["FLOAT32", "FLOAT16", "INT8"]
PlanStatus = Literal["PLANNED", "NO_MATCH", "REJECTED"]
AgentStatus = Literal["ACTIVE", "DEGRADED", "INACTIVE"]
ExperienceKind = Literal["EXECUTION", "STEP"]
Outcome = Literal["SUCCEEDED", "PARTIAL", "FAILED", "TIMED_OUT"]
InvocationStatus = Literal["SUCCEEDED", "FAILED", "TIMED_OUT"]
ExecutionStatus = Literal["SUCCEEDED", "PARTIAL", "FAILED"]
StepStatus = Literal["SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED"]


class NamedVector(TypedDict):
    name: str
    model: str
    dim: int
    dtype: VectorDType
    scale: float
    data: bytes


class MediaPart(TypedDict):
    mime_type: str
    data: bytes | None
    uri: str | None
    size_bytes: int
    sha256: str | None


class TaskRequest(TypedDict):
    task_id: str
    tenant: str
    submitted_at: int
    text: str | None
    image: MediaPart | None
    audio: MediaPart | None
    required_capabilities: list[str]
    max_cost: float | None
    max_latency_ms: int | None
    top_k: int | None
    reply_to: str | None
    trace_id: str | None
    metadata: dict[str, str]


class Clause(TypedDict):
    text: str
    vector: NamedVector
    depends_on_previous: bool


class TextWindow(TypedDict):
    start: int
    end: int
    vector: NamedVector


class PerceivedTask(TypedDict):
    task_id: str
    tenant: str
    submitted_at: int
    text: str | None
    transcript: str | None
    modalities: list[str]
    vectors: list[NamedVector]
    fused: NamedVector
    required_capabilities: list[str]
    max_cost: float | None
    max_latency_ms: int | None
    top_k: int | None
    reply_to: str | None
    trace_id: str | None
    clauses: NotRequired[list[Clause]]
    windows: NotRequired[list[TextWindow]]
    notes: list[str]
    timings: dict[str, int]


class Candidate(TypedDict):
    agent_id: str
    name: str
    score: float
    similarity: float
    quality: float | None
    card_version: int
    cost: float
    p95_latency_ms: int


class Role(TypedDict):
    role_id: str
    text: str
    depends_on: list[str]
    candidates: list[Candidate]


class MatchedTask(TypedDict):
    task_id: str
    tenant: str
    submitted_at: int
    text: str | None
    transcript: str | None
    modalities: list[str]
    fused: NamedVector
    candidates: list[Candidate]
    roles: NotRequired[list[Role]]
    abstained: bool
    reason: str | None
    index_size: int
    reply_to: str | None
    trace_id: str | None
    notes: list[str]
    timings: dict[str, int]
    weights: NotRequired[dict[str, str]]


class PlanStep(TypedDict):
    step_id: str
    stage: int
    agent_id: str
    agent_name: str
    score: float
    depends_on: list[str]
    timeout_ms: int
    retries: int
    fallback_agent_id: str | None
    expected_latency_ms: int
    role: NotRequired[str | None]


class Plan(TypedDict):
    plan_id: str
    task_id: str
    tenant: str
    submitted_at: int
    created_at: int
    status: PlanStatus
    reason: str | None
    planner: str
    steps: list[PlanStep]
    predicted_quality: float | None
    estimated_duration_ms: int
    trace_id: str | None
    transcript: str | None
    modalities: list[str]
    notes: list[str]
    timings: dict[str, int]
    text: NotRequired[str | None]
    task_vector: NotRequired[NamedVector | None]
    weights: NotRequired[dict[str, str]]


class AgentCard(TypedDict):
    agent_id: str
    name: str
    description: str
    capabilities: list[str]
    modalities: list[str]
    examples: list[str]
    tenant: str
    cost: float
    p95_latency_ms: int
    status: AgentStatus
    invocation_topic: str | None
    updated_at: int
    metadata: dict[str, str]


class ExperienceRecord(TypedDict):
    experience_id: str
    task_id: str
    tenant: str
    kind: ExperienceKind
    plan_id: str | None
    agent_id: str | None
    agent_ids: list[str]
    outcome: Outcome
    latency_ms: int
    cost: float
    task_vector: NamedVector | None
    error: str | None
    feedback_score: float | None
    occurred_at: int
    trace_id: str | None
    metadata: dict[str, str]


class Feedback(TypedDict):
    feedback_id: str
    task_id: str
    tenant: str
    success: bool | None
    rating: float | None
    correct_agent_id: str | None
    comment: str | None
    created_at: int


class DeadLetter(TypedDict):
    dead_letter_id: str
    stage: str
    reason: str
    error_type: str
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    failed_at: int
    task_id: str | None
    tenant: str | None
    trace_id: NotRequired[str | None]


class Weights(TypedDict):
    name: str
    version: int
    format: str
    payload: bytes
    created_at: int
    metadata: dict[str, str]


class Invocation(TypedDict):
    invocation_id: str
    task_id: str
    plan_id: str
    tenant: str
    step_id: str
    attempt: int
    agent_id: str
    role: str | None
    text: str | None
    inputs: dict[str, str]
    sent_at: int
    deadline_at: int
    reply_to: str
    trace_id: str | None
    metadata: dict[str, str]


class InvocationResult(TypedDict):
    invocation_id: str
    task_id: str
    plan_id: str
    step_id: str
    agent_id: str
    status: InvocationStatus
    output: str | None
    error: str | None
    latency_ms: int
    cost: float
    finished_at: int
    source: str
    metadata: dict[str, str]
    trace_id: NotRequired[str | None]


class StepOutcome(TypedDict):
    step_id: str
    agent_id: str | None
    status: StepStatus
    attempts: int
    fallback_used: bool
    latency_ms: int
    cost: float
    output: str | None
    error: str | None


class ExecutionResult(TypedDict):
    task_id: str
    plan_id: str
    tenant: str
    status: ExecutionStatus
    reason: str | None
    output: str | None
    steps: list[StepOutcome]
    started_at: int
    finished_at: int
    deadline_at: int
    cost: float
    trace_id: str | None


class Heartbeat(TypedDict):
    agent_id: str
    instance_id: str
    status: AgentStatus
    in_flight: int
    handled: int
    sent_at: int
    interval_ms: int


RECORD_TYPES: dict[str, type] = {
    TASK_REQUEST: TaskRequest,
    PERCEIVED_TASK: PerceivedTask,
    MATCHED_TASK: MatchedTask,
    PLAN: Plan,
    AGENT_CARD: AgentCard,
    EXPERIENCE: ExperienceRecord,
    FEEDBACK: Feedback,
    DEAD_LETTER: DeadLetter,
    WEIGHTS: Weights,
    INVOCATION: Invocation,
    INVOCATION_RESULT: InvocationResult,
    EXECUTION_RESULT: ExecutionResult,
    HEARTBEAT: Heartbeat,
    "aos.tensors.NamedVector": NamedVector,
}
