"""The second user review's CLI defects (M7-M13): each bad argument or file is one line naming it,
exit 2 for a bad argument and 1 otherwise; no "unexpected error", nothing half done."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from aos_gateway.cli import main as cli
from aos_gateway.errors import ValidationError
from aos_gateway.settings import get_settings

T0 = 1_714_521_600_000  # 2024-05-01T00:00:00Z


def _setenv(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()


def main(argv: list[str]) -> int:
    """``aos`` with ``argv``: its exit status, whether argparse or the command refused the arguments."""
    try:
        return cli.main(argv)
    except SystemExit as exc:
        assert isinstance(exc.code, int)
        return exc.code


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "unexpected error" not in err and "Traceback" not in err, err
    return lines[0]


# -- M7: aos models list -------------------------------------------------------------------------


def _entry(name: str) -> Any:
    from aos_gateway.cli.models_cmds import list_models

    return next(e for e in list_models(get_settings()) if e.encoder == name)


def test_models_list_a_missing_path_is_missing_not_a_hub_tag(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("/nonexistent.pt", str(env / "no" / "such"), "weights.safetensors"):
        _setenv(monkeypatch, AOS_VISION__WEIGHTS=value)
        e = _entry("vision")
        assert e.present is False and "missing" in e.detail and e.location != "hub", (value, e)
    _setenv(monkeypatch, AOS_VISION__WEIGHTS="laion2b_s34b_b79k")  # a pretrained tag stays one
    assert _entry("vision").location == "hub"
    _setenv(monkeypatch, AOS_AUDIO__BACKEND="openai-whisper", AOS_AUDIO__MODEL="/no/such/tiny.pt")
    assert _entry("audio").present is False
    _setenv(monkeypatch, AOS_PERCEPTION__TEXT_MODEL="/no/such/model")
    assert _entry("text").present is False
    _setenv(monkeypatch, AOS_PERCEPTION__TEXT_MODEL="sentence-transformers/all-MiniLM-L6-v2")  # a hub name
    assert _entry("text").location == "hub"


def test_models_list_an_empty_or_corrupt_file_is_not_present(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = env / "empty.pt"
    empty.write_bytes(b"")
    _setenv(monkeypatch, AOS_VISION__WEIGHTS=str(empty))
    e = _entry("vision")
    assert e.present is False and e.corrupt and "empty" in e.detail
    # the checkpoint `aos models prepare` wrote, with its sidecar, then 7 bytes overwritten
    models = env / "models"
    models.mkdir()
    from aos_gateway.perception.whisper_convert import default_checkpoint_path

    _setenv(monkeypatch, AOS_AUDIO__BACKEND="openai-whisper", AOS_AUDIO__MODELS_DIR=str(models))
    ckpt = default_checkpoint_path(get_settings().audio)
    ckpt.write_bytes(b"0123456789" * 100)
    side = ckpt.with_name(ckpt.name + ".json")
    side.write_text(json.dumps({"sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest()}))
    assert _entry("audio").present is True and "checksum verified" in _entry("audio").detail
    with ckpt.open("r+b") as f:
        f.write(b"garbage")
    e = _entry("audio")
    assert e.present is False and e.corrupt and "checksum" in e.detail
    capsys.readouterr()
    assert main(["models", "list"]) == 1
    out = capsys.readouterr().out
    assert "CORRUPT" in out and "present  whisper" not in out


# -- M8, M9, M10: card keys and signing ------------------------------------------------------------


def test_cards_sign_a_missing_file_is_a_bad_argument(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = env / "k.pem"
    assert main(["security", "cards", "keygen", "--key", str(key), "--agent", "calc"]) == 0
    capsys.readouterr()
    assert main(["security", "cards", "sign", str(env / "nonexistent.jsonl"), "--key", str(key)]) == 2
    assert "no such file" in _one_line(capsys.readouterr().err)
    src = env / "cards.jsonl"
    src.write_text(json.dumps({"agent_id": "calc", "description": "adds"}) + "\n")
    assert main(["security", "cards", "sign", str(src), "--key", str(env / "nokey.pem")]) == 2
    assert "nokey.pem: no such file" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "argv",
    [
        ["security", "keys", "new", "--file", "{d}/nonexistent/dir/k.json"],
        ["security", "cards", "keygen", "--key", "{d}/nonexistent/dir/k.pem", "--agent", "x"],
    ],
)
def test_a_file_in_a_missing_folder_is_a_bad_argument(
    env: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(d=env) for a in argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"no such folder {env}/nonexistent/dir" in line and ".tmp-" not in line


def test_keygen_with_a_bad_trust_file_writes_no_key_and_can_be_retried(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, garbage, trust = env / "k3.pem", env / "garbage.jsonl", env / "trust.json"
    garbage.write_text("this is not json\n")
    assert main(["security", "cards", "keygen", "--key", str(key), "--agent", "x", "--trust", str(garbage)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert str(garbage) in line and "not JSON" in line
    assert not key.exists()  # M9: nothing written, so the retry works
    assert main(["security", "cards", "keygen", "--key", str(key), "--agent", "x", "--trust", str(trust)]) == 0
    assert key.exists() and list(json.loads(trust.read_text())["agents"]) == ["x"]


def test_sign_refuses_another_agents_card_and_an_empty_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key, trust = env / "recipes.pem", env / "trust.json"
    assert (
        main(["security", "cards", "keygen", "--key", str(key), "--agent", "card-recipes", "--trust", str(trust)]) == 0
    )
    capsys.readouterr()
    other = env / "unk.jsonl"
    other.write_text(json.dumps({"agent_id": "unk", "description": "?"}) + "\n")
    assert main(["security", "cards", "sign", str(other), "--key", str(key)]) == 1
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    assert "'unk'" in line and "agent:card-recipes" in line and captured.out == ""
    empty = env / "empty.jsonl"
    empty.write_text("")
    assert main(["security", "cards", "sign", str(empty), "--key", str(key)]) == 1
    captured = capsys.readouterr()
    assert "no agent cards" in _one_line(captured.err) and captured.out == ""
    own = env / "own.jsonl"
    own.write_text(json.dumps({"agent_id": "card-recipes", "description": "recipes"}) + "\n")
    assert main(["security", "cards", "sign", str(own), "--key", str(key)]) == 0
    assert json.loads(capsys.readouterr().out)["metadata"]["aos.signer"] == "agent:card-recipes"


def test_sign_checks_a_key_without_its_header_against_the_trust_file(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, trust = env / "old.pem", env / "trust.json"
    assert main(["security", "cards", "keygen", "--key", str(key), "--tenant", "acme", "--trust", str(trust)]) == 0
    key.write_bytes(key.read_bytes().split(b"\n", 1)[1])  # a key made before keys named their signer
    capsys.readouterr()
    src = env / "cards.jsonl"
    src.write_text(json.dumps({"agent_id": "calc", "description": "adds", "tenant": "acme"}) + "\n")
    assert main(["security", "cards", "sign", str(src), "--key", str(key), "--trust", str(trust)]) == 1
    assert "tenant:acme" in _one_line(capsys.readouterr().err)
    assert main(["security", "cards", "sign", str(src), "--key", str(key), "--as-tenant", "--trust", str(trust)]) == 0


# -- M8: Kafka Connect URLs ----------------------------------------------------------------------


def test_connect_status_with_a_url_that_is_not_one(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _setenv(monkeypatch, AOS_CONNECT__URL="notaurl")
    assert main(["connect", "status"]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "'notaurl'" in line and "not an http(s) URL" in line


class _NotConnect(http.server.BaseHTTPRequestHandler):
    answers: ClassVar[dict[str, tuple[int, bytes]]] = {}

    def do_GET(self) -> None:
        code, body = self.answers.get(self.path.split("?")[0], (404, b"<html>not found</html>"))
        self.send_response(code)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    "answers",
    [
        {"/connectors": (200, b'"QuestDB says hello"')},  # JSON, but a string
        {"/connectors": (200, b"<html>QuestDB</html>")},  # not JSON
        {},  # 404 with a page
    ],
)
def test_connect_status_of_something_that_is_not_kafka_connect(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], answers: Any
) -> None:
    handler = type("H", (_NotConnect,), {"answers": answers})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        _setenv(monkeypatch, AOS_CONNECT__URL=url, AOS_CONNECT__REQUEST_TIMEOUT_S="2")
        assert main(["connect", "status"]) == 1
        line = _one_line(capsys.readouterr().err)
        assert url in line and "does not answer as Kafka Connect" in line
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- M11: options that were ignored or misleading ------------------------------------------------


def test_revoke_without_principals_does_not_mention_an_option_not_given(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["security", "revoke"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--no-services" not in line and "--agent" in line


def test_connect_apply_dir_given_a_file(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = env / "dashboard-sink.json"
    f.write_text("{}")
    assert main(["connect", "apply", "--dir", str(f)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is a file, not a folder" in line and "no such folder" not in line


# -- M12: experience messages --------------------------------------------------------------------


def test_learning_bound_names_times_and_counts() -> None:
    from aos_gateway.streams.learner import learning_bound

    reset = T0 + 86_400_000  # 2024-05-02T00:00:00Z
    records: Any = [{"occurred_at": T0 + i} for i in range(40)]
    said: list[str] = []
    with pytest.raises(ValidationError) as err:
        learning_bound(records, T0 - 1000, reset, said.append)
    assert said == [
        "experience: --since 2024-04-30T23:59:59Z is before the last reset (2024-05-02T00:00:00Z); using the reset time"
    ]
    assert str(err.value) == (
        "40 records read, none after the reset of 2024-05-02T00:00:00Z (`aos experience reset`): nothing to learn"
    )
    said.clear()
    assert learning_bound([*records, {"occurred_at": reset + 5}], None, reset, said.append) == reset
    assert said == [
        "experience: 41 records read, 1 after the reset of 2024-05-02T00:00:00Z (`aos experience reset`): "
        "learning from those"
    ]
    said.clear()
    assert learning_bound(records, T0 + 30, None, said.append, "--from") == T0 + 30
    assert said == ["experience: 40 records read, 10 from 2024-05-01T00:00:00Z on (--from): learning from those"]


def test_no_experience_since_is_an_iso_time(env: Path) -> None:
    from aos_gateway.experience.learning import learn_all

    with pytest.raises(ValidationError, match=r"since 2024-05-01T00:00:00Z$"):
        learn_all([], [], get_settings(), since_ms=T0)


# -- M13: bad arguments exit 2 -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["experience", "reset"], "--yes"),
        (["security", "keys", "new", "--file", "{d}/k2.json", "--tenant", ""], "non-empty tenant"),
        (["security", "acls", "show", "--no-services", "--agent", ""], "--agent needs a non-empty name"),
        (["security", "acls", "show", "--no-services", "--tenant", " "], "--tenant needs a non-empty name"),
        (["security", "cards", "keygen", "--key", "{d}/k.pem"], "--agent ID or --tenant T"),
        (["security", "cards", "keygen", "--key", "{d}/k.pem", "--agent", ""], "non-empty name"),
        (["security", "cards", "sign"], "file of agent cards"),
        (["security", "keys", "rotate", "--file", "{d}/k.json"], "--file applies to"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    env: Path, argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([a.format(d=env) for a in argv]) == 2
    line = _one_line(capsys.readouterr().err)
    assert needle in line and line.startswith("aos ") and "--help" in line
    assert not (env / "k2.json").exists() and not (env / "k.pem").exists()


def test_models_list_says_random_vision_and_an_unconverted_whisper_plainly(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A third review: vision on random weights read "present"; an openai-whisper checkpoint not yet
    converted read "MISSING" (exit 1), while the worker converts it at its first audio task."""
    _setenv(monkeypatch, AOS_AUDIO__BACKEND="openai-whisper", AOS_AUDIO__MODELS_DIR=str(env / "models"))
    vision, audio = _entry("vision"), _entry("audio")
    assert vision.random and "RANDOM" in vision.detail
    assert audio.present is None and "the worker converts" in audio.detail
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "vision  RANDOM" in out and "present  open_clip" not in out
