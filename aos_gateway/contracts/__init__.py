"""Avro contracts: schemas on disk, typed records, wire codecs and evolution checks."""

from __future__ import annotations

from aos_gateway.contracts.schemas import Contract, contract, current_contracts
from aos_gateway.contracts.wire import (
    ConfluentCodec,
    RecordCodec,
    SingleObjectCodec,
    codec_for,
)

__all__ = [
    "ConfluentCodec",
    "Contract",
    "RecordCodec",
    "SingleObjectCodec",
    "codec_for",
    "contract",
    "current_contracts",
]
