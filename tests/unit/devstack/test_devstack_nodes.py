"""Node behaviour that needs no running servers."""

from __future__ import annotations

import os
import pwd
import socket
from pathlib import Path

import pytest

from aos_gateway.devstack import LocalStack, PartStatus
from aos_gateway.devstack.kafka import KafkaNode
from aos_gateway.devstack.postgres import PostgresNode, _can_traverse
from aos_gateway.errors import StackError
from aos_gateway.settings import PostgresSettings, Settings, StackSettings


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match="Java is not installed"):
        KafkaNode(tmp_path, 1, 2).ensure_jars()


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None if name == "mvn" else "/usr/bin/" + name)
    with pytest.raises(StackError, match=r"mvn\) is not installed"):
        KafkaNode(tmp_path, 1, 2).ensure_jars()


def test_failing_maven_shows_its_last_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "mvn"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho resolving\necho '[ERROR] Could not resolve org.apache.kafka:kafka_2.13'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr("shutil.which", lambda name: str(fake) if name == "mvn" else "/usr/bin/" + name)
    with pytest.raises(StackError, match=r"(?s)exit 1.*Could not resolve"):
        KafkaNode(tmp_path / "home", 1, 2).ensure_jars()


def test_kafka_taken_port_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = int(s.getsockname()[1])
        with pytest.raises(StackError) as err:
            KafkaNode(tmp_path, port, port + 1 if port < 65535 else port - 1).check_ports()
    assert str(err.value) == f"port {port} is taken by another process; set AOS_STACK__KAFKA_PORT"


def test_kafka_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, 1, 2)
    node.pid_file.parent.mkdir(parents=True)
    node.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a Kafka broker
    assert node.running_pid() is None
    node.stop()  # idempotent, and must not signal us
    assert not node.pid_file.exists()


def test_kafka_status_when_stopped(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    st = KafkaNode(tmp_path, port, 2).status()
    assert st == PartStatus("kafka", f"127.0.0.1:{port}", False, False, "stopped")


def test_postgres_missing_without_root_names_the_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    node = PostgresNode(tmp_path, 1, "u", "p", "d", bin_dir=tmp_path / "nope")
    with pytest.raises(StackError, match=r"run `sudo apt-get install -y postgresql-15`"):
        node.ensure_installed()
    assert node.status().detail.startswith("not installed")


def test_postgres_long_home_gets_a_short_socket_dir(tmp_path: Path) -> None:
    short = PostgresNode(Path("/srv/aos"), 15432, "u", "p", "d")
    assert short.socket_dir == Path("/srv/aos/postgres/run")
    long_home = Path("/" + "x" * 120)
    sock = PostgresNode(long_home, 15432, "u", "p", "d").socket_dir
    assert len(f"{sock}/.s.PGSQL.15432") < 100
    assert sock != PostgresNode(long_home / "other", 15432, "u", "p", "d").socket_dir


def test_postgres_conninfo_quotes_the_password(tmp_path: Path) -> None:
    import psycopg.conninfo

    info = psycopg.conninfo.conninfo_to_dict(PostgresNode(tmp_path, 5, "aos", "p w'd", "db").conninfo())
    assert info["password"] == "p w'd"
    assert info["host"] == "127.0.0.1"
    assert info["port"] == "5"


def test_traverse_rules(tmp_path: Path) -> None:
    try:
        pg = pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no postgres user")
    d = tmp_path / "d"
    d.mkdir()
    d.chmod(0o700)
    if os.stat(d).st_uid == pg.pw_uid:
        pytest.skip("test runs as postgres")
    assert not _can_traverse(d, pg)
    d.chmod(0o711)
    assert _can_traverse(d, pg)


def test_local_stack_resolves_home_once_and_uses_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    s = Settings(
        stack=StackSettings(home=Path("rel/.aos"), kafka_port=31092, kafka_controller_port=31093, kafka_heap="256m"),
        postgres=PostgresSettings(port=31432, user="u1", dbname="d1"),
    )
    stack = LocalStack(s)
    assert stack.home == tmp_path.resolve() / "rel" / ".aos"
    assert stack.kafka.root == stack.home / "kafka"
    assert (stack.kafka.port, stack.kafka.controller_port, stack.kafka.heap) == (31092, 31093, "256m")
    assert (stack.postgres.port, stack.postgres.user, stack.postgres.dbname) == (31432, "u1", "d1")
    assert not stack.home.exists()


def test_import_is_light() -> None:
    import subprocess
    import sys

    code = (
        "import sys, aos_gateway.devstack\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'faust', 'confluent_kafka')]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
