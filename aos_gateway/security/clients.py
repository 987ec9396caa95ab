"""The broker credentials of the settings, for every Kafka client the gateway has.

confluent-kafka takes them from :meth:`~aos_gateway.settings.KafkaSettings.librdkafka_config`;
Faust (aiokafka) from :func:`faust_credentials` (``broker_credentials`` of the app). An admin
(``aos security ...``) uses the settings' own credentials when they name a user, else, for a
local stack run with ``AOS_STACK__KAFKA_SECURITY=scram``, the broker's admin user from the stack's
home.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aos_gateway.errors import ConfigError
from aos_gateway.settings import KafkaSettings, Settings

SCRAM_SHA_512 = "SCRAM-SHA-512"


def faust_credentials(kafka: KafkaSettings) -> Any:
    """``broker_credentials`` for a Faust app: ``faust.SASLCredentials`` for SASL, else None.

    Raises:
        ConfigError: SASL without a user name, or a password file that cannot be read.
    """
    proto = kafka.security_protocol.upper()
    if not proto.startswith("SASL_"):
        return None
    if not kafka.sasl_username:
        raise ConfigError(f"kafka.security_protocol={proto} needs kafka.sasl_username (AOS_KAFKA__SASL_USERNAME)")
    import faust

    ssl_context = None
    if proto == "SASL_SSL":
        import ssl

        ssl_context = ssl.create_default_context()
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=kafka.sasl_secret(),
        mechanism=(kafka.sasl_mechanism or "PLAIN").upper(),
        ssl_context=ssl_context,
    )


def as_user(kafka: KafkaSettings, user: str, password_file: Path) -> KafkaSettings:
    """The same broker, reached as ``user`` over SASL_PLAINTEXT/SCRAM-SHA-512 with its password file."""
    return kafka.model_copy(
        update={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": SCRAM_SHA_512,
            "sasl_username": user,
            "sasl_password": None,
            "sasl_password_file": password_file,
        }
    )


def admin_kafka(settings: Settings) -> KafkaSettings:
    """Settings that reach the broker as someone allowed to manage users and ACLs.

    The settings' own user when they name one; else the local stack's admin (its password in the
    stack's home) when the stack runs with ``kafka_security=scram``.

    Raises:
        ConfigError: Neither (the broker would refuse an anonymous admin).
    """
    kafka = settings.kafka
    if kafka.sasl_username:
        return kafka
    if settings.stack.kafka_security == "scram":
        from aos_gateway.devstack.kafka import ADMIN_USER
        from aos_gateway.security.passwords import SecretsDir

        home = settings.stack.home.expanduser().resolve()
        return as_user(kafka, ADMIN_USER, SecretsDir(home).path(ADMIN_USER))
    raise ConfigError(
        "managing users and ACLs needs an admin: set AOS_KAFKA__SASL_USERNAME and its password "
        "(AOS_KAFKA__SASL_PASSWORD or AOS_KAFKA__SASL_PASSWORD_FILE), or run the local stack with "
        "AOS_STACK__KAFKA_SECURITY=scram"
    )


def client_env(kafka: KafkaSettings, user: str, password_file: Path) -> dict[str, str]:
    """The environment that makes a gateway process (worker, ingress, agent) connect as ``user``."""
    return {
        "AOS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "AOS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "AOS_KAFKA__SASL_MECHANISM": SCRAM_SHA_512,
        "AOS_KAFKA__SASL_USERNAME": user,
        "AOS_KAFKA__SASL_PASSWORD_FILE": str(password_file),
    }
