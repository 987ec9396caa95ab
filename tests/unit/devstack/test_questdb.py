"""The QuestDB node without a running server: its config, its ports, fetching its jar, its wiring."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from aos_gateway.devstack import LocalStack, PartStatus
from aos_gateway.devstack.questdb import MAIN_MODULE, QuestDBNode, render_log_conf, render_server_conf
from aos_gateway.errors import StackError
from aos_gateway.settings import PostgresSettings, Settings, StackSettings
from tests.ports import free_ports


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def _script(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return path


def test_server_conf_binds_every_listener_to_loopback_on_the_given_ports() -> None:
    props = _props(render_server_conf(29000, 28812, 29009))
    assert props["http.bind.to"] == "127.0.0.1:29000"
    assert props["pg.net.bind.to"] == "127.0.0.1:28812"
    assert props["line.tcp.net.bind.to"] == "127.0.0.1:29009"
    assert props["http.min.enabled"] == "false"
    assert props["telemetry.enabled"] == "false"
    assert "0.0.0.0" not in "".join(props.values())


def test_log_conf_writes_a_capped_rolling_file_in_logs_dir() -> None:
    props = _props(render_log_conf(Path("/x/questdb/logs")))
    assert props["writers"] == "file"
    assert props["w.file.location"].startswith("/x/questdb/logs/questdb-")
    assert props["w.file.class"] == "io.questdb.log.LogRollingFileWriter"
    assert "w.file.sizeLimit" in props


@pytest.mark.parametrize(
    ("which", "env"),
    [(0, "AOS_STACK__QUESTDB_HTTP_PORT"), (1, "AOS_STACK__QUESTDB_PG_PORT"), (2, "AOS_STACK__QUESTDB_ILP_PORT")],
)
def test_a_taken_port_is_one_line_naming_its_setting(tmp_path: Path, which: int, env: str) -> None:
    ports = free_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", ports[which]))
        squatter.listen()
        with pytest.raises(StackError) as err:
            QuestDBNode(tmp_path, ports[0], ports[1], ports[2]).check_ports()
    assert str(err.value) == f"port {ports[which]} is taken by another process; set {env}"


def test_free_ports_pass_the_check(tmp_path: Path) -> None:
    http, pg, ilp = free_ports(3)
    QuestDBNode(tmp_path, http, pg, ilp).check_ports()


def test_missing_java_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(StackError, match="QuestDB needs Java 17"):
        QuestDBNode(tmp_path, 1, 2, 3).ensure_jar()


def test_missing_maven_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None if name == "mvn" else "/usr/bin/" + name)
    with pytest.raises(StackError, match=r"mvn\) is not installed; it fetches the QuestDB jar"):
        QuestDBNode(tmp_path, 1, 2, 3).ensure_jar()


def test_failing_maven_shows_its_last_lines_and_leaves_no_lib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _script(tmp_path / "bin" / "mvn", "echo '[ERROR] Could not resolve org.questdb:questdb:9.9.9'\nexit 1\n")
    monkeypatch.setattr("shutil.which", lambda name: str(fake) if name == "mvn" else "/usr/bin/" + name)
    node = QuestDBNode(tmp_path / "home", 1, 2, 3, version="9.9.9")
    with pytest.raises(StackError, match=r"(?s)exit 1.*Could not resolve org.questdb:questdb:9.9.9"):
        node.ensure_jar()
    assert not node.lib.exists()
    assert not node.jar_ready()


def test_maven_fetches_the_pinned_artifact_once_and_replaces_an_old_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = tmp_path / "calls.txt"
    # a fake mvn: records its arguments and "copies" the artifact into -DoutputDirectory
    fake = _script(
        tmp_path / "bin" / "mvn",
        f'echo "$@" >> {calls}\n'
        'for a in "$@"; do case "$a" in -DoutputDirectory=*) out="${a#-DoutputDirectory=}";; esac; done\n'
        'mkdir -p "$out" && echo jar > "$out/questdb-9.2.2.jar"\n',
    )
    monkeypatch.setattr("shutil.which", lambda name: str(fake) if name == "mvn" else "/usr/bin/" + name)
    node = QuestDBNode(tmp_path / "home", 1, 2, 3, version="9.2.2")
    node.lib.mkdir(parents=True)
    (node.lib / "questdb-9.1.0.jar").write_text("old")
    node.ensure_jar()
    assert sorted(p.name for p in node.lib.iterdir()) == ["questdb-9.2.2.jar"]
    assert node.jar_ready()
    node.ensure_jar()  # already there: Maven is not asked again
    lines = calls.read_text().splitlines()
    assert len(lines) == 1
    assert "dependency:copy" in lines[0].split()
    assert "-Dartifact=org.questdb:questdb:9.2.2" in lines[0].split()


def test_launch_writes_the_config_and_a_server_that_dies_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = _script(tmp_path / "bin" / "java", 'echo "Error: could not open $3 (fake java)"\nexit 1\n')
    monkeypatch.setattr("shutil.which", lambda name: str(java) if name == "java" else None)
    http, pg, ilp = free_ports(3)
    node = QuestDBNode(tmp_path / "home", http, pg, ilp, heap="300m")
    node.lib.mkdir(parents=True)
    node.jar.write_text("jar")  # present: no Maven needed
    node.launch()
    props = _props(node.server_conf.read_text())
    assert props["http.bind.to"] == f"127.0.0.1:{http}"
    assert props["pg.net.bind.to"] == f"127.0.0.1:{pg}"
    assert props["line.tcp.net.bind.to"] == f"127.0.0.1:{ilp}"
    assert _props(node.log_conf.read_text())["w.file.location"].startswith(str(node.logs_dir))
    assert node.pid_file.exists()
    with pytest.raises(StackError, match=r"(?s)questdb exited during start-up.*could not open .*questdb-9.2.2.jar"):
        node.wait_ready(10.0)
    assert not node.pid_file.exists()
    assert "(fake java)" in (node.logs_dir / "stdout.log").read_text()


def test_stale_pid_file_is_not_running(tmp_path: Path) -> None:
    node = QuestDBNode(tmp_path, 1, 2, 3)
    node.pid_file.parent.mkdir(parents=True)
    node.pid_file.write_text(f"{os.getpid()}\n")  # alive, but not a QuestDB server
    assert node.running_pid() is None
    node.stop()  # idempotent, and must not signal us
    assert not node.pid_file.exists()


def test_status_when_stopped(tmp_path: Path) -> None:
    http, pg, ilp = free_ports(3)
    st = QuestDBNode(tmp_path, http, pg, ilp).status()
    assert st == PartStatus("questdb", f"127.0.0.1:{http}", False, False, "stopped")


def test_main_module_is_the_one_in_the_recipe() -> None:
    assert MAIN_MODULE == "io.questdb/io.questdb.ServerMain"


def _stack(tmp_path: Path, questdb: bool) -> LocalStack:
    k, c, p, h, g, i = free_ports(6)
    s = Settings(
        stack=StackSettings(
            home=tmp_path / "stack",
            kafka_port=k,
            kafka_controller_port=c,
            questdb=questdb,
            questdb_http_port=h,
            questdb_pg_port=g,
            questdb_ilp_port=i,
            questdb_heap="256m",
            questdb_version="9.1.1",
            connect=False,  # Kafka Connect's part: tests/unit/devstack/test_connect_node.py
        ),
        postgres=PostgresSettings(port=p),
    )
    return LocalStack(s)


def test_local_stack_describes_questdb_from_settings(tmp_path: Path) -> None:
    stack = _stack(tmp_path, questdb=True)
    q = stack.questdb
    st = stack.settings.stack
    assert q.root == stack.home / "questdb"
    assert (q.http_port, q.pg_port, q.ilp_port) == (st.questdb_http_port, st.questdb_pg_port, st.questdb_ilp_port)
    assert (q.heap, q.version) == ("256m", "9.1.1")
    assert [p.name for p in stack.status()] == ["kafka", "postgres", "questdb"]


@pytest.mark.parametrize("questdb", [True, False])
def test_up_and_prepare_include_questdb_only_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, questdb: bool
) -> None:
    stack = _stack(tmp_path, questdb=questdb)
    calls: list[str] = []

    def record(name: str) -> object:
        return lambda *a, **kw: calls.append(name)

    for node, methods in (
        (stack.kafka, ("check_ports", "ensure_jars", "launch", "wait_ready")),
        (stack.postgres, ("check_port", "ensure_installed", "start")),
        (stack.questdb, ("check_ports", "ensure_jar", "launch", "wait_ready")),
    ):
        for m in methods:
            monkeypatch.setattr(node, m, record(f"{node.name}.{m}"))
    parts = stack.up()
    ours = [c for c in calls if c.startswith("questdb.")]
    if questdb:
        assert ours == ["questdb.check_ports", "questdb.ensure_jar", "questdb.launch", "questdb.wait_ready"]
        # launched before PostgreSQL starts (the JVM boots meanwhile), awaited after
        assert calls.index("questdb.launch") < calls.index("postgres.start") < calls.index("questdb.wait_ready")
        assert [p.name for p in parts] == ["kafka", "postgres", "questdb"]
    else:
        assert ours == []
        assert [p.name for p in parts] == ["kafka", "postgres"]
