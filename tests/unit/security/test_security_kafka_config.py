"""The SCRAM broker's config, the clients' credentials, and where passwords live."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from pydantic import SecretStr

from aos_gateway.devstack.kafka import ADMIN_USER, KafkaNode, render_server_properties
from aos_gateway.errors import ConfigError, StackError
from aos_gateway.security.clients import admin_kafka, as_user, client_env, faust_credentials
from aos_gateway.security.passwords import SecretsDir, check_user
from aos_gateway.settings import KafkaSettings, Settings, StackSettings


def _props(text: str) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))


def test_scram_mode_renders_a_sasl_listener_with_acls_and_a_plaintext_loopback_controller() -> None:
    p = _props(render_server_properties(29092, 29093, Path("/x/data"), "scram", "s3cret"))
    assert p["listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092,CONTROLLER://127.0.0.1:29093"
    assert p["advertised.listeners"] == "SASL_PLAINTEXT://127.0.0.1:29092"
    assert p["listener.security.protocol.map"] == "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    assert p["inter.broker.listener.name"] == "SASL_PLAINTEXT"
    assert p["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert p["authorizer.class.name"] == "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    assert p["allow.everyone.if.no.acl.found"] == "false"
    assert p["super.users"] == f"User:{ADMIN_USER};User:ANONYMOUS"
    assert 'password="s3cret"' in p["listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config"]
    off = _props(render_server_properties(29092, 29093, Path("/x/data")))
    assert off["listeners"].startswith("PLAINTEXT://") and "authorizer.class.name" not in off
    with pytest.raises(StackError, match="unknown kafka security mode"):
        render_server_properties(1, 2, Path("/x"), "tls")
    with pytest.raises(StackError, match="needs the admin password"):
        render_server_properties(1, 2, Path("/x"), "scram")


def test_the_admin_password_is_generated_once_into_a_private_file(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, 29092, 29093, security="scram")
    pw = node._admin_password()
    path = SecretsDir(tmp_path).path(ADMIN_USER)
    assert pw and path.read_text().strip() == pw and len(pw) >= 40
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert node._admin_password() == pw  # kept across starts
    conf = node.admin_config()
    assert conf["sasl.username"] == ADMIN_USER and conf["sasl.password"] == pw
    assert conf["security.protocol"] == "SASL_PLAINTEXT"
    assert KafkaNode(tmp_path, 29092, 29093).admin_config() == {"bootstrap.servers": "127.0.0.1:29092"}
    with pytest.raises(StackError, match="unknown kafka security mode"):
        KafkaNode(tmp_path, 1, 2, security="kerberos")


def test_storage_formatted_without_scram_is_refused_in_scram_mode(tmp_path: Path) -> None:
    node = KafkaNode(tmp_path, 29092, 29093, security="scram")
    node.data_dir.mkdir(parents=True)
    (node.data_dir / "meta.properties").write_text("cluster.id=x\n")
    with pytest.raises(StackError, match="formatted without SCRAM users"):
        node._check_formatted_security()
    node.security_marker.write_text("scram\n")
    node._check_formatted_security()


def test_passwords_files_and_user_names(tmp_path: Path) -> None:
    sd = SecretsDir(tmp_path)
    a = sd.ensure("aos-worker")
    assert sd.ensure("aos-worker") == a and sd.read("aos-worker") == a.read_text().strip()
    assert sd.read("aos-worker") != sd.read(sd.ensure("aos-ingress").stem)
    with pytest.raises(ConfigError, match="does not exist"):
        sd.read("nobody")
    for bad in ("", "a b", "x=y", "a,b", "../etc", "..", "é"):
        with pytest.raises(ConfigError):
            check_user(bad)


def test_sasl_password_file_reaches_librdkafka(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("from-file\n")
    k = KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512", sasl_username="u")
    assert "sasl.password" not in k.librdkafka_config()
    conf = k.model_copy(update={"sasl_password_file": f}).librdkafka_config()
    assert conf["sasl.password"] == "from-file" and conf["sasl.username"] == "u"
    both = k.model_copy(update={"sasl_password_file": f, "sasl_password": SecretStr("inline")})
    assert both.librdkafka_config()["sasl.password"] == "inline"
    with pytest.raises(ConfigError, match="cannot read") as info:
        k.model_copy(update={"sasl_password_file": tmp_path / "missing"}).librdkafka_config()
    assert "from-file" not in str(info.value)


def test_faust_gets_the_same_credentials(tmp_path: Path) -> None:
    import faust

    assert faust_credentials(KafkaSettings()) is None
    f = tmp_path / "pw"
    f.write_text("pw1\n")
    creds = faust_credentials(as_user(KafkaSettings(), "aos-worker", f))
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.username == "aos-worker" and creds.password == "pw1"
    assert creds.mechanism.value == "SCRAM-SHA-512" and creds.protocol.value == "SASL_PLAINTEXT"
    assert "pw1" not in repr(creds)
    with pytest.raises(ConfigError, match=r"needs kafka\.sasl_username"):
        faust_credentials(KafkaSettings(security_protocol="SASL_PLAINTEXT"))
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    auth = credentials_to_aiokafka_auth(creds)
    assert auth["security_protocol"] == "SASL_PLAINTEXT" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_username"] == "aos-worker" and auth["sasl_plain_password"] == "pw1"


def test_the_app_is_created_with_them(tmp_path: Path) -> None:
    f = tmp_path / "pw"
    f.write_text("pw2\n")
    from aos_gateway.app import create_app

    s = Settings(kafka=as_user(KafkaSettings(), "aos-worker", f))
    app, _ = create_app(s)
    assert app.conf.broker_credentials.username == "aos-worker"


def test_admin_settings(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs an admin"):
        admin_kafka(Settings())
    s = Settings(stack=StackSettings(home=tmp_path, kafka_security="scram"))
    k = admin_kafka(s)
    assert k.sasl_username == ADMIN_USER and k.sasl_password_file == SecretsDir(tmp_path.resolve()).path(ADMIN_USER)
    own = Settings(kafka=KafkaSettings(sasl_username="ops", sasl_password=SecretStr("x")))
    assert admin_kafka(own).sasl_username == "ops"
    env = client_env(KafkaSettings(), "aos-worker", tmp_path / "w.password")
    assert env["AOS_KAFKA__SASL_USERNAME"] == "aos-worker" and "AOS_KAFKA__SASL_PASSWORD" not in env
