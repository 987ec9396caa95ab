"""The local development stack behind ``aos dev up | down | status``: Kafka, PostgreSQL, QuestDB, Connect.

Real processes, no Docker, all bound to 127.0.0.1, all state under ``settings.stack.home``:
``kafka/`` (the broker), ``postgres/`` (the registry, statistics and the dashboards' tables),
``questdb/`` (the hot experience store, written through the InfluxDB v2 API; skipped when
``stack.questdb`` is false) and ``connect/`` (Kafka Connect with Debezium's JDBC sink, which fills
the dashboards' tables in PostgreSQL; skipped when ``stack.connect`` is false).
"""

from __future__ import annotations

import time
from pathlib import Path

from aos_gateway.devstack._proc import Progress, quiet
from aos_gateway.devstack.connect import ENV_PASSWORD, ENV_URL, ENV_USER, ConnectNode
from aos_gateway.devstack.kafka import KafkaNode
from aos_gateway.devstack.postgres import PostgresNode
from aos_gateway.devstack.questdb import QuestDBNode
from aos_gateway.devstack.status import PartStatus
from aos_gateway.settings import Settings

__all__ = ["LocalStack", "PartStatus"]


class LocalStack:
    """A single-node Kafka broker, a private PostgreSQL cluster and a QuestDB server for development and tests.

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
            self.home,
            st.kafka_port,
            st.kafka_controller_port,
            heap=st.kafka_heap,
            version=st.kafka_version,
            security=st.kafka_security,
        )
        self.postgres = PostgresNode(self.home, pg.port, pg.user, pg.password.get_secret_value(), pg.dbname)
        #: described even when ``stack.questdb`` is off, so ``down`` still stops one started before
        self.questdb = QuestDBNode(
            self.home,
            st.questdb_http_port,
            st.questdb_pg_port,
            st.questdb_ilp_port,
            heap=st.questdb_heap,
            version=st.questdb_version,
        )
        self.with_questdb = st.questdb
        #: like QuestDB: described even when ``stack.connect`` is off
        self.connect = ConnectNode(
            self.home,
            st.connect_port,
            self.kafka.address,
            {
                ENV_URL: f"jdbc:postgresql://127.0.0.1:{pg.port}/{pg.dbname}",
                ENV_USER: pg.user,
                ENV_PASSWORD: pg.password.get_secret_value(),
            },
            heap=st.connect_heap,
            kafka_version=st.kafka_version,
            sink_version=st.jdbc_sink_version,
        )
        #: Kafka Connect's worker has no SASL config yet: a SCRAM broker runs without it (docs/security.md)
        self.with_connect = st.connect and st.kafka_security == "off"
        self.start_timeout_s = st.start_timeout_s

    def prepare(self, progress: Progress = quiet) -> None:
        """Fetch everything the stack needs (Kafka, QuestDB and Connect jars, PostgreSQL 15) without starting it."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.kafka.ensure_jars(progress)
        self.postgres.ensure_installed(progress)
        if self.with_questdb:
            self.questdb.ensure_jar(progress)
        if self.with_connect:
            self.connect.ensure_jars(progress)

    def up(self, progress: Progress = quiet) -> list[PartStatus]:
        """Start every part (those already running are left alone) and wait until they answer.

        Raises:
            StackError: A part cannot start or does not answer within ``stack.start_timeout_s``.
        """
        t0 = time.monotonic()
        self.kafka.check_ports()  # before anything is fetched or started: a taken port leaves nothing half-up
        self.postgres.check_port()
        if self.with_questdb:
            self.questdb.check_ports()
        if self.with_connect:
            self.connect.check_ports()
        self.prepare(progress)
        deadline = time.monotonic() + self.start_timeout_s  # fetching jars (once) is not starting
        self._warn_if_clients_look_elsewhere(progress)
        self.kafka.launch(progress)  # the JVMs boot while PostgreSQL starts
        if self.with_questdb:
            self.questdb.launch(progress)
        self.postgres.start(_left(deadline), progress)
        self.kafka.wait_ready(_left(deadline), progress)
        if self.with_connect:
            self.connect.launch(progress)  # it needs the broker: it keeps its state in topics
        if self.with_questdb:
            self.questdb.wait_ready(_left(deadline), progress)
        if self.with_connect:
            self.connect.wait_ready(_left(deadline), progress)
        parts = self.status()
        progress(f"stack: up in {time.monotonic() - t0:.1f}s (home {self.home})")
        return parts

    def down(self, progress: Progress = quiet) -> None:
        """Stop every part; their data stays under the home. Idempotent."""
        self.connect.stop(progress=progress)  # before the broker, so it leaves its group cleanly
        self.kafka.stop(progress=progress)
        self.questdb.stop(progress=progress)
        self.postgres.stop(progress=progress)
        progress("stack: down")

    def status(self) -> list[PartStatus]:
        """Each part's state, probing with a real request (QuestDB: when enabled, or still running)."""
        parts = [self.kafka.status(), self.postgres.status()]
        if self.with_questdb or self.questdb.running_pid() is not None:
            parts.append(self.questdb.status())
        if self.with_connect or self.connect.running_pid() is not None:
            parts.append(self.connect.status())
        return parts

    def _warn_if_clients_look_elsewhere(self, progress: Progress) -> None:
        servers = self.settings.kafka.bootstrap_servers
        if not any(f"{h}:{self.kafka.port}" in servers for h in ("127.0.0.1", "localhost")):
            progress(f"note: kafka.bootstrap_servers={servers} does not point at this stack ({self.kafka.address})")
        pg = self.settings.postgres
        if pg.host not in ("127.0.0.1", "localhost"):
            progress(f"note: postgres.host={pg.host} does not point at this stack ({self.postgres.address})")
        ts = self.settings.timeseries
        if self.with_questdb and ts.enabled and ts.flavour == "questdb":
            if not any(f"//{h}:{self.questdb.http_port}" in ts.url for h in ("127.0.0.1", "localhost")):
                progress(f"note: timeseries.url={ts.url} does not point at this stack ({self.questdb.url})")
            import psycopg
            from psycopg.conninfo import conninfo_to_dict

            try:
                pg_port = str(conninfo_to_dict(ts.questdb_pg).get("port"))
            except psycopg.Error:  # a garbled conninfo is the store's error to report, not the stack's
                pg_port = ""
            if pg_port != str(self.questdb.pg_port):
                progress(f"note: timeseries.questdb_pg does not point at this stack ({self.questdb.pg_address})")


def _left(deadline: float) -> float:
    return max(1.0, deadline - time.monotonic())
