"""``aos agents register``: a file is checked before anything is sent (user review)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aos_gateway.cli.main import main
from aos_gateway.errors import ValidationError
from aos_gateway.matching.cards import card_from_json, read_card_file


def test_a_file_with_two_cards_of_one_agent_is_refused_naming_both_lines(tmp_path: Path) -> None:
    f = tmp_path / "agents.jsonl"
    f.write_text('{"agent_id": "A"}\n\n{"agent_id": "B"}\n{"agent_id": " A "}\n')
    with pytest.raises(ValidationError, match=r"agent 'A' appears twice \(lines 1 and 4\)"):
        read_card_file(f, one_per_agent=True)
    f.write_text('{"agent_id": "A"}\n{"agent_id": "B"}\n')
    read_card_file(f, one_per_agent=True)


def test_register_refuses_duplicates_before_reaching_kafka(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from aos_gateway.cli import registry_cmds

    def no_kafka(_settings: object) -> None:
        raise AssertionError("the registry topic was read before the file was checked")

    monkeypatch.setattr(registry_cmds, "current_cards", no_kafka)
    f = tmp_path / "agents.jsonl"
    f.write_text(json.dumps({"agent_id": "calc"}) + "\n" + json.dumps({"agent_id": "calc", "cost": 2}) + "\n")
    assert main(["agents", "register", str(f), "--wait"]) == 1
    err = capsys.readouterr().err
    assert "agent 'calc' appears twice (lines 1 and 2)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        ("modalities", ["smell"], "'modalities' must be among text, image, audio; unknown: smell"),
        ("modalities", ["text", "Image"], "unknown: Image"),
        ("invocation_topic", "my topic", "'invocation_topic' must be a Kafka topic name"),
        ("invocation_topic", ".", "'invocation_topic' must be a Kafka topic name"),
        ("invocation_topic", "..", "'invocation_topic' must be a Kafka topic name"),
        ("invocation_topic", "x" * 250, "'invocation_topic' must be a Kafka topic name"),
        ("invocation_topic", "t/ü", "'invocation_topic' must be a Kafka topic name"),
        ("invocation_topic", 7, "'invocation_topic' must be a Kafka topic name"),
    ],
)
def test_cards_with_an_unknown_modality_or_an_illegal_topic_are_refused(field: str, value: object, words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        card_from_json({"agent_id": "a", field: value})


def test_legal_modalities_and_topics_are_kept() -> None:
    card = card_from_json({"agent_id": "a", "modalities": ["text", "image", "audio"], "invocation_topic": "a.b_c-1"})
    assert card["modalities"] == ["text", "image", "audio"] and card["invocation_topic"] == "a.b_c-1"
    assert card_from_json({"agent_id": "a", "invocation_topic": "x" * 249})["invocation_topic"] == "x" * 249
    assert card_from_json({"agent_id": "a", "invocation_topic": None})["invocation_topic"] is None
    assert card_from_json({"agent_id": "a", "modalities": []})["modalities"] == []


def test_register_tenant_refuses_to_break_signed_cards(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review: `--tenant other` on signed cards was accepted; the tenant is signed, so the cards
    would be refused later, far from the mistake. A usage error (exit 2) now, before Kafka."""
    from aos_gateway.cli import registry_cmds

    def no_kafka(_settings: object) -> None:
        raise AssertionError("the registry topic was read before the file was checked")

    monkeypatch.setattr(registry_cmds, "current_cards", no_kafka)
    f = tmp_path / "signed.jsonl"
    f.write_text(json.dumps({"agent_id": "calc", "tenant": "acme", "metadata": {"aos.sig": "x"}}) + "\n")
    assert main(["agents", "register", str(f), "--tenant", "other"]) == 2
    err = capsys.readouterr().err
    assert "would break the signatures of 1 signed cards (first: calc)" in err and len(err.strip().splitlines()) == 1
