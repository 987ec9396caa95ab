"""The local development stack behind ``aos dev up | down | status``: Kafka and PostgreSQL.

Real processes, no Docker, all bound to 127.0.0.1, all state under ``settings.stack.home``.
"""

from __future__ import annotations

import time
from pathlib import Path

from aos_gateway.devstack._proc import Progress, quiet
from aos_gateway.devstack.kafka import KafkaNode
from aos_gateway.devstack.postgres import PostgresNode
from aos_gateway.devstack.status import PartStatus
from aos_gateway.settings import Settings

__all__ = ["LocalStack", "PartStatus"]


class LocalStack:
    """A single-node Kafka broker and a private PostgreSQL cluster for development and tests.

    ``up`` is idempotent and data survives ``down``/``up``: the broker's storage is formatted and the
    cluster initialised only the first time.
    """

    def __init__(self, settings: Settings) -> None:
        """Describe the stack from ``settings.stack`` and ``settings.postgres``; starts nothing."""
        self.settings = settings
        self.home: Path = settings.stack.home.expanduser().resolve()
        st = settings.stack
        pg = settings.postgres
        self.kafka = KafkaNode(
            self.home, st.kafka_port, st.kafka_controller_port, heap=st.kafka_heap, version=st.kafka_version
        )
        self.postgres = PostgresNode(self.home, pg.port, pg.user, pg.password.get_secret_value(), pg.dbname)
        self.start_timeout_s = st.start_timeout_s

    def prepare(self, progress: Progress = quiet) -> None:
        """Fetch everything the stack needs (Kafka jars, PostgreSQL 15) without starting it."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.kafka.ensure_jars(progress)
        self.postgres.ensure_installed(progress)

    def up(self, progress: Progress = quiet) -> list[PartStatus]:
        """Start both parts (those already running are left alone) and wait until they answer.

        Raises:
            StackError: A part cannot start or does not answer within ``stack.start_timeout_s``.
        """
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout_s
        self.kafka.check_ports()  # before anything is fetched or started: a taken port leaves nothing half-up
        self.postgres.check_port()
        self.prepare(progress)
        self._warn_if_clients_look_elsewhere(progress)
        self.kafka.launch(progress)  # the JVM boots while PostgreSQL starts
        self.postgres.start(_left(deadline), progress)
        self.kafka.wait_ready(_left(deadline), progress)
        parts = self.status()
        progress(f"stack: up in {time.monotonic() - t0:.1f}s (home {self.home})")
        return parts

    def down(self, progress: Progress = quiet) -> None:
        """Stop both parts; their data stays under the home. Idempotent."""
        self.kafka.stop(progress=progress)
        self.postgres.stop(progress=progress)
        progress("stack: down")

    def status(self) -> list[PartStatus]:
        """Each part's state, probing with a real request."""
        return [self.kafka.status(), self.postgres.status()]

    def _warn_if_clients_look_elsewhere(self, progress: Progress) -> None:
        servers = self.settings.kafka.bootstrap_servers
        if not any(f"{h}:{self.kafka.port}" in servers for h in ("127.0.0.1", "localhost")):
            progress(f"note: kafka.bootstrap_servers={servers} does not point at this stack ({self.kafka.address})")
        pg = self.settings.postgres
        if pg.host not in ("127.0.0.1", "localhost"):
            progress(f"note: postgres.host={pg.host} does not point at this stack ({self.postgres.address})")


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())
