"""The Kafka Connect part of the local stack: its config, its place in `aos dev up`, its status."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from aos_gateway.devstack import LocalStack
from aos_gateway.devstack.connect import (
    ENV_PASSWORD,
    ENV_URL,
    ENV_USER,
    INTERNAL_TOPICS,
    ConnectNode,
    render_worker_properties,
)
from aos_gateway.devstack.status import PartStatus
from aos_gateway.errors import StackError
from aos_gateway.settings import PostgresSettings, Settings, StackSettings
from tests.ports import free_ports


def _props(text: str) -> dict[str, str]:
    return dict(
        (k.strip(), v.strip()) for k, _, v in (ln.partition("=") for ln in text.splitlines() if ln and ln[0] != "#")
    )


def test_worker_properties_distributed_on_loopback_with_env_secrets(tmp_path: Path) -> None:
    p = _props(render_worker_properties("127.0.0.1:19092", 18083, tmp_path / "plugins"))
    assert p["bootstrap.servers"] == "127.0.0.1:19092" and p["listeners"] == "http://127.0.0.1:18083"
    assert (p["config.storage.topic"], p["offset.storage.topic"], p["status.storage.topic"]) == INTERNAL_TOPICS
    assert p["key.converter.schemas.enable"] == p["value.converter.schemas.enable"] == "true"
    assert p["plugin.path"] == str(tmp_path / "plugins") and p["plugin.discovery"] == "service_load"
    assert p["config.providers.env.class"].endswith("EnvVarConfigProvider")
    assert all(v == "1" for k, v in p.items() if k.endswith("replication.factor"))


def test_local_stack_describes_connect_with_the_database_in_its_environment(tmp_path: Path) -> None:
    k, c, pg, cp = free_ports(4)
    s = Settings(
        stack=StackSettings(home=tmp_path, kafka_port=k, kafka_controller_port=c, connect_port=cp, questdb=False),
        postgres=PostgresSettings(port=pg, user="u", dbname="d"),
    )
    node = LocalStack(s).connect
    assert node.root == tmp_path.resolve() / "connect" and node.port == cp
    assert node.bootstrap == f"127.0.0.1:{k}"
    assert node.jdbc_env == {ENV_URL: f"jdbc:postgresql://127.0.0.1:{pg}/d", ENV_USER: "u", ENV_PASSWORD: "aos"}
    assert node.status() == PartStatus("connect", f"127.0.0.1:{cp}", False, False, "stopped")


@pytest.mark.parametrize("connect", [True, False])
def test_up_starts_connect_after_the_broker_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connect: bool
) -> None:
    k, c, pg, cp = free_ports(4)
    s = Settings(
        stack=StackSettings(
            home=tmp_path, kafka_port=k, kafka_controller_port=c, connect_port=cp, questdb=False, connect=connect
        ),
        postgres=PostgresSettings(port=pg),
    )
    stack = LocalStack(s)
    calls: list[str] = []
    for node, methods in (
        (stack.kafka, ("check_ports", "ensure_jars", "launch", "wait_ready")),
        (stack.postgres, ("check_port", "ensure_installed", "start")),
        (stack.connect, ("check_ports", "ensure_jars", "launch", "wait_ready")),
    ):
        for m in methods:
            monkeypatch.setattr(node, m, lambda *a, _n=f"{node.name}.{m}", **kw: calls.append(_n))
    parts = stack.up()
    ours = [x for x in calls if x.startswith("connect.")]
    if connect:
        assert ours == ["connect.check_ports", "connect.ensure_jars", "connect.launch", "connect.wait_ready"]
        assert calls.index("kafka.wait_ready") < calls.index("connect.launch")  # it keeps its state in topics
        assert [p.name for p in parts] == ["kafka", "postgres", "connect"]
    else:
        assert ours == [] and [p.name for p in parts] == ["kafka", "postgres"]


def test_a_taken_port_names_the_setting(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        node = ConnectNode(tmp_path, s.getsockname()[1], "127.0.0.1:1", {})
        with pytest.raises(StackError, match="AOS_STACK__CONNECT_PORT"):
            node.check_ports()
