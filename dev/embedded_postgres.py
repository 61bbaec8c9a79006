"""An embedded PostgreSQL 16 server for the local stack, from PyPI's ``pgserver`` binaries.

Why not ``pgserver.get_server()``: it listens on a unix socket only, while Cosmos builds Asset
URIs from the connection host and its Postgres profile mapping needs a port. So we drive the
same bundled binaries ourselves, on ``127.0.0.1`` and a TCP port, with password auth on TCP so
that the Airflow Connections' passwords are real.

As root (CI, containers) PostgreSQL refuses to run, so the server runs as the ``pgserver``
system user, created on first use exactly as ``pgserver`` itself does it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

SUPERUSER = "postgres"
SYSTEM_USER_WHEN_ROOT = "pgserver"


class PortInUseError(RuntimeError):
    """The configured port is held by another process."""


def postgres_bin_dir() -> Path:
    """Directory of the PostgreSQL binaries shipped in the ``pgserver`` wheel."""
    with warnings.catch_warnings():  # pgserver's import warns about XDG_RUNTIME_DIR, which we don't use
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def find_free_port(host: str = "127.0.0.1") -> int:
    """A TCP port the OS considers free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class EmbeddedPostgres:
    """One PostgreSQL cluster in ``data_dir`` listening on ``host:port`` (TCP only)."""

    data_dir: Path
    port: int
    password: str = "postgres"
    host: str = "127.0.0.1"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "postgres.log"

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 60) -> None:
        """Initialise the cluster if needed and start it; a no-op when it already runs."""
        if self.is_running():
            return
        if not port_is_free(self.port, self.host):
            raise PortInUseError(
                f"Embedded Postgres cannot listen on {self.host}:{self.port}: the port is in use "
                f"by another process. Stop that process, or start this server on another port."
            )
        self._initdb_once()
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            str(int(timeout_s)),
            "-l",
            str(self.log_file),
            "-o",
            f"-h {self.host} -p {self.port} -k ''",
        )

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions, keeps committed data)."""
        if self.is_running():
            self._pg_ctl("stop", "-m", "fast", "-w")

    def is_running(self) -> bool:
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        result = subprocess.run(
            [str(postgres_bin_dir() / "pg_ctl"), "-D", str(self.pgdata), "status"],
            capture_output=True,
            text=True,
            **self._run_as(),
        )
        return result.returncode == 0

    def pid(self) -> int | None:
        """The postmaster's pid while the cluster runs (the first line of ``postmaster.pid``)."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split()[0]) if self.is_running() else None
        except (FileNotFoundError, IndexError, ValueError):
            return None

    # ------------------------------------------------------------------ databases and roles
    def dsn(self, database: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        """A libpq URI; the superuser's password is filled in unless another is given."""
        secret = self.password if password is None else password
        return f"postgresql://{user}:{secret}@{self.host}:{self.port}/{database}"

    def ensure_role(self, name: str, password: str) -> None:
        """Create (or re-password) a login role; idempotent."""
        with self._admin_connection() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(password))
            )

    def ensure_database(self, name: str, owner: str = SUPERUSER) -> None:
        """Create a database owned by ``owner`` unless it exists; idempotent."""
        with self._admin_connection() as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not exists:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(owner)))

    # ------------------------------------------------------------------ internals
    def _admin_connection(self) -> psycopg.Connection:
        return psycopg.connect(self.dsn(), autocommit=True, connect_timeout=10)

    def _initdb_once(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._grant_system_user(self.data_dir)
        with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pwfile:
            pwfile.write(self.password + "\n")
        os.chmod(pwfile.name, 0o644)
        try:
            self._run(
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                "--pwfile",
                pwfile.name,
                "--auth-host=scram-sha-256",
                "--auth-local=trust",
                "--encoding=UTF8",
                "--locale=C",
            )
        finally:
            os.unlink(pwfile.name)
        # pg_ctl writes the log next to pgdata: make sure the server user may create it
        self.log_file.touch()
        self._grant_system_user(self.log_file)

    def _pg_ctl(self, *args: str) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), *args)

    def _run(self, binary: str, *args: str) -> None:
        result = subprocess.run(
            [str(postgres_bin_dir() / binary), *args], capture_output=True, text=True, **self._run_as()
        )
        if result.returncode != 0:
            tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise RuntimeError(
                f"{binary} {' '.join(args[:2])} failed (exit {result.returncode}):\n"
                f"{result.stdout}{result.stderr}\n{tail}"
            )

    @staticmethod
    def _is_root() -> bool:
        return hasattr(os, "geteuid") and os.geteuid() == 0

    def _run_as(self) -> dict:
        return {"user": SYSTEM_USER_WHEN_ROOT} if self._is_root() else {}

    def _grant_system_user(self, path: Path) -> None:
        """As root, hand ``path`` to the ``pgserver`` user and let it traverse the parents."""
        if not self._is_root():
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pgserver.utils import ensure_prefix_permissions, ensure_user_exists

        entry = ensure_user_exists(SYSTEM_USER_WHEN_ROOT)
        ensure_prefix_permissions(path)
        ensure_prefix_permissions(postgres_bin_dir())
        shutil.chown(path, entry.pw_uid, entry.pw_gid)


def wait_until_accepting(server: EmbeddedPostgres, timeout_s: float = 30) -> None:
    """Block until a connection succeeds (pg_ctl -w already waits; this guards restarts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(server.dsn(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
