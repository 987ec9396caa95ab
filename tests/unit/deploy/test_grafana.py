"""Grafana provisioning: datasources, the dashboards' panels, and their SQL against the sink tables.

The SQL is not run here (no PostgreSQL in unit tests); every identifier it uses must be a column
of the tables it reads, as aos_gateway.connect.rows declares them (what Kafka Connect creates),
an SQL word, or an alias the query defines. That catches a renamed or misspelt column.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from deploy_checks import DEPLOY, load_yaml

from aos_gateway.connect.rows import TABLES

GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
COLUMNS = {t.table: {c.name for c in t.columns} for t in TABLES}
SQL_WORDS = {
    "select",
    "from",
    "where",
    "and",
    "or",
    "not",
    "as",
    "group",
    "by",
    "order",
    "desc",
    "asc",
    "limit",
    "case",
    "when",
    "then",
    "else",
    "end",
    "in",
    "is",
    "null",
    "distinct",
    "count",
    "avg",
    "sum",
    "min",
    "max",
    "coalesce",
    "percentile_cont",
    "within",
    "greatest",
    "extract",
    "epoch",
    "timestamptz",
    "nulls",
    "last",
    "floor",
}


def _datasources() -> dict[str, dict[str, Any]]:
    doc = load_yaml(GRAFANA / "provisioning" / "datasources" / "aos.yaml")
    assert doc["apiVersion"] == 1
    return {d["uid"]: d for d in doc["datasources"]}


def _dashboard(path: Path) -> dict[str, Any]:
    doc = json.loads(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def _sql_queries() -> list[tuple[str, str]]:
    out = []
    for path in DASHBOARDS:
        dash = _dashboard(path)
        for panel in dash["panels"]:
            out += [(f"{path.name}: {panel['title']}", t["rawSql"]) for t in panel["targets"] if "rawSql" in t]
        for var in dash["templating"]["list"]:
            if var.get("type") == "query" and var["datasource"]["uid"] == "aos-postgres":
                out.append((f"{path.name}: ${var['name']}", var["query"]))
    return out


def unknown_identifiers(sql: str) -> set[str]:
    """Identifiers of ``sql`` that are neither columns of the tables it reads, SQL, nor its aliases."""
    tables = set(re.findall(r"\bFROM\s+(\w+)", sql, re.IGNORECASE))
    unknown_tables = tables - set(COLUMNS)
    if unknown_tables:
        return unknown_tables
    text = re.sub(r"'[^']*'", " ", sql)  # string literals
    aliases = set(re.findall(r'\bAS\s+"?(\w+)"?', text, re.IGNORECASE))
    text = re.sub(r'"[^"]*"', " ", text)  # quoted aliases
    text = re.sub(r"\$\{[^}]*\}|\$__\w+", " ", text)  # Grafana variables and macros (their arguments stay)
    text = re.sub(r"::\w+", " ", text)  # casts
    words = {w.lower() for w in re.findall(r"\b[A-Za-z_]\w*\b", text)}
    known = SQL_WORDS | tables | {a.lower() for a in aliases} | {c for t in tables for c in COLUMNS[t]}
    return words - known


def test_datasources_are_provisioned() -> None:
    ds = _datasources()
    assert ds["aos-postgres"]["type"] == "grafana-postgresql-datasource"
    assert ds["aos-postgres"]["jsonData"]["database"]
    assert "password" in ds["aos-postgres"]["secureJsonData"]
    assert ds["aos-prometheus"]["type"] == "prometheus"
    providers = load_yaml(GRAFANA / "provisioning" / "dashboards" / "aos.yaml")["providers"]
    assert providers[0]["options"]["path"] == "/etc/grafana/dashboards"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_panels_are_well_formed(path: Path) -> None:
    dash = _dashboard(path)
    assert dash["uid"] and dash["title"]
    uids = set(_datasources())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids
            assert target["datasource"]["type"] == _datasources()[target["datasource"]["uid"]]["type"]


def test_the_gateway_dashboard_has_the_panels_operators_need() -> None:
    titles = " | ".join(p["title"].lower() for p in _dashboard(GRAFANA / "dashboards" / "aos-gateway.json")["panels"])
    for needed in (
        "tasks per second",
        "latency per stage",
        "success rate and p95 latency",
        "last routing decisions",
        "anomalies",
        "dead letters",
        "learning curve",
    ):
        assert needed in titles, needed


@pytest.mark.parametrize(("where", "sql"), _sql_queries(), ids=lambda v: v if len(v) < 60 else None)
def test_sql_uses_only_columns_of_the_sink_tables(where: str, sql: str) -> None:
    assert unknown_identifiers(sql) == set(), where


def test_a_misspelt_column_or_table_is_caught() -> None:
    assert unknown_identifiers("SELECT avg(latency_ms) AS x FROM sink_experience WHERE kind = 'STEP'") == set()
    assert unknown_identifiers("SELECT avg(latency_msec) FROM sink_experience") == {"latency_msec"}
    assert unknown_identifiers("SELECT count(*) FROM sink_decision") == {"sink_decision"}
    assert unknown_identifiers("SELECT 1 FROM sink_results WHERE $__timeFilter(finish_at)") == {"finish_at"}


def _metric_samples() -> set[str]:
    """The sample names the worker exposes: its registry's families, with Prometheus' suffixes."""
    from aos_gateway.streams.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + s for s in suffixes}
    return names


def test_worker_dashboard_queries_metrics_the_worker_exposes() -> None:
    exposed = _metric_samples()
    assert "aos_stage_events_in_total" in exposed
    dash = _dashboard(GRAFANA / "dashboards" / "aos-workers.json")
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"] if "expr" in t]
    assert exprs
    for expr in exprs:
        used = set(re.findall(r"\baos_\w+", expr))
        assert used <= exposed, f"{expr}: {used - exposed} is not a metric of aos_gateway.streams.metrics"
