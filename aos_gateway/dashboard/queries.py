"""What the dashboard shows, read from the tables Kafka Connect fills (``sink_*``, see connectors/).

One function, :func:`snapshot`, runs every query for a time window and returns plain JSON-ready
data. A table the sink has not created yet (no record of its kind so far) reads as empty.
Timestamps in the tables are UTC without a zone (Connect ``Timestamp``); the output gives epoch
milliseconds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from aos_gateway.errors import StoreError

#: how many executions one point of the learning curve covers
CURVE_BLOCK = 50
CURVE_MAX = 20_000


def _success(column: str) -> str:
    """SQL scoring an outcome column as the statistics do: SUCCEEDED 1, PARTIAL half, else 0."""
    return f"CASE {column} WHEN 'SUCCEEDED' THEN 1.0 WHEN 'PARTIAL' THEN 0.5 ELSE 0 END"


def _ms(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.replace(tzinfo=UTC).timestamp() * 1000)


def _num(v: Any) -> float | None:
    return None if v is None else round(float(v), 4)


def _rows(conn: psycopg.Connection[Any], sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of a query; none when the sink has not created its table yet."""
    try:
        with conn.transaction():
            return conn.execute(sql, args).fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def snapshot(conn: psycopg.Connection[Any], window_min: int, now: datetime | None = None) -> dict[str, Any]:
    """Every figure of the page over the last ``window_min`` minutes (the learning curve: all history).

    Raises:
        StoreError: PostgreSQL refused a query.
    """
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(tzinfo=None)
    since = now - timedelta(minutes=window_min)
    bucket = max(5, window_min)  # seconds per point: 60 points over the window
    try:
        return {
            "now": _ms(now),
            "window_min": window_min,
            "bucket_s": bucket,
            "throughput": _throughput(conn, since, bucket),
            "stages": _stages(conn, since),
            "agents": _agents(conn, since),
            "decisions": _decisions(conn),
            "anomalies": _anomalies(conn),
            "deadletters": _deadletters(conn, since),
            "curve": _curve(conn),
            "totals": _totals(conn, since),
        }
    except psycopg.Error as exc:
        raise StoreError(f"dashboard query failed: {exc}") from exc


def _throughput(conn: psycopg.Connection[Any], since: datetime, bucket: int) -> dict[str, Any]:
    planned = _rows(
        conn,
        "SELECT floor(extract(epoch FROM created_at) / %s) * %s AS t, count(*) FROM sink_decisions "
        "WHERE created_at >= %s GROUP BY 1 ORDER BY 1",
        (bucket, bucket, since),
    )
    finished = _rows(
        conn,
        "SELECT floor(extract(epoch FROM finished_at) / %s) * %s AS t, status, count(*) FROM sink_results "
        "WHERE finished_at >= %s GROUP BY 1, 2 ORDER BY 1",
        (bucket, bucket, since),
    )
    by_status: dict[str, dict[str, list[Any]]] = {}
    for t, status, n in finished:
        s = by_status.setdefault(status, {"t": [], "per_s": []})
        s["t"].append(int(t) * 1000)
        s["per_s"].append(round(n / bucket, 4))
    return {
        "planned": {"t": [int(t) * 1000 for t, _ in planned], "per_s": [round(n / bucket, 4) for _, n in planned]},
        "results": by_status,
    }


_STAGES = (("perceive", "perceive_ms"), ("match", "match_ms"), ("plan", "plan_ms"), ("submit→plan", "total_ms"))


def _stages(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    cols = ", ".join(
        f"percentile_cont(0.5) WITHIN GROUP (ORDER BY {c}), percentile_cont(0.95) WITHIN GROUP (ORDER BY {c})"
        for _, c in _STAGES
    )
    out: list[dict[str, Any]] = []
    row = _rows(conn, f"SELECT count(*), {cols} FROM sink_decisions WHERE created_at >= %s", (since,))
    if row and row[0][0]:
        vals = row[0][1:]
        for i, (name, _) in enumerate(_STAGES):
            out.append({"stage": name, "p50_ms": _num(vals[2 * i]), "p95_ms": _num(vals[2 * i + 1]), "n": row[0][0]})
    ex = _rows(
        conn,
        "SELECT count(*), percentile_cont(0.5) WITHIN GROUP (ORDER BY duration_ms), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM sink_results WHERE finished_at >= %s",
        (since,),
    )
    if ex and ex[0][0]:
        out.append({"stage": "execute", "p50_ms": _num(ex[0][1]), "p95_ms": _num(ex[0][2]), "n": ex[0][0]})
    return out


def _agents(conn: psycopg.Connection[Any], since: datetime) -> list[dict[str, Any]]:
    rows = _rows(
        conn,
        f"SELECT agent_id, count(*), avg({_success('outcome')}), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY latency_ms) FROM sink_experience "
        "WHERE kind = 'STEP' AND agent_id IS NOT NULL AND occurred_at >= %s "
        "GROUP BY agent_id ORDER BY count(*) DESC, agent_id LIMIT 25",
        (since,),
    )
    totals = {
        r[0]: r[1:]
        for r in _rows(
            conn, "SELECT agent_id, sum(calls), sum(successes + 0.5 * partials) FROM sink_agent_stats GROUP BY 1"
        )
    }
    out = []
    for agent, n, rate, p95 in rows:
        t = totals.get(agent)
        out.append(
            {
                "agent_id": agent,
                "calls": n,
                "success_rate": _num(rate),
                "p95_ms": _num(p95),
                "calls_all_time": int(t[0]) if t else None,
                "success_rate_all_time": _num(t[1] / t[0]) if t and t[0] else None,
            }
        )
    return out


def _decisions(conn: psycopg.Connection[Any], limit: int = 20) -> list[dict[str, Any]]:
    rows = _rows(
        conn,
        "SELECT d.created_at, d.task_id, d.tenant, d.status, d.reason, d.agents, d.top_agent, d.top_score, "
        "d.predicted_quality, d.total_ms, d.text, r.status FROM sink_decisions d "
        "LEFT JOIN sink_results r ON r.task_id = d.task_id ORDER BY d.created_at DESC LIMIT %s",
        (limit,),
    ) or [
        (*r, None)
        for r in _rows(
            conn,
            "SELECT created_at, task_id, tenant, status, reason, agents, top_agent, top_score, predicted_quality, "
            "total_ms, text FROM sink_decisions ORDER BY created_at DESC LIMIT %s",
            (limit,),
        )
    ]
    keys = ("at", "task_id", "tenant", "status", "reason", "agents", "top_agent", "top_score", "quality", "total_ms")
    out = []
    for r in rows:
        d = dict(zip(keys, r[:10], strict=True))
        d["at"] = _ms(r[0])
        d["top_score"], d["quality"] = _num(d["top_score"]), _num(d["quality"])
        d["text"], d["result"] = r[10], r[11]
        out.append(d)
    return out


def _anomalies(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    rows = _rows(
        conn,
        "SELECT detected_at, agent_id, kind, value, baseline, score, reason FROM sink_anomalies "
        "WHERE version = (SELECT max(version) FROM sink_anomalies) ORDER BY score DESC NULLS LAST LIMIT 50",
    )
    keys = ("at", "agent_id", "kind", "value", "baseline", "score", "reason")
    return [
        dict(zip(keys, (_ms(r[0]), r[1], r[2], _num(r[3]), _num(r[4]), _num(r[5]), r[6]), strict=True)) for r in rows
    ]


def _deadletters(conn: psycopg.Connection[Any], since: datetime) -> dict[str, Any]:
    by_stage = _rows(
        conn,
        "SELECT stage, count(*) FROM sink_deadletters WHERE failed_at >= %s GROUP BY stage ORDER BY 2 DESC",
        (since,),
    )
    latest = _rows(
        conn,
        "SELECT failed_at, stage, error_type, reason, source_topic, source_partition, source_offset, task_id "
        "FROM sink_deadletters ORDER BY failed_at DESC LIMIT 10",
    )
    keys = ("at", "stage", "error_type", "reason", "topic", "partition", "offset", "task_id")
    return {
        "by_stage": [{"stage": s, "count": n} for s, n in by_stage],
        "latest": [dict(zip(keys, (_ms(r[0]), *r[1:]), strict=True)) for r in latest],
    }


def _curve(conn: psycopg.Connection[Any]) -> dict[str, list[Any]]:
    """Success rate of each block of CURVE_BLOCK executions, in the order they finished."""
    rows = _rows(
        conn,
        "SELECT (n - 1) / %s AS block, count(*), "
        f"avg({_success('status')}) FROM ("
        "  SELECT status, row_number() OVER (ORDER BY finished_at, task_id) AS n FROM ("
        "    SELECT status, finished_at, task_id FROM sink_results ORDER BY finished_at DESC LIMIT %s) last"
        ") numbered GROUP BY 1 ORDER BY 1",
        (CURVE_BLOCK, CURVE_MAX),
    )
    return {
        "executions": [int(b) * CURVE_BLOCK + int(n) for b, n, _ in rows],
        "success_rate": [_num(r) for _, _, r in rows],
    }


def _totals(conn: psycopg.Connection[Any], since: datetime) -> dict[str, Any]:
    d = _rows(
        conn,
        "SELECT count(*), count(*) FILTER (WHERE status <> 'PLANNED') FROM sink_decisions WHERE created_at >= %s",
        (since,),
    )
    r = _rows(
        conn,
        f"SELECT count(*), avg({_success('status')}), "
        "percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FROM sink_results WHERE finished_at >= %s",
        (since,),
    )
    dl = _rows(conn, "SELECT count(*) FROM sink_deadletters WHERE failed_at >= %s", (since,))
    an = _rows(
        conn,
        "SELECT count(DISTINCT agent_id) FROM sink_anomalies WHERE version = (SELECT max(version) FROM sink_anomalies)",
    )
    return {
        "tasks": d[0][0] if d else 0,
        "unplanned": d[0][1] if d else 0,
        "executions": r[0][0] if r else 0,
        "success_rate": _num(r[0][1]) if r else None,
        "execution_p95_ms": _num(r[0][2]) if r else None,
        "deadletters": dl[0][0] if dl else 0,
        "flagged_agents": an[0][0] if an else 0,
    }
