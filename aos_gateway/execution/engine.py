"""Running one plan: a pure state machine, driven by results and by the clock.

An :class:`Execution` holds the state of one plan's run; three functions move it on and return
what to do (invocations to send, and once, the final result with its experience records):

- :func:`start` — a plan arrives: invoke every step without dependencies;
- :func:`on_result` — an agent replied: settle the step (or retry / fall back), start the steps
  it unblocked, finish when nothing can move any more;
- :func:`on_tick` — time passed: time out attempts past their step timeout, send retries whose
  back-off is over, and end the whole execution at the plan's deadline (the deadlock guard: no
  execution outlives its deadline, whatever the agents do).

Rules: a step is tried on its agent ``1 + retries`` times (a reply marked ``retryable=false`` stops
that early), then once on its fallback agent with the same retries; an agent known to be down
(``live(agent) is False``: stale heartbeat or shutting down) is skipped at once. A reply to any
invocation the step sent is accepted while the step is still open (a late first attempt may
win over its retry); replies to unknown or settled invocations are ignored, so duplicates and
redeliveries never apply twice. When a step fails for good, the steps that depend on it are
skipped. The execution SUCCEEDS when every step did, is PARTIAL when some did, FAILS otherwise.

No Kafka here: the dispatcher (:mod:`aos_gateway.streams.dispatch`) persists executions in a
Faust table as JSON (:meth:`Execution.to_json`) and sends what these functions return.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, cast

from aos_gateway import topics
from aos_gateway.contracts.records import (
    ExecutionResult,
    ExecutionStatus,
    ExperienceRecord,
    Invocation,
    InvocationResult,
    NamedVector,
    Outcome,
    Plan,
    StepOutcome,
    is_cost,
    task_text,
)

StepState = Literal["WAITING", "RUNNING", "BACKOFF", "SUCCEEDED", "FAILED", "TIMED_OUT", "SKIPPED"]
OPEN: tuple[StepState, ...] = ("WAITING", "RUNNING", "BACKOFF")
DOWN = "agent is not running (no recent heartbeat, or nothing consumes its invocation topic)"
#: agent liveness: True alive, False known down, None never heard of (invoked anyway)
Liveness = Callable[[str], bool | None]


@dataclass(frozen=True)
class Policy:
    """How executions are timed (from :class:`~aos_gateway.settings.ExecutionSettings`)."""

    deadline_factor: float = 3.0
    min_deadline_ms: int = 5_000
    max_deadline_ms: int = 300_000
    retry_backoff_ms: int = 200
    max_output_chars: int = 100_000

    def deadline_ms(self, plan: Plan) -> int:
        est = int(plan["estimated_duration_ms"] * self.deadline_factor)
        return max(self.min_deadline_ms, min(self.max_deadline_ms, est))


@dataclass
class Attempt:
    """One agent tried for a step: how it went."""

    agent_id: str
    outcome: Outcome
    latency_ms: int
    error: str | None
    at: int


@dataclass
class StepRun:
    step_id: str
    agent_id: str
    fallback_agent_id: str | None
    depends_on: list[str]
    role: str | None
    timeout_ms: int
    retries: int
    state: StepState = "WAITING"
    on_fallback: bool = False
    tries_on_agent: int = 0
    attempts: int = 0
    invocation_ids: list[str] = field(default_factory=list)
    current_invocation: str | None = None
    sent_at: int = 0
    due_at: int = 0
    retry_at: int = 0
    latency_ms: int = 0
    cost: float = 0.0
    output: str | None = None
    error: str | None = None
    history: list[Attempt] = field(default_factory=list)


@dataclass
class Execution:
    task_id: str
    plan_id: str
    tenant: str
    text: str | None
    trace_id: str | None
    started_at: int
    deadline_at: int
    steps: dict[str, StepRun]
    task_vector: NamedVector | None = None
    planner: str = ""
    predicted_quality: float | None = None
    weights: dict[str, str] = field(default_factory=dict)
    finished: bool = False

    def to_json(self) -> str:
        d = asdict(self)
        if self.task_vector is not None:
            d["task_vector"] = {**self.task_vector, "data": self.task_vector["data"].hex()}
        return json.dumps(d, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Execution:
        d: dict[str, Any] = json.loads(raw)
        vec = d.pop("task_vector")
        if vec is not None:
            vec = cast(NamedVector, {**vec, "data": bytes.fromhex(vec["data"])})
        steps = {}
        for k, s in d.pop("steps").items():
            hist = [Attempt(**a) for a in s.pop("history")]
            steps[k] = StepRun(**s, history=hist)
        return cls(**d, steps=steps, task_vector=vec)

    @property
    def open_steps(self) -> list[StepRun]:
        return [s for s in self.steps.values() if s.state in OPEN]


@dataclass
class Actions:
    """What the dispatcher must do after a transition."""

    invocations: list[Invocation] = field(default_factory=list)
    result: ExecutionResult | None = None
    experience: list[ExperienceRecord] = field(default_factory=list)

    def extend(self, other: Actions) -> None:
        self.invocations += other.invocations
        self.experience += other.experience
        self.result = other.result or self.result


def start(plan: Plan, now: int, policy: Policy, live: Liveness) -> tuple[Execution, Actions]:
    """A new execution of a PLANNED plan, and its first invocations."""
    steps = {
        s["step_id"]: StepRun(
            step_id=s["step_id"],
            agent_id=s["agent_id"],
            fallback_agent_id=s["fallback_agent_id"],
            depends_on=list(s["depends_on"]),
            role=s.get("role"),
            timeout_ms=s["timeout_ms"],
            retries=s["retries"],
        )
        for s in plan["steps"]
    }
    ex = Execution(
        task_id=plan["task_id"],
        plan_id=plan["plan_id"],
        tenant=plan["tenant"],
        text=task_text(plan.get("text"), plan["transcript"]),  # what matching saw: typed, then heard
        trace_id=plan["trace_id"],
        started_at=now,
        deadline_at=now + policy.deadline_ms(plan),
        steps=steps,
        task_vector=plan.get("task_vector"),
        planner=plan["planner"],
        predicted_quality=plan["predicted_quality"],
        weights=dict(plan.get("weights") or {}),
    )
    return ex, _advance(ex, now, policy, live)


def on_result(ex: Execution, res: InvocationResult, now: int, policy: Policy, live: Liveness) -> Actions:
    """Apply an agent's reply; a reply to an unknown or settled invocation changes nothing, and neither
    does a failure of an attempt superseded by a retry (a late success still counts)."""
    step = ex.steps.get(res["step_id"])
    if ex.finished or step is None or step.state not in OPEN or res["invocation_id"] not in step.invocation_ids:
        return Actions()
    now = reply_time(step, res, now)
    agent = res["agent_id"]
    cost = res["cost"]
    if not is_cost(cost):
        # a contract breach (cards refuse such costs too): a NaN cost stopped the dashboards' sink
        # (JSON has no NaN) and a negative one would lower the task's cost; the reply fails its attempt
        error = f"invalid reply: cost must be a finite number >= 0, got {cost!r}"
        _attempt_failed(step, agent, "FAILED", res["latency_ms"], error, now, policy, retryable=False)
        return _advance(ex, now, policy, live)
    step.cost += cost
    if res["status"] == "SUCCEEDED":
        out = res["output"]
        if out is not None and len(out) > policy.max_output_chars:
            out = out[: policy.max_output_chars]
        step.state, step.output, step.error = "SUCCEEDED", out, None
        step.agent_id = agent
        step.latency_ms = res["latency_ms"]
        step.history.append(Attempt(agent, "SUCCEEDED", res["latency_ms"], None, now))
        return _advance(ex, now, policy, live)
    if res["invocation_id"] != step.current_invocation:
        # the failure of an attempt already given up on (timed out and retried, or moved to the
        # fallback): its end was counted then; failing the running attempt for it would send another
        return Actions()
    retryable = res["metadata"].get("retryable", "true").lower() != "false"
    outcome: Outcome = "TIMED_OUT" if res["status"] == "TIMED_OUT" else "FAILED"
    error = res["error"] or res["status"].lower()
    _attempt_failed(step, agent, outcome, res["latency_ms"], error, now, policy, retryable)
    return _advance(ex, now, policy, live)


def reply_time(step: StepRun, res: InvocationResult, now: int) -> int:
    """When a reply counts as arrived: the agent's ``finished_at``, no later than ``now`` and no
    earlier than the attempt was sent. A reply consumed again after a worker restart (the execution
    restored from its changelog as it was) then yields the same times, so the records it produces
    are the same records (same ids *and* timestamps: the hot store deduplicates on both), not a
    second copy stamped with the moment of the replay."""
    return max(step.sent_at, min(now, res["finished_at"]))


def on_tick(ex: Execution, now: int, policy: Policy, live: Liveness) -> Actions:
    """Time out late attempts, send due retries, and end the execution at its deadline."""
    if ex.finished:
        return Actions()
    if now >= ex.deadline_at:
        for s in ex.open_steps:
            if s.state == "WAITING":
                s.state, s.error = "SKIPPED", "plan deadline passed before it could start"
            elif s.state == "BACKOFF":  # between tries: it ends as its last try did
                s.state = "TIMED_OUT" if s.history and s.history[-1].outcome == "TIMED_OUT" else "FAILED"
            else:
                s.history.append(Attempt(s.agent_id, "TIMED_OUT", now - s.sent_at, "plan deadline", now))
                s.state, s.error = "TIMED_OUT", f"plan deadline of {ex.deadline_at - ex.started_at} ms passed"
                s.latency_ms = now - s.sent_at
        return _finish(ex, now, policy, deadline=True)
    changed = False
    for s in ex.open_steps:
        if s.state == "RUNNING" and now >= s.due_at:
            late = f"no reply within {s.due_at - s.sent_at} ms"
            _attempt_failed(s, s.agent_id, "TIMED_OUT", now - s.sent_at, late, now, policy)
            changed = True
        elif s.state == "BACKOFF" and now >= s.retry_at:
            changed = True
    return _advance(ex, now, policy, live) if changed else Actions()


def next_due(ex: Execution) -> int:
    """The next time :func:`on_tick` can change something (epoch ms)."""
    times = [ex.deadline_at]
    for s in ex.open_steps:
        if s.state == "RUNNING":
            times.append(s.due_at)
        elif s.state == "BACKOFF":
            times.append(s.retry_at)
    return min(times)


def _attempt_failed(
    step: StepRun,
    agent: str,
    outcome: Outcome,
    latency: int,
    error: str,
    now: int,
    policy: Policy,
    retryable: bool = True,
) -> None:
    step.history.append(Attempt(agent, outcome, latency, error, now))
    step.error = f"{agent}: {error}"
    step.latency_ms = latency
    if not retryable:
        step.tries_on_agent = step.retries + 1  # no more tries on this agent
    step.state = "BACKOFF"  # _advance decides: retry, fallback or give up
    # a timeout has already cost its wait; a failure waits a doubling back-off before the next try
    wait = 0 if outcome == "TIMED_OUT" else policy.retry_backoff_ms * 2 ** max(0, step.tries_on_agent - 1)
    step.retry_at = now + wait


def _advance(ex: Execution, now: int, policy: Policy, live: Liveness) -> Actions:
    acts = Actions()
    progressed = True
    while progressed and not ex.finished:
        progressed = False
        for s in ex.steps.values():
            if s.state == "WAITING":
                deps = [ex.steps[d] for d in s.depends_on if d in ex.steps]
                if any(d.state in ("FAILED", "TIMED_OUT", "SKIPPED") for d in deps):
                    failed = [d.step_id for d in deps if d.state != "SUCCEEDED"]
                    s.state, s.error = "SKIPPED", f"depends on {', '.join(failed)}, which did not succeed"
                    progressed = True
                elif all(d.state == "SUCCEEDED" for d in deps):
                    inv = _dispatch(ex, s, now, policy, live)
                    if inv is not None:
                        acts.invocations.append(inv)
                    progressed = True
            elif s.state == "BACKOFF" and (now >= s.retry_at or _must_switch(s, live)):
                inv = _dispatch(ex, s, now, policy, live)
                if inv is not None:
                    acts.invocations.append(inv)
                    progressed = True
                elif s.state != "BACKOFF":
                    progressed = True
    if not ex.finished and not ex.open_steps:
        acts.extend(_finish(ex, now, policy, deadline=False))
    return acts


def _must_switch(s: StepRun, live: Liveness) -> bool:
    """No point waiting out a back-off on an agent that has used its tries or is down."""
    return s.tries_on_agent > s.retries or live(s.agent_id) is False


def _no_fallback(s: StepRun) -> str:
    """Why a step whose agent is down has nowhere else to go."""
    if s.on_fallback:
        return "it was already the step's fallback"
    if not s.fallback_agent_id:
        return "the plan has no fallback for this step"
    return f"its fallback {s.fallback_agent_id} is not running either"


def _dispatch(ex: Execution, s: StepRun, now: int, policy: Policy, live: Liveness) -> Invocation | None:
    """Invoke the step on its agent, its fallback, or give it up (state FAILED/TIMED_OUT)."""
    primary_done = s.tries_on_agent > s.retries or live(s.agent_id) is False
    if primary_done and not s.on_fallback and s.fallback_agent_id and live(s.fallback_agent_id) is not False:
        if live(s.agent_id) is False and s.tries_on_agent == 0:
            s.history.append(Attempt(s.agent_id, "FAILED", 0, DOWN, now))
        s.on_fallback, s.agent_id, s.tries_on_agent = True, s.fallback_agent_id, 0
        primary_done = False
    if primary_done:
        if s.tries_on_agent == 0 and live(s.agent_id) is False:
            s.history.append(Attempt(s.agent_id, "FAILED", 0, DOWN, now))
            s.error = f"{s.agent_id}: {DOWN}, and {_no_fallback(s)}"
        last = s.history[-1].outcome if s.history else "FAILED"
        s.state = "TIMED_OUT" if last == "TIMED_OUT" else "FAILED"
        return None
    s.tries_on_agent += 1
    s.attempts += 1
    inv_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"aos-inv:{ex.plan_id}:{s.step_id}:{s.attempts}"))
    s.invocation_ids.append(inv_id)
    s.current_invocation = inv_id
    s.state, s.sent_at = "RUNNING", now
    s.due_at = min(now + s.timeout_ms, ex.deadline_at)
    inputs = {d: ex.steps[d].output or "" for d in s.depends_on if d in ex.steps}
    return Invocation(
        invocation_id=inv_id,
        task_id=ex.task_id,
        plan_id=ex.plan_id,
        tenant=ex.tenant,
        step_id=s.step_id,
        attempt=s.attempts,
        agent_id=s.agent_id,
        role=s.role,
        text=ex.text,
        inputs=inputs,
        sent_at=now,
        deadline_at=s.due_at,
        reply_to=topics.INVOCATION_RESULTS.name,
        trace_id=ex.trace_id,
        metadata={},
    )


def _finish(ex: Execution, now: int, policy: Policy, deadline: bool) -> Actions:
    ex.finished = True
    steps = list(ex.steps.values())
    ok = [s for s in steps if s.state == "SUCCEEDED"]
    status: ExecutionStatus = "SUCCEEDED" if len(ok) == len(steps) and steps else "PARTIAL" if ok else "FAILED"
    reason = None
    if status != "SUCCEEDED":
        bad = [f"{s.step_id} {s.state.lower()}: {s.error}" for s in steps if s.state != "SUCCEEDED"]
        head = f"plan deadline of {ex.deadline_at - ex.started_at} ms passed; " if deadline else ""
        reason = head + ("; ".join(bad) if bad else "the plan has no steps")
    needed = {d for s in steps for d in s.depends_on}
    sinks = [s for s in ok if s.step_id not in needed]
    output = "\n\n".join(s.output for s in sinks if s.output) or None
    cost = sum(s.cost for s in steps)
    result = ExecutionResult(
        task_id=ex.task_id,
        plan_id=ex.plan_id,
        tenant=ex.tenant,
        status=status,
        reason=reason,
        output=output,
        steps=[
            StepOutcome(
                step_id=s.step_id,
                agent_id=s.agent_id if s.attempts else None,
                status="SKIPPED" if s.state in ("WAITING", "SKIPPED") else s.state,  # type: ignore[typeddict-item]
                attempts=s.attempts,
                fallback_used=s.on_fallback,
                latency_ms=s.latency_ms,
                cost=s.cost,
                output=s.output,
                error=_step_error(s),
            )
            for s in steps
        ],
        started_at=ex.started_at,
        finished_at=now,
        deadline_at=ex.deadline_at,
        cost=cost,
        trace_id=ex.trace_id,
    )
    return Actions(result=result, experience=experience_records(ex, result, deadline))


def _step_error(s: StepRun) -> str | None:
    """The step's error; on its fallback, the planned agent's last error too (a review found it
    only in the experience store: the result named the fallback's outcome alone)."""
    if not s.on_fallback:
        return s.error
    first = next((a for a in reversed(s.history) if a.agent_id != s.agent_id and a.error), None)
    if first is None:
        return s.error
    before = f"{first.agent_id}: {first.error}"
    return f"{s.error}; before the fallback, {before}" if s.error else f"answered by the fallback; {before}"


def experience_records(ex: Execution, result: ExecutionResult, deadline: bool) -> list[ExperienceRecord]:
    """One EXECUTION record, and one STEP record per agent tried for each step.

    Ids are derived from the plan, step and agent, so a re-run of the same finish yields the
    same records (consumers deduplicate by ``experience_id``).
    """
    out: list[ExperienceRecord] = []
    agents = [s.agent_id for s in ex.steps.values() if s.attempts]
    by_step = {s.step_id: s.agent_id for s in ex.steps.values() if s.attempts}
    edges = [
        [by_step[d], by_step[s.step_id]]
        for s in ex.steps.values()
        for d in s.depends_on
        if d in by_step and s.step_id in by_step
    ]
    outcome: Outcome = "TIMED_OUT" if deadline and result["status"] == "FAILED" else result["status"]
    out.append(
        ExperienceRecord(
            experience_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"aos-exp:{ex.plan_id}")),
            task_id=ex.task_id,
            tenant=ex.tenant,
            kind="EXECUTION",
            plan_id=ex.plan_id,
            agent_id=None,
            agent_ids=agents,
            outcome=outcome,
            latency_ms=result["finished_at"] - result["started_at"],
            cost=result["cost"],
            task_vector=ex.task_vector,
            error=result["reason"],
            feedback_score=None,
            occurred_at=result["finished_at"],
            trace_id=ex.trace_id,
            metadata={
                "edges": json.dumps(edges),
                "planner": ex.planner,
                "steps": str(len(ex.steps)),
                **{f"weights.{k}": v for k, v in ex.weights.items()},
                **({"predicted_quality": f"{ex.predicted_quality:.6f}"} if ex.predicted_quality is not None else {}),
            },
        )
    )
    for s in ex.steps.values():
        tried: dict[str, list[Attempt]] = {}
        for a in s.history:
            tried.setdefault(a.agent_id, []).append(a)
        for agent, atts in tried.items():
            last = atts[-1]
            out.append(
                ExperienceRecord(
                    experience_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"aos-exp:{ex.plan_id}:{s.step_id}:{agent}")),
                    task_id=ex.task_id,
                    tenant=ex.tenant,
                    kind="STEP",
                    plan_id=ex.plan_id,
                    agent_id=agent,
                    agent_ids=[agent],
                    outcome=last.outcome,
                    latency_ms=last.latency_ms,
                    cost=s.cost if agent == s.agent_id else 0.0,
                    task_vector=ex.task_vector,
                    error=last.error,
                    feedback_score=None,
                    occurred_at=last.at,
                    trace_id=ex.trace_id,
                    metadata={
                        "step_id": s.step_id,
                        "role": s.role or "",
                        "attempts": str(len(atts)),
                        "fallback": "true" if s.on_fallback and agent == s.fallback_agent_id else "false",
                        # never invoked: it was down when its turn came (says nothing of its fit)
                        "invoked": "false" if all(a.error == DOWN for a in atts) else "true",
                        **{f"weights.{k}": v for k, v in ex.weights.items()},
                    },
                )
            )
    return out
