"""librdkafka's log lines go through Python logging, bounded, instead of raw lines on stderr."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aos_gateway.settings import KafkaSettings
from aos_gateway.streams import kafka as K


def test_every_client_config_logs_through_python_logging() -> None:
    ks = KafkaSettings(bootstrap_servers="127.0.0.1:1")
    for conf in (K.producer_config(ks), K.consumer_config(ks), K.client_config(ks)):
        assert conf["logger"] is K.LIBRDKAFKA_LOG
        assert conf["logger"].logger.name == "aos_gateway.librdkafka"
    K.admin(ks)  # confluent-kafka accepts it


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def sink() -> tuple[K.RdkafkaLog, _Keep]:
    log = logging.getLogger("test.librdkafka")
    log.setLevel(logging.DEBUG)
    log.propagate = False
    keep = _Keep()
    log.handlers = [keep]
    return K.RdkafkaLog(log, window_s=60), keep


FMT = "%s [%s] %s"
FAIL = ("FAIL", "aos-gateway#producer-1", "127.0.0.1:1/bootstrap: Connect failed: Connection refused")


def test_cli_mode_shows_librdkafka_errors_at_info_only(sink: tuple[K.RdkafkaLog, _Keep]) -> None:
    rd, keep = sink
    rd.log(logging.ERROR, FMT, *FAIL)
    assert [r.levelno for r in keep.records] == [logging.INFO]
    assert "Connection refused" in keep.records[0].getMessage()


def test_worker_mode_keeps_the_level_and_bounds_repeats(
    sink: tuple[K.RdkafkaLog, _Keep], monkeypatch: pytest.MonkeyPatch
) -> None:
    rd, keep = sink
    rd.worker = True
    now = [1000.0]
    monkeypatch.setattr(K.time, "monotonic", lambda: now[0])
    for _ in range(100):
        rd.log(logging.ERROR, FMT, *FAIL)
    rd.log(logging.WARNING, FMT, "REQTMOUT", FAIL[1], "timed out")  # another facility: its own line
    shown = [r for r in keep.records if r.levelno >= logging.WARNING]
    assert [r.levelno for r in shown] == [logging.ERROR, logging.WARNING]
    assert sum(r.levelno == logging.DEBUG for r in keep.records) == 99
    now[0] += 61
    rd.log(logging.ERROR, FMT, *FAIL)
    assert keep.records[-1].levelno == logging.ERROR
    assert "99 more like it" in keep.records[-1].getMessage()


def test_cli_with_kafka_down_prints_just_its_one_line_error(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    env |= {
        "AOS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "AOS_KAFKA__REQUEST_TIMEOUT_S": "2",
        "AOS_STACK__HOME": str(tmp_path),
    }
    aos = [sys.executable, "-m", "aos_gateway.cli.main"]
    for cmd in (["topics", "list"], ["agents", "list"]):
        run = subprocess.run([*aos, *cmd], env=env, capture_output=True, text=True, timeout=60)
        lines = run.stderr.strip().splitlines()
        assert run.returncode == 1
        assert len(lines) <= 3 and lines[-1].startswith("aos: error: cannot reach Kafka"), run.stderr
