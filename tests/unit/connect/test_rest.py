"""Connector configs: the shipped ones are sound, bad files get a clear error."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from aos_gateway.connect import rows
from aos_gateway.connect.rest import connectors_dir, load_configs
from aos_gateway.errors import ConfigError


def test_the_shipped_sink_reads_every_sink_topic_and_names_each_table() -> None:
    (cfg,) = load_configs(connectors_dir())
    c = cfg.config
    assert c["connector.class"] == "io.debezium.connector.jdbc.JdbcSinkConnector"
    assert c["insert.mode"] == "upsert" and c["primary.key.mode"] == "record_key"
    topic_re = re.compile(c["topics.regex"])
    route = re.compile(c["transforms.table.regex"])
    for t in rows.TABLES:
        assert topic_re.fullmatch(t.topic)
        m = route.fullmatch(t.topic)
        assert m is not None and c["transforms.table.replacement"].replace("$1", m.group(1)) == t.table
    assert not topic_re.fullmatch(c["errors.deadletterqueue.topic.name"])
    # no secrets in the file: the worker resolves them from its environment
    assert c["connection.password"].startswith("${env:")


def test_bad_configs_are_refused_with_the_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no connector configs"):
        load_configs(tmp_path)
    (tmp_path / "a.json").write_text("{")
    with pytest.raises(ConfigError, match=r"a\.json: not readable JSON"):
        load_configs(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "x", "config": {"connector.class": "C", "tasks.max": 1}}))
    with pytest.raises(ConfigError, match="must be strings"):
        load_configs(tmp_path)
    (tmp_path / "a.json").write_text(json.dumps({"name": "x", "config": {"connector.class": "C"}}))
    (tmp_path / "b.json").write_text(json.dumps({"name": "x", "config": {"connector.class": "C"}}))
    with pytest.raises(ConfigError, match="defined twice"):
        load_configs(tmp_path)
    with pytest.raises(ConfigError, match="not a folder"):
        connectors_dir(tmp_path / "missing")
