"""A single-node Apache Kafka (KRaft) broker run from plain Maven jars, no Docker."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from aos_gateway.devstack import _server
from aos_gateway.devstack._proc import (
    LOOPBACK,
    Progress,
    port_answers,
    quiet,
    run,
    spawn_detached,
)
from aos_gateway.devstack._server import JavaServer, require_java
from aos_gateway.devstack.status import PartStatus
from aos_gateway.errors import StackError

if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient

_VERSION_MARKER = ".aos-kafka-version"
_CLUSTER_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


#: the broker's own SCRAM user in ``security="scram"`` mode: a super user, its password in
#: ``<home>/secrets/kafka/aos-admin.password``
ADMIN_USER = "aos-admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"
SECURITY_MODES = ("off", "scram")


def _listener_lines(port: int, controller_port: int, security: str, admin_password: str | None) -> list[str]:
    """The listeners: PLAINTEXT, or SASL_PLAINTEXT with SCRAM and ACLs (the controller stays PLAINTEXT on loopback)."""
    if security == "off":
        return [
            f"listeners=PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
            f"advertised.listeners=PLAINTEXT://{LOOPBACK}:{port}",
            "controller.listener.names=CONTROLLER",
            "inter.broker.listener.name=PLAINTEXT",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
    if security != "scram":
        raise StackError(f"unknown kafka security mode {security!r}: choose from {', '.join(SECURITY_MODES)}")
    if not admin_password:
        raise StackError("kafka security scram needs the admin password")
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{ADMIN_USER}" password="{admin_password}";'
    )
    return [
        f"listeners=SASL_PLAINTEXT://{LOOPBACK}:{port},CONTROLLER://{LOOPBACK}:{controller_port}",
        f"advertised.listeners=SASL_PLAINTEXT://{LOOPBACK}:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=SASL_PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT",
        f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
        f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
        f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}",
        "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        # ANONYMOUS: the broker's own requests to the controller over the PLAINTEXT controller listener
        # (loopback only); clients reach only the SASL listener, where nobody is anonymous
        f"super.users=User:{ADMIN_USER};User:ANONYMOUS",
        "allow.everyone.if.no.acl.found=false",
    ]


def render_server_properties(
    port: int, controller_port: int, data_dir: Path, security: str = "off", admin_password: str | None = None
) -> str:
    """``server.properties`` of a combined broker+controller bound to loopback only.

    ``security="scram"``: clients authenticate with SCRAM-SHA-512 and every request is checked
    against ACLs (none matching: denied); the file then holds the admin password (written 0600).
    """
    return "\n".join(
        [
            "# written by `aos dev up`; edits are overwritten on every start",
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={LOOPBACK}:{controller_port}",
            *_listener_lines(port, controller_port, security, admin_password),
            f"log.dirs={data_dir}",
            "num.partitions=4",
            # topics come from the catalog (`aos topics create`, workers, the agent SDK): a client
            # asking for an unknown topic must not create it (a dispatcher would then think an
            # agent's invocation topic, and so a consumer, exists)
            "auto.create.topics.enable=false",
            "default.replication.factor=1",
            "offsets.topic.replication.factor=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "",
        ]
    )


def render_log4j2_properties(logs_dir: Path) -> str:
    """A log4j2 config that sends the broker's logs to ``<logs_dir>/server.log`` (rolled at 50 MB)."""
    return _server.render_log4j2_properties(
        "aos-devstack-kafka", logs_dir / "server.log", {"state.change.logger": "WARN"}
    )


def pom_xml() -> str:
    """The POM shipped with the package that pins the broker's jars."""
    return resources.files("aos_gateway.devstack").joinpath("pom.xml").read_text(encoding="utf-8")


class KafkaNode(JavaServer):
    """One KRaft broker+controller under ``<home>/kafka``.

    Layout: ``libs/`` (jars), ``server.properties``, ``log4j2.properties``, ``data/`` (log dirs and
    metadata), ``logs/server.log`` and ``logs/stdout.log``, ``kafka.pid``.
    """

    name = "kafka"

    def __init__(
        self,
        home: Path,
        port: int,
        controller_port: int,
        heap: str = "512m",
        version: str = "4.1.1",
        security: str = "off",
    ) -> None:
        """Describe the broker; nothing is touched on disk until a method is called.

        Args:
            home: The stack's home (absolute); the broker lives in ``<home>/kafka``.
            port: The client port on 127.0.0.1 (PLAINTEXT, or SASL_PLAINTEXT with ``security="scram"``).
            controller_port: The KRaft controller port on 127.0.0.1.
            heap: The JVM's ``-Xmx``.
            version: The Apache Kafka version to resolve from Maven Central.
            security: ``off`` or ``scram`` (SCRAM-SHA-512 users added when the storage is formatted,
                ACLs enforced; the admin password is generated into ``<home>/secrets/``).
        """
        if security not in SECURITY_MODES:
            raise StackError(f"unknown kafka security mode {security!r}: choose from {', '.join(SECURITY_MODES)}")
        self.security = security
        self.home = home
        self.root = home / "kafka"
        self.port = port
        self.controller_port = controller_port
        self.heap = heap
        self.version = version
        self.libs = self.root / "libs"
        self.data_dir = self.root / "data"
        self.logs_dir = self.root / "logs"
        self.server_properties = self.root / "server.properties"
        self.log4j_properties = self.root / "log4j2.properties"
        self.pid_file = self.root / "kafka.pid"
        #: which security the storage was formatted for (SCRAM users exist only when formatted with them)
        self.security_marker = self.data_dir / ".aos-security"
        self._admin: AdminClient | None = None
        super().__init__()

    def admin_config(self) -> dict[str, str]:
        """librdkafka settings of the broker's admin user (just the address when security is off)."""
        conf = {"bootstrap.servers": self.address}
        if self.security == "scram":
            from aos_gateway.security.passwords import SecretsDir

            conf |= {
                "security.protocol": "SASL_PLAINTEXT",
                "sasl.mechanism": SCRAM_MECHANISM,
                "sasl.username": ADMIN_USER,
                "sasl.password": SecretsDir(self.home).read(ADMIN_USER),
            }
        return conf

    def _admin_password(self) -> str | None:
        if self.security != "scram":
            return None
        from aos_gateway.security.passwords import SecretsDir

        secrets_dir = SecretsDir(self.home)
        secrets_dir.ensure(ADMIN_USER)
        return secrets_dir.read(ADMIN_USER)

    def _check_formatted_security(self) -> None:
        if self.security != "scram" or not (self.data_dir / "meta.properties").exists():
            return
        try:
            formatted = self.security_marker.read_text(encoding="utf-8").strip()
        except OSError:
            formatted = "off"
        if formatted != "scram":
            raise StackError(
                f"kafka: the storage in {self.data_dir} was formatted without SCRAM users, so nobody could log "
                "in with AOS_STACK__KAFKA_SECURITY=scram; use a fresh AOS_STACK__HOME (or stop the stack and "
                f"remove {self.data_dir}: its topics are lost)"
            )

    @property
    def address(self) -> str:
        """``host:port`` for ``bootstrap.servers``."""
        return f"{LOOPBACK}:{self.port}"

    # -- install ------------------------------------------------------------------------------

    def jars_ready(self) -> bool:
        """Whether ``libs/`` holds the jars of this version."""
        marker = self.libs / _VERSION_MARKER
        try:
            same = marker.read_text(encoding="utf-8").strip() == self.version
        except OSError:
            return False
        return same and any(self.libs.glob("kafka_2.13-*.jar"))

    def ensure_jars(self, progress: Progress = quiet) -> None:
        """Resolve the broker's jars with Maven unless they are already there.

        Raises:
            StackError: ``java`` or ``mvn`` is missing, or Maven failed.
        """
        require_java("Kafka")
        if self.jars_ready():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is not installed; it fetches the Kafka jars: run `apt-get install -y maven`")
        self.root.mkdir(parents=True, exist_ok=True)
        if self.libs.exists():
            shutil.rmtree(self.libs)  # jars of another version must not share the classpath
        (self.root / "pom.xml").write_text(pom_xml(), encoding="utf-8")
        progress(f"kafka: resolving Apache Kafka {self.version} jars with Maven into {self.libs} (once)")
        t0 = time.monotonic()
        run(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "dependency:copy-dependencies",
                "-DoutputDirectory=libs",
                f"-Dkafka.version={self.version}",
            ],
            what=f"mvn dependency:copy-dependencies (Kafka {self.version})",
            timeout_s=900,
            cwd=self.root,
        )
        jars = list(self.libs.glob("*.jar"))
        if not any(j.name.startswith("kafka_2.13-") for j in jars):
            raise StackError(f"mvn finished but {self.libs} holds no kafka_2.13 jar")
        (self.libs / _VERSION_MARKER).write_text(self.version + "\n", encoding="utf-8")
        progress(f"kafka: {len(jars)} jars in {time.monotonic() - t0:.1f}s")

    # -- lifecycle ----------------------------------------------------------------------------

    def launch(self, progress: Progress = quiet) -> None:
        """Start the broker process without waiting for it (no-op when it already runs).

        Raises:
            StackError: A port is held by another process, or the storage cannot be formatted.
        """
        if self.running_pid() is not None:
            progress(f"kafka: already running on {self.address}")
            return
        self.pid_file.unlink(missing_ok=True)
        self.check_ports()
        self.ensure_jars(progress)
        for d in (self.data_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self._check_formatted_security()
        admin_password = self._admin_password()
        _write_private(
            self.server_properties,
            render_server_properties(self.port, self.controller_port, self.data_dir, self.security, admin_password),
        )
        self.log4j_properties.write_text(render_log4j2_properties(self.logs_dir), encoding="utf-8")
        if not (self.data_dir / "meta.properties").exists():
            self._format(progress, admin_password)
        argv = [*self._java("-Xmx" + self.heap, "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20"), "kafka.Kafka"]
        argv.append(str(self.server_properties))
        self._mark_logs()
        pid = spawn_detached(argv, self.logs_dir / "stdout.log")
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        progress(f"kafka: started pid {pid} on {self.address} (logs: {self.logs_dir / 'server.log'})")

    def _owns(self, argv: list[str]) -> bool:
        return "kafka.Kafka" in argv and str(self.server_properties) in argv

    def _answers(self, deadline: float) -> bool:
        """The port answers and a metadata request names a broker."""
        if not port_answers(self.port):
            return False
        if self._admin is None:
            self._admin = _admin(self.admin_config())
        return _metadata_ok(self._admin, min(2.0, max(0.1, deadline - time.monotonic())))

    def _ports(self) -> list[tuple[int, str]]:
        return [(self.port, "AOS_STACK__KAFKA_PORT"), (self.controller_port, "AOS_STACK__KAFKA_CONTROLLER_PORT")]

    def _log_files(self) -> list[tuple[Path, int]]:
        return [(self.logs_dir / "stdout.log", 10), (self.logs_dir / "server.log", 20)]

    def status(self) -> PartStatus:
        """Whether our broker runs and answers a metadata request."""
        pid = self.running_pid()
        if pid is None:
            detail = "stopped"
            if port_answers(self.port):
                detail = "stopped; another process answers on this port"
            return PartStatus(self.name, self.address, running=False, healthy=False, detail=detail)
        try:
            md = _admin(self.admin_config()).list_topics(timeout=2)
        except Exception as exc:
            return PartStatus(self.name, self.address, True, False, f"pid {pid}; not answering: {exc}")
        n = len([t for t in md.topics if not t.startswith("__")])
        return PartStatus(self.name, self.address, True, True, f"pid {pid}; {n} topics; data {self.data_dir}")

    def _java(self, *jvm_opts: str) -> list[str]:
        java = require_java("Kafka")
        return [
            java,
            *jvm_opts,
            "-Djava.awt.headless=true",
            f"-Dkafka.logs.dir={self.logs_dir}",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            "-cp",
            f"{self.libs}/*",
        ]

    def _format(self, progress: Progress, admin_password: str | None = None) -> None:
        out = run([*self._java(), "kafka.tools.StorageTool", "random-uuid"], what="kafka random-uuid", timeout_s=120)
        lines = [ln.strip() for ln in out.stdout.splitlines() if _CLUSTER_ID.match(ln.strip())]
        if not lines:
            raise StackError(f"kafka StorageTool random-uuid printed no cluster id: {out.stdout[-500:]!r}")
        cluster_id = lines[-1]
        argv = [*self._java(), "kafka.tools.StorageTool", "format", "--standalone", "-t", cluster_id]
        if admin_password is not None:
            # the only way to have a first SCRAM user in KRaft: written with the storage's first metadata
            argv += ["--add-scram", f"{SCRAM_MECHANISM}=[name={ADMIN_USER},password={admin_password}]"]
        try:
            run([*argv, "-c", str(self.server_properties)], what="kafka storage format", timeout_s=120)
        except StackError as exc:
            if admin_password is None:
                raise
            raise StackError(str(exc).replace(admin_password, "***")) from None
        self.security_marker.write_text(self.security + "\n", encoding="utf-8")
        how = f", SCRAM user {ADMIN_USER}" if admin_password is not None else ""
        progress(f"kafka: formatted {self.data_dir} (cluster {cluster_id}{how})")


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read (``server.properties`` may hold the admin password)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an older file keeps its mode through O_CREAT
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)


def _admin(conf: dict[str, str]) -> AdminClient:
    from confluent_kafka.admin import AdminClient

    # log_level 0: the probe's own failures are reported by its exceptions, not on stderr
    return AdminClient({**conf, "log_level": 0, "socket.connection.setup.timeout.ms": 2000})


def _metadata_ok(admin: AdminClient, timeout_s: float) -> bool:
    with contextlib.suppress(Exception):
        md = admin.list_topics(timeout=timeout_s)
        return bool(md.brokers)
    return False
