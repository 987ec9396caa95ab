"""The hot experience store: the last ``timeseries.retention_days`` (7) days in a time-series database.

Written through the InfluxDB v2 write API with ``influxdb-client``, so one writer feeds a real
InfluxDB 2 (``timeseries.flavour = "influxdb"``) or QuestDB, the local stack's (``"questdb"``).
Every experience record is one point of measurement ``aos_experience``:

- tags ``tenant``, ``kind``, ``outcome``, ``agent_id`` (STEP records), ``source`` (``feedback`` for
  the records made from user feedback, absent otherwise) and ``experience_id``;
- fields ``latency_ms`` (integer), ``cost`` (float), ``success`` (integer: 1 for SUCCEEDED and
  PARTIAL, else 0, so its mean is the success rate) and ``feedback_score`` (float, when present);
- time ``occurred_at``, in milliseconds.

Why these choices:

- **A rewrite changes nothing.** The experience topic is at-least-once, so a record may be written
  again. Its tags and timestamp come from the record alone: InfluxDB overwrites a point of the
  same series at the same time, and QuestDB's table (made by :meth:`HotStore.ensure_schema`)
  deduplicates on ``UPSERT KEYS(ts, experience_id)``. ``experience_id`` has to be a tag, not a
  field: two records of one agent and outcome in the same millisecond would otherwise be one
  point in InfluxDB, and one of them lost. The price there is a series per record (the records
  of the retention window); in QuestDB the column is a VARCHAR, which costs nothing.
- **Field types never change.** ``latency_ms`` is always written as an integer and ``cost`` as a
  float: a cost of ``0`` from JSON would otherwise go out as ``0i``, and InfluxDB rejects a field
  whose type changes.
- **QuestDB's table is made before the first write**, over its PostgreSQL wire: a table that line
  protocol creates on its own names its timestamp ``timestamp``, makes ``experience_id`` a SYMBOL
  and has neither deduplication nor a TTL. :meth:`HotStore.write` calls :meth:`ensure_schema` once.
- **Retention**: QuestDB drops whole daily partitions past ``TTL <n> DAYS`` (asynchronously);
  InfluxDB expires data by the bucket's retention rule, which :meth:`ensure_schema` creates or
  updates through ``BucketsApi``. No InfluxDB server runs in this project's environment: that path
  is tested against a stub HTTP server answering the v2 API's bucket and org calls the way
  InfluxDB documents them, not against InfluxDB itself.
- **Reads are QuestDB SQL** over psycopg (:meth:`HotStore.query_counts`), for tests and dashboards.
  QuestDB applies WAL writes asynchronously: a row is readable shortly after its write returns.

A store that is unreachable or refuses is a :class:`~aos_gateway.errors.StoreError` with a one-line
reason (a batch that fails half-way may be written again whole, see above); a record without an
``experience_id`` or ``occurred_at`` is a :class:`~aos_gateway.errors.ValidationError`, as in the cold store.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aos_gateway.contracts.records import ExperienceRecord
from aos_gateway.errors import StoreError, ValidationError
from aos_gateway.settings import Settings, TimeSeriesSettings

if TYPE_CHECKING:
    import psycopg
    from influxdb_client.client.influxdb_client import InfluxDBClient
    from influxdb_client.client.write.point import Point

MEASUREMENT = "aos_experience"
#: what identifies a point: a second write with the same values replaces it (QuestDB's UPSERT KEYS)
DEDUP_KEYS = ("ts", "experience_id")
TAGS = ("tenant", "kind", "outcome", "agent_id", "source", "experience_id")
FIELDS = ("latency_ms", "cost", "success", "feedback_score")
SUCCESS_OUTCOMES = frozenset({"SUCCEEDED", "PARTIAL"})
#: the columns :meth:`HotStore.query_counts` may group by (SQL identifiers cannot be bound)
GROUPABLE = ("tenant", "kind", "outcome", "agent_id", "source")

_TTL_UNIT_DAYS = {"HOUR": 1 / 24, "DAY": 1.0, "WEEK": 7.0, "MONTH": 30.0, "YEAR": 365.0}


def create_table_sql(retention_days: int, table: str = MEASUREMENT) -> str:
    """QuestDB DDL of the measurement: daily partitions, a TTL, WAL and deduplication by ``DEDUP_KEYS``."""
    return (
        f"CREATE TABLE IF NOT EXISTS {table} ("
        "tenant SYMBOL, kind SYMBOL, outcome SYMBOL, agent_id SYMBOL, source SYMBOL, "
        "experience_id VARCHAR, latency_ms LONG, cost DOUBLE, success LONG, feedback_score DOUBLE, "
        "ts TIMESTAMP"
        f") TIMESTAMP(ts) PARTITION BY DAY TTL {int(retention_days)} DAYS WAL "
        f"DEDUP UPSERT KEYS({', '.join(DEDUP_KEYS)})"
    )


def point_values(rec: ExperienceRecord | Mapping[str, Any]) -> tuple[dict[str, str], dict[str, int | float], int]:
    """The tags, fields and millisecond timestamp of one record's point.

    Tags that are missing or empty are left out (line protocol has no empty tag), the same way on
    every write of the record.

    Raises:
        ValidationError: The record has no ``experience_id`` (it could not be written idempotently)
            or no usable ``occurred_at`` (as the cold store).
    """
    meta = rec.get("metadata") or {}
    tags: dict[str, str] = {}
    for key, value in (
        ("tenant", rec.get("tenant")),
        ("kind", rec.get("kind")),
        ("outcome", rec.get("outcome")),
        ("agent_id", rec.get("agent_id")),
        ("source", meta.get("source")),
        ("experience_id", rec.get("experience_id")),
    ):
        if value is not None and str(value) != "":
            tags[key] = str(value)
    if "experience_id" not in tags:
        raise ValidationError("experience record without an experience_id")
    try:
        at = int(rec["occurred_at"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValidationError(f"experience record without a usable occurred_at: {exc!r}") from exc
    fields: dict[str, int | float] = {
        "latency_ms": int(rec.get("latency_ms") or 0),
        "cost": float(rec.get("cost") or 0.0),
        "success": 1 if rec.get("outcome") in SUCCESS_OUTCOMES else 0,
    }
    score = rec.get("feedback_score")
    if score is not None and math.isfinite(float(score)):
        fields["feedback_score"] = float(score)
    if not math.isfinite(fields["cost"]):
        fields["cost"] = 0.0
    return tags, fields, at


def to_point(rec: ExperienceRecord | Mapping[str, Any]) -> Point:
    """One record as an ``influxdb_client.Point`` of :data:`MEASUREMENT`, millisecond precision."""
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    # influxdb-client ships py.typed but leaves these methods unannotated
    tags, fields, at = point_values(rec)
    point = Point(MEASUREMENT)  # type: ignore[no-untyped-call]
    for k, v in tags.items():
        point.tag(k, v)  # type: ignore[no-untyped-call]
    for name, value in fields.items():
        point.field(name, value)  # type: ignore[no-untyped-call]
    point.time(at, WritePrecision.MS)  # type: ignore[no-untyped-call]
    return point


def _batches(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _one_line(exc: BaseException) -> str:
    """The exception's message on one line (a server's message may span several), at most 300 characters."""
    text = " ".join(str(getattr(exc, "message", "") or exc).split())
    return (text or type(exc).__name__)[:300]


class HotStore:
    """Experience points in InfluxDB 2 or QuestDB, kept ``retention_days``.

    Not thread-safe for concurrent writes from several threads (the projection writes one batch
    at a time). Use as a context manager or call :meth:`close`.
    """

    def __init__(self, settings: TimeSeriesSettings, batch_size: int = 5_000, timeout_ms: int = 10_000) -> None:
        """Describe the store; nothing connects until a method needs it.

        Args:
            settings: ``settings.timeseries``.
            batch_size: Points per HTTP write request.
            timeout_ms: Each HTTP request's time limit.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.settings = settings
        self.flavour = settings.flavour
        self.url = settings.url.rstrip("/")
        self.batch_size = batch_size
        self.timeout_ms = timeout_ms
        self._client: InfluxDBClient | None = None
        self._schema_ready = False

    @classmethod
    def from_settings(cls, settings: Settings) -> HotStore:
        """The store of ``settings.timeseries``, batched like the projection (``experience.projection_batch``)."""
        return cls(settings.timeseries, batch_size=max(settings.experience.projection_batch, 1))

    def __enter__(self) -> HotStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- schema -------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Make the measurement ready: QuestDB's table with its TTL and dedup, or InfluxDB's bucket.

        Idempotent. A changed ``retention_days`` is applied to the existing table or bucket.

        Raises:
            StoreError: The store is unreachable, refuses, or holds an incompatible table.
        """
        if self.flavour == "questdb":
            self._ensure_questdb_table()
        else:
            self._ensure_influx_bucket()
        self._schema_ready = True

    def _ensure_questdb_table(self) -> None:
        import psycopg

        days = int(self.settings.retention_days)
        with self._pg() as conn:
            try:
                conn.execute(create_table_sql(days))
                conn.execute(f"ALTER TABLE {MEASUREMENT} SET TTL {days} DAYS")
                row = conn.execute(
                    "SELECT designatedTimestamp, dedup FROM tables() WHERE table_name = %s", (MEASUREMENT,)
                ).fetchone()
                # a table function takes no bind parameter; MEASUREMENT is our constant
                upsert = conn.execute(f"SELECT \"column\" FROM table_columns('{MEASUREMENT}') WHERE upsertKey")
                keys = {str(r[0]) for r in upsert.fetchall()}
            except psycopg.Error as exc:
                raise StoreError(f"hot store: QuestDB refused the schema of {MEASUREMENT}: {_one_line(exc)}") from exc
        if row is None or row[0] != "ts" or not row[1] or keys != set(DEDUP_KEYS):
            raise StoreError(
                f"hot store: table {MEASUREMENT} exists without deduplication on ({', '.join(DEDUP_KEYS)}) "
                f"(timestamp {row[0] if row else None!r}, upsert keys {sorted(keys)}): drop it to let it be remade"
            )

    def _ensure_influx_bucket(self) -> None:
        from influxdb_client.domain.bucket_retention_rules import BucketRetentionRules

        seconds = int(self.settings.retention_days) * 86_400
        rule = BucketRetentionRules(type="expire", every_seconds=seconds)  # type: ignore[no-untyped-call]
        api = self._influx().buckets_api()
        bucket, org = self.settings.bucket, self.settings.org
        with self._http_errors(f"creating or updating bucket {bucket!r}"):
            found = api.find_buckets(name=bucket, org=org).buckets or []  # type: ignore[no-untyped-call]
            if not found:
                api.create_bucket(bucket_name=bucket, retention_rules=rule, org=org)
                return
            current = found[0]
            rules = current.retention_rules or []
            if [(r.type, r.every_seconds) for r in rules] != [("expire", seconds)]:
                current.retention_rules = [rule]
                api.update_bucket(current)

    # -- write --------------------------------------------------------------------------------

    def write(self, records: Iterable[ExperienceRecord] | Iterable[Mapping[str, Any]]) -> int:
        """Write the records' points (synchronously, in batches); returns how many were written.

        Raises:
            ValidationError: A record has no ``experience_id`` or ``occurred_at`` (nothing is written).
            StoreError: The store is unreachable or refused a batch (earlier batches stay written;
                writing all of them again is harmless).
        """
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.domain.write_precision import WritePrecision

        points = [to_point(r) for r in records]
        if not points:
            return 0
        if not self._schema_ready:
            self.ensure_schema()
        api = self._influx().write_api(write_options=SYNCHRONOUS)
        done = 0
        for batch in _batches(points, self.batch_size):
            with self._http_errors(f"a write of {len(batch)} points"):
                api.write(
                    bucket=self.settings.bucket,
                    org=self.settings.org,
                    record=list(batch),
                    write_precision=WritePrecision.MS,  # type: ignore[arg-type]  # a str constant, typed as the class
                )
            done += len(batch)
        return done

    # -- read (QuestDB) -----------------------------------------------------------------------

    def query_counts(
        self,
        by: Sequence[str] = ("outcome",),
        *,
        since_ms: int | None = None,
        until_ms: int | None = None,
        tenant: str | None = None,
    ) -> dict[tuple[str | None, ...], int]:
        """Rows per group over QuestDB's PostgreSQL wire, e.g. ``{("SUCCEEDED",): 940, ("FAILED",): 60}``.

        Args:
            by: Columns to group by (from :data:`GROUPABLE`); ``()`` gives ``{(): total}``.
            since_ms: Only rows at or after this epoch-ms time.
            until_ms: Only rows before this epoch-ms time.
            tenant: Only this tenant's rows.

        Raises:
            StoreError: Not the questdb flavour, the store is unreachable, or the table is missing.
        """
        if self.flavour != "questdb":
            raise StoreError("hot store: query_counts reads QuestDB over SQL; the influxdb flavour has no SQL here")
        bad = [c for c in by if c not in GROUPABLE]
        if bad:
            raise ValueError(f"cannot group by {bad}: choose from {GROUPABLE}")
        where: list[str] = []
        params: list[Any] = []
        if since_ms is not None:
            where.append("ts >= %s")
            params.append(datetime.fromtimestamp(since_ms / 1000, UTC))
        if until_ms is not None:
            where.append("ts < %s")
            params.append(datetime.fromtimestamp(until_ms / 1000, UTC))
        if tenant is not None:
            where.append("tenant = %s")
            params.append(tenant)
        cols = ", ".join(by)
        query = f"SELECT {cols + ', ' if cols else ''}count() FROM {MEASUREMENT}"
        if where:
            query += " WHERE " + " AND ".join(where)
        if cols:
            query += f" GROUP BY {cols}"
        rows = self._sql(query, params)
        out = {tuple(None if v is None else str(v) for v in row[:-1]): int(row[-1]) for row in rows}
        return out if out or by else {(): 0}

    def ttl_days(self) -> float | None:
        """The QuestDB table's TTL in days (``None`` without one); MONTH and YEAR count as 30 and 365 days."""
        rows = self._sql("SELECT ttlValue, ttlUnit FROM tables() WHERE table_name = %s", [MEASUREMENT])
        if not rows:
            raise StoreError(f"hot store: QuestDB has no table {MEASUREMENT}; run ensure_schema()")
        value, unit = int(rows[0][0]), str(rows[0][1]).upper().rstrip("S")
        if value == 0:
            return None
        return value * _TTL_UNIT_DAYS[unit]

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the HTTP client (a later call opens a new one)."""
        if self._client is not None:
            client, self._client = self._client, None
            client.close()  # type: ignore[no-untyped-call]

    # -- internals ----------------------------------------------------------------------------

    def _influx(self) -> InfluxDBClient:
        if self._client is None:
            from influxdb_client.client.influxdb_client import InfluxDBClient

            self._client = InfluxDBClient(
                url=self.url,
                token=self.settings.token.get_secret_value(),
                org=self.settings.org,
                timeout=self.timeout_ms,
            )
        return self._client

    def _http_errors(self, what: str) -> _HttpErrors:
        return _HttpErrors(self.url, what)

    def _pg_address(self) -> str:
        from psycopg.conninfo import conninfo_to_dict

        try:
            d = conninfo_to_dict(self.settings.questdb_pg)
        except Exception:  # the connect below reports a garbled conninfo
            return "timeseries.questdb_pg"
        return f"{d.get('host', 'localhost')}:{d.get('port', 5432)}"

    def _pg(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(self.settings.questdb_pg, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"hot store: QuestDB's PostgreSQL wire at {self._pg_address()} is unreachable: {_one_line(exc)}"
            ) from exc

    def _sql(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        import psycopg

        with self._pg() as conn:
            try:
                return list(conn.execute(query, list(params)).fetchall())
            except psycopg.Error as exc:
                raise StoreError(f"hot store: QuestDB query failed: {_one_line(exc)}") from exc


class _HttpErrors:
    """Turns influxdb-client's and urllib3's exceptions into a one-line StoreError."""

    def __init__(self, url: str, what: str) -> None:
        self.url = url
        self.what = what

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is None:
            return
        from influxdb_client.client.exceptions import InfluxDBError
        from urllib3.exceptions import HTTPError

        if isinstance(exc, InfluxDBError):
            status = getattr(exc, "status", None) or getattr(getattr(exc, "response", None), "status", None)
            code = f" (HTTP {status})" if status else ""
            raise StoreError(f"hot store at {self.url} refused {self.what}{code}: {_one_line(exc)}") from exc
        if isinstance(exc, HTTPError | OSError):
            raise StoreError(f"hot store at {self.url} is unreachable ({self.what}): {_reason(exc)}") from exc


def _reason(exc: BaseException) -> str:
    # urllib3 wraps the OS error: "HTTPConnection(host=..., port=...): Failed to establish ...: [Errno 111] ..."
    text = _one_line(exc)
    return text.split(": ", 1)[-1] if text.startswith(("HTTPConnection(", "HTTPSConnection(")) else text
