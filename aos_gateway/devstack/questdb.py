"""QuestDB, the stack's time-series store, run from its one Maven Central jar (no Docker).

Clients write with the InfluxDB v2 API over HTTP (``influxdb-client``: the same code writes to a
real InfluxDB 2) and read over the PostgreSQL wire (psycopg); InfluxDB line protocol over TCP is
bound too, for tools that speak it. Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.parse
import urllib.request
from pathlib import Path

from aos_gateway.devstack._proc import (
    LOOPBACK,
    Progress,
    file_size,
    port_answers,
    quiet,
    run,
    spawn_detached,
)
from aos_gateway.devstack._server import JavaServer, require_java
from aos_gateway.devstack.status import PartStatus
from aos_gateway.errors import StackError

MAIN_MODULE = "io.questdb/io.questdb.ServerMain"

# the probes talk to 127.0.0.1 directly, whatever http_proxy says
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def render_server_conf(http_port: int, pg_port: int, ilp_port: int) -> str:
    """``conf/server.conf``: HTTP (InfluxDB v2 API, SQL), PostgreSQL wire and ILP/TCP on loopback only."""
    return "\n".join(
        [
            "# written by `aos dev up`; edits are overwritten on every start",
            f"http.bind.to={LOOPBACK}:{http_port}",
            f"pg.net.bind.to={LOOPBACK}:{pg_port}",
            f"line.tcp.net.bind.to={LOOPBACK}:{ilp_port}",
            "http.min.enabled=false",
            "telemetry.enabled=false",
            # 1 MB column pages instead of 16 MB: each column file of each daily partition starts at
            # one page, which made a nearly empty dev store take hundreds of MB of disk
            "cairo.writer.data.append.page.size=1m",
            "",
        ]
    )


def render_log_conf(logs_dir: Path) -> str:
    """``conf/log.conf``: the server's log in ``<logs_dir>/questdb-<day>.log``, rolled and capped.

    QuestDB logs every SQL statement at INFO; the default (stdout only) would grow without bound.
    """
    return "\n".join(
        [
            "# written by `aos dev up`",
            "writers=file",
            "w.file.class=io.questdb.log.LogRollingFileWriter",
            f"w.file.location={logs_dir}/questdb-${{date:yyyyMMdd}}.log",
            "w.file.level=INFO,ERROR,CRITICAL,ADVISORY",
            "w.file.rollEvery=day",
            "w.file.rollSize=50m",
            "w.file.sizeLimit=200m",
            "",
        ]
    )


class QuestDBNode(JavaServer):
    """One QuestDB server under ``<home>/questdb``.

    Layout: ``lib/questdb-<version>.jar``, ``conf/`` (``server.conf``, ``log.conf``), ``db/`` (the
    tables), ``logs/`` (``questdb-<day>.log`` and ``stdout.log``), ``questdb.pid``; QuestDB itself
    adds ``public/`` (its web console) and ``import/``.
    """

    name = "questdb"

    def __init__(
        self,
        home: Path,
        http_port: int,
        pg_port: int,
        ilp_port: int,
        heap: str = "512m",
        version: str = "9.2.2",
    ) -> None:
        """Describe the server; nothing is touched on disk until a method is called.

        Args:
            home: The stack's home (absolute); the server lives in ``<home>/questdb``.
            http_port: HTTP on 127.0.0.1: the InfluxDB v2 write API, ``/exec`` SQL, ``/ping``.
            pg_port: The PostgreSQL-wire port on 127.0.0.1.
            ilp_port: InfluxDB line protocol over TCP on 127.0.0.1.
            heap: The JVM's ``-Xmx``.
            version: The ``org.questdb:questdb`` version to fetch from Maven Central.
        """
        self.root = home / "questdb"
        self.http_port = http_port
        self.pg_port = pg_port
        self.ilp_port = ilp_port
        self.heap = heap
        self.version = version
        self.lib = self.root / "lib"
        self.conf_dir = self.root / "conf"
        self.server_conf = self.conf_dir / "server.conf"
        self.log_conf = self.conf_dir / "log.conf"
        self.data_dir = self.root / "db"
        self.logs_dir = self.root / "logs"
        self.pid_file = self.root / "questdb.pid"
        super().__init__()

    @property
    def address(self) -> str:
        """``host:port`` of the HTTP endpoint (InfluxDB v2 API)."""
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def url(self) -> str:
        """The InfluxDB v2 API URL for ``influxdb-client`` (``timeseries.url``)."""
        return f"http://{self.address}"

    @property
    def pg_address(self) -> str:
        """``host:port`` of the PostgreSQL wire."""
        return f"{LOOPBACK}:{self.pg_port}"

    @property
    def jar(self) -> Path:
        """The server's jar (it carries its native libraries)."""
        return self.lib / f"questdb-{self.version}.jar"

    # -- install ------------------------------------------------------------------------------

    def jar_ready(self) -> bool:
        """Whether the jar of this version is in ``lib/``."""
        return self.jar.is_file()

    def ensure_jar(self, progress: Progress = quiet) -> None:
        """Fetch ``org.questdb:questdb:<version>`` with Maven unless it is already there.

        The jar is copied into a temporary folder that replaces ``lib/`` whole, so an interrupted
        fetch never leaves a partial jar that looks ready.

        Raises:
            StackError: ``java`` or ``mvn`` is missing, or Maven failed.
        """
        require_java("QuestDB")
        if self.jar_ready():
            return
        mvn = shutil.which("mvn")
        if mvn is None:
            raise StackError("Maven (mvn) is not installed; it fetches the QuestDB jar: run `apt-get install -y maven`")
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / "lib.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        progress(f"questdb: fetching QuestDB {self.version} with Maven into {self.lib} (once)")
        t0 = time.monotonic()
        artifact = f"org.questdb:questdb:{self.version}"
        run(
            [
                mvn,
                "-q",
                "-B",
                "-Dstyle.color=never",
                "dependency:copy",
                f"-Dartifact={artifact}",
                f"-DoutputDirectory={staging}",
            ],
            what=f"mvn dependency:copy ({artifact})",
            timeout_s=900,
            cwd=self.root,
        )
        if not (staging / self.jar.name).is_file():
            raise StackError(f"mvn finished but {staging} holds no {self.jar.name}")
        shutil.rmtree(self.lib, ignore_errors=True)  # a jar of another version must not stay beside it
        staging.rename(self.lib)
        progress(f"questdb: {self.jar.name} ({file_size(self.jar) / 1e6:.0f} MB) in {time.monotonic() - t0:.1f}s")

    # -- lifecycle ----------------------------------------------------------------------------

    def launch(self, progress: Progress = quiet) -> None:
        """Start the server process without waiting for it (no-op when it already runs).

        Raises:
            StackError: A port is held by another process, or Java/the jar is missing.
        """
        if self.running_pid() is not None:
            progress(f"questdb: already running on {self.address}")
            return
        self.pid_file.unlink(missing_ok=True)
        self.check_ports()
        self.ensure_jar(progress)
        for d in (self.conf_dir, self.logs_dir):
            d.mkdir(parents=True, exist_ok=True)
        self.server_conf.write_text(render_server_conf(self.http_port, self.pg_port, self.ilp_port), encoding="utf-8")
        self.log_conf.write_text(render_log_conf(self.logs_dir), encoding="utf-8")
        argv = [
            require_java("QuestDB"),
            "-Xmx" + self.heap,
            "-p",
            str(self.jar),
            "-m",
            MAIN_MODULE,
            "-d",
            str(self.root),
        ]
        self._mark_logs()
        pid = spawn_detached(argv, self.logs_dir / "stdout.log")
        self.pid_file.write_text(f"{pid}\n", encoding="ascii")
        progress(f"questdb: started pid {pid} on {self.address} (logs: {self.logs_dir})")

    def _owns(self, argv: list[str]) -> bool:
        return MAIN_MODULE in argv and str(self.root) in argv

    def _answers(self, deadline: float) -> bool:
        """HTTP answers ``/ping`` and the PostgreSQL wire accepts connections."""
        return self.ping() and port_answers(self.pg_port)

    def _where(self) -> str:
        return f"{self.address} (pg {self.pg_address})"

    def _ports(self) -> list[tuple[int, str]]:
        return [
            (self.http_port, "AOS_STACK__QUESTDB_HTTP_PORT"),
            (self.pg_port, "AOS_STACK__QUESTDB_PG_PORT"),
            (self.ilp_port, "AOS_STACK__QUESTDB_ILP_PORT"),
        ]

    def _log_files(self) -> list[tuple[Path, int]]:
        return [(self.logs_dir / "stdout.log", 10), (self._server_log(), 20)]

    def status(self) -> PartStatus:
        """Whether our server runs and answers a SQL query over HTTP."""
        pid = self.running_pid()
        if pid is None:
            detail = "stopped"
            if port_answers(self.http_port):
                detail = "stopped; another process answers on this port"
            return PartStatus(self.name, self.address, running=False, healthy=False, detail=detail)
        try:
            tables = self.sql_count("SELECT count() FROM tables()")
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            return PartStatus(self.name, self.address, True, False, f"pid {pid}; not answering: {exc}")
        return PartStatus(
            self.name,
            self.address,
            True,
            True,
            f"pid {pid}; pg {self.pg_address}; {tables} tables; data {self.data_dir}",
        )

    def ping(self, timeout_s: float = 1.0) -> bool:
        """Whether ``GET /ping`` answers 204 (the InfluxDB v2 health check QuestDB implements)."""
        try:
            with _OPENER.open(f"{self.url}/ping", timeout=timeout_s) as resp:
                return int(resp.status) == 204
        except (OSError, ValueError):
            return False

    def sql_count(self, query: str, timeout_s: float = 2.0) -> int:
        """The single integer a SQL query returns, run over HTTP ``/exec``."""
        url = f"{self.url}/exec?" + urllib.parse.urlencode({"query": query})
        with _OPENER.open(url, timeout=timeout_s) as resp:
            body = json.loads(resp.read().decode("utf-8"))
        return int(body["dataset"][0][0])

    # -- internals ----------------------------------------------------------------------------

    def _server_log(self) -> Path:
        return self.logs_dir / f"questdb-{time.strftime('%Y%m%d', time.gmtime())}.log"
