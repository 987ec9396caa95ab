from __future__ import annotations

import copy
import io
from typing import Any

import fastavro
import pytest

from aos_gateway.contracts.compat import check_catalog, check_evolution, problems, unreleased
from aos_gateway.contracts.schemas import current_contracts
from aos_gateway.errors import SchemaCompatibilityError

BASE: dict[str, Any] = {
    "type": "record",
    "name": "Thing",
    "namespace": "aos.test",
    "fields": [{"name": "id", "type": "string"}, {"name": "n", "type": "int", "default": 0}],
}


def _with(fields: list[dict[str, Any]]) -> dict[str, Any]:
    s = copy.deepcopy(BASE)
    s["fields"] = fields
    return s


def test_adding_a_field_with_a_default_is_compatible_both_ways() -> None:
    new = _with([*BASE["fields"], {"name": "extra", "type": ["null", "string"], "default": None}])
    assert problems(BASE, new) == []


def test_adding_a_field_without_default_breaks_backward() -> None:
    new = _with([*BASE["fields"], {"name": "extra", "type": "string"}])
    found = problems(BASE, new)
    assert len(found) == 1 and found[0].startswith("backward")
    with pytest.raises(SchemaCompatibilityError):
        check_evolution(BASE, new)


def test_removing_a_field_without_default_breaks_forward() -> None:
    new = _with([{"name": "n", "type": "int", "default": 0}])
    found = problems(BASE, new)
    assert len(found) == 1 and found[0].startswith("forward")


def test_changing_a_type_breaks_both() -> None:
    new = _with([{"name": "id", "type": "string"}, {"name": "n", "type": "string", "default": ""}])
    assert [p.split(":")[0] for p in problems(BASE, new)] == ["backward", "forward"]


def test_the_rules_match_what_fastavro_can_actually_read() -> None:
    new = _with([*BASE["fields"], {"name": "extra", "type": ["null", "string"], "default": None}])
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(BASE), {"id": "a", "n": 3})
    buf.seek(0)
    assert fastavro.schemaless_reader(buf, fastavro.parse_schema(BASE), fastavro.parse_schema(new)) == {
        "id": "a",
        "n": 3,
        "extra": None,
    }


def test_current_schemas_are_compatible_with_every_released_version() -> None:
    assert check_catalog() == {}


def test_every_current_schema_is_released() -> None:
    # A schema change must be snapshotted (python -m aos_gateway.contracts.release), which checks it first.
    assert unreleased() == [], "run: python -m aos_gateway.contracts.release"
    assert set(current_contracts())
