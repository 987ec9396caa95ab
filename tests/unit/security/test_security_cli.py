"""``aos security keys | cards | redact | acls show`` without a broker."""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from aos_gateway.cli.main import main
from aos_gateway.experience.cold import ColdStore, to_records
from aos_gateway.security import cards
from aos_gateway.security.crypto import Keyring
from aos_gateway.settings import get_settings

T0 = 1_714_521_600_000


def _rec(i: int, tenant: str) -> Any:
    return {
        "experience_id": f"{tenant}-{i}",
        "task_id": f"t{i}",
        "tenant": tenant,
        "kind": "EXECUTION",
        "plan_id": None,
        "agent_id": None,
        "agent_ids": [],
        "outcome": "FAILED",
        "latency_ms": 1,
        "cost": 0.0,
        "task_vector": None,
        "error": f"secret of {tenant}",
        "feedback_score": None,
        "occurred_at": T0 + i,
        "trace_id": None,
        "metadata": {"comment": "call me at +44 20 7946 0958"},
    }


def test_keys_new_status_rotate_retire(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ring_file = env / "keyring.json"
    assert main(["security", "keys", "new", "--file", str(ring_file)]) == 0
    assert stat.S_IMODE(ring_file.stat().st_mode) == 0o600 and list(json.loads(ring_file.read_text())) == ["*"]
    monkeypatch.setenv("AOS_SECURITY__KEYRING", str(ring_file))
    get_settings.cache_clear()
    ColdStore(env / "cold", None).write([_rec(0, "acme")])  # written before encryption: plain
    ColdStore(env / "cold").write([_rec(1, "acme"), _rec(2, "globex")])  # the settings' keyring
    capsys.readouterr()
    assert main(["security", "keys", "status"]) == 0
    out = capsys.readouterr().out
    assert "plain" in out and "newest" in out
    assert main(["security", "keys", "retire"]) == 1  # plain values left: refused
    assert "rotate` first" in capsys.readouterr().err
    assert main(["security", "keys", "new", "--tenant", "acme"]) == 0
    get_settings.cache_clear()
    capsys.readouterr()
    assert main(["security", "keys", "status"]) == 0
    assert "older key" in capsys.readouterr().out
    assert main(["security", "keys", "rotate"]) == 0
    assert main(["security", "keys", "status"]) == 0
    out = capsys.readouterr().out
    assert "older key" not in out and "plain" not in out
    assert main(["security", "keys", "retire"]) == 0
    ring = Keyring.load(ring_file)
    assert all(len(v) == 1 for v in ring.to_json().values()) and ring.tenants == ["*", "acme"]
    get_settings.cache_clear()
    recs = {r["experience_id"]: r for r in to_records(ColdStore(env / "cold").read())}
    assert recs["acme-0"]["error"] == "secret of acme" and recs["globex-2"]["error"] == "secret of globex"
    assert recs["acme-1"]["metadata"]["comment"] == "call me at +44 20 7946 0958"


def test_keys_need_a_keyring(env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["security", "keys", "rotate"]) == 1
    assert "no keyring" in capsys.readouterr().err
    assert main(["security", "keys", "new"]) == 1
    assert "--file PATH" in capsys.readouterr().err
    monkeypatch.setenv("AOS_SECURITY__KEYRING", '{"*": ["' + "A" * 43 + '="]}')
    get_settings.cache_clear()
    assert main(["security", "keys", "new"]) == 1
    err = capsys.readouterr().err
    assert "inline JSON" in err and "AAAA" not in err


def test_cards_keygen_and_sign(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, trust = env / "calc.pem", env / "trust.json"
    assert main(["security", "cards", "keygen", "--key", str(key), "--agent", "calc", "--trust", str(trust)]) == 0
    pub = capsys.readouterr().out.strip()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and "PRIVATE" not in pub
    assert json.loads(trust.read_text()) == {"agents": {"calc": [pub]}}
    assert main(["security", "cards", "keygen", "--key", str(key), "--agent", "calc"]) == 1  # never overwritten
    assert "never overwritten" in capsys.readouterr().err
    src = env / "cards.jsonl"
    src.write_text(json.dumps({"agent_id": "calc", "description": "adds", "tenant": "acme"}) + "\n")
    assert main(["security", "cards", "sign", str(src), "--key", str(key)]) == 0
    signed = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    store = cards.TrustStore.load(trust)
    assert store.check(signed[0]) is None
    # what `aos agents register` does to the file keeps the signature valid
    from aos_gateway.matching.cards import card_from_json

    assert store.check(card_from_json(signed[0])) is None


def test_redact_and_acls_show(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["security", "redact", "mail a@b.io"]) == 0
    assert capsys.readouterr().out == "mail [EMAIL]\n"
    assert main(["security", "acls", "show", "--agent", "calc", "--no-services"]) == 0
    out = capsys.readouterr().out
    assert "User:agent.calc" in out and "aos.agents.calc.invocations" in out and "aos-worker" not in out
    assert main(["security", "users", "apply", "--no-services"]) == 2  # a usage error
    assert "no principals" in capsys.readouterr().err


def test_keys_rotate_tenant_rotates_only_that_tenant(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review: `keys rotate --tenant acme` rotated every tenant; `--tenant` with status was ignored."""
    from aos_gateway.security.crypto import is_token

    ring = env / "keyring.json"
    assert main(["security", "keys", "new", "--file", str(ring)]) == 0
    ColdStore(env / "cold", None).write([_rec(0, "acme"), _rec(1, "globex")])  # plain: written before the keyring
    monkeypatch.setenv("AOS_SECURITY__KEYRING", str(ring))
    get_settings.cache_clear()
    assert main(["security", "keys", "rotate", "--tenant", "acme"]) == 0
    rows = ColdStore(env / "cold", None).read(opened=False).to_pylist()
    errors = {r["tenant"]: r["error"] for r in rows}
    assert is_token(errors["acme"]) and errors["globex"] == "secret of globex"
    capsys.readouterr()
    assert main(["security", "keys", "status", "--tenant", "acme"]) == 2  # not silently ignored
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--tenant applies to" in err[0]
