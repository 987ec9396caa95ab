"""A private PostgreSQL 15 cluster on loopback, run with the distribution's binaries."""

from __future__ import annotations

import hashlib
import math
import os
import pwd
import secrets
import shlex
import shutil
import stat
import subprocess
import tempfile
import time
from pathlib import Path

from aos_gateway.devstack._proc import LOOPBACK, Progress, port_taken, quiet, run, tail
from aos_gateway.devstack.status import PartStatus
from aos_gateway.errors import AosError, StackError

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_SYSTEM_USER = "postgres"
_SOCKET_PATH_MAX = 100  # sun_path holds 107 bytes; leave room for the port digits


class PostgresNode:
    """One PostgreSQL cluster under ``<home>/postgres``, reachable on ``127.0.0.1:<port>``.

    Layout: ``data/`` (the cluster), ``postgres.log``, ``superuser.pw`` (mode 600), ``run/`` (its
    Unix socket). When we are root, the server runs as the ``postgres`` system user, which owns
    ``<home>/postgres``.
    """

    name = "postgres"

    def __init__(self, home: Path, port: int, user: str, password: str, dbname: str, bin_dir: Path = PG_BIN) -> None:
        """Describe the cluster; nothing is touched on disk until a method is called.

        Args:
            home: The stack's home (absolute); the cluster lives in ``<home>/postgres``.
            port: The TCP port on 127.0.0.1.
            user: The application role, created with LOGIN if missing.
            password: The application role's password (set on every start).
            dbname: The application database, owned by ``user``.
            bin_dir: Where initdb, pg_ctl and postgres are.
        """
        self.home = home
        self.root = home / "postgres"
        self.port = port
        self.user = user
        self.password = password
        self.dbname = dbname
        self.bin_dir = bin_dir
        self.data_dir = self.root / "data"
        self.log_file = self.root / "postgres.log"
        self.pw_file = self.root / "superuser.pw"

    @property
    def address(self) -> str:
        """``host:port`` of the server."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def socket_dir(self) -> Path:
        """Where the server puts its Unix socket: ``run/``, or a short /tmp dir when that path is too long."""
        own = self.root / "run"
        if len(f"{own}/.s.PGSQL.{self.port}") <= _SOCKET_PATH_MAX:
            return own
        digest = hashlib.sha256(str(self.root).encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / f"aos-pg-{digest}"

    def conninfo(self, connect_timeout_s: int = 5) -> str:
        """The application user's libpq connection string (holds the password: do not log it)."""
        from psycopg.conninfo import make_conninfo

        return make_conninfo(
            host=LOOPBACK,
            port=str(self.port),
            user=self.user,
            password=self.password,
            dbname=self.dbname,
            connect_timeout=str(connect_timeout_s),
        )

    # -- install ------------------------------------------------------------------------------

    def installed(self) -> bool:
        """Whether initdb, pg_ctl and postgres are in ``bin_dir``."""
        return all(os.access(self.bin_dir / b, os.X_OK) for b in ("initdb", "pg_ctl", "postgres"))

    def ensure_installed(self, progress: Progress = quiet) -> None:
        """Install PostgreSQL 15 from the distribution when it is missing (root only).

        Raises:
            StackError: Not installed and we are not root, or apt-get failed.
        """
        if self.installed():
            return
        cmd = "apt-get install -y postgresql-15"
        if os.geteuid() != 0:
            raise StackError(f"PostgreSQL 15 is not installed ({self.bin_dir} is missing): run `sudo {cmd}`")
        apt = shutil.which("apt-get")
        if apt is None:
            raise StackError(f"PostgreSQL 15 is not installed ({self.bin_dir} is missing) and there is no apt-get")
        progress("postgres: installing PostgreSQL 15 with apt-get (once)")
        t0 = time.monotonic()
        run([apt, "update"], what="apt-get update", timeout_s=600)
        env_apt = ["env", "DEBIAN_FRONTEND=noninteractive", apt, "install", "-y", "postgresql-15"]
        run(env_apt, what=cmd, timeout_s=1200)
        if not self.installed():
            raise StackError(f"`{cmd}` succeeded but {self.bin_dir} still lacks initdb/pg_ctl/postgres")
        progress(f"postgres: installed in {time.monotonic() - t0:.0f}s")

    # -- lifecycle ----------------------------------------------------------------------------

    def is_running(self) -> bool:
        """``pg_ctl status`` on our data dir."""
        if not self.installed() or not (self.data_dir / "PG_VERSION").exists():
            return False
        out = self._pg_ctl_raw(["status", "-D", str(self.data_dir)], timeout_s=30)
        return out.returncode == 0

    def start(self, timeout_s: float = 60.0, progress: Progress = quiet) -> None:
        """Start the cluster (idempotent), then make sure the role, database and schema exist.

        Raises:
            StackError: The port is held by another process, or initdb/pg_ctl/SQL failed.
        """
        self.ensure_installed(progress)
        if self.is_running():
            running_port = self._running_port()
            if running_port is not None and running_port != self.port:
                raise StackError(
                    f"postgres of {self.data_dir} already runs on port {running_port}, not {self.port}: "
                    "run `aos dev down` first"
                )
            progress(f"postgres: already running on {self.address}")
        else:
            self.check_port()
            self._prepare_dirs()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(progress)
            t0 = time.monotonic()
            opts = f"-h {LOOPBACK} -p {self.port} -k {shlex.quote(str(self.socket_dir))}"
            wait = str(max(1, math.ceil(timeout_s)))
            try:
                self._pg_ctl(
                    ["-D", str(self.data_dir), "-o", opts, "-l", str(self.log_file), "-w", "-t", wait, "start"],
                    what="pg_ctl start",
                    timeout_s=timeout_s + 10,
                )
            except StackError as exc:
                raise StackError(f"{exc}\nlast lines of {self.log_file}:\n{tail(self.log_file)}") from exc
            progress(f"postgres: started on {self.address} in {time.monotonic() - t0:.1f}s (log: {self.log_file})")
        self._ensure_role_and_db(progress)
        self._migrate(progress)

    def check_port(self) -> None:
        """Fail early when our cluster is not running and another process holds its port.

        Raises:
            StackError: One line naming the port and the setting that moves it.
        """
        if not self.is_running() and port_taken(self.port):
            raise StackError(f"port {self.port} is taken by another process; set AOS_POSTGRES__PORT")

    def stop(self, timeout_s: float = 60.0, progress: Progress = quiet) -> None:
        """Stop the cluster with a fast shutdown. Idempotent."""
        if not self.is_running():
            return
        t0 = time.monotonic()
        self._pg_ctl(
            ["-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(max(1, math.ceil(timeout_s))), "stop"],
            what="pg_ctl stop",
            timeout_s=timeout_s + 10,
        )
        progress(f"postgres: stopped in {time.monotonic() - t0:.1f}s")

    def status(self) -> PartStatus:
        """Whether our cluster runs and the application user can ``SELECT 1``."""
        if not self.installed():
            return PartStatus(self.name, self.address, False, False, f"not installed ({self.bin_dir} missing)")
        if not self.is_running():
            return PartStatus(self.name, self.address, False, False, "stopped")
        import psycopg

        try:
            with psycopg.connect(self.conninfo(connect_timeout_s=2), autocommit=True) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return PartStatus(self.name, self.address, True, False, f"SELECT 1 as {self.user} failed: {first}")
        return PartStatus(self.name, self.address, True, True, f"db {self.dbname}; data {self.data_dir}")

    # -- internals ----------------------------------------------------------------------------

    def _as_root(self) -> bool:
        return os.geteuid() == 0

    def _pg_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(PG_SYSTEM_USER)
        except KeyError:
            raise StackError(
                f"running as root, PostgreSQL must run as the `{PG_SYSTEM_USER}` system user, which does not "
                "exist (the postgresql-15 package creates it)"
            ) from None

    def _wrap(self, argv: list[str]) -> list[str]:
        if not self._as_root():
            return argv
        self._pg_user()
        runuser = shutil.which("runuser") or "/usr/sbin/runuser"
        return [runuser, "-u", PG_SYSTEM_USER, "--", *argv]

    def _pg_ctl_raw(self, args: list[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
        argv = self._wrap([str(self.bin_dir / "pg_ctl"), *args])
        try:
            return subprocess.run(
                argv,
                cwd=self.root if self.root.is_dir() else "/",
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StackError(f"pg_ctl {args[0]} failed: {exc}") from exc

    def _pg_ctl(self, args: list[str], what: str, timeout_s: float) -> None:
        run(self._wrap([str(self.bin_dir / "pg_ctl"), *args]), what=what, timeout_s=timeout_s, cwd=self.root)

    def _running_port(self) -> int | None:
        # postmaster.pid: pid, data dir, start time, port, ...
        try:
            lines = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def _prepare_dirs(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700, exist_ok=True)
        sock = self.socket_dir
        sock.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not self._as_root():
            return
        pg = self._pg_user()
        # the server runs as postgres: it must reach <home>/postgres; <home> stays ours (0755)
        mode = stat.S_IMODE(self.home.stat().st_mode)
        if (mode & 0o055) != 0o055:
            self.home.chmod(mode | 0o055)
        for parent in self.home.parents:
            if not _can_traverse(parent, pg):
                st = parent.stat()
                raise StackError(
                    f"the {PG_SYSTEM_USER} user cannot enter {parent} (mode {stat.S_IMODE(st.st_mode):o}); "
                    f"run `chmod o+x {parent}` or set AOS_STACK__HOME to a directory it can reach"
                )
        for p in (self.root, sock, self.pw_file, self.log_file):
            if p.exists() and p.stat().st_uid != pg.pw_uid:
                os.chown(p, pg.pw_uid, pg.pw_gid)

    def _superuser_password(self) -> str:
        try:
            return self.pw_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StackError(f"cannot read the superuser password file {self.pw_file}: {exc}") from exc

    def _initdb(self, progress: Progress) -> None:
        if self.data_dir.exists() and any(self.data_dir.iterdir()):
            raise StackError(f"{self.data_dir} is not empty but holds no cluster; remove it to start afresh")
        if not self.pw_file.exists():
            fd = os.open(self.pw_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(secrets.token_urlsafe(24) + "\n")
            if self._as_root():
                pg = self._pg_user()
                os.chown(self.pw_file, pg.pw_uid, pg.pw_gid)
        t0 = time.monotonic()
        argv = [
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data_dir),
            "-A",
            "scram-sha-256",
            f"--pwfile={self.pw_file}",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
        ]
        run(self._wrap(argv), what="initdb", timeout_s=300, cwd=self.root)
        progress(f"postgres: initialised {self.data_dir} in {time.monotonic() - t0:.1f}s")

    def _ensure_role_and_db(self, progress: Progress) -> None:
        import psycopg
        from psycopg import sql

        try:
            with psycopg.connect(
                host=LOOPBACK,
                port=self.port,
                user="postgres",
                password=self._superuser_password(),
                dbname="postgres",
                autocommit=True,
                connect_timeout=5,
            ) as conn:
                role = sql.Identifier(self.user)
                exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,)).fetchone()
                verb = "ALTER" if exists else "CREATE"
                # DDL takes no bind parameters; Literal quotes the password safely
                conn.execute(sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(role, sql.Literal(self.password)))
                if not exists:
                    progress(f"postgres: created role {self.user}")
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.dbname,)).fetchone() is None:
                    conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(self.dbname), role))
                    progress(f"postgres: created database {self.dbname}")
        except psycopg.Error as exc:
            raise StackError(f"postgres: cannot set up role/database as superuser: {exc}") from exc

    def _migrate(self, progress: Progress) -> None:
        try:
            from aos_gateway.registry.store import migrate
        except ImportError as exc:
            progress(f"postgres: migrations skipped ({exc})")
            return
        try:
            applied: list[str] = migrate(self.conninfo())
        except AosError as exc:
            raise StackError(f"postgres: {exc}") from exc
        progress(f"postgres: applied {', '.join(applied)}" if applied else "postgres: schema up to date")


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may enter ``path`` (the execute bit that applies to it)."""
    try:
        st = path.stat()
    except OSError:
        return False
    mode = st.st_mode
    if user.pw_uid == 0:
        return True
    if st.st_uid == user.pw_uid:
        return bool(mode & stat.S_IXUSR)
    groups = set(os.getgrouplist(user.pw_name, user.pw_gid))
    if st.st_gid in groups:
        return bool(mode & stat.S_IXGRP)
    return bool(mode & stat.S_IXOTH)
