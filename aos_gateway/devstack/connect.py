"""Apache Kafka Connect (distributed mode) with Debezium's JDBC sink, from Maven Central jars.

The worker keeps its connector configs, offsets and statuses in three topics of the local broker
(``aos.connect.configs|offsets|status``), so connectors applied once survive restarts. Its REST API
listens on 127.0.0.1 only. Connector configs never hold the database password: they name
``${env:AOS_SINK_JDBC_URL}``, ``${env:AOS_SINK_JDBC_USER}`` and ``${env:AOS_SINK_JDBC_PASSWORD}``,
which the worker resolves from its own environment (``EnvVarConfigProvider``); ``aos dev up`` sets
them from ``settings.postgres``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

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

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectDistributed"
GROUP_ID = "aos-connect"
INTERNAL_TOPICS = ("aos.connect.configs", "aos.connect.offsets", "aos.connect.status")
JDBC_SINK_CLASS = "io.debezium.connector.jdbc.JdbcSinkConnector"
#: the environment variables connector configs refer to as ``${env:...}``
ENV_URL, ENV_USER, ENV_PASSWORD = "AOS_SINK_JDBC_URL", "AOS_SINK_JDBC_USER", "AOS_SINK_JDBC_PASSWORD"

_MARKER = ".aos-version"
# jars that must not sit in the plugin folder: the worker's copies are used (see jdbc-sink-pom.xml)
_CLASHING = ("jackson-core-", "jackson-databind-", "jackson-annotations-", "slf4j-api-")

# the probes talk to 127.0.0.1 directly, whatever http_proxy says
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def render_worker_properties(bootstrap: str, port: int, plugin_path: Path) -> str:
    """The distributed worker's config: JSON with schemas, internal topics on the broker, REST on loopback."""
    return "\n".join(
        [
            "# written by `aos dev up`; edits are overwritten on every start",
            f"bootstrap.servers={bootstrap}",
            f"group.id={GROUP_ID}",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable=true",
            "value.converter.schemas.enable=true",
            f"config.storage.topic={INTERNAL_TOPICS[0]}",
            f"offset.storage.topic={INTERNAL_TOPICS[1]}",
            f"status.storage.topic={INTERNAL_TOPICS[2]}",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.storage.partitions=5",
            "status.storage.partitions=1",
            # sink tasks commit their consumer offsets this often (a restart redelivers at most this much)
            "offset.flush.interval.ms=1000",
            f"listeners=http://{LOOPBACK}:{port}",
            f"rest.advertised.host.name={LOOPBACK}",
            f"rest.advertised.port={port}",
            f"plugin.path={plugin_path}",
            # plugins found through their ServiceLoader manifests: half the start-up time and memory
            "plugin.discovery=service_load",
            "config.providers=env",
            "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            "",
        ]
    )


def render_log4j2_properties(logs_dir: Path) -> str:
    """The worker's logs in ``<logs_dir>/connect.log`` (rolled at 50 MB)."""
    # quiet: the sink's per-batch SQL and Hibernate's chatter, and the clients' connection logs
    return _server.render_log4j2_properties(
        "aos-devstack-connect", logs_dir / "connect.log", {"org.hibernate": "WARN", "org.apache.kafka.clients": "WARN"}
    )


def _pom(name: str) -> str:
    return resources.files("aos_gateway.devstack").joinpath(name).read_text(encoding="utf-8")


class ConnectNode(JavaServer):
    """One Kafka Connect worker under ``<home>/connect``.

    Layout: ``libs/`` (the worker's jars), ``plugins/debezium-connector-jdbc/`` (the sink and its
    dependencies), ``worker.properties``, ``log4j2.properties``, ``logs/connect.log`` and
    ``logs/stdout.log``, ``connect.pid``.
    """

    name = "connect"

    def __init__(
        self,
        home: Path,
        port: int,
        bootstrap: str,
        jdbc_env: dict[str, str],
        heap: str = "512m",
        kafka_version: str = "4.1.1",
        sink_version: str = "3.3.1.Final",
    ) -> None:
        """Describe the worker; nothing is touched on disk until a method is called.

        Args:
            home: The stack's home (absolute); the worker lives in ``<home>/connect``.
            port: The REST API's port on 127.0.0.1.
            bootstrap: The broker's ``host:port``.
            jdbc_env: ``AOS_SINK_JDBC_URL``/``_USER``/``_PASSWORD`` for the worker's environment.
            heap: The JVM's ``-Xmx``.
            kafka_version: The ``connect-runtime`` version (the broker's).
            sink_version: The ``io.debezium:debezium-connector-jdbc`` version.
        """
        self.root = home / "connect"
        self.port = port
        self.bootstrap = bootstrap
        self.jdbc_env = dict(jdbc_env)
        self.heap = heap
        self.kafka_version = kafka_version
        self.sink_version = sink_version
        self.libs = self.root / "libs"
        self.plugins = self.root / "plugins"
        self.plugin_dir = self.plugins / "debezium-connector-jdbc"
        self.logs_dir = self.root / "logs"
        self.worker_properties = self.root / "worker.properties"
        self.log4j_properties = self.root / "log4j2.properties"
        self.pid_file = self.root / "connect.pid"
        super().__init__()

    @property
    def address(self) -> str:
        """``host:port`` of the REST API."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The REST API's URL (``connect.url``)."""
        return f"http://{self.address}"

    # -- install ------------------------------------------------------------------------------

    def jars_ready(self) -> bool:
        """Whether the worker's jars and the sink plugin of these versions are in place."""
        return _marked(self.libs, self.kafka_version) and _marked(self.plugin_dir, self.sink_version)

    def ensure_jars(self, progress: Progress = quiet) -> None:
        """Resolve the worker's jars and the JDBC sink plugin with Maven unless they are there.

        Each set is copied into a temporary folder that replaces the old one whole, so an
        interrupted fetch never leaves a classpath that looks ready.

        Raises:
            StackError: ``java`` or ``mvn`` is missing, or Maven failed.
        """
        require_java("Kafka Connect")
        if self.jars_ready():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError(
                "Maven (mvn) is not installed; it fetches the Kafka Connect jars: run `apt-get install -y maven`"
            )
        self.root.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        if not _marked(self.libs, self.kafka_version):
            progress(f"connect: resolving Kafka Connect {self.kafka_version} jars with Maven into {self.libs} (once)")
            props = [f"-Dkafka.version={self.kafka_version}"]
            self._fetch(mvn, "connect-pom.xml", self.libs, self.kafka_version, props)
            if not any(self.libs.glob("connect-runtime-*.jar")):
                raise StackError(f"mvn finished but {self.libs} holds no connect-runtime jar")
        if not _marked(self.plugin_dir, self.sink_version):
            progress(f"connect: resolving Debezium JDBC sink {self.sink_version} with Maven (once)")
            self._fetch(
                mvn,
                "jdbc-sink-pom.xml",
                self.plugin_dir,
                self.sink_version,
                [f"-Ddebezium.version={self.sink_version}", "-DexcludeGroupIds=org.apache.kafka"],
                drop=_CLASHING,
            )
            if not any(self.plugin_dir.glob("debezium-connector-jdbc-*.jar")):
                raise StackError(f"mvn finished but {self.plugin_dir} holds no debezium-connector-jdbc jar")
        progress(f"connect: jars ready in {time.monotonic() - t0:.1f}s")

    def _fetch(
        self, mvn: str, pom: str, dest: Path, version: str, props: list[str], drop: tuple[str, ...] = ()
    ) -> None:
        build = self.root / f"build-{dest.name}"
        shutil.rmtree(build, ignore_errors=True)
        build.mkdir(parents=True)
        (build / "pom.xml").write_text(_pom(pom), encoding="utf-8")
        run(
            [mvn, "-q", "-B", "-Dstyle.color=never", "dependency:copy-dependencies", "-DoutputDirectory=out", *props],
            what=f"mvn dependency:copy-dependencies ({pom}, {version})",
            timeout_s=900,
            cwd=build,
        )
        out = build / "out"
        for jar in list(out.glob("*.jar")):
            if jar.name.startswith(drop):
                jar.unlink()
        (out / _MARKER).write_text(version + "\n", encoding="utf-8")
        shutil.rmtree(dest, ignore_errors=True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        out.rename(dest)
        shutil.rmtree(build, ignore_errors=True)

    # -- lifecycle ----------------------------------------------------------------------------

    def launch(self, progress: Progress = quiet) -> None:
        """Start the worker process without waiting for it (no-op when it already runs).

        The broker must be up: the worker creates its internal topics on start.

        Raises:
            StackError: The port is held by another process, or Java/the jars are missing.
        """
        if self.running_pid() is not None:
            progress(f"connect: already running on {self.address}")
            return
        self.pid_file.unlink(missing_ok=True)
        self.check_ports()
        self.ensure_jars(progress)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.worker_properties.write_text(
            render_worker_properties(self.bootstrap, self.port, self.plugins), encoding="utf-8"
        )
        self.log4j_properties.write_text(render_log4j2_properties(self.logs_dir), encoding="utf-8")
        argv = [
            require_java("Kafka Connect"),
            "-Xmx" + self.heap,
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.log4j_properties}",
            "-cp",
            f"{self.libs}/*",
            MAIN_CLASS,
            str(self.worker_properties),
        ]
        env = {**os.environ, **self.jdbc_env}
        self._mark_logs()
        pid = spawn_detached(argv, self.logs_dir / "stdout.log", env=env)
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        progress(f"connect: started pid {pid} on {self.address} (logs: {self.logs_dir / 'connect.log'})")

    def _owns(self, argv: list[str]) -> bool:
        return MAIN_CLASS in argv and str(self.worker_properties) in argv

    def _answers(self, deadline: float) -> bool:
        """The REST API answers and lists the JDBC sink among its plugins."""
        if not port_answers(self.port):
            return False
        try:
            plugins = self._get("/connector-plugins", timeout_s=min(2.0, max(0.2, deadline - time.monotonic())))
        except (OSError, ValueError):
            return False
        return any(isinstance(p, dict) and p.get("class") == JDBC_SINK_CLASS for p in plugins)

    def _ports(self) -> list[tuple[int, str]]:
        return [(self.port, "AOS_STACK__CONNECT_PORT")]

    def _log_files(self) -> list[tuple[Path, int]]:
        return [(self.logs_dir / "stdout.log", 10), (self.logs_dir / "connect.log", 20)]

    def status(self) -> PartStatus:
        """Whether our worker runs, and each connector's state."""
        pid = self.running_pid()
        if pid is None:
            detail = "stopped"
            if port_answers(self.port):
                detail = "stopped; another process answers on this port"
            return PartStatus(self.name, self.address, running=False, healthy=False, detail=detail)
        try:
            conns = self._get("/connectors?expand=status")
        except (OSError, ValueError) as exc:
            return PartStatus(self.name, self.address, True, False, f"pid {pid}; not answering: {exc}")
        states = []
        healthy = True
        for name, body in sorted(conns.items()):
            st = body.get("status", {})
            tasks = [t.get("state", "?") for t in st.get("tasks", [])]
            conn_state = st.get("connector", {}).get("state", "?")
            healthy = healthy and conn_state == "RUNNING" and all(t == "RUNNING" for t in tasks)
            states.append(f"{name} {conn_state}" + (f" ({','.join(tasks)})" if tasks else ""))
        detail = f"pid {pid}; {len(conns)} connectors" + (": " + "; ".join(states) if states else "")
        return PartStatus(self.name, self.address, True, healthy, detail)

    def _get(self, path: str, timeout_s: float = 2.0) -> Any:
        with _OPENER.open(f"{self.url}{path}", timeout=timeout_s) as resp:
            return json.loads(resp.read().decode("utf-8"))


def _marked(folder: Path, version: str) -> bool:
    try:
        return (folder / _MARKER).read_text(encoding="utf-8").strip() == version
    except OSError:
        return False
