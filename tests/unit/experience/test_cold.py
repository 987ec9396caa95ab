from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from aos_gateway.errors import ValidationError
from aos_gateway.experience.cold import DAY_MS, SCHEMA, ColdStore, day_of, to_records
from aos_gateway.perception.vectors import pack, unpack

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def _rec(i: int, at: int, **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": f"e{i}",
        "task_id": f"t{i}",
        "tenant": "acme",
        "kind": "STEP",
        "plan_id": f"p{i}",
        "agent_id": "a1",
        "agent_ids": ["a1"],
        "outcome": "SUCCEEDED",
        "latency_ms": 100 + i,
        "cost": 0.5,
        "task_vector": None,
        "error": None,
        "feedback_score": None,
        "occurred_at": at,
        "trace_id": None,
        "metadata": {"step_id": "s1", "role": "", "attempts": "1", "fallback": "false"},
    }
    rec.update(over)
    return rec


def _ids(store: ColdStore, **kw: int) -> list[str]:
    return [str(x) for x in store.read(**kw).column("experience_id").to_pylist()]


def test_day_of_is_utc() -> None:
    assert day_of(T0) == "2024-05-01"
    assert day_of(T0 - 1) == "2024-04-30"


def test_write_twice_reads_each_record_once(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    recs = [_rec(i, T0 + i * 1000) for i in range(5)]
    assert store.write(recs) == 5
    assert store.write(recs[2:]) == 3  # redelivery of part of the batch
    assert len(store.parts("2024-05-01")) == 2
    table = store.read()
    assert table.schema.equals(SCHEMA)
    assert sorted(_ids(store)) == [f"e{i}" for i in range(5)]


def test_the_latest_copy_of_a_record_wins(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(1, T0, feedback_score=None)])
    time.sleep(0.002)  # part names carry the write time in ms
    store.write([_rec(1, T0, feedback_score=0.9)])
    rows = store.read().to_pylist()
    assert [r["feedback_score"] for r in rows] == [0.9]
    store.compact("2024-05-01")
    assert [r["feedback_score"] for r in store.read().to_pylist()] == [0.9]


def test_records_go_to_the_folder_of_their_utc_day(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(1, T0 - 1), _rec(2, T0), _rec(3, T0 + DAY_MS)])
    assert store.days() == ["2024-04-30", "2024-05-01", "2024-05-02"]
    assert [len(store.parts(d)) for d in store.days()] == [1, 1, 1]


def test_read_filters_by_time(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(i, T0 + i * DAY_MS // 2) for i in range(6)])  # every 12 h over 3 days
    assert _ids(store, since_ms=T0 + DAY_MS) == ["e2", "e3", "e4", "e5"]
    assert _ids(store, until_ms=T0 + DAY_MS) == ["e0", "e1"]
    assert _ids(store, since_ms=T0 + DAY_MS // 2, until_ms=T0 + 2 * DAY_MS) == ["e1", "e2", "e3"]


def test_read_of_an_empty_store(tmp_path: Path) -> None:
    store = ColdStore(tmp_path / "nothing-yet")
    assert store.read().num_rows == 0
    assert store.read().schema.equals(SCHEMA)
    assert store.days() == []


def test_unfinished_temporary_files_are_invisible(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(1, T0)])
    folder = tmp_path / "day=2024-05-01"
    (folder / ".tmp-crashed.parquet").write_bytes(b"PAR1 half a file")
    assert _ids(store) == ["e1"]


def test_compaction_keeps_rows_and_reduces_files(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    for batch in range(4):
        store.write([_rec(i, T0 + i) for i in range(batch * 3, batch * 3 + 5)])  # overlapping batches
    store.write([_rec(99, T0 + DAY_MS)])
    before = store.read()
    assert len(store.parts("2024-05-01")) == 4
    assert store.compact("2024-05-01") == 4
    parts = store.parts("2024-05-01")
    assert len(parts) == 1
    assert pq.read_table(parts[0]).num_rows == 14  # duplicates gone from the file itself
    after = store.read()
    assert sorted(after.to_pylist(), key=lambda r: r["experience_id"]) == sorted(
        before.to_pylist(), key=lambda r: r["experience_id"]
    )
    assert store.compact("2024-05-01") == 0  # nothing left to do
    assert store.parts("2024-05-02") and len(store.parts("2024-05-02")) == 1


def test_interrupted_compaction_reads_the_same(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(i, T0 + i) for i in range(3)])
    store.write([_rec(i, T0 + i) for i in range(2, 6)])
    old_parts = store.parts("2024-05-01")
    # simulate a crash after the merged file was renamed in but before the old parts were removed
    backup = {p: p.read_bytes() for p in old_parts}
    store.compact("2024-05-01")
    for p, data in backup.items():
        p.write_bytes(data)
    assert len(store.parts("2024-05-01")) == 3
    assert sorted(_ids(store)) == [f"e{i}" for i in range(6)]
    assert store.compact("2024-05-01") == 3
    assert sorted(_ids(store)) == [f"e{i}" for i in range(6)]


def test_compact_removes_stale_temporary_files_only(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(1, T0)])
    folder = tmp_path / "day=2024-05-01"
    stale, fresh = folder / ".tmp-stale.parquet", folder / ".tmp-fresh.parquet"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"x")
    old = time.time() - 7200
    os.utime(stale, (old, old))
    store.compact("2024-05-01")
    assert not stale.exists()
    assert fresh.exists()


def test_compact_all_leaves_the_current_day(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    for _ in range(2):
        store.write([_rec(1, T0), _rec(2, T0 + DAY_MS), _rec(3, T0 + 2 * DAY_MS)])
    assert store.compact_all("2024-05-03") == ["2024-05-01", "2024-05-02"]
    assert [len(store.parts(d)) for d in store.days()] == [1, 1, 2]


def test_prune_removes_only_days_older_than_retention(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    store.write([_rec(i, T0 + i * DAY_MS + 3_600_000) for i in range(5)])  # 2024-05-01 .. 2024-05-05
    now = T0 + 4 * DAY_MS + 12 * 3_600_000  # 2024-05-05 12:00
    # 2 days of retention: everything before 2024-05-03 12:00 may go, but 2024-05-03 holds newer records
    assert store.prune(now, 2) == ["2024-05-01", "2024-05-02"]
    assert store.days() == ["2024-05-03", "2024-05-04", "2024-05-05"]
    assert _ids(store) == ["e2", "e3", "e4"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert store.prune(now, 2) == []
    assert store.prune(now + DAY_MS // 2, 2) == ["2024-05-03"]


def test_round_trip_with_vectors_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    vecs = {
        dt: pack("fused", rng.normal(size=24).astype(np.float32), dt, "minilm") for dt in ("FLOAT32", "FLOAT16", "INT8")
    }
    recs = [
        _rec(1, T0, task_vector=vecs["FLOAT32"], error="boom", feedback_score=0.25, trace_id="tr"),
        _rec(
            2,
            T0 + 5,
            task_vector=vecs["FLOAT16"],
            kind="EXECUTION",
            agent_id=None,
            agent_ids=["a1", "a2"],
            metadata={"edges": '[["a1", "a2"]]'},
        ),
        _rec(3, T0 + 9, task_vector=vecs["INT8"], plan_id=None),
        _rec(4, T0 + 11, metadata={}),
    ]
    store = ColdStore(tmp_path)
    store.write(recs)
    table = store.read()
    back = to_records(table)
    assert back == recs
    # the stored column is plain float32 values
    stored = table.column("task_vector").to_pylist()[0]
    np.testing.assert_allclose(np.asarray(stored, dtype=np.float32), unpack(vecs["FLOAT32"]))


def test_write_rejects_records_that_do_not_fit(tmp_path: Path) -> None:
    store = ColdStore(tmp_path)
    with pytest.raises(ValidationError):
        store.write([_rec(1, T0, experience_id="")])
    with pytest.raises(ValidationError):
        store.write([{k: v for k, v in _rec(1, T0).items() if k != "occurred_at"}])
    bad_vec = pack("fused", np.ones(4, dtype=np.float32), "FLOAT32")
    bad_vec["dim"] = 5
    with pytest.raises(ValidationError):
        store.write([_rec(1, T0, task_vector=bad_vec)])
    with pytest.raises(ValidationError):
        store.write([_rec(1, T0, latency_ms="slow")])
    assert store.days() == []


def test_to_records_rejects_other_tables() -> None:
    import pyarrow as pa

    with pytest.raises(ValidationError):
        to_records(pa.table({"experience_id": ["x"]}))
