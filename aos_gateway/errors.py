"""The one exception tree of AOS Gateway.

Every error the gateway raises on purpose derives from :class:`AosError`, so callers
can catch one type. The tree::

    AosError
    ├── ConfigError                 settings that cannot work (bad value, missing file)
    ├── MissingExtraError           an optional dependency is not installed (names the pip command)
    ├── SerializationError          bytes that are not a valid record of the expected contract
    │   └── SchemaMismatchError     a well-formed record of another (unknown) schema
    ├── SchemaCompatibilityError    a schema change that breaks backward/forward compatibility
    ├── ValidationError             a decoded record that breaks a rule (empty task, oversize text)
    │   └── MediaError              an image or audio part that cannot be used (corrupt, too large, silent)
    ├── StackError                  the local stack cannot start or answer (port taken, Java missing)
    ├── KafkaError                  the broker refused or did not answer in time
    ├── StoreError                  a store (PostgreSQL, the time-series store, Parquet files) failed
    ├── ConnectError                Kafka Connect refused a connector config or did not answer
    ├── ModelError                  an encoder failed to load or to run
    ├── IndexBackendError           the capability index backend failed (qdrant shard, Weaviate server)
    ├── ResultTimeoutError          no result arrived for a task within the wait limit
    ├── NotFoundError               a named thing (agent, task, dead letter) does not exist
    └── AgentError                  an agent could not handle an invocation (retried)
        └── PermanentAgentError     ... and trying again will not help (not retried on that agent)
"""

from __future__ import annotations


class AosError(Exception):
    """Root of every error raised by AOS Gateway on purpose."""


class ConfigError(AosError):
    """Settings that cannot work."""


class MissingExtraError(AosError):
    """An optional dependency is missing; the message names the install command."""

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(f"{package} is not installed: run `pip install 'aos-gateway[{extra}]'`")
        self.package = package
        self.extra = extra


class SerializationError(AosError):
    """Bytes that are not a valid record of the expected contract."""


class SchemaMismatchError(SerializationError):
    """A record written with a schema this reader does not know."""


class SchemaCompatibilityError(AosError):
    """A schema change that breaks backward or forward compatibility."""


class ValidationError(AosError):
    """A decoded record that breaks a rule of its stage."""


class MediaError(ValidationError):
    """An image or audio part that cannot be used: corrupt, unsupported, too large or long, silent."""


class StackError(AosError):
    """The local stack cannot start, stop or answer."""


class KafkaError(AosError):
    """The broker refused a request or did not answer in time."""


class StoreError(AosError):
    """A store (PostgreSQL, the time-series store, the Parquet files) refused a request or did not answer."""


class ConnectError(AosError):
    """Kafka Connect refused a connector config, a connector failed, or the REST API did not answer."""


class ModelError(AosError):
    """An encoder failed to load or to run."""


class IndexBackendError(AosError):
    """The capability index backend failed: a shard that cannot open, a server that does not answer."""


class ResultTimeoutError(AosError):
    """No result arrived for a task within the wait limit."""


class DeadLetteredError(ResultTimeoutError):
    """A task waited on was refused by a stage: it is on the dead-letter topic, with the reason."""


class NotFoundError(AosError):
    """A named thing does not exist."""


class AgentError(AosError):
    """An agent could not handle an invocation; the dispatcher may retry it."""


class PermanentAgentError(AgentError):
    """An agent cannot handle this invocation and retrying it on the same agent will not help."""
