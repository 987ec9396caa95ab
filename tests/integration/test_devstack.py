"""The real local stack: Kafka and PostgreSQL processes in a throw-away home on free ports."""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from aos_gateway.devstack import LocalStack
from aos_gateway.errors import StackError
from aos_gateway.settings import KafkaSettings, PostgresSettings, Settings, StackSettings
from tests.ports import free_ports

pytestmark = pytest.mark.integration


def _settings(home: Path, kafka_port: int, controller_port: int, pg_port: int) -> Settings:
    qhttp, qpg, qilp, connect = free_ports(4)
    return Settings(
        stack=StackSettings(
            home=home,
            kafka_port=kafka_port,
            kafka_controller_port=controller_port,
            questdb_http_port=qhttp,
            questdb_pg_port=qpg,
            questdb_ilp_port=qilp,
            connect_port=connect,
        ),
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port}"),
        postgres=PostgresSettings(port=pg_port),
    )


class _Log:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str) -> None:
        self.lines.append(message)
        print(message, file=sys.stderr)

    def has(self, fragment: str) -> bool:
        return any(fragment in m for m in self.lines)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    # not a pytest tmp dir: those are 0700 and, when we are root, PostgreSQL runs as `postgres`
    base = Path(tempfile.mkdtemp(prefix="aos-devstack-it-"))
    base.chmod(0o755)
    try:
        yield base / "stack"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _consume_one(bootstrap: str, topic: str, timeout_s: float = 30.0) -> tuple[bytes | None, bytes | None]:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"it-{uuid.uuid4().hex}", "auto.offset.reset": "earliest"}
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            return msg.key(), msg.value()
    finally:
        consumer.close()
    raise AssertionError(f"no message on {topic} within {timeout_s}s")


def test_up_is_idempotent_and_a_restart_keeps_data(home: Path) -> None:
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient
    from confluent_kafka.cimpl import NewTopic

    kport, cport, pport = free_ports(3)
    settings = _settings(home, kport, cport, pport)
    bootstrap = settings.kafka.bootstrap_servers
    stack = LocalStack(settings)
    try:
        log = _Log()
        t0 = time.monotonic()
        parts = stack.up(log)
        first_up = time.monotonic() - t0
        assert [(p.name, p.running, p.healthy) for p in parts] == [
            ("kafka", True, True),
            ("postgres", True, True),
            ("questdb", True, True),
            ("connect", True, True),
        ]
        assert log.has("formatted") and log.has("initialised")
        pid = stack.kafka.running_pid()

        log = _Log()
        t0 = time.monotonic()
        parts = stack.up(log)
        second_up = time.monotonic() - t0
        assert all(p.healthy for p in parts)
        assert log.has("kafka: already running") and log.has("postgres: already running")
        assert log.has("questdb: already running") and log.has("connect: already running")
        assert stack.kafka.running_pid() == pid
        assert second_up < 5.0

        topic = f"it.devstack.{uuid.uuid4().hex[:8]}.v1"
        admin = AdminClient({"bootstrap.servers": bootstrap})
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])[topic].result(30)
        producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
        producer.produce(topic, key=b"k1", value=b"survives a restart")
        assert producer.flush(30) == 0
        assert _consume_one(bootstrap, topic) == (b"k1", b"survives a restart")
        del producer, admin  # no client left retrying against the stopped broker

        stack.down()
        parts = stack.status()
        assert [(p.running, p.healthy) for p in parts] == [(False, False)] * 4
        assert not stack.kafka.pid_file.exists()
        stack.down()  # idempotent

        log = _Log()
        t0 = time.monotonic()
        parts = stack.up(log)
        restart = time.monotonic() - t0
        assert all(p.healthy for p in parts)
        assert not log.has("formatted") and not log.has("initialised")
        assert topic in AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics
        assert _consume_one(bootstrap, topic) == (b"k1", b"survives a restart")

        import psycopg

        with psycopg.connect(stack.postgres.conninfo(), autocommit=True) as conn:
            row = conn.execute("SELECT 1").fetchone()
            assert row == (1,)
        print(f"first up {first_up:.1f}s, second up {second_up:.2f}s, restart {restart:.1f}s", file=sys.stderr)
    finally:
        stack.down()
    assert [p.running for p in stack.status()] == [False, False, False, False]


def test_postgres_alone_up_select_down(home: Path) -> None:
    import psycopg

    kport, cport, pport = free_ports(3)
    pg = LocalStack(_settings(home, kport, cport, pport)).postgres
    try:
        pg.start(60.0)
        with psycopg.connect(pg.conninfo(), autocommit=True) as conn:
            assert conn.execute("SELECT current_user, current_database()").fetchone() == ("aos", "aos")
        assert pg.status().healthy
    finally:
        pg.stop()
    st = pg.status()
    assert (st.running, st.healthy) == (False, False)


@pytest.mark.parametrize("which", ["kafka", "postgres"])
def test_a_taken_port_is_a_one_line_error_and_starts_nothing(home: Path, which: str) -> None:
    kport, cport, pport = free_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", kport if which == "kafka" else pport))
        squatter.listen()
        stack = LocalStack(_settings(home, kport, cport, pport))
        try:
            with pytest.raises(StackError) as err:
                stack.up()
        finally:
            stack.down()
    env = "AOS_STACK__KAFKA_PORT" if which == "kafka" else "AOS_POSTGRES__PORT"
    taken = kport if which == "kafka" else pport
    assert str(err.value) == f"port {taken} is taken by another process; set {env}"
    assert not stack.kafka.pid_file.exists()
    assert not stack.postgres.is_running()
