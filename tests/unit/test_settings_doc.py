"""The settings reference (aos_gateway/settings_doc.py): read from the model, secrets hidden, typos named."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from pydantic import SecretStr

from aos_gateway import settings_doc
from aos_gateway.settings import KafkaSettings, Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_has_a_row_a_unique_variable_and_a_description() -> None:
    rows = settings_doc.rows()
    names = [r.env for r in rows]
    assert len(names) == len(set(names))
    assert "AOS_KAFKA__BOOTSTRAP_SERVERS" in names and "AOS_TENANT" in names
    assert "AOS_AGENTS__STOP_GRACE_S" in names
    undocumented = [r.env for r in rows if not r.description]
    assert undocumented == [], "give these a Field(description=...) in aos_gateway/settings.py"


def test_defaults_are_spelt_as_the_environment_takes_them() -> None:
    by_env = {r.env: r for r in settings_doc.rows()}
    assert by_env["AOS_MATCHING__TOP_K"].default == "5"
    assert by_env["AOS_MATCHING__TOP_K"].type == "int (>= 1, <= 100)"
    assert by_env["AOS_STACK__QUESTDB"].default == "true"
    assert by_env["AOS_STACK__KAFKA_SECURITY"].type == "one of off, scram"
    assert json.loads(by_env["AOS_SECURITY__REDACT_KINDS"].default) == ["email", "iban", "card", "phone", "ip"]
    assert by_env["AOS_KAFKA__SASL_MECHANISM"].default == ""  # None
    assert not any(r.changed for r in by_env.values())


def test_a_set_value_is_marked_changed_with_its_default(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AOS_MATCHING__TOP_K", "7")
    changed = settings_doc.select(settings_doc.rows(Settings()), changed_only=True)
    top_k = [r for r in changed if r.env == "AOS_MATCHING__TOP_K"]
    assert top_k and top_k[0].value == "7" and top_k[0].default == "5"
    assert "AOS_MATCHING__TOP_K=7    (set; default 5)" in settings_doc.as_text(top_k)


def test_secrets_are_hidden_in_every_form() -> None:
    s = Settings(kafka=KafkaSettings(sasl_password=SecretStr("hunter2")))
    rows = settings_doc.rows(s)
    pw = next(r for r in rows if r.env == "AOS_KAFKA__SASL_PASSWORD")
    assert pw.secret and pw.changed and pw.value == settings_doc.HIDDEN
    assert "hunter2" not in settings_doc.as_text(rows) and "hunter2" not in settings_doc.as_json(rows)
    assert "hunter2" not in settings_doc.markdown()
    # the PostgreSQL password's default is a secret too: hidden, and unchanged while it is the default
    pg = next(r for r in rows if r.env == "AOS_POSTGRES__PASSWORD")
    assert pg.default == settings_doc.HIDDEN and not pg.changed


def test_select_by_variable_or_section_key_in_any_case() -> None:
    rows = settings_doc.rows()
    assert [r.env for r in settings_doc.select(rows, "top_k")] == ["AOS_MATCHING__TOP_K"]
    assert [r.env for r in settings_doc.select(rows, "aos_matching__TOP_K")] == ["AOS_MATCHING__TOP_K"]
    assert [r.env for r in settings_doc.select(rows, "matching.top_k")] == ["AOS_MATCHING__TOP_K"]
    assert settings_doc.select(rows, "no-such-thing") == []
    assert {r.section for r in settings_doc.select(rows, "AOS_POSTGRES__")} == {"postgres"}


def test_unknown_variables_names_typos_only() -> None:
    env = {
        "AOS_MATCHING__TOPK": "3",  # a typo: ignored by the settings
        "AOS_MATCHNG__TOP_K": "3",  # a misspelt section
        "aos_kafka__bootstrap_servers": "x:1",  # any case is read
        "AOS_KAFKA": "{}",  # a whole section as JSON is read
        "AOS_DEBUG": "1",  # a tool switch, not a setting
        "PATH": "/bin",
    }
    assert settings_doc.unknown_variables(env) == ["AOS_MATCHING__TOPK", "AOS_MATCHNG__TOP_K"]
    assert settings_doc.unknown_variables(env, nested_only=False) == [
        "AOS_DEBUG",
        "AOS_MATCHING__TOPK",
        "AOS_MATCHNG__TOP_K",
    ]


def test_markdown_escapes_what_markdown_would_eat() -> None:
    md = settings_doc.markdown()
    assert "<stack." not in md  # an HTML tag to a Markdown renderer
    rows = [line for line in md.splitlines() if line.startswith("| `AOS_")]
    assert len(rows) == len(settings_doc.rows())
    for line in rows:  # a description's own "|" must not open a fifth column
        assert len(re.split(r"(?<!\\)\|", line.strip())) == 6, line


def test_docs_settings_md_is_current() -> None:
    """docs/settings.md is generated: after changing a setting run `aos settings --markdown > docs/settings.md`."""
    assert (ROOT / "docs" / "settings.md").read_text(encoding="utf-8") == settings_doc.markdown()


def test_a_single_underscore_after_a_section_is_a_typo_with_a_suggestion() -> None:
    env = {"AOS_TRACING_EXPORTER": "console", "AOS_MATCHING_TOPK": "3", "AOS_FAULTS_RATE": "4", "AOS_LOG_LEVEL": "x"}
    assert settings_doc.unknown_variables(env) == ["AOS_MATCHING_TOPK", "AOS_TRACING_EXPORTER"]
    assert settings_doc.suggestion("AOS_TRACING_EXPORTER") == "AOS_TRACING__EXPORTER"
    assert settings_doc.suggestion("AOS_MATCHING_TOPK") == "AOS_MATCHING__TOP_K"
    assert settings_doc.suggestion("AOS_MATCHING__TOPK") == "AOS_MATCHING__TOP_K"
    assert settings_doc.suggestion("AOS_NOPE__NOTHING_LIKE_IT") is None


def test_a_list_setting_that_is_not_json_is_named() -> None:
    lines = settings_doc.json_problems({"AOS_MEDIA__FILE_ROOTS": "/tmp", "AOS_MATCHING__TOP_K": "3"})
    assert lines == ['bad setting AOS_MEDIA__FILE_ROOTS: a list is written as JSON, e.g. ["a", "b"] (got \'/tmp\')']
    assert settings_doc.json_problems({"AOS_MEDIA__FILE_ROOTS": '["/tmp"]'}) == []
