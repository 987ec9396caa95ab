"""The Avro contracts on disk, loaded once.

The ``.avsc`` files in the top-level ``schemas/`` folder are the contract; a file is named
after the record's full name (``aos.tasks.TaskRequest.avsc``) and may refer to other
records by full name. Here each is made self-contained (references inlined), parsed for
fastavro and fingerprinted (CRC-64-AVRO of the parsing canonical form). Released versions
live in ``schemas/released/`` so old data stays readable and changes can be checked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastavro
import fastavro.schema

from aos_gateway.errors import ConfigError

SINGLE_OBJECT_MAGIC = b"\xc3\x01"


@dataclass(frozen=True)
class Contract:
    """One record schema: its JSON, its fastavro form and its fingerprint."""

    name: str
    json: dict[str, Any]
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO, as in single-object encoding
    released: bool = False

    @property
    def json_text(self) -> str:
        return json.dumps(self.json, separators=(",", ":"))


def schema_dir() -> Path:
    """Where the .avsc files are: inside the wheel, or the checkout's top-level folder."""
    packaged = resources.files("aos_gateway") / "_schemas"
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / "schemas"
    if checkout.is_dir():
        return checkout
    raise ConfigError("the Avro schemas are missing: reinstall aos-gateway")


def fingerprint(schema_json: dict[str, Any]) -> bytes:
    """CRC-64-AVRO fingerprint of a schema's parsing canonical form (little-endian bytes)."""
    parsed = fastavro.parse_schema(schema_json, _write_hint=False)
    canonical = fastavro.schema.to_parsing_canonical_form(parsed)
    return bytes.fromhex(fastavro.schema.fingerprint(canonical, "CRC-64-AVRO"))


def _inline(node: Any, raw: dict[str, dict[str, Any]], seen: set[str]) -> Any:
    """Replace references to other files' records by their definition (first use only)."""
    if isinstance(node, str):
        if node in raw and node not in seen:
            seen.add(node)
            return _inline(raw[node], raw, seen)
        return node
    if isinstance(node, list):
        return [_inline(n, raw, seen) for n in node]
    if isinstance(node, dict):
        if node.get("type") in ("record", "enum", "fixed"):
            full = _full_name(node)
            seen.add(full)
        out = dict(node)
        if "fields" in out:
            out["fields"] = [{**f, "type": _inline(f["type"], raw, seen)} for f in out["fields"]]
        for key in ("items", "values"):
            if key in out:
                out[key] = _inline(out[key], raw, seen)
        return out
    return node


def _full_name(node: dict[str, Any]) -> str:
    name = str(node["name"])
    ns = node.get("namespace")
    return name if "." in name or not ns else f"{ns}.{name}"


def _read_dir(folder: Path) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(folder.glob("*.avsc")):
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path.name}: not valid JSON: {exc}") from exc
        out[_full_name(doc)] = doc
    return out


def _contract(name: str, doc: dict[str, Any], raw: dict[str, dict[str, Any]], released: bool) -> Contract:
    full = _inline(doc, raw, set())
    try:
        parsed = fastavro.parse_schema(full, _write_hint=False)
    except Exception as exc:  # fastavro raises several types for bad schemas
        raise ConfigError(f"schema {name} is invalid: {exc}") from exc
    return Contract(name=name, json=full, parsed=parsed, fingerprint=fingerprint(full), released=released)


@lru_cache(maxsize=1)
def current_contracts() -> dict[str, Contract]:
    """Every current record schema by full name."""
    raw = _read_dir(schema_dir())
    return {name: _contract(name, doc, raw, released=False) for name, doc in raw.items()}


@lru_cache(maxsize=1)
def released_contracts() -> list[Contract]:
    """Every released version (self-contained files under ``schemas/released/``)."""
    folder = schema_dir() / "released"
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("*.avsc")):
        doc = json.loads(path.read_text(encoding="utf-8"))
        out.append(_contract(_full_name(doc), doc, {}, released=True))
    return out


def contract(name: str) -> Contract:
    """The current schema of a record, by full name (``aos.tasks.TaskRequest``)."""
    try:
        return current_contracts()[name]
    except KeyError:
        raise ConfigError(f"no Avro schema named {name!r}") from None


@lru_cache(maxsize=1)
def contracts_by_fingerprint() -> dict[bytes, Contract]:
    """Every known writer schema (current and released) by fingerprint."""
    out = {c.fingerprint: c for c in released_contracts()}
    out.update({c.fingerprint: c for c in current_contracts().values()})
    return out
