"""Connector configs (``connectors/*.json``) and Kafka Connect's REST API: apply, status.

Applying is idempotent: a connector whose config already equals the file is left alone; another
is created or updated with ``PUT /connectors/<name>/config`` (which does both). A distributed
worker answers 409 while its group rebalances (right after it starts, or after a config change):
requests are retried until ``timeout_s``.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from aos_gateway.errors import ConfigError, ConnectError

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class ConnectorConfig:
    """One connector: its name and config, as read from a file."""

    name: str
    config: dict[str, str]
    source: Path


def connectors_dir(override: Path | None = None) -> Path:
    """The folder of connector configs: ``override``, inside the wheel, or the checkout's ``connectors/``."""
    if override is not None:
        if not override.is_dir():
            raise ConfigError(f"connect.connectors_dir {override} is not a folder")
        return override
    packaged = resources.files("aos_gateway") / "_connectors"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "connectors"
    if checkout.is_dir():
        return checkout
    raise ConfigError("the connector configs are missing: reinstall aos-gateway or set AOS_CONNECT__CONNECTORS_DIR")


def load_configs(folder: Path) -> list[ConnectorConfig]:
    """Every ``*.json`` of ``folder`` (``{"name": ..., "config": {...}}``), sorted by file name.

    Raises:
        ConfigError: A file is not such an object, or two files name the same connector.
    """
    out: list[ConnectorConfig] = []
    for path in sorted(folder.glob("*.json")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: not readable JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not isinstance(doc.get("config"), dict):
            raise ConfigError(f'{path}: expected {{"name": "...", "config": {{...}}}}')
        conf = doc["config"]
        if "connector.class" not in conf:
            raise ConfigError(f"{path}: config has no connector.class")
        bad = [k for k, v in conf.items() if not isinstance(v, str)]
        if bad:
            raise ConfigError(f"{path}: config values must be strings (Connect's REST API): {bad}")
        if any(c.name == doc["name"] for c in out):
            raise ConfigError(f"{path}: connector {doc['name']} is defined twice")
        out.append(ConnectorConfig(doc["name"], dict(conf), path))
    if not out:
        raise ConfigError(f"no connector configs (*.json) in {folder}")
    return out


class NotConnectError(ConnectError):
    """The URL answers, but not as Kafka Connect's REST API does."""


class ConnectClient:
    """A small client of one Connect cluster's REST API."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        """
        Raises:
            ConfigError: ``url`` is not an http(s) URL with a host.
        """
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"AOS_CONNECT__URL {url!r} is not an http(s) URL (e.g. http://127.0.0.1:8083)")
        self.url = url.strip().rstrip("/")
        self.timeout_s = timeout_s

    def _not_connect(self, method: str, path: str, what: str) -> NotConnectError:
        return NotConnectError(
            f"{self.url} does not answer as Kafka Connect ({method} {path}: {what}); check AOS_CONNECT__URL"
        )

    def _call(self, method: str, path: str, body: Any = None, deadline: float | None = None) -> tuple[int, Any]:
        """One request, retried on 409 (rebalance) and refused connections until ``deadline``."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout_s
        data = None if body is None else json.dumps(body).encode("utf-8")
        delay = 0.25
        while True:
            req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
            req.add_header("Accept", "application/json")
            if data is not None:
                req.add_header("Content-Type", "application/json")
            try:
                with _OPENER.open(req, timeout=max(0.5, deadline - time.monotonic())) as resp:
                    raw = resp.read()
                    status = int(resp.status)
                try:
                    return status, json.loads(raw) if raw else None
                except ValueError:  # it answered, with something else than JSON: waiting will not help
                    raise self._not_connect(method, path, f"{status} with a body that is not JSON") from None
            except urllib.error.HTTPError as exc:
                raw = exc.read()
                try:
                    detail: Any = json.loads(raw) if raw else None
                except ValueError:
                    detail = raw.decode("utf-8", "replace")
                if exc.code == 409 and time.monotonic() < deadline:  # rebalancing: try again
                    time.sleep(delay)
                    delay = min(2.0, delay * 2)
                    continue
                if exc.code == 404:
                    return 404, detail
                msg = detail.get("message") if isinstance(detail, dict) else detail
                msg = " ".join(str(msg).split())[:200]  # one line, even when a web server answered a page
                raise ConnectError(f"Kafka Connect at {self.url}: {method} {path} -> {exc.code}: {msg}") from exc
            except (OSError, ValueError) as exc:
                if time.monotonic() < deadline:
                    time.sleep(delay)
                    delay = min(2.0, delay * 2)
                    continue
                raise ConnectError(
                    f"Kafka Connect does not answer at {self.url} ({exc}); start it with `aos dev up` "
                    "or set AOS_CONNECT__URL"
                ) from exc

    def apply(self, configs: list[ConnectorConfig]) -> dict[str, str]:
        """Create or update each connector; returns name -> ``created`` | ``updated`` | ``unchanged``.

        Raises:
            ConnectError: The worker refused a config (the message says why) or did not answer.
        """
        out: dict[str, str] = {}
        for c in configs:
            q = urllib.parse.quote(c.name, safe="")
            code, current = self._call("GET", f"/connectors/{q}/config")
            wanted = {**c.config, "name": c.name}
            if code == 200 and current == wanted:
                out[c.name] = "unchanged"
                continue
            put, _ = self._call("PUT", f"/connectors/{q}/config", c.config)
            if put == 404:
                raise self._not_connect("PUT", f"/connectors/{q}/config", "404 not found")
            out[c.name] = "created" if code == 404 else "updated"
        return out

    def status(self) -> dict[str, dict[str, Any]]:
        """Each connector's status: ``{"connector": {"state": ...}, "tasks": [{"id", "state", "trace"?}]}``."""
        path = "/connectors?expand=status"
        code, body = self._call("GET", path)
        if code == 404:
            raise self._not_connect("GET", path, "404 not found")
        if body is None:
            return {}
        if not isinstance(body, dict) or not all(isinstance(v, dict) for v in body.values()):
            raise self._not_connect("GET", path, f"a {type(body).__name__}, not an object of connectors")
        return {str(name): v.get("status") or {} for name, v in body.items()}

    def wait_running(self, names: list[str], timeout_s: float) -> dict[str, dict[str, Any]]:
        """Wait until each named connector and all its tasks are RUNNING.

        Raises:
            ConnectError: A task FAILED (with its trace's first line) or the wait timed out.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            st = self.status()
            pending = []
            for n in names:
                s = st.get(n)
                tasks = (s or {}).get("tasks", [])
                for t in tasks:
                    if t.get("state") == "FAILED":
                        trace = str(t.get("trace", "")).strip().splitlines()
                        raise ConnectError(f"connector {n} task {t.get('id')} FAILED: {trace[0] if trace else '?'}")
                if (
                    s is None
                    or s.get("connector", {}).get("state") != "RUNNING"
                    or not tasks
                    or any(t.get("state") != "RUNNING" for t in tasks)
                ):
                    pending.append(n)
            if not pending:
                return st
            if time.monotonic() >= deadline:
                raise ConnectError(f"connectors not RUNNING within {timeout_s:.0f}s: {pending} ({st})")
            time.sleep(0.5)

    def restart_failed(self, name: str) -> None:
        """Restart a connector's failed tasks (``POST /connectors/<name>/restart?onlyFailed=true``)."""
        q = urllib.parse.quote(name, safe="")
        self._call("POST", f"/connectors/{q}/restart?includeTasks=true&onlyFailed=true")
