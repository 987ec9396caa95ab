"""Schema evolution rules: a new version must read old data and old readers must read new data.

Uses Apache Avro's own reader/writer compatibility checker (the ``avro`` package), so the
rules are the specification's, not ours.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import avro.schema
from avro.compatibility import ReaderWriterCompatibilityChecker, SchemaCompatibilityType

from aos_gateway.contracts.schemas import Contract, current_contracts, released_contracts, schema_dir
from aos_gateway.errors import SchemaCompatibilityError


def _avro(schema_json: dict[str, Any]) -> avro.schema.Schema:
    return avro.schema.parse(json.dumps(schema_json))


def problems(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What breaks when ``old`` evolves into ``new`` (empty when fully compatible)."""
    checker = ReaderWriterCompatibilityChecker()  # type: ignore[no-untyped-call]
    out: list[str] = []
    old_s, new_s = _avro(old), _avro(new)
    backward = checker.get_compatibility(reader=new_s, writer=old_s)
    if backward.compatibility is not SchemaCompatibilityType.compatible:
        out.append(f"backward: the new schema cannot read old data: {'; '.join(sorted(backward.messages))}")
    forward = checker.get_compatibility(reader=old_s, writer=new_s)
    if forward.compatibility is not SchemaCompatibilityType.compatible:
        out.append(f"forward: old readers cannot read new data: {'; '.join(sorted(forward.messages))}")
    return out


def check_evolution(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Raise :class:`SchemaCompatibilityError` when the change is not full compatible."""
    found = problems(old, new)
    if found:
        raise SchemaCompatibilityError(" | ".join(found))


def check_catalog() -> dict[str, list[str]]:
    """Every current schema against every released version of the same record."""
    current = current_contracts()
    report: dict[str, list[str]] = {}
    for rel in released_contracts():
        cur: Contract | None = current.get(rel.name)
        if cur is None:
            report.setdefault(rel.name, []).append("released schema was removed")
            continue
        found = problems(rel.json, cur.json)
        if found:
            report.setdefault(rel.name, []).extend(found)
    return report


def release(folder: Path | None = None) -> list[Path]:
    """Snapshot every current schema not released yet (after checking it against the released ones)."""
    report = check_catalog()
    if report:
        raise SchemaCompatibilityError("; ".join(f"{k}: {' | '.join(v)}" for k, v in report.items()))
    target = folder or (schema_dir() / "released")
    target.mkdir(parents=True, exist_ok=True)
    known = {c.fingerprint for c in released_contracts()}
    written = []
    for c in current_contracts().values():
        if c.fingerprint in known:
            continue
        path = target / f"{c.name}.{c.fingerprint.hex()}.avsc"
        path.write_text(json.dumps(c.json, indent=2) + "\n", encoding="utf-8")
        written.append(path)
    released_contracts.cache_clear()
    return written


def unreleased() -> list[str]:
    """Current schemas whose exact version has no released snapshot."""
    known = {c.fingerprint for c in released_contracts()}
    return sorted(c.name for c in current_contracts().values() if c.fingerprint not in known)
