"""Secrets come from the environment or files and never show up in a repr, a log line or an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pydantic import SecretStr

from aos_gateway.security.crypto import new_key
from aos_gateway.settings import (
    IngressSettings,
    KafkaSettings,
    PostgresSettings,
    SchemaRegistrySettings,
    SecuritySettings,
    Settings,
    TimeSeriesSettings,
)

KAFKA_PW = "kafka-pw-0f9e8d7c"
PG_PW = "pg-pw-1a2b3c4d"
QUEST_PW = "quest-pw-5e6f7a8b"
TOKEN = "influx-token-9c8b7a6f"
API_KEY = "api-key-4d3c2b1a"


def test_the_settings_repr_shows_no_secret() -> None:
    key = new_key()
    s = Settings(
        kafka=KafkaSettings(sasl_username="u", sasl_password=SecretStr(KAFKA_PW)),
        postgres=PostgresSettings(password=SecretStr(PG_PW)),
        timeseries=TimeSeriesSettings(
            token=SecretStr(TOKEN), questdb_pg=f"host=127.0.0.1 port=1 user=admin password={QUEST_PW} dbname=qdb"
        ),
        schema_registry=SchemaRegistrySettings(basic_auth_user_info=SecretStr("user:" + API_KEY)),
        ingress=IngressSettings(api_keys=SecretStr(json.dumps({API_KEY: "acme"}))),
        security=SecuritySettings(keyring=SecretStr(json.dumps({"*": [key]}))),
    )
    for text in (repr(s), str(s), repr(s.kafka), repr(s.timeseries), repr(s.security)):
        for secret in (KAFKA_PW, PG_PW, QUEST_PW, TOKEN, API_KEY, key):
            assert secret not in text
    assert s.kafka.librdkafka_config()["sasl.password"] == KAFKA_PW  # still usable where needed


def _aos(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("AOS_")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-m", "aos_gateway.cli.main", *args], env=full, capture_output=True, text=True, timeout=120
    )


def test_cli_error_paths_do_not_print_passwords(tmp_path: Path) -> None:
    pw_file = tmp_path / "worker.password"
    pw_file.write_text(KAFKA_PW + "\n")
    env = {
        "AOS_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "AOS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "AOS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "AOS_KAFKA__SASL_USERNAME": "aos-worker",
        "AOS_KAFKA__SASL_PASSWORD_FILE": str(pw_file),
        "AOS_KAFKA__REQUEST_TIMEOUT_S": "1",
        "AOS_POSTGRES__PORT": "1",
        "AOS_POSTGRES__PASSWORD": PG_PW,
        "AOS_STACK__HOME": str(tmp_path / "home"),
        "AOS_LOG_LEVEL": "DEBUG",
    }
    runs = [
        _aos(env, "topics", "list"),  # the broker does not answer
        _aos(env, "agents", "history", "calc"),  # PostgreSQL does not answer
        _aos(env, "security", "apply", "--agent", "calc"),  # the broker does not answer
        _aos({**env, "AOS_KAFKA__SASL_PASSWORD": KAFKA_PW}, "topics", "list"),
        _aos({**env, "AOS_KAFKA__SASL_PASSWORD_FILE": str(tmp_path / "nope")}, "topics", "list"),
    ]
    for out in runs:
        assert out.returncode != 0, out
        assert "error" in out.stderr
        for secret in (KAFKA_PW, PG_PW):
            assert secret not in out.stdout and secret not in out.stderr, out.stderr[-2000:]
    assert "cannot read" in runs[-1].stderr and str(tmp_path / "nope") in runs[-1].stderr
