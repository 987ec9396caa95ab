"""Experience and feedback of two tenants encrypted at rest, through the real broker and stores.

The records travel over the session's Kafka (``aos.experience.v1``, feedback turned into experience
as the worker does) and are written by the stores' own writers: Parquet files (a folder of this
test's own, sealed with a per-tenant keyring), QuestDB (the hot store) and PostgreSQL (agent
statistics). What the stores hold is then read without any key: the users' text is in none of
them. The API opens it again; a keyring without a tenant's key does not; after a rotation (the
real ``aos security keys new`` and ``keys rotate``) old data still reads, under the new key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from aos_gateway import topics
from aos_gateway.contracts import records
from aos_gateway.contracts.wire import codec_for
from aos_gateway.experience.cold import ColdStore, to_records
from aos_gateway.experience.feedback import feedback_record
from aos_gateway.security.crypto import DecryptionError, Keyring, is_token, new_key
from aos_gateway.security.sealing import ExperienceSealer
from aos_gateway.settings import SecuritySettings, Settings
from aos_gateway.streams.kafka import ensure_topics, make_producer, read_to_end

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]
ACME, GLOBEX = f"acme-{RUN}", f"globex-{RUN}"
SECRETS = {
    ACME: "ACME-SECRET: the merger with Initech closes on Friday",
    GLOBEX: "GLOBEX-SECRET: Hank's new hammock factory",
}
COMMENT = {
    ACME: "ACME-COMMENT: wrong answer about our payroll",
    GLOBEX: "GLOBEX-COMMENT: too slow for the doomsday device",
}


def _experience(tenant: str, i: int, now: int) -> records.ExperienceRecord:
    return records.ExperienceRecord(
        experience_id=f"{tenant}-e{i}",
        task_id=f"{tenant}-t{i}",
        tenant=tenant,
        kind="STEP",
        plan_id=f"{tenant}-p{i}",
        agent_id=f"agent-{RUN}",
        agent_ids=[f"agent-{RUN}"],
        outcome="FAILED",
        latency_ms=120 + i,
        cost=0.25,
        task_vector=None,
        error=f"agent failed on: {SECRETS[tenant]}",
        feedback_score=None,
        occurred_at=now + i,
        trace_id=None,
        metadata={"step_id": "s1", "role": SECRETS[tenant], "attempts": "1", "fallback": "false"},
    )


def _feedback(tenant: str, now: int) -> records.ExperienceRecord:
    fb = records.Feedback(
        feedback_id=f"{tenant}-fb",
        task_id=f"{tenant}-t0",
        tenant=tenant,
        success=False,
        rating=0.1,
        correct_agent_id=None,
        comment=COMMENT[tenant],
        created_at=now + 50,
    )
    return feedback_record(fb)


def _through_kafka(settings: Settings, recs: list[records.ExperienceRecord]) -> list[records.ExperienceRecord]:
    """Produce the records to aos.experience.v1 and read back ours (what the worker's projections consume)."""
    codec = codec_for(records.EXPERIENCE, topics.EXPERIENCE.name, settings.schema_registry)
    ensure_topics(settings.kafka, [topics.EXPERIENCE])
    producer = make_producer(settings.kafka)
    for r in recs:
        producer.produce(topics.EXPERIENCE.name, key=r["task_id"].encode(), value=codec.encode(r))
    assert producer.flush(30) == 0
    ids = {r["experience_id"] for r in recs}
    got = [codec.decode(m.value()) for m in read_to_end(settings.kafka, topics.EXPERIENCE.name) if m.value()]
    mine = [r for r in got if r["experience_id"] in ids]
    assert len({r["experience_id"] for r in mine}) == len(ids)
    return mine  # type: ignore[return-value]


def _plaintexts() -> list[str]:
    return [*SECRETS.values(), *COMMENT.values()]


def _aos(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {**{k: v for k, v in os.environ.items() if not k.startswith("AOS_")}, **env}
    out = subprocess.run(
        [sys.executable, "-m", "aos_gateway.cli.main", *args], env=full, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out


def test_experience_is_encrypted_per_tenant_at_rest_and_keys_rotate(settings: Settings, tmp_path: Path) -> None:
    from aos_gateway.experience import stats
    from aos_gateway.experience.hot import HotStore
    from aos_gateway.registry.store import connect, migrate

    ring_file = tmp_path / "keyring.json"
    Keyring.from_json({ACME: [new_key()], "*": [new_key()]}).save(ring_file)  # acme's own key; globex derived
    secured = settings.model_copy(
        update={"security": SecuritySettings(keyring=str(ring_file))}  # type: ignore[arg-type]
    )
    now = int(time.time() * 1000)
    sent = [_experience(t, i, now) for t in (ACME, GLOBEX) for i in range(3)]
    sent += [_feedback(t, now) for t in (ACME, GLOBEX)]
    recs = _through_kafka(settings, sent)

    # -- written by the stores' own writers -------------------------------------------------------
    cold_dir = tmp_path / "cold"
    cold = ColdStore(cold_dir, ExperienceSealer.from_settings(secured))
    assert cold.write(recs) == len(recs)
    with HotStore.from_settings(settings) as hot:
        assert hot.write(recs) == len(recs)
    migrate(settings.postgres.conninfo())
    with connect(settings.postgres.conninfo()) as conn:
        stats.apply(conn, recs, lambda _r: None)

    # -- what each store holds, read without any key ----------------------------------------------
    files = sorted(cold_dir.rglob("*.parquet"))
    assert files
    raw_rows = [row for f in files for row in pq.read_table(f).to_pylist()]
    assert len(raw_rows) == len(recs)
    raw_text = json.dumps(raw_rows, default=str)
    blob = b"".join(f.read_bytes() for f in files)
    for secret in _plaintexts():
        assert secret not in raw_text and secret.encode() not in blob
    for row in raw_rows:
        meta = dict(row["metadata"])
        if row["error"]:
            assert is_token(row["error"])
        assert is_token(meta.get("role") or meta.get("comment"))
        assert row["tenant"] in (ACME, GLOBEX) and row["outcome"] in ("FAILED",)  # structure stays readable
    deadline = time.monotonic() + 30  # QuestDB applies WAL writes asynchronously
    while True:
        with hot._pg() as qconn:
            qrows = qconn.execute("SELECT * FROM aos_experience WHERE tenant IN (%s, %s)", (ACME, GLOBEX)).fetchall()
        if len(qrows) == len(recs) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert len(qrows) == len(recs)
    with connect(settings.postgres.conninfo()) as conn:
        pg_rows = conn.execute(
            "SELECT row_to_json(s)::text FROM agent_stats s WHERE tenant IN (%s, %s)", (ACME, GLOBEX)
        ).fetchall()
    assert pg_rows
    for secret in _plaintexts():
        assert all(secret not in str(r) for r in qrows)
        assert all(secret not in r[0] for r in pg_rows)

    # -- the API opens it again, for the tenants whose keys it has ---------------------------------
    opened = {r["experience_id"]: r for r in to_records(cold.read())}
    assert opened[f"{ACME}-e1"]["error"] == f"agent failed on: {SECRETS[ACME]}"
    assert opened[f"{GLOBEX}-e2"]["metadata"]["role"] == SECRETS[GLOBEX]
    fb = next(r for r in opened.values() if r["tenant"] == GLOBEX and r["metadata"].get("source") == "feedback")
    assert fb["metadata"]["comment"] == COMMENT[GLOBEX]

    # a keyring holding only acme's key cannot read globex's rows, nor can another master
    acme_only = Keyring.from_json({ACME: Keyring.load(ring_file).to_json()[ACME]})
    with pytest.raises(DecryptionError):
        ColdStore(cold_dir, ExperienceSealer(acme_only)).read()
    with pytest.raises(DecryptionError):
        ColdStore(cold_dir, ExperienceSealer(Keyring.from_json({ACME: [new_key()], "*": [new_key()]}))).read()
    # ... and a token of one tenant does not open as another's
    token = next(r["error"] for r in raw_rows if r["tenant"] == ACME and r["error"])
    ring = Keyring.load(ring_file)
    with pytest.raises(DecryptionError):
        ring.decrypt(GLOBEX, token, f"{ACME}-e0|error")

    # -- rotation with the real CLI: a new key for acme, everything re-encrypted, the old key retired --
    env = {"AOS_SECURITY__KEYRING": str(ring_file), "AOS_EXPERIENCE__COLD_DIR": str(cold_dir)}
    old_acme_kid = ring.current_key_id(ACME)
    _aos(env, "security", "keys", "new", "--tenant", ACME)
    new_acme_kid = Keyring.load(ring_file).current_key_id(ACME)
    assert new_acme_kid != old_acme_kid
    status = _aos(env, "security", "keys", "status").stdout
    assert old_acme_kid in status and "older key" in status
    _aos(env, "security", "keys", "rotate")
    _aos(env, "security", "keys", "retire")
    rotated = ColdStore(cold_dir, ExperienceSealer(Keyring.load(ring_file)))
    kids = rotated.sealer.key_ids(rotated.read(opened=False))  # type: ignore[union-attr]
    assert old_acme_kid not in kids and kids[new_acme_kid] == 7  # acme: 3 errors + 3 roles + 1 comment
    again = {r["experience_id"]: r for r in to_records(rotated.read())}
    assert again == opened
    blob = b"".join(f.read_bytes() for f in cold_dir.rglob("*.parquet"))
    assert all(s.encode() not in blob for s in _plaintexts())
