"""``aos settings`` and the warning for a misspelt setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aos_gateway.cli.main import main


def test_lists_matching_settings_with_values(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["settings", "top_k"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("AOS_MATCHING__TOP_K=5\n") and "candidate agents" in out


def test_changed_json_shows_what_is_set(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AOS_MATCHING__TOP_K", "9")
    assert main(["settings", "--changed", "--json"]) == 0
    rows = {r["env"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["AOS_MATCHING__TOP_K"]["value"] == "9" and rows["AOS_MATCHING__TOP_K"]["default"] == "5"
    # the fixture's own two (cold store, stack home) are set as well, and what follows that home
    under_home = {"AOS_WORKER__DATA_DIR", "AOS_AUDIO__MODELS_DIR"}
    assert set(rows) == {"AOS_MATCHING__TOP_K", "AOS_EXPERIENCE__COLD_DIR", "AOS_STACK__HOME", *under_home}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["settings", "zzz"], "no setting matches 'zzz'"),
        (["settings", "--markdown", "kafka"], "--markdown prints every setting"),
        (["settings", "--json", "--markdown"], "not allowed with argument"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(
    env: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own errors exit from the parser
        code = int(exc.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_bad_value_is_named(env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AOS_AGENTS__STOP_GRACE_S", "-1")
    assert main(["settings"]) == 1
    assert "bad setting AOS_AGENTS__STOP_GRACE_S" in capsys.readouterr().err


def test_any_command_warns_of_a_misspelt_setting(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AOS_MATCHING__TOPK", "3")
    assert main(["settings", "top_k"]) == 0
    err = capsys.readouterr().err
    assert "aos: warning: AOS_MATCHING__TOPK names no setting and is ignored" in err


def test_a_list_setting_that_is_not_json_is_named_in_one_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: 'aos: unexpected error: SettingsError: error parsing value for field "media" ...'."""
    monkeypatch.setenv("AOS_MEDIA__FILE_ROOTS", "/tmp")
    assert main(["settings", "file_roots"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == (
        'aos: error: bad setting AOS_MEDIA__FILE_ROOTS: a list is written as JSON, e.g. ["a", "b"] (got \'/tmp\')'
    )


def test_changed_with_a_pattern_of_unchanged_settings_is_no_error(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["settings", "top_k", "--changed"]) == 0
    assert "no setting matching 'top_k' is set away from its default" in capsys.readouterr().err


def test_an_empty_broker_list_is_refused_at_once(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A review: AOS_KAFKA__BOOTSTRAP_SERVERS= waited 10 s, then said "cannot reach Kafka at :"."""
    monkeypatch.setenv("AOS_KAFKA__BOOTSTRAP_SERVERS", " ")
    assert main(["settings", "kafka"]) == 1
    err = capsys.readouterr().err
    assert "bad setting AOS_KAFKA__BOOTSTRAP_SERVERS: name at least one broker" in err and "Value error" not in err
