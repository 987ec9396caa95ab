"""AOS Gateway: an event-streaming gateway that routes tasks to AI agents over Kafka.

Importing this package is cheap: no torch, no Kafka client. Heavy parts load on use.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
