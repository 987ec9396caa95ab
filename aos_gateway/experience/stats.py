"""Agent statistics per task cluster in PostgreSQL, each experience record counted exactly once.

Counted from STEP records (one per agent tried for a plan step; EXECUTION records speak for the
whole plan and would count an agent twice). A row per (tenant, agent, cluster) holds counters;
``cluster`` is what the caller's ``cluster_of`` says for the record, :data:`UNCLUSTERED` (-1) when
it says None. Outcomes follow :func:`aos_gateway.experience.mining.outcome_class`: feedback
overrides the outcome (>= 0.5 success, else failure).

Idempotent under at-least-once delivery: :func:`apply` first inserts the batch's experience ids
into ``agent_stats_applied`` (``ON CONFLICT DO NOTHING RETURNING``) and adds to the counters only
what came back as new, in one transaction, so a redelivered record — in the same batch, a later
one, or a concurrent worker's — never counts twice. Tables: migration
``aos_gateway/registry/migrations/0002_agent_stats.sql`` (applied by
:func:`aos_gateway.registry.store.migrate`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg

from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.errors import StoreError, ValidationError
from aos_gateway.experience.mining import distinct, outcome_class

UNCLUSTERED = -1

ClusterOf = Callable[[ExperienceRecord], int | None]


@dataclass(frozen=True)
class AgentStats:
    """The counters of one agent in one task cluster of one tenant."""

    tenant: str
    agent_id: str
    cluster: int
    calls: int
    successes: int
    partials: int
    failures: int
    timeouts: int
    latency_ms_sum: int
    latency_ms_max: int
    cost_sum: float
    feedback_sum: float
    feedback_count: int
    first_at: datetime
    last_at: datetime

    @property
    def success_rate(self) -> float:
        """Successes over calls, a PARTIAL counting half."""
        return (self.successes + 0.5 * self.partials) / self.calls if self.calls else 0.0

    @property
    def mean_latency_ms(self) -> float:
        return self.latency_ms_sum / self.calls if self.calls else 0.0

    @property
    def mean_cost(self) -> float:
        return self.cost_sum / self.calls if self.calls else 0.0

    @property
    def mean_feedback(self) -> float | None:
        return self.feedback_sum / self.feedback_count if self.feedback_count else None


@dataclass
class Delta:
    """What one batch adds to one (tenant, agent, cluster) row."""

    calls: int = 0
    successes: int = 0
    partials: int = 0
    failures: int = 0
    timeouts: int = 0
    latency_ms_sum: int = 0
    latency_ms_max: int = 0
    cost_sum: float = 0.0
    feedback_sum: float = 0.0
    feedback_count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None

    def add(self, rec: ExperienceRecord) -> None:
        kind = outcome_class(rec)
        self.calls += 1
        self.successes += kind == "success"
        self.partials += kind == "partial"
        self.failures += kind == "failure"
        self.timeouts += kind == "timeout"
        latency = max(int(rec["latency_ms"]), 0)
        self.latency_ms_sum += latency
        self.latency_ms_max = max(self.latency_ms_max, latency)
        self.cost_sum += float(rec["cost"])
        if rec.get("feedback_score") is not None:
            self.feedback_sum += float(rec["feedback_score"])  # type: ignore[arg-type]
            self.feedback_count += 1
        at = int(rec["occurred_at"])
        self.first_ms = at if self.first_ms is None else min(self.first_ms, at)
        self.last_ms = at if self.last_ms is None else max(self.last_ms, at)


Key = tuple[str, str, int]


def countable(records: Iterable[ExperienceRecord]) -> list[ExperienceRecord]:
    """The records that count: distinct STEP records that name their agent."""
    return [r for r in distinct(records) if r["kind"] == "STEP" and r["agent_id"]]


def aggregate(records: Iterable[ExperienceRecord], cluster_of: ClusterOf) -> dict[Key, Delta]:
    """Counters per (tenant, agent, cluster) of the countable records (no database)."""
    out: dict[Key, Delta] = {}
    for rec in countable(records):
        out.setdefault(_key(rec, cluster_of), Delta()).add(rec)
    return out


def _key(rec: ExperienceRecord, cluster_of: ClusterOf) -> Key:
    c = cluster_of(rec)
    if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
        raise ValidationError(f"cluster_of returned {c!r} for {rec['experience_id']!r}: an int or None is needed")
    return (rec["tenant"], str(rec["agent_id"]), UNCLUSTERED if c is None else c)


def _ts(ms: int | None) -> datetime:
    return datetime.fromtimestamp((ms or 0) / 1000, tz=UTC)


_UPSERT = """
INSERT INTO agent_stats AS s (tenant, agent_id, cluster, calls, successes, partials, failures, timeouts,
    latency_ms_sum, latency_ms_max, cost_sum, feedback_sum, feedback_count, first_at, last_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::int[], %s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],
    %s::bigint[], %s::bigint[], %s::bigint[], %s::float8[], %s::float8[], %s::bigint[], %s::timestamptz[],
    %s::timestamptz[])
ON CONFLICT (tenant, agent_id, cluster) DO UPDATE SET
    calls = s.calls + EXCLUDED.calls,
    successes = s.successes + EXCLUDED.successes,
    partials = s.partials + EXCLUDED.partials,
    failures = s.failures + EXCLUDED.failures,
    timeouts = s.timeouts + EXCLUDED.timeouts,
    latency_ms_sum = s.latency_ms_sum + EXCLUDED.latency_ms_sum,
    latency_ms_max = GREATEST(s.latency_ms_max, EXCLUDED.latency_ms_max),
    cost_sum = s.cost_sum + EXCLUDED.cost_sum,
    feedback_sum = s.feedback_sum + EXCLUDED.feedback_sum,
    feedback_count = s.feedback_count + EXCLUDED.feedback_count,
    first_at = LEAST(s.first_at, EXCLUDED.first_at),
    last_at = GREATEST(s.last_at, EXCLUDED.last_at),
    updated_at = now()
"""


def apply(conn: psycopg.Connection[Any], records: Iterable[ExperienceRecord], cluster_of: ClusterOf) -> int:
    """Count a batch of experience records; returns how many were new (and so counted).

    One transaction per batch (a savepoint when the caller has one open). ``cluster_of`` runs
    before the transaction, on every countable record, so no lock waits on Python code; rows are
    written in key order, so concurrent batches cannot deadlock.

    Raises:
        StoreError: PostgreSQL refused or did not answer (nothing of the batch is counted).
        ValidationError: ``cluster_of`` returned something that is not an int or None.
    """
    recs = countable(records)
    if not recs:
        return 0
    keys = {r["experience_id"]: _key(r, cluster_of) for r in recs}
    order = sorted(keys)
    tenants = {r["experience_id"]: r["tenant"] for r in recs}
    try:
        with conn.transaction():
            new = {
                row[0]
                for row in conn.execute(
                    "INSERT INTO agent_stats_applied (experience_id, tenant) "
                    "SELECT * FROM unnest(%s::text[], %s::text[]) "
                    "ON CONFLICT (experience_id) DO NOTHING RETURNING experience_id",
                    (order, [tenants[e] for e in order]),
                ).fetchall()
            }
            deltas: dict[Key, Delta] = {}
            for rec in recs:
                if rec["experience_id"] in new:
                    deltas.setdefault(keys[rec["experience_id"]], Delta()).add(rec)
            if deltas:
                rows = [(k, deltas[k]) for k in sorted(deltas)]
                conn.execute(
                    _UPSERT,
                    (
                        [k[0] for k, _ in rows],
                        [k[1] for k, _ in rows],
                        [k[2] for k, _ in rows],
                        [d.calls for _, d in rows],
                        [d.successes for _, d in rows],
                        [d.partials for _, d in rows],
                        [d.failures for _, d in rows],
                        [d.timeouts for _, d in rows],
                        [d.latency_ms_sum for _, d in rows],
                        [d.latency_ms_max for _, d in rows],
                        [d.cost_sum for _, d in rows],
                        [d.feedback_sum for _, d in rows],
                        [d.feedback_count for _, d in rows],
                        [_ts(d.first_ms) for _, d in rows],
                        [_ts(d.last_ms) for _, d in rows],
                    ),
                )
    except psycopg.Error as exc:
        raise StoreError(f"cannot count agent statistics: {exc}") from exc
    return len(new)


_COLUMNS = (
    "tenant, agent_id, cluster, calls, successes, partials, failures, timeouts, latency_ms_sum, "
    "latency_ms_max, cost_sum, feedback_sum, feedback_count, first_at, last_at"
)


def read_stats(conn: psycopg.Connection[Any], tenant: str | None = None) -> list[AgentStats]:
    """Every row (of one tenant), ordered by tenant, agent and cluster."""
    try:
        if tenant is None:
            rows = conn.execute(f"SELECT {_COLUMNS} FROM agent_stats ORDER BY tenant, agent_id, cluster").fetchall()
        else:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM agent_stats WHERE tenant = %s ORDER BY agent_id, cluster", (tenant,)
            ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read agent statistics: {exc}") from exc
    return [AgentStats(*r) for r in rows]


def reset(conn: psycopg.Connection[Any], tenant: str | None = None) -> int:
    """Forget the statistics (of one tenant) and which records were counted; returns rows removed.

    After a reset, replaying the experience topic (or the cold store) rebuilds the counters.
    """
    try:
        with conn.transaction():
            if tenant is None:
                removed = conn.execute("DELETE FROM agent_stats").rowcount
                conn.execute("DELETE FROM agent_stats_applied")
            else:
                removed = conn.execute("DELETE FROM agent_stats WHERE tenant = %s", (tenant,)).rowcount
                conn.execute("DELETE FROM agent_stats_applied WHERE tenant = %s", (tenant,))
    except psycopg.Error as exc:
        raise StoreError(f"cannot reset agent statistics: {exc}") from exc
    return removed


def prune_applied(conn: psycopg.Connection[Any], before: datetime) -> int:
    """Forget the ids of records counted before ``before``; returns how many.

    Keeps the idempotency table bounded. Only safe for records that can no longer be
    redelivered: keep at least the experience topic's retention.
    """
    try:
        with conn.transaction():
            return conn.execute("DELETE FROM agent_stats_applied WHERE applied_at < %s", (before,)).rowcount
    except psycopg.Error as exc:
        raise StoreError(f"cannot prune counted experience ids: {exc}") from exc


def totals(conn: psycopg.Connection[Any], agents: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (tenant, agent)'s counters summed over its task clusters (agents without a row are left out).

    Raises:
        StoreError: PostgreSQL refused or did not answer.
    """
    pairs = sorted(set(agents))
    if not pairs:
        return {}
    try:
        rows = conn.execute(
            "SELECT tenant, agent_id, sum(calls), sum(successes), sum(partials), sum(failures), sum(timeouts), "
            "sum(latency_ms_sum), max(latency_ms_max) FROM agent_stats "
            "WHERE (tenant, agent_id) IN (SELECT * FROM unnest(%s::text[], %s::text[])) GROUP BY tenant, agent_id",
            ([p[0] for p in pairs], [p[1] for p in pairs]),
        ).fetchall()
    except psycopg.Error as exc:
        raise StoreError(f"cannot read agent statistics: {exc}") from exc
    names = ("calls", "successes", "partials", "failures", "timeouts", "latency_ms_sum", "latency_ms_max")
    return {(r[0], r[1]): dict(zip(names, (int(v) for v in r[2:]), strict=True)) for r in rows}
