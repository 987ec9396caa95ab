"""The generated manifests are what their generators make now, so the topic catalog
(aos_gateway/topics.py) and the connector configs (connectors/*.json) cannot drift from deploy/k8s/."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

from deploy_checks import DEPLOY, K8S, ROOT, load_script, load_yaml_docs

from aos_gateway import topics

gen_topics = load_script(DEPLOY / "gen_topics.py")
gen_connectors = load_script(DEPLOY / "gen_connectors.py")
TOPICS = K8S / "topics.yaml"
CONNECTORS = K8S / "connectors.yaml"


def test_topics_yaml_is_what_gen_topics_makes_now() -> None:
    assert TOPICS.read_text(encoding="utf-8") == gen_topics.render(), (
        "deploy/k8s/topics.yaml is stale: run `python deploy/gen_topics.py`"
    )


def test_every_topic_has_its_kafka_topic() -> None:
    by_name = {d["spec"]["topicName"]: d for d in load_yaml_docs(TOPICS)}
    assert set(by_name) == {t.name for t in topics.ALL}
    assert {t.name for t in topics.CATALOG} <= set(by_name)
    for spec in topics.ALL:
        doc = by_name[spec.name]
        assert doc["kind"] == "KafkaTopic"
        assert doc["spec"]["partitions"] == spec.partitions
        config = doc["spec"]["config"]
        for key, value in spec.configs().items():
            assert config[key] == value, f"{spec.name}: {key}"


def test_a_catalog_change_makes_the_committed_file_stale() -> None:
    changed = tuple(dataclasses.replace(t, partitions=t.partitions + 1) if t is topics.TASKS else t for t in topics.ALL)
    assert gen_topics.render(changed) != TOPICS.read_text(encoding="utf-8")
    assert gen_topics.render(topics.ALL[:-1]) != TOPICS.read_text(encoding="utf-8")


def test_gen_topics_check_mode(tmp_path: Path) -> None:
    assert gen_topics.main(["--check", "--output", str(TOPICS)]) == 0
    stale = tmp_path / "topics.yaml"
    stale.write_text(TOPICS.read_text(encoding="utf-8").replace("partitions: 4", "partitions: 5", 1))
    assert gen_topics.main(["--check", "--output", str(stale)]) == 1
    assert gen_topics.main(["--output", str(stale)]) == 0
    assert gen_topics.main(["--check", "--output", str(stale)]) == 0


def test_connectors_yaml_is_what_gen_connectors_makes_now() -> None:
    assert CONNECTORS.read_text(encoding="utf-8") == gen_connectors.render(), (
        "deploy/k8s/connectors.yaml is stale: run `python deploy/gen_connectors.py`"
    )


def test_every_connector_config_has_its_kafka_connector() -> None:
    resources = {d["metadata"]["name"]: d for d in load_yaml_docs(CONNECTORS)}
    files = sorted((ROOT / "connectors").glob("*.json"))
    assert files, "connectors/*.json is empty"
    for path in files:
        doc = json.loads(path.read_text(encoding="utf-8"))
        res = resources.pop(doc["name"])
        config = dict(doc["config"])
        assert res["spec"]["class"] == config.pop("connector.class")
        assert res["spec"]["tasksMax"] == int(config.pop("tasks.max", "1"))
        expected = {k: str(v) for k, v in config.items()} | {
            k: v for k, v in gen_connectors.K8S_OVERRIDES.items() if k in config
        }
        assert res["spec"]["config"] == expected
    assert resources == {}, f"KafkaConnectors without a config file: {sorted(resources)}"


def test_a_connector_change_makes_the_committed_file_stale(tmp_path: Path) -> None:
    folder = tmp_path / "connectors"
    shutil.copytree(ROOT / "connectors", folder)
    path = next(folder.glob("*.json"))
    doc = json.loads(path.read_text(encoding="utf-8"))
    doc["config"]["batch.size"] = "7"
    path.write_text(json.dumps(doc), encoding="utf-8")
    assert gen_connectors.render(folder) != CONNECTORS.read_text(encoding="utf-8")
