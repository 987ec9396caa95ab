"""The state of one part of the local stack, as ``aos dev status`` shows it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PartStatus:
    """One part (``kafka``, ``postgres``) of the local stack.

    Attributes:
        name: The part's short name.
        address: ``host:port`` clients use.
        running: Our process for it is alive.
        healthy: It answered a real request (Kafka metadata, ``SELECT 1``).
        detail: One human line: pid, data dir, or why it is unhealthy.
    """

    name: str
    address: str
    running: bool
    healthy: bool
    detail: str
