"""Experience sealed in the cold store: what the Parquet files hold, what reads give back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from aos_gateway.experience.cold import ColdStore, to_records
from aos_gateway.security.crypto import DecryptionError, Keyring, KeyringError, is_token, new_key
from aos_gateway.security.redact import Redactor
from aos_gateway.security.sealing import ExperienceSealer
from aos_gateway.settings import SecuritySettings, Settings

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z
SECRET = "Dr. Jane Roe's private question about her invoice"


def _rec(i: int, tenant: str, **over: Any) -> Any:
    rec: dict[str, Any] = {
        "experience_id": f"{tenant}-e{i}",
        "task_id": f"t{i}",
        "tenant": tenant,
        "kind": "STEP",
        "plan_id": f"p{i}",
        "agent_id": "a1",
        "agent_ids": ["a1"],
        "outcome": "FAILED",
        "latency_ms": 100,
        "cost": 0.5,
        "task_vector": None,
        "error": f"agent said: {SECRET} ({tenant})",
        "feedback_score": None,
        "occurred_at": T0 + i,
        "trace_id": None,
        "metadata": {"step_id": "s1", "role": f"{SECRET} role", "attempts": "1", "weights.matching": "3"},
    }
    rec.update(over)
    return rec


def _raw_values(root: Path) -> list[Any]:
    """Every row of every part file, read by pyarrow alone (no keys)."""
    rows: list[Any] = []
    for p in sorted(root.rglob("*.parquet")):
        rows += pq.read_table(p).to_pylist()
    return rows


@pytest.fixture
def ring() -> Keyring:
    return Keyring.from_json({"acme": [new_key()], "*": [new_key()]})


def test_user_text_is_encrypted_in_the_files_and_opened_on_read(tmp_path: Path, ring: Keyring) -> None:
    store = ColdStore(tmp_path, ExperienceSealer(ring))
    store.write([_rec(1, "acme"), _rec(2, "globex")])
    raw = _raw_values(tmp_path)
    assert len(raw) == 2
    for row in raw:
        assert is_token(row["error"])
        meta = dict(row["metadata"])
        assert is_token(meta["role"])
        # structure stays readable: ids, outcome, numbers, the known metadata keys
        assert meta["step_id"] == "s1" and meta["attempts"] == "1" and meta["weights.matching"] == "3"
        assert row["outcome"] == "FAILED" and row["latency_ms"] == 100
    blob = b"".join(p.read_bytes() for p in tmp_path.rglob("*.parquet"))
    assert SECRET.encode() not in blob
    recs = {r["experience_id"]: r for r in to_records(store.read())}
    assert recs["acme-e1"]["error"] == f"agent said: {SECRET} (acme)"
    assert recs["globex-e2"]["metadata"]["role"] == f"{SECRET} role"


def test_without_the_keys_reads_fail_and_a_reader_without_a_sealer_sees_tokens(tmp_path: Path, ring: Keyring) -> None:
    ColdStore(tmp_path, ExperienceSealer(ring)).write([_rec(1, "acme")])
    other = Keyring.from_json({"acme": [new_key()]})
    with pytest.raises(DecryptionError):
        ColdStore(tmp_path, ExperienceSealer(other)).read()
    plain_reader = ColdStore(tmp_path, None).read()
    assert is_token(plain_reader.column("error")[0].as_py())
    redacting_only = ColdStore(tmp_path, ExperienceSealer(None, Redactor())).read()
    assert is_token(redacting_only.column("error")[0].as_py())  # no keys: sealed values stay sealed
    with pytest.raises(KeyringError, match="set AOS_SECURITY__KEYRING"):
        ExperienceSealer(None, Redactor()).open("acme", "acme-e1", "error", plain_reader.column("error")[0].as_py())


def test_rotation_reseals_every_day_and_old_plain_rows(tmp_path: Path, ring: Keyring) -> None:
    ColdStore(tmp_path, None).write([_rec(0, "acme")])  # before encryption was on: plain
    ColdStore(tmp_path, ExperienceSealer(ring)).write([_rec(1, "acme"), _rec(2, "globex", occurred_at=T0 + 86_400_000)])
    rotated, kid = ring.with_new_key("acme")
    store = ColdStore(tmp_path, ExperienceSealer(rotated))
    before = store.sealer.key_ids(store.read(opened=False))  # type: ignore[union-attr]
    assert before["plain"] == 2 and kid not in before
    assert sum(store.reseal(d) for d in store.days()) == 3
    after = store.sealer.key_ids(store.read(opened=False))  # type: ignore[union-attr]
    assert "plain" not in after and after[kid] == 4  # acme's two rows, error + role each
    assert after[rotated.current_key_id("globex")] == 2
    # the older key can go now: everything opens with the newest keys alone
    trimmed = ColdStore(tmp_path, ExperienceSealer(rotated.without_old_keys()))
    recs = {r["experience_id"]: r for r in to_records(trimmed.read())}
    assert recs["acme-e0"]["error"] == recs["acme-e1"]["error"] == f"agent said: {SECRET} (acme)"
    assert recs["globex-e2"]["error"] == f"agent said: {SECRET} (globex)"
    assert len(list(tmp_path.rglob("*.parquet"))) == 2  # one merged file per day


def test_compaction_keeps_the_tokens(tmp_path: Path, ring: Keyring) -> None:
    store = ColdStore(tmp_path, ExperienceSealer(ring))
    store.write([_rec(1, "acme")])
    store.write([_rec(2, "acme")])
    assert store.compact("2024-05-01") == 2
    assert all(is_token(r["error"]) for r in _raw_values(tmp_path))
    assert {r["error"] for r in to_records(store.read())} == {f"agent said: {SECRET} (acme)"}


def test_redaction_alone_and_then_encryption(tmp_path: Path, ring: Keyring) -> None:
    pii = _rec(1, "acme", error="mail jane@example.com from 10.0.0.7")
    ColdStore(tmp_path / "r", ExperienceSealer(None, Redactor())).write([pii])
    assert _raw_values(tmp_path / "r")[0]["error"] == "mail [EMAIL] from [IP]"
    both = ColdStore(tmp_path / "b", ExperienceSealer(ring, Redactor()))
    both.write([pii])
    assert to_records(both.read())[0]["error"] == "mail [EMAIL] from [IP]"


def test_the_default_sealer_follows_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aos_gateway import settings as settings_mod

    assert ExperienceSealer.from_settings(Settings()) is None
    s = Settings(security=SecuritySettings(keyring=f'{{"*": ["{new_key()}"]}}', redact_pii=True))  # type: ignore[arg-type]
    sealer = ExperienceSealer.from_settings(s)
    assert sealer is not None and sealer.encrypts and sealer.redactor is not None
    monkeypatch.setattr(settings_mod, "get_settings", lambda: s)
    store = ColdStore(tmp_path)  # "settings": the process settings'
    assert store.sealer is not None and store.sealer.encrypts
    store.write([_rec(1, "acme")])
    assert is_token(_raw_values(tmp_path)[0]["error"])
