"""Rows for the dashboards' tables: records of the gateway's topics as Kafka Connect JSON.

Debezium's JDBC sink (like every sink of Kafka Connect) needs records with a schema. The gateway's
topics are Avro without a schema registry in the local stack, so the worker projects the records
the dashboards need into flat rows on ``aos.sink.<table>.v1`` topics, in the JsonConverter's
envelope (``{"schema": {...}, "payload": {...}}``) for both key and value. The key is a struct of
the table's primary key: the sink upserts by it (``primary.key.mode=record_key``), so a record
delivered twice leaves one row.

Each :class:`SinkTable` names its topic, its table and its columns; ``*_row`` functions turn one
record into one row (pure; no Kafka here).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aos_gateway.contracts.records import DeadLetter, ExecutionResult, ExperienceRecord, Plan, Weights
from aos_gateway.errors import ValidationError

#: Kafka Connect's logical type for a timestamp: int64 milliseconds since the epoch
TIMESTAMP = "org.apache.kafka.connect.data.Timestamp"
TEXT_CHARS = 200  # how much of a task's text a decision row keeps

_TYPES = {"string": "string", "int": "int64", "float": "double", "bool": "boolean", "timestamp": "int64"}


@dataclass(frozen=True)
class Column:
    """One column: its name, its kind (string, int, float, bool, timestamp) and whether it may be null."""

    name: str
    kind: str
    optional: bool = True

    def connect_field(self) -> dict[str, Any]:
        """The column as a field of a Connect struct schema."""
        f: dict[str, Any] = {"field": self.name, "type": _TYPES[self.kind], "optional": self.optional}
        if self.kind == "timestamp":
            f |= {"name": TIMESTAMP, "version": 1}
        return f


@dataclass(frozen=True)
class SinkTable:
    """A dashboard table: the topic the worker writes it to and the sink reads, its key and columns."""

    table: str
    key: str
    columns: tuple[Column, ...]
    doc: str = ""

    @property
    def topic(self) -> str:
        """``aos.sink.<name>.v1`` where the table is ``sink_<name>``."""
        return f"aos.sink.{self.table.removeprefix('sink_')}.v1"

    def key_schema(self) -> dict[str, Any]:
        col = next(c for c in self.columns if c.name == self.key)
        return {
            "type": "struct",
            "name": f"aos.sink.{self.table}.Key",
            "optional": False,
            "fields": [Column(col.name, col.kind, optional=False).connect_field()],
        }

    def value_schema(self) -> dict[str, Any]:
        return {
            "type": "struct",
            "name": f"aos.sink.{self.table}.Value",
            "optional": False,
            "fields": [c.connect_field() for c in self.columns],
        }

    def encode(self, row: Mapping[str, Any]) -> tuple[bytes, bytes]:
        """The Kafka key and value of a row, each a JsonConverter envelope.

        Raises:
            ValidationError: The row lacks its key, has a column the table does not, or a value
                of the wrong kind.
        """
        extra = set(row) - {c.name for c in self.columns}
        if extra:
            raise ValidationError(f"{self.table}: unknown columns {sorted(extra)}")
        payload = {c.name: _check(self.table, c, row.get(c.name)) for c in self.columns}
        if payload[self.key] is None:
            raise ValidationError(f"{self.table}: a row needs its key {self.key}")
        key = {"schema": self.key_schema(), "payload": {self.key: payload[self.key]}}
        value = {"schema": self.value_schema(), "payload": payload}
        return _dumps(key), _dumps(value)


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _check(table: str, col: Column, v: Any) -> Any:
    if v is None:
        if not col.optional:
            raise ValidationError(f"{table}.{col.name} may not be null")
        return None
    ok = {
        "string": isinstance(v, str),
        "int": isinstance(v, int) and not isinstance(v, bool),
        "timestamp": isinstance(v, int) and not isinstance(v, bool),
        "float": isinstance(v, int | float) and not isinstance(v, bool),
        "bool": isinstance(v, bool),
    }[col.kind]
    if not ok:
        raise ValidationError(f"{table}.{col.name}: {type(v).__name__} is not {col.kind}")
    if col.kind == "string" and "\x00" in v:
        # PostgreSQL's text cannot hold NUL: one such row stopped the sink task for good (an agent's
        # output, a task's text); the dashboards show U+FFFD there, the topic keeps the original
        return v.replace("\x00", "\ufffd")
    if col.kind == "float":
        f = float(v)
        if not math.isfinite(f):
            # JSON has no NaN or infinity: Kafka Connect's converter refused such a row and sent it to
            # its own dead-letter topic, which no dashboard shows; the column stays empty instead
            if not col.optional:
                raise ValidationError(f"{table}.{col.name}: {f} is not a finite number")
            return None
        return f
    return v


def _cols(spec: str) -> tuple[Column, ...]:
    """``"task_id:string! status:string ..."``: ``!`` marks a column that may not be null."""
    out = []
    for part in spec.split():
        name, kind = part.split(":")
        out.append(Column(name, kind.rstrip("!"), optional=not kind.endswith("!")))
    return tuple(out)


DECISIONS = SinkTable(
    "sink_decisions",
    "task_id",
    _cols(
        "task_id:string! tenant:string status:string reason:string planner:string agents:string "
        "top_agent:string top_score:float predicted_quality:float estimated_duration_ms:int "
        "submitted_at:timestamp created_at:timestamp perceive_ms:int match_ms:int plan_ms:int total_ms:int "
        "text:string weights:string"
    ),
    "one routing decision (plan) per task, with its scores and each stage's latency",
)
RESULTS = SinkTable(
    "sink_results",
    "task_id",
    _cols(
        "task_id:string! plan_id:string tenant:string status:string reason:string started_at:timestamp "
        "finished_at:timestamp duration_ms:int cost:float steps:int steps_succeeded:int"
    ),
    "one final execution result per task",
)
EXPERIENCE = SinkTable(
    "sink_experience",
    "experience_id",
    _cols(
        "experience_id:string! task_id:string tenant:string kind:string agent_id:string outcome:string "
        "latency_ms:int cost:float feedback_score:float occurred_at:timestamp weights:string"
    ),
    "every experience record (execution, step, feedback), without its vector",
)
AGENT_STATS = SinkTable(
    "sink_agent_stats",
    "agent_key",
    _cols(
        "agent_key:string! tenant:string agent_id:string calls:int successes:int partials:int failures:int "
        "timeouts:int success_rate:float mean_latency_ms:float max_latency_ms:int updated_at:timestamp"
    ),
    "each agent's totals over all task clusters (key tenant|agent), as counted once per experience record",
)
DEADLETTERS = SinkTable(
    "sink_deadletters",
    "dead_letter_id",
    _cols(
        "dead_letter_id:string! stage:string reason:string error_type:string source_topic:string "
        "source_partition:int source_offset:int task_id:string tenant:string failed_at:timestamp"
    ),
    "events a stage could not process (without their bytes)",
)
ANOMALIES = SinkTable(
    "sink_anomalies",
    "anomaly_key",
    _cols(
        "anomaly_key:string! agent_id:string tenant:string kind:string value:float baseline:float score:float "
        "reason:string version:int detected_at:timestamp"
    ),
    "agents flagged by the learning pass (key: version|agent|kind)",
)

TABLES: tuple[SinkTable, ...] = (DECISIONS, RESULTS, EXPERIENCE, AGENT_STATS, DEADLETTERS, ANOMALIES)


def _ms(timings: Mapping[str, int], a: str, b: str) -> int | None:
    return timings[b] - timings[a] if a in timings and b in timings else None


def _weights(w: Mapping[str, str]) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(w.items())) or None


def decision_row(plan: Plan) -> dict[str, Any]:
    """A plan as a ``sink_decisions`` row."""
    steps = sorted(plan["steps"], key=lambda s: (s["stage"], s["step_id"]))
    top = max(steps, key=lambda s: s["score"]) if steps else None
    t = plan["timings"]
    text = plan.get("text")
    if text:
        from aos_gateway.security.redact import stored_text_redactor

        redact = stored_text_redactor()  # security.redact_pii: no PII in the dashboards' tables
        text = redact(text) if redact is not None else text
    return {
        "task_id": plan["task_id"],
        "tenant": plan["tenant"],
        "status": plan["status"],
        "reason": plan["reason"],
        "planner": plan["planner"],
        "agents": ",".join(s["agent_id"] for s in steps) or None,
        "top_agent": top["agent_id"] if top else None,
        "top_score": top["score"] if top else None,
        "predicted_quality": plan["predicted_quality"],
        "estimated_duration_ms": plan["estimated_duration_ms"],
        "submitted_at": plan["submitted_at"],
        "created_at": plan["created_at"],
        "perceive_ms": _ms(t, "submitted", "perceived"),
        "match_ms": _ms(t, "perceived", "matched"),
        "plan_ms": _ms(t, "matched", "planned"),
        "total_ms": _ms(t, "submitted", "planned"),
        "text": text[:TEXT_CHARS] if text else None,
        "weights": _weights(plan.get("weights") or {}),
    }


def result_row(res: ExecutionResult) -> dict[str, Any]:
    """An execution result as a ``sink_results`` row."""
    steps: Sequence[Mapping[str, Any]] = res["steps"]
    return {
        "task_id": res["task_id"],
        "plan_id": res["plan_id"],
        "tenant": res["tenant"],
        "status": res["status"],
        "reason": res["reason"],
        "started_at": res["started_at"],
        "finished_at": res["finished_at"],
        "duration_ms": max(0, res["finished_at"] - res["started_at"]),
        "cost": res["cost"],
        "steps": len(steps),
        "steps_succeeded": sum(1 for s in steps if s["status"] == "SUCCEEDED"),
    }


def experience_row(rec: ExperienceRecord) -> dict[str, Any]:
    """An experience record as a ``sink_experience`` row (its task vector left out)."""
    md = rec.get("metadata") or {}
    return {
        "experience_id": rec["experience_id"],
        "task_id": rec["task_id"],
        "tenant": rec["tenant"],
        "kind": rec["kind"],
        "agent_id": rec["agent_id"],
        "outcome": rec["outcome"],
        "latency_ms": rec["latency_ms"],
        "cost": rec["cost"],
        "feedback_score": rec["feedback_score"],
        "occurred_at": rec["occurred_at"],
        "weights": _weights({k.removeprefix("weights."): v for k, v in md.items() if k.startswith("weights.")}),
    }


def deadletter_row(dl: DeadLetter) -> dict[str, Any]:
    """A dead letter as a ``sink_deadletters`` row (its key and bytes stay on the topic)."""
    return {
        "dead_letter_id": dl["dead_letter_id"],
        "stage": dl["stage"],
        "reason": dl["reason"][:2000],
        "error_type": dl["error_type"],
        "source_topic": dl["source_topic"],
        "source_partition": dl["source_partition"],
        "source_offset": dl["source_offset"],
        "task_id": dl["task_id"],
        "tenant": dl["tenant"],
        "failed_at": dl["failed_at"],
    }


def anomaly_rows(record: Weights) -> list[dict[str, Any]]:
    """The anomalies of an ``experience.anomalies`` learned state, one ``sink_anomalies`` row each.

    Raises:
        ValidationError: The payload is not the anomalies document.
    """
    try:
        doc = json.loads(record["payload"])
        items = list(doc["anomalies"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValidationError(f"anomalies v{record['version']} cannot be read: {exc}") from exc
    tenant = (record.get("metadata") or {}).get("tenant")
    rows = []
    for a in items:
        if not isinstance(a, dict) or "agent_id" not in a:
            raise ValidationError(f"anomalies v{record['version']}: an entry without an agent: {a!r}")
        rows.append(
            {
                "anomaly_key": f"{record['version']}|{a['agent_id']}|{a.get('kind', '')}",
                "agent_id": str(a["agent_id"]),
                "tenant": tenant,
                "kind": a.get("kind"),
                "value": _num(a.get("value")),
                "baseline": _num(a.get("baseline")),
                "score": _num(a.get("score")),
                "reason": a.get("reason"),
                "version": record["version"],
                "detected_at": record["created_at"],
            }
        )
    return rows


def _num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def agent_stats_row(
    tenant: str,
    agent_id: str,
    totals: Mapping[str, int | float],
    updated_at_ms: int,
) -> dict[str, Any]:
    """An agent's totals (summed over task clusters) as a ``sink_agent_stats`` row."""
    calls = int(totals["calls"])
    succ, part = int(totals["successes"]), int(totals["partials"])
    return {
        "agent_key": f"{tenant}|{agent_id}",
        "tenant": tenant,
        "agent_id": agent_id,
        "calls": calls,
        "successes": succ,
        "partials": part,
        "failures": int(totals["failures"]),
        "timeouts": int(totals["timeouts"]),
        "success_rate": (succ + 0.5 * part) / calls if calls else 0.0,
        "mean_latency_ms": float(totals["latency_ms_sum"]) / calls if calls else 0.0,
        "max_latency_ms": int(totals["latency_ms_max"]),
        "updated_at": updated_at_ms,
    }
