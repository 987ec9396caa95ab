"""``aos worker --detach`` (and ``aos agents run --detach``) fail loudly instead of starting a dead process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aos_gateway.cli import worker_proc
from aos_gateway.errors import KafkaError, StackError
from aos_gateway.settings import KafkaSettings, Settings, StackSettings

UNREACHABLE = "127.0.0.1:1"


def _settings(home: Path, bootstrap: str = UNREACHABLE) -> Settings:
    return Settings(
        stack=StackSettings(home=home), kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=1)
    )


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env |= {
        "AOS_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE,
        "AOS_KAFKA__REQUEST_TIMEOUT_S": "1",
        "AOS_STACK__HOME": str(home),
        "AOS_WORKER__DATA_DIR": str(home / "worker"),
    }
    return env


def test_unreachable_kafka_fails_before_anything_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_spawn(*_a: object, **_k: object) -> None:
        raise AssertionError("nothing should start while Kafka is unreachable")

    monkeypatch.setattr(subprocess, "Popen", no_spawn)
    with pytest.raises(KafkaError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        worker_proc.start_detached(_settings(tmp_path), "warn", lambda _m: None)
    assert not (tmp_path / "worker.pid").exists()


def test_a_child_that_dies_at_start_is_an_error_with_its_last_error_line(tmp_path: Path) -> None:
    (tmp_path / "worker.log").write_text("ERROR an old run's error\n")
    child = "import sys; print('starting'); print('[ERROR] KafkaError: it broke', file=sys.stderr); sys.exit(3)"
    said: list[str] = []
    with pytest.raises(StackError) as exc:
        worker_proc.start_detached(
            _settings(tmp_path), "warn", said.append, argv=[sys.executable, "-c", child], check_kafka=False
        )
    msg = str(exc.value)
    assert "exit status 3" in msg and "[ERROR] KafkaError: it broke" in msg and "old run" not in msg
    assert "\n" not in msg
    assert not (tmp_path / "worker.pid").exists() and not said  # no "started"


def test_a_child_that_lives_is_started(tmp_path: Path) -> None:
    said: list[str] = []
    s = _settings(tmp_path)
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    pid = worker_proc.start_detached(s, "warn", said.append, argv=argv, settle_s=0.5, check_kafka=False)
    try:
        assert worker_proc.running_pid(s) == pid
        assert said and said[0].startswith(f"worker: started (pid {pid}")
    finally:
        worker_proc.stop(s, lambda _m: None, timeout=5)
    assert worker_proc.running_pid(s) is None


def test_aos_errors_are_logged_on_one_line() -> None:
    handler_out: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            handler_out.append(self.format(record))

    log = logging.getLogger("test.worker_proc.one_line")
    log.propagate = False
    log.addHandler(Keep())
    log.addFilter(worker_proc.OneLineAosErrors())
    for exc in (KafkaError("cannot reach Kafka"), ValueError("a bug")):
        try:
            raise exc
        except Exception as caught:
            log.exception("Error: %r", caught)
    assert handler_out[0] == "Error: KafkaError('cannot reach Kafka')"
    assert "Traceback" in handler_out[1]  # other errors keep theirs


def test_cli_detach_with_kafka_down_exits_1_with_one_line(tmp_path: Path) -> None:
    aos = [sys.executable, "-m", "aos_gateway.cli.main"]
    run = subprocess.run([*aos, "worker", "--detach"], env=_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("aos: error: cannot reach Kafka at 127.0.0.1:1"), run.stderr
    assert "started" not in run.stdout + run.stderr
    assert not (tmp_path / "worker.pid").exists()


def test_worker_log_ends_with_one_line_error_when_kafka_is_down(tmp_path: Path) -> None:
    run = subprocess.run(
        worker_proc.worker_argv("warn"), env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert run.returncode != 0
    out = run.stdout + run.stderr
    assert "Traceback" not in out
    last = [ln for ln in out.splitlines() if "ERROR" in ln][-1]
    assert "cannot reach Kafka at 127.0.0.1:1" in last
