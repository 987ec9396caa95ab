"""``aos serve`` and ``aos bench ingress`` on the command line: arguments and one-line errors."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from aos_gateway.cli import serve_cmds
from aos_gateway.cli.main import build_parser, main
from aos_gateway.errors import ConfigError
from aos_gateway.settings import get_settings


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("AOS_INGRESS__API_KEYS", "AOS_INGRESS__HOST", "AOS_INGRESS__PORT"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_the_commands_parse() -> None:
    args = build_parser().parse_args(["serve", "--host", "::1", "--port", "0", "--insecure"])
    assert (args.host, args.port, args.insecure, args.log_level) == ("::1", 0, True, "warning")
    assert args.handler is serve_cmds.run
    args = build_parser().parse_args(["bench", "ingress", "--n", "10", "--rate", "5", "--json"])
    assert (args.n, args.rate, args.json, args.handler) == (10, 5.0, True, serve_cmds.run)


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["serve", "--port", "http"], "not a port"),
        (["serve", "--port", "70000"], "0..65535"),
        (["serve", "--log-level", "loud"], "invalid choice"),
        (["bench", "ingress", "--n", "0"], "must be > 0"),
        (["bench", "ingress", "--rate", "fast"], "not a number"),
    ],
)
def test_bad_arguments_are_one_line_and_exit_2(argv: list[str], words: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and err.count("\n") == 1


def test_a_public_address_without_keys_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "without API keys" in err and err.count("\n") == 1


def test_broken_key_settings_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AOS_INGRESS__API_KEYS", '{"top-secret": ')
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "AOS_INGRESS__API_KEYS: not JSON" in err and "top-secret" not in err and err.count("\n") == 1


def test_a_taken_port_is_a_config_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}"):
            serve_cmds.bind("127.0.0.1", port)
    sock = serve_cmds.bind("127.0.0.1", 0)
    assert sock.getsockname()[1] > 0
    sock.close()


def test_unreachable_kafka_is_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens there once closed
    monkeypatch.setenv("AOS_KAFKA__BOOTSTRAP_SERVERS", f"127.0.0.1:{dead}")
    monkeypatch.setenv("AOS_KAFKA__REQUEST_TIMEOUT_S", "1")
    assert main(["serve", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert "cannot reach Kafka" in err and err.count("\n") == 1
