"""The local development stack (Kafka + PostgreSQL as real processes) behind ``aos dev``."""

from __future__ import annotations

from aos_gateway.devstack.stack import LocalStack
from aos_gateway.devstack.status import PartStatus

__all__ = ["LocalStack", "PartStatus"]
