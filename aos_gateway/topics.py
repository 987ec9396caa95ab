"""The topic catalog: every topic the gateway uses, its contract and its settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from aos_gateway.contracts import records

DAY_MS = 24 * 3600 * 1000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: name, record contract, partitions and configs."""

    name: str
    record: str
    partitions: int = 4
    compacted: bool = False
    retention_ms: int | None = 7 * DAY_MS
    doc: str = ""
    extra: dict[str, str] = field(default_factory=dict)

    def partitions_for(self, worker_partitions: int | None) -> int:
        """Partitions to create it with: ``worker.topic_partitions`` when given, except for a compacted
        topic and a single-partition one (one ordered stream on purpose, e.g. the dead letters)."""
        if self.compacted or self.partitions == 1 or not worker_partitions:
            return self.partitions
        return worker_partitions

    def configs(self) -> dict[str, str]:
        """Broker-side topic configs."""
        conf = dict(self.extra)
        if self.compacted:
            conf.setdefault("cleanup.policy", "compact")
            conf.setdefault("min.cleanable.dirty.ratio", "0.1")
        elif self.retention_ms is not None:
            conf["retention.ms"] = str(self.retention_ms)
        return conf


TASKS = TopicSpec("aos.tasks.v1", records.TASK_REQUEST, doc="tasks submitted by clients")
PERCEIVED = TopicSpec("aos.tasks.perceived.v1", records.PERCEIVED_TASK, doc="tasks with vectors")
MATCHED = TopicSpec("aos.tasks.matched.v1", records.MATCHED_TASK, doc="tasks with ranked agents")
PLANS = TopicSpec("aos.plans.v1", records.PLAN, doc="result topic: one plan per task")
AGENTS = TopicSpec(
    "aos.agents.v1",
    records.AGENT_CARD,
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="agent registry (compacted; null value = deregistered)",
)
EXPERIENCE = TopicSpec(
    "aos.experience.v1",
    records.EXPERIENCE,
    retention_ms=90 * DAY_MS,
    doc="one record per execution and step: the replayable source of truth",
)
FEEDBACK = TopicSpec("aos.feedback.v1", records.FEEDBACK, retention_ms=90 * DAY_MS, doc="user feedback")
WEIGHTS = TopicSpec(
    "aos.weights.v1",
    records.WEIGHTS,
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="learned state (compacted by name)",
    # a learned matching state carries task vectors: several MB (aos_gateway.matching.weights)
    extra={"max.message.bytes": str(80 * 1024 * 1024)},
)
DEADLETTER = TopicSpec(
    "aos.deadletter.v1",
    records.DEAD_LETTER,
    partitions=1,
    retention_ms=30 * DAY_MS,
    doc="events a stage could not process, with the reason and raw bytes",
)

INVOCATION_RESULTS = TopicSpec(
    "aos.invocations.results.v1",
    records.INVOCATION_RESULT,
    retention_ms=3 * DAY_MS,
    doc="agents' replies to invocations, and the dispatcher's timeouts (key: task id)",
)
RESULTS = TopicSpec("aos.results.v1", records.EXECUTION_RESULT, doc="result topic: one final outcome per executed task")
HEARTBEATS = TopicSpec(
    "aos.agents.heartbeats.v1",
    records.HEARTBEAT,
    partitions=1,
    compacted=True,
    retention_ms=None,
    doc="agent liveness (key agent|instance: the latest heartbeat of each process; gone after a day)",
    extra={"cleanup.policy": "compact,delete", "retention.ms": str(DAY_MS)},
)

REVIEW = TopicSpec(
    "aos.review.v1",
    records.PLAN,
    retention_ms=30 * DAY_MS,
    doc="low-confidence decisions for a person to check (plans; the reason is in their notes)",
)

#: the topic an agent consumes its invocations from: ``aos.agents.<agent id>.invocations``
INVOCATION_TOPIC_PREFIX = "aos.agents."
INVOCATION_TOPIC_SUFFIX = ".invocations"

CATALOG: tuple[TopicSpec, ...] = (
    TASKS,
    PERCEIVED,
    MATCHED,
    PLANS,
    AGENTS,
    EXPERIENCE,
    FEEDBACK,
    WEIGHTS,
    DEADLETTER,
    INVOCATION_RESULTS,
    RESULTS,
    HEARTBEATS,
    REVIEW,
)


#: the record "contract" of the sink topics: Kafka Connect's JSON with a schema, not Avro
CONNECT_JSON = "connect-json"


def _sink_specs() -> tuple[TopicSpec, ...]:
    from aos_gateway.connect.rows import TABLES

    return tuple(
        TopicSpec(
            t.topic,
            CONNECT_JSON,
            partitions=1 if t.table in ("sink_agent_stats", "sink_anomalies", "sink_deadletters") else 4,
            retention_ms=3 * DAY_MS,
            doc=f"rows of {t.table} for the JDBC sink: {t.doc}",
        )
        for t in TABLES
    )


#: the projections for Kafka Connect's JDBC sink (one per dashboard table; written by the worker)
SINKS: tuple[TopicSpec, ...] = _sink_specs()

#: every topic the gateway creates
ALL: tuple[TopicSpec, ...] = (*CATALOG, *SINKS)


def by_name(name: str) -> TopicSpec | None:
    """The catalog entry of a topic, if it has one."""
    return next((t for t in ALL if t.name == name), None)


def invocation_topic(agent_id: str) -> str:
    """The invocation topic of an agent. Characters Kafka does not allow in a topic name become
    ``_`` and the name then gets a short hash of the id, so two ids never share a topic."""
    import hashlib
    import re

    safe = re.sub(r"[^a-zA-Z0-9._-]", "_", agent_id)
    if safe != agent_id or len(safe) > 180:
        safe = f"{safe[:160]}-{hashlib.sha256(agent_id.encode()).hexdigest()[:10]}"
    return f"{INVOCATION_TOPIC_PREFIX}{safe}{INVOCATION_TOPIC_SUFFIX}"


def invocation_spec(agent_id: str, partitions: int = 1) -> TopicSpec:
    """The topic spec of an agent's invocation topic (created by the agent's SDK on start)."""
    return TopicSpec(invocation_topic(agent_id), records.INVOCATION, partitions=partitions, retention_ms=DAY_MS)
