"""Cold storage of experience: Parquet files, one folder per UTC day, kept for 90 days.

Layout (hive partitioning, readable by any Parquet tool)::

    <root>/day=2024-05-01/part-0001714521600000-3f2a9c1b.parquet
    <root>/day=2024-05-01/part-0001714521600000-3f2a9c1b~c.parquet   (after compaction)

Why these choices:

- **Appends never rewrite.** :meth:`ColdStore.write` adds one new part file per day touched; the
  file is written under a hidden temporary name (``.tmp-…``, which dataset discovery ignores),
  fsynced and renamed into place, so a reader sees a whole file or none.
- **Duplicates are resolved on read.** The experience topic is at-least-once, so the same record
  may be written twice; :meth:`ColdStore.read` keeps one row per ``experience_id`` — the copy in
  the latest part (part names sort by write time), which is also what compaction keeps.
- **Compaction is crash-safe without a lock.** :meth:`ColdStore.compact` writes the merged file
  first and deletes the parts it read only after the rename; if it stops in between, the day holds
  the old parts and the merged file, which read the same after deduplication.
- **The task vector is stored as float32 values** (``list<float>``: what analysts and other
  engines can use directly), with the wire encoding beside it (``vector_name``, ``vector_model``,
  ``vector_dtype``, ``vector_scale``), so :func:`to_records` re-encodes the exact NamedVector
  bytes: FLOAT16 values are exact in float32, INT8 values are re-quantised with their scale.
- **Metadata is a Parquet map** (``map<string, string>``); ``occurred_at`` is a UTC timestamp
  in milliseconds (back to epoch ms in :func:`to_records`).
- **User text is sealed at rest** when ``security.keyring`` (or ``security.redact_pii``) is set:
  ``error`` and the non-structural metadata values are written redacted and AES-GCM encrypted
  with the tenant's key (:mod:`aos_gateway.security.sealing`) and opened again by :meth:`ColdStore.read`;
  :meth:`ColdStore.reseal` re-encrypts a day with the newest keys (key rotation).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from aos_gateway.contracts.records import ExperienceRecord, NamedVector
from aos_gateway.errors import SerializationError, StoreError, ValidationError
from aos_gateway.perception.vectors import unpack

if TYPE_CHECKING:
    from aos_gateway.security.sealing import ExperienceSealer

DAY_MS = 86_400_000
FORMAT_VERSION = "1"
_TS = pa.timestamp("ms", tz="UTC")

#: the columns of every part file (the ``day`` partition column lives in the folder name only)
SCHEMA = pa.schema(
    [
        pa.field("experience_id", pa.string(), nullable=False),
        pa.field("task_id", pa.string(), nullable=False),
        pa.field("tenant", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),
        pa.field("plan_id", pa.string()),
        pa.field("agent_id", pa.string()),
        pa.field("agent_ids", pa.list_(pa.string()), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("latency_ms", pa.int64(), nullable=False),
        pa.field("cost", pa.float64(), nullable=False),
        pa.field("task_vector", pa.list_(pa.float32())),
        pa.field("vector_name", pa.string()),
        pa.field("vector_model", pa.string()),
        pa.field("vector_dtype", pa.string()),
        pa.field("vector_scale", pa.float64()),
        pa.field("error", pa.string()),
        pa.field("feedback_score", pa.float64()),
        pa.field("occurred_at", _TS, nullable=False),
        pa.field("trace_id", pa.string()),
        pa.field("metadata", pa.map_(pa.string(), pa.string()), nullable=False),
    ],
    metadata={"aos.cold.format": FORMAT_VERSION, "aos.record": "aos.experience.ExperienceRecord"},
)

PARTITIONING = ds.partitioning(pa.schema([pa.field("day", pa.string())]), flavor="hive")
_DATASET_SCHEMA = SCHEMA.append(pa.field("day", pa.string()))
_TMP_PREFIX = ".tmp-"
_TRASH_PREFIX = ".trash-"
_STALE_TMP_S = 3600.0  # a temporary file this old belongs to a writer that died


def day_of(ms: int) -> str:
    """The UTC day (``YYYY-MM-DD``) of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).date().isoformat()


def _day_str(day: str | date) -> str:
    if isinstance(day, date):
        return day.isoformat()
    try:
        return date.fromisoformat(day).isoformat()
    except ValueError as exc:
        raise ValidationError(f"not a day (YYYY-MM-DD): {day!r}") from exc


def _day_start_ms(day: str) -> int:
    return int(datetime.combine(date.fromisoformat(day), datetime.min.time(), tzinfo=UTC).timestamp() * 1000)


class ColdStore:
    """Experience records as Parquet under ``root`` (``settings.experience.cold_dir``)."""

    def __init__(
        self, root: str | os.PathLike[str], sealer: ExperienceSealer | Literal["settings"] | None = "settings"
    ) -> None:
        """``sealer``: seals user text on write and opens it on read (None: stored as written); by
        default the process settings' (``security.keyring``, ``security.redact_pii``)."""
        self.root = Path(root)
        if sealer == "settings":
            from aos_gateway.security.sealing import ExperienceSealer
            from aos_gateway.settings import get_settings

            sealer = ExperienceSealer.from_settings(get_settings())
        self.sealer: ExperienceSealer | None = sealer

    # --- writing -----------------------------------------------------------------------------

    def write(self, records: Iterable[ExperienceRecord]) -> int:
        """Append records, one new part file per UTC day they fall on; returns the rows written.

        Each file is atomic, the batch is not: if a later day's file fails, the earlier days stay
        written, and writing the whole batch again is harmless (duplicates are resolved on read).

        Raises:
            ValidationError: a record lacks a required field or does not fit the schema.
            StoreError: the file system refused (disk full, permissions).
        """
        by_day: dict[str, list[ExperienceRecord]] = {}
        for rec in records:
            try:
                by_day.setdefault(day_of(int(rec["occurred_at"])), []).append(rec)
            except (KeyError, TypeError, ValueError, OverflowError, OSError) as exc:
                raise ValidationError(f"experience record without a usable occurred_at: {exc!r}") from exc
        written = 0
        for day, recs in sorted(by_day.items()):
            table = _to_table(recs)
            if self.sealer is not None:
                table = self.sealer.seal_table(table)
            self._write_file(day, table, _part_name())
            written += table.num_rows
        return written

    def _write_file(self, day: str, table: pa.Table, name: str) -> Path:
        folder = self.root / f"day={day}"
        tmp = folder / f"{_TMP_PREFIX}{uuid.uuid4().hex}.parquet"
        final = folder / name
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                pq.write_table(table, f, compression="zstd")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
            _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write cold experience file {final}: {exc}") from exc
        return final

    # --- reading -----------------------------------------------------------------------------

    def days(self) -> list[str]:
        """The days that have a folder, oldest first."""
        if not self.root.is_dir():
            return []
        out = []
        for p in self.root.iterdir():
            if p.is_dir() and p.name.startswith("day="):
                try:
                    out.append(_day_str(p.name[4:]))
                except ValidationError:
                    continue
        return sorted(out)

    def parts(self, day: str | date) -> list[Path]:
        """A day's part files in write order (hidden temporary files excluded)."""
        folder = self.root / f"day={_day_str(day)}"
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.iterdir() if p.suffix == ".parquet" and not p.name.startswith((".", "_")))

    def read(self, since_ms: int | None = None, until_ms: int | None = None, *, opened: bool = True) -> pa.Table:
        """Records with ``since_ms <= occurred_at < until_ms``, one row per ``experience_id``.

        Day folders outside the range are not opened. Rows come in write order (day, part, row).
        Sealed values are decrypted unless ``opened`` is False (a DecryptionError when a tenant's
        key is missing).
        """
        if not self.root.is_dir():
            return SCHEMA.empty_table()
        try:
            dataset = ds.dataset(self.root, format="parquet", partitioning=PARTITIONING, schema=_DATASET_SCHEMA)
            day_filter: ds.Expression | None = None
            row_filter: ds.Expression | None = None
            if since_ms is not None:
                day_filter = ds.field("day") >= day_of(since_ms)
                row_filter = ds.field("occurred_at") >= pa.scalar(since_ms, type=_TS)
            if until_ms is not None:
                d = ds.field("day") <= day_of(until_ms)
                r = ds.field("occurred_at") < pa.scalar(until_ms, type=_TS)
                day_filter = d if day_filter is None else day_filter & d
                row_filter = r if row_filter is None else row_filter & r
            frags = sorted(dataset.get_fragments(filter=day_filter), key=lambda f: f.path)
            tables = [f.to_table(schema=SCHEMA, filter=row_filter) for f in frags]
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read cold experience under {self.root}: {exc}") from exc
        if not tables:
            return SCHEMA.empty_table()
        table = dedup(pa.concat_tables(tables))
        if opened and self.sealer is not None:
            table = self.sealer.open_table(table)
        return table

    # --- maintenance -------------------------------------------------------------------------

    def compact(self, day: str | date) -> int:
        """Merge a day's parts into one deduplicated file; returns how many parts it replaced.

        A day with one part and no stale temporary files is left alone (returns 0).
        """
        d = _day_str(day)
        folder = self.root / f"day={d}"
        self._remove_stale_tmp(folder)
        parts = self.parts(d)
        if len(parts) < 2:
            return 0
        self._merge(d, parts)
        return len(parts)

    def reseal(self, day: str | date) -> int:
        """Re-encrypt a day with each tenant's newest key (merging its parts, as compaction does);
        returns the rows rewritten. Values written before encryption was on get encrypted.

        Raises:
            StoreError: No keyring (nothing to encrypt with), or the files cannot be read or written.
            DecryptionError: A value that no key of its tenant opens (the day is left as it was).
        """
        if self.sealer is None or not self.sealer.encrypts:
            raise StoreError("resealing cold experience needs a keyring (AOS_SECURITY__KEYRING)")
        d = _day_str(day)
        parts = self.parts(d)
        if not parts:
            return 0
        return self._merge(d, parts, self.sealer.reseal_table)

    def _merge(self, d: str, parts: list[Path], transform: Callable[[pa.Table], pa.Table] | None = None) -> int:
        """Replace ``parts`` by one deduplicated file (transformed first); returns its rows."""
        try:
            merged = dedup(pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts]))
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"cannot read cold experience of {d}: {exc}") from exc
        if transform is not None:
            merged = transform(merged)
        # sorts right after the newest part it replaces, so "the latest copy wins" still holds
        self._write_file(d, merged, f"{parts[-1].stem}~c.parquet")
        folder = self.root / f"day={d}"
        try:
            for p in parts:
                p.unlink(missing_ok=True)
            _fsync_dir(folder)
        except OSError as exc:
            raise StoreError(f"cannot remove merged parts of {d}: {exc}") from exc
        return int(merged.num_rows)

    def compact_all(self, before_day: str | date) -> list[str]:
        """Compact every day before ``before_day`` (today's folder is still being written)."""
        limit = _day_str(before_day)
        return [d for d in self.days() if d < limit and self.compact(d) > 0]

    def prune(self, now_ms: int, retention_days: int) -> list[str]:
        """Remove the days whose every record is older than the retention; returns them.

        A day goes once its end (next midnight UTC) is at least ``retention_days`` before
        ``now_ms``, so no record younger than the retention is ever removed. Each folder is
        first renamed to a hidden name (readers stop seeing it at once), then deleted.
        """
        if retention_days < 0:
            raise ValidationError(f"retention_days must not be negative: {retention_days}")
        cutoff = now_ms - retention_days * DAY_MS
        removed: list[str] = []
        try:
            for d in self.days():
                if _day_start_ms(d) + DAY_MS <= cutoff:
                    trash = self.root / f"{_TRASH_PREFIX}day={d}-{uuid.uuid4().hex[:8]}"
                    os.replace(self.root / f"day={d}", trash)
                    removed.append(d)
            for p in self.root.iterdir() if self.root.is_dir() else ():
                if p.name.startswith(_TRASH_PREFIX):
                    shutil.rmtree(p)
        except OSError as exc:
            raise StoreError(f"cannot prune cold experience under {self.root}: {exc}") from exc
        return removed

    def _remove_stale_tmp(self, folder: Path) -> None:
        if not folder.is_dir():
            return
        now = time.time()
        for p in folder.iterdir():
            if p.name.startswith(_TMP_PREFIX):
                try:
                    if now - p.stat().st_mtime > _STALE_TMP_S:
                        p.unlink()
                except FileNotFoundError:
                    continue


def _part_name() -> str:
    return f"part-{time.time_ns() // 1_000_000:019d}-{uuid.uuid4().hex[:8]}.parquet"


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dedup(table: pa.Table) -> pa.Table:
    """One row per ``experience_id``: the last one, in the table's order."""
    n = table.num_rows
    if n == 0:
        return table
    rows = pa.array(np.arange(n, dtype=np.int64))
    last = (
        pa.table({"id": table.column("experience_id"), "row": rows})
        .group_by("id", use_threads=False)
        .aggregate([("row", "max")])
        .column("row_max")
    )
    if len(last) == n:
        return table
    keep = pc.sort_indices(last)
    return table.take(pc.take(last, keep))


# --- records <-> Arrow -------------------------------------------------------------------------


def _to_table(records: Sequence[ExperienceRecord]) -> pa.Table:
    cols: dict[str, list[Any]] = {f.name: [] for f in SCHEMA}
    for rec in records:
        try:
            eid = rec["experience_id"]
            if not eid:
                raise ValidationError("experience record without an experience_id")
            r = cast(dict[str, Any], rec)
            cols["experience_id"].append(eid)
            cols["task_id"].append(r["task_id"])
            cols["tenant"].append(r.get("tenant", "default"))
            cols["kind"].append(r.get("kind", "EXECUTION"))
            cols["plan_id"].append(r.get("plan_id"))
            cols["agent_id"].append(r.get("agent_id"))
            cols["agent_ids"].append(list(r.get("agent_ids") or []))
            cols["outcome"].append(r.get("outcome", "FAILED"))
            cols["latency_ms"].append(int(r.get("latency_ms", 0)))
            cols["cost"].append(float(r.get("cost", 0.0)))
            vec: NamedVector | None = r.get("task_vector")
            if vec is None:
                for k in ("task_vector", "vector_name", "vector_model", "vector_dtype", "vector_scale"):
                    cols[k].append(None)
            else:
                cols["task_vector"].append(unpack(vec))
                cols["vector_name"].append(vec["name"])
                cols["vector_model"].append(vec.get("model", ""))
                cols["vector_dtype"].append(vec["dtype"])
                cols["vector_scale"].append(float(vec.get("scale", 1.0)))
            cols["error"].append(r.get("error"))
            fb = r.get("feedback_score")
            cols["feedback_score"].append(None if fb is None else float(fb))
            cols["occurred_at"].append(int(r["occurred_at"]))
            cols["trace_id"].append(r.get("trace_id"))
            cols["metadata"].append(dict(r.get("metadata") or {}))
        except (KeyError, TypeError, ValueError, SerializationError) as exc:
            raise ValidationError(
                f"experience record {rec.get('experience_id')!r} does not fit the cold schema: {exc!r}"
            ) from exc
    try:
        arrays = [pa.array(cols[f.name], type=f.type) for f in SCHEMA]
        return pa.Table.from_arrays(arrays, schema=SCHEMA)
    except (pa.ArrowException, TypeError, ValueError) as exc:
        raise ValidationError(f"experience records do not fit the cold schema: {exc}") from exc


def _repack(values: np.ndarray[Any, Any], name: str, model: str, dtype: str, scale: float) -> NamedVector:
    arr = values.astype(np.float32, copy=False)
    if dtype == "INT8":
        data = np.clip(np.round(arr / np.float32(scale)), -127, 127).astype("i1").tobytes()
    elif dtype == "FLOAT16":
        data = arr.astype("<f2").tobytes()
    elif dtype == "FLOAT32":
        data = arr.astype("<f4").tobytes()
    else:
        raise SerializationError(f"unknown vector dtype {dtype!r} in cold storage")
    return NamedVector(name=name, model=model, dim=int(arr.size), dtype=dtype, scale=scale, data=data)  # type: ignore[typeddict-item]


def to_records(table: pa.Table) -> list[ExperienceRecord]:
    """Rows of a cold table back to ExperienceRecord dicts (for replay), in row order."""
    missing = [f.name for f in SCHEMA if f.name not in table.column_names]
    if missing:
        raise ValidationError(f"not a cold experience table (missing {', '.join(missing)})")
    table = table.select([f.name for f in SCHEMA])
    vec_col = table.column("task_vector").combine_chunks()
    offsets = vec_col.offsets.to_numpy()
    flat = vec_col.values.to_numpy(zero_copy_only=False)
    base = table.drop_columns(["task_vector"])
    base = base.set_column(
        base.schema.get_field_index("occurred_at"), "occurred_at", base.column("occurred_at").cast(pa.int64())
    )
    rows = base.to_pylist()
    valid = vec_col.is_valid().to_numpy(zero_copy_only=False)
    out: list[ExperienceRecord] = []
    for i, row in enumerate(rows):
        vector: NamedVector | None = None
        if valid[i]:
            vector = _repack(
                flat[offsets[i] : offsets[i + 1]],
                row["vector_name"],
                row["vector_model"] or "",
                row["vector_dtype"],
                float(row["vector_scale"]),
            )
        out.append(
            ExperienceRecord(
                experience_id=row["experience_id"],
                task_id=row["task_id"],
                tenant=row["tenant"],
                kind=row["kind"],
                plan_id=row["plan_id"],
                agent_id=row["agent_id"],
                agent_ids=list(row["agent_ids"]),
                outcome=row["outcome"],
                latency_ms=row["latency_ms"],
                cost=row["cost"],
                task_vector=vector,
                error=row["error"],
                feedback_score=row["feedback_score"],
                occurred_at=row["occurred_at"],
                trace_id=row["trace_id"],
                metadata=dict(row["metadata"]),
            )
        )
    return out
