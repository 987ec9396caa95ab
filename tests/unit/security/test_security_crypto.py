from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from aos_gateway.errors import ConfigError, StoreError
from aos_gateway.security.crypto import (
    TOKEN_PREFIX,
    DecryptionError,
    Keyring,
    KeyringError,
    is_token,
    key_id,
    new_key,
)


def _ring(**entries: list[str]) -> Keyring:
    return Keyring.from_json({k.replace("STAR", "*"): v for k, v in entries.items()})


def test_a_token_names_its_key_and_opens_only_for_its_tenant_and_context() -> None:
    ring = _ring(acme=[new_key()], globex=[new_key()])
    tok = ring.encrypt("acme", "my secret text", "e1|error")
    assert is_token(tok) and tok.startswith(TOKEN_PREFIX) and "secret" not in tok
    assert ring.token_key_id(tok) == ring.current_key_id("acme")
    assert ring.decrypt("acme", tok, "e1|error") == "my secret text"
    with pytest.raises(DecryptionError, match="no key"):
        ring.decrypt("globex", tok, "e1|error")  # another tenant's keys do not have its id
    with pytest.raises(DecryptionError, match="does not open"):
        ring.decrypt("acme", tok, "e2|error")  # moved to another record
    with pytest.raises(DecryptionError, match="does not open"):
        ring.decrypt("acme", tok, "e1|metadata.comment")  # moved to another field
    assert issubclass(DecryptionError, StoreError) and issubclass(KeyringError, ConfigError)


def test_the_same_plaintext_never_gives_the_same_token() -> None:
    ring = _ring(acme=[new_key()])
    assert ring.encrypt("acme", "x", "c") != ring.encrypt("acme", "x", "c")


def test_a_tampered_token_does_not_open() -> None:
    ring = _ring(acme=[new_key()])
    tok = ring.encrypt("acme", "hello", "c")
    kid, body = tok[len(TOKEN_PREFIX) :].split(":")
    raw = bytearray(base64.urlsafe_b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(DecryptionError):
        ring.decrypt("acme", f"{TOKEN_PREFIX}{kid}:{base64.urlsafe_b64encode(bytes(raw)).decode()}", "c")


def test_the_wildcard_derives_a_distinct_key_per_tenant() -> None:
    master = new_key()
    ring = _ring(STAR=[master])
    a, b = ring.keys_for("acme")[0], ring.keys_for("globex")[0]
    assert a.secret != b.secret and a.kid != b.kid
    assert a.kid != key_id(base64.b64decode(master))  # the master itself never encrypts
    tok = ring.encrypt("acme", "t", "c")
    with pytest.raises(DecryptionError):
        ring.decrypt("globex", tok, "c")
    # another keyring with the same master opens it (workers share the keyring)
    assert _ring(STAR=[master]).decrypt("acme", tok, "c") == "t"


def test_a_tenant_without_a_key_is_a_config_error() -> None:
    with pytest.raises(KeyringError, match="no key for tenant 'globex'"):
        _ring(acme=[new_key()]).encrypt("globex", "x", "c")


def test_rotation_newest_encrypts_all_decrypt_and_old_keys_go_last() -> None:
    ring = _ring(acme=[new_key()])
    old = ring.encrypt("acme", "before", "c")
    ring2, kid = ring.with_new_key("acme")
    assert ring2.current_key_id("acme") == kid != ring.current_key_id("acme")
    new = ring2.encrypt("acme", "after", "c")
    assert ring2.token_key_id(new) == kid
    assert ring2.decrypt("acme", old, "c") == "before" and ring2.decrypt("acme", new, "c") == "after"
    trimmed = ring2.without_old_keys()
    assert trimmed.decrypt("acme", new, "c") == "after"
    with pytest.raises(DecryptionError, match="no key"):
        trimmed.decrypt("acme", old, "c")


def test_a_new_key_for_a_tenant_on_the_wildcard_keeps_its_derived_key() -> None:
    ring = _ring(STAR=[new_key()])
    old = ring.encrypt("acme", "derived", "c")
    ring2, kid = ring.with_new_key("acme")
    assert ring2.current_key_id("acme") == kid
    assert ring2.decrypt("acme", old, "c") == "derived"
    ring3, _ = ring2.with_new_key("*")  # a new master: other tenants' keys change, acme's own entry does not
    assert ring3.current_key_id("acme") == kid
    assert ring3.current_key_id("globex") != ring2.current_key_id("globex")


def test_keyring_file_is_written_0600_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    ring = _ring(acme=[new_key(), new_key()], STAR=[new_key()])
    ring.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = Keyring.load(path)
    assert again.to_json() == ring.to_json() and again.tenants == ["*", "acme"]
    assert Keyring.from_setting(SecretStr(str(path))) is not None
    inline = Keyring.from_setting(SecretStr(json.dumps({"acme": new_key()})))
    assert inline is not None and inline.tenants == ["acme"]
    assert Keyring.from_setting(None) is None and Keyring.from_setting(SecretStr(" ")) is None


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ([], "expected a JSON object"),
        ({}, "expected a JSON object"),
        ({"acme": []}, "needs a key"),
        ({"acme": ["not base64!"]}, "not base64"),
        ({"acme": [base64.b64encode(b"short").decode()]}, "must be 32 bytes"),
        ({"": [new_key()]}, "non-empty"),
    ],
)
def test_malformed_keyrings_are_refused_without_showing_keys(raw: object, match: str) -> None:
    with pytest.raises(KeyringError, match=match) as info:
        Keyring.from_json(raw)
    if isinstance(raw, dict):
        for keys in raw.values():
            for k in keys if isinstance(keys, list) else [keys]:
                assert not k or str(k) not in str(info.value)


def test_unreadable_keyring_file(tmp_path: Path) -> None:
    with pytest.raises(KeyringError, match="cannot read"):
        Keyring.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(KeyringError, match="not JSON"):
        Keyring.load(tmp_path / "bad.json")
