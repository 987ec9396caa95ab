from __future__ import annotations

import json
import types
import typing

import pytest

from aos_gateway.contracts import records
from aos_gateway.contracts.schemas import current_contracts, fingerprint
from aos_gateway.topics import CATALOG


def test_fingerprint_matches_the_avro_spec_test_vector() -> None:
    # Avro's own test suite: CRC-64-AVRO of the canonical form "null" is 7195948357588979594.
    assert int.from_bytes(fingerprint("null"), "little") == 7195948357588979594  # type: ignore[arg-type]


def test_every_catalog_topic_has_a_schema() -> None:
    names = set(current_contracts())
    for spec in CATALOG:
        assert spec.record in names, spec.name


def _avro_nullable(avro_type: object) -> bool:
    return isinstance(avro_type, list) and "null" in avro_type


def _py_nullable(tp: object) -> bool:
    return isinstance(tp, types.UnionType) and type(None) in typing.get_args(tp)


@pytest.mark.parametrize("name", sorted(records.RECORD_TYPES))
def test_python_records_mirror_the_avsc_files(name: str) -> None:
    schema = current_contracts()[name].json
    hints = typing.get_type_hints(records.RECORD_TYPES[name])
    avro_fields = {f["name"]: f["type"] for f in schema["fields"]}
    assert list(hints) == list(avro_fields), f"{name}: field names or order differ"
    for field, avro_type in avro_fields.items():
        assert _avro_nullable(avro_type) == _py_nullable(hints[field]), f"{name}.{field}: nullability differs"


def test_every_field_added_after_the_first_has_a_default() -> None:
    # Not a rule of Avro, but ours: only required identity fields lack defaults.
    for c in current_contracts().values():
        json.dumps(c.json)  # self-contained and serialisable
        assert c.json["namespace"].startswith("aos.") or c.name.startswith("aos.")
