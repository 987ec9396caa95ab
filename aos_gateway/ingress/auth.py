"""API keys -> tenants, and which addresses may be served without any keys.

Each key belongs to one tenant; a request's task is that tenant's, and a task is readable only
by its tenant, so a key can neither submit for nor read another tenant. Keys come from
``AOS_INGRESS__API_KEYS``: a JSON object ``{"KEY": "TENANT"}``, or the path of a file holding
one, which is re-read when it changes (keys rotate without a restart; a broken file keeps the
keys in force and says so in the log). Keys are kept only as SHA-256 digests, and no error
message ever shows one.

With no keys configured every task is the default tenant's, and :func:`check_bind` refuses any
address but loopback unless the operator says ``--insecure``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aos_gateway.errors import ConfigError
from aos_gateway.ingress.tasks import RequestError
from aos_gateway.settings import Settings

log = logging.getLogger("aos_gateway.ingress")

_ENV = "AOS_INGRESS__API_KEYS"
_RECHECK_S = 1.0


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(raw: Any, where: str) -> dict[str, str]:
    """Key digest -> tenant from a decoded JSON object; ``where`` names the source in errors."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(f'{where}: expected a JSON object {{"KEY": "TENANT", ...}} with at least one key')
    out: dict[str, str] = {}
    for n, (key, tenant) in enumerate(raw.items(), 1):
        if not isinstance(key, str) or not key.strip() or key != key.strip():
            raise ConfigError(f"{where}: key #{n} is empty or has surrounding spaces")
        if not isinstance(tenant, str) or not tenant.strip():
            raise ConfigError(f"{where}: the tenant of key #{n} must be a non-empty string")
        out[_digest(key)] = tenant.strip()
    return out


def _read_file(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{_ENV}: no such file: {path}") from None
    except OSError as exc:
        raise ConfigError(f"{_ENV}: cannot read {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:  # the message quotes no content, only where
        raise ConfigError(f"{_ENV}: {path} is not JSON (line {exc.lineno}, column {exc.colno})") from None
    return parse_keys(raw, str(path))


class ApiKeys:
    """Which tenant a key belongs to; without keys, every request is the default tenant's."""

    def __init__(
        self, keys: Mapping[str, str] | None = None, *, path: Path | None = None, default_tenant: str = "default"
    ) -> None:
        """``keys``: plain key -> tenant; or ``path``: a JSON file of them (watched for changes)."""
        self.default_tenant = default_tenant
        self._path = path
        self._digests: dict[str, str] = parse_keys(dict(keys), "api keys") if keys else {}
        self._mtime: int | None = None
        self._checked = 0.0
        if path is not None:
            self._mtime = self._stat()
            self._digests = _read_file(path)

    @classmethod
    def from_settings(cls, settings: Settings) -> ApiKeys:
        secret = settings.ingress.api_keys
        value = secret.get_secret_value().strip() if secret is not None else ""
        if not value:
            return cls(default_tenant=settings.tenant)
        if value.startswith("{"):
            try:
                raw = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ConfigError(f'{_ENV}: not JSON (column {exc.colno}); expected {{"KEY": "TENANT"}}') from None
            out = cls(default_tenant=settings.tenant)
            out._digests = parse_keys(raw, _ENV)
            return out
        return cls(path=Path(value).expanduser(), default_tenant=settings.tenant)

    @property
    def configured(self) -> bool:
        return bool(self._digests) or self._path is not None

    @property
    def tenants(self) -> set[str]:
        return set(self._digests.values())

    def tenant_for(self, key: str | None) -> str:
        """The tenant of a key (or the default tenant when no keys are configured).

        Raises:
            RequestError: 401, the key is missing or unknown.
        """
        if not self.configured:
            return self.default_tenant
        self._maybe_reload()
        if not key:
            raise RequestError("missing API key: send `Authorization: Bearer <key>` or `X-API-Key: <key>`", 401)
        tenant = self._digests.get(_digest(key.strip()))
        if tenant is None:
            raise RequestError("invalid API key", 401)
        return tenant

    def _stat(self) -> int | None:
        assert self._path is not None
        try:
            return os.stat(self._path).st_mtime_ns
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < _RECHECK_S:
            return
        self._checked = now
        mtime = self._stat()
        if mtime == self._mtime:
            return
        self._mtime = mtime
        try:
            self._digests = _read_file(self._path)
        except ConfigError as exc:
            log.warning("API keys not reloaded, the keys in force stay: %s", exc)
            return
        log.info("API keys reloaded from %s: %d keys", self._path, len(self._digests))


def is_loopback(host: str) -> bool:
    """Whether an address to bind is reachable only from this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, keys: ApiKeys, insecure: bool) -> None:
    """Refuse to serve a non-loopback address without API keys, unless told ``--insecure``."""
    if keys.configured or insecure or is_loopback(host):
        return
    raise ConfigError(
        f"refusing to serve on {host} without API keys: anyone who reaches it could submit and read tasks; "
        f"set {_ENV}, bind 127.0.0.1, or pass --insecure"
    )
