"""The broker's rendered config files and the shipped POM."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from aos_gateway.devstack.kafka import KafkaNode, pom_xml, render_log4j2_properties, render_server_properties


def _props(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_server_properties_single_node_kraft_on_loopback() -> None:
    props = _props(render_server_properties(29092, 29093, Path("/x/kafka/data")))
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:29093"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:29092"
    assert props["log.dirs"] == "/x/kafka/data"
    assert props["num.partitions"] == "4"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert props["auto.create.topics.enable"] == "false"  # topics come from the catalog only
    assert "0.0.0.0" not in "".join(props.values())


def test_log4j2_properties_write_server_log_in_logs_dir() -> None:
    props = _props(render_log4j2_properties(Path("/x/kafka/logs")))
    assert props["appender.file.fileName"] == "/x/kafka/logs/server.log"
    assert props["rootLogger.appenderRef.file.ref"] == props["appender.file.name"]


def test_pom_pins_kafka_jars_with_a_version_property() -> None:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.fromstring(pom_xml())
    assert root.findtext("m:properties/m:kafka.version", namespaces=ns) == "4.1.1"
    deps = {
        (d.findtext("m:groupId", namespaces=ns), d.findtext("m:artifactId", namespaces=ns)): d.findtext(
            "m:version", namespaces=ns
        )
        for d in root.iterfind("m:dependencies/m:dependency", ns)
    }
    for artifact in ("kafka_2.13", "kafka-server", "kafka-tools"):
        assert deps[("org.apache.kafka", artifact)] == "${kafka.version}"
    assert ("org.apache.logging.log4j", "log4j-slf4j-impl") in deps
    assert not any("reload4j" in (a or "") for _, a in deps)


def test_node_layout_lives_under_home_kafka(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, 29092, 29093)
    assert node.address == "127.0.0.1:29092"
    assert node.libs == tmp_path / "kafka" / "libs"
    assert node.pid_file == tmp_path / "kafka" / "kafka.pid"
    assert not (tmp_path / "kafka").exists()  # describing touches nothing


def test_jars_ready_needs_marker_of_same_version(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, 29092, 29093, version="4.1.1")
    node.libs.mkdir(parents=True)
    (node.libs / "kafka_2.13-4.1.1.jar").write_bytes(b"")
    assert not node.jars_ready()
    (node.libs / ".aos-kafka-version").write_text("4.0.0\n")
    assert not node.jars_ready()
    (node.libs / ".aos-kafka-version").write_text("4.1.1\n")
    assert node.jars_ready()
