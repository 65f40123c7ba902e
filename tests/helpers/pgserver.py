"""A real PostgreSQL server for the tests: Debian's ``postgresql`` package, a fresh
cluster (``initdb``) in a temporary folder, listening on a free loopback port, stopped
by the tests that start it. PostgreSQL refuses to run as root, so as root the server
runs as the ``postgres`` user the package creates."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from helpers.localserver import free_port


def _bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def available() -> bool:
    """True when PostgreSQL's server programs are installed."""
    return _bin("initdb") is not None and _bin("pg_ctl") is not None


class PostgresServer:
    """``start()`` a cluster; ``url(db)`` of a database in it; ``new_database()``;
    ``stop()`` / ``restart()`` (to test an outage); ``close()`` removes it."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="pneumo-pg-"))
        self.data = self.folder / "cluster"
        self.port = free_port()
        self._as_root = os.geteuid() == 0

    def _run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        if self._as_root:
            cmd = ("runuser", "-u", "postgres", "--", *cmd)
        return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        if self._as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        os.chmod(self.folder, 0o700)
        self._run(
            _bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.folder}'\nfsync = off\n"
                "max_connections = 200\n"
            )
        self.resume()
        return self

    def resume(self) -> None:
        """Start (again) the stopped server and wait until it answers."""
        self._run(
            _bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.folder / "log"),
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: drop the connections, as a restart does)."""
        self._run(_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new empty database in the cluster."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text()[-3000:] if path.exists() else ""

    def close(self) -> None:
        self.stop("immediate")
        time.sleep(0.2)
        shutil.rmtree(self.folder, ignore_errors=True)
