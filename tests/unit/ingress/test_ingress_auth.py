"""API keys -> tenants, from JSON or a file; which addresses need keys."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from aos_gateway.errors import ConfigError
from aos_gateway.ingress import auth
from aos_gateway.ingress.auth import ApiKeys, check_bind, is_loopback
from aos_gateway.ingress.tasks import RequestError
from aos_gateway.settings import IngressSettings, Settings


def _keys(value: str | None, tenant: str = "default") -> ApiKeys:
    secret = SecretStr(value) if value is not None else None
    return ApiKeys.from_settings(Settings(ingress=IngressSettings(api_keys=secret), tenant=tenant))


def test_keys_from_json_map_to_their_tenants() -> None:
    keys = _keys('{"k1": "tenant-a", "k2": "tenant-b"}')
    assert keys.configured and keys.tenants == {"tenant-a", "tenant-b"}
    assert keys.tenant_for("k1") == "tenant-a" and keys.tenant_for(" k2 ") == "tenant-b"
    for bad in (None, "", "k3"):
        with pytest.raises(RequestError) as err:
            keys.tenant_for(bad)
        assert err.value.status == 401


def test_without_keys_everyone_is_the_default_tenant() -> None:
    keys = _keys(None, tenant="acme")
    assert not keys.configured and keys.tenant_for(None) == "acme" and keys.tenant_for("junk") == "acme"
    assert not _keys("   ").configured


def test_the_environment_form_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOS_INGRESS__API_KEYS", '{"key1":"tenant-a"}')
    monkeypatch.setenv("AOS_INGRESS__PORT", "9099")
    s = Settings()
    assert s.ingress.port == 9099
    assert ApiKeys.from_settings(s).tenant_for("key1") == "tenant-a"
    assert "key1" not in repr(s.ingress)  # a secret


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ('{"secret-key": ', "not JSON"),
        ("{}", "at least one key"),
        ('{"secret-key": ""}', "tenant of key #1"),
        ('{"secret-key": 7}', "tenant of key #1"),
        ('{" secret-key": "a"}', "key #1"),
    ],
)
def test_bad_key_settings_say_why_without_showing_a_key(value: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        _keys(value)
    assert words in str(err.value) and "secret-key" not in str(err.value)


def test_keys_from_a_file_are_reloaded_when_it_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "_RECHECK_S", 0.0)
    path = tmp_path / "keys.json"
    path.write_text(json.dumps({"one": "a"}))
    keys = _keys(str(path))
    assert keys.tenant_for("one") == "a"

    def rewrite(text: str) -> None:
        path.write_text(text)
        later = time.time_ns() + 10**9 * (len(text) % 7 + 1)
        os.utime(path, ns=(later, later))

    rewrite(json.dumps({"two": "b"}))
    assert keys.tenant_for("two") == "b"
    with pytest.raises(RequestError):
        keys.tenant_for("one")
    rewrite("{broken")  # a broken file keeps the keys in force
    assert keys.tenant_for("two") == "b"


def test_a_missing_or_broken_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        _keys(str(tmp_path / "absent.json"))
    (tmp_path / "bad.json").write_text("secret-stuff")
    with pytest.raises(ConfigError, match="is not JSON") as err:
        _keys(str(tmp_path / "bad.json"))
    assert "secret-stuff" not in str(err.value)


def test_which_addresses_are_loopback() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LOCALHOST"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "example.com", ""):
        assert not is_loopback(host), host


def test_only_loopback_may_be_served_without_keys_unless_insecure() -> None:
    none, some = _keys(None), _keys('{"k": "a"}')
    check_bind("127.0.0.1", none, insecure=False)
    check_bind("0.0.0.0", some, insecure=False)
    check_bind("0.0.0.0", none, insecure=True)
    with pytest.raises(ConfigError, match="--insecure"):
        check_bind("0.0.0.0", none, insecure=False)
