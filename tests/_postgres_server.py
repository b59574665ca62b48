"""A real PostgreSQL server for the tests: Debian's binaries, a temp dir, a
loopback port.

PostgreSQL refuses to run as root, so as root (CI) ``initdb`` and ``pg_ctl``
run as the ``postgres`` user the Debian package creates, in a temp dir it
owns; as anyone else they run as that user. The server listens on
127.0.0.1 and a free port (and a Unix socket in its temp dir), trusts local
connections, and keeps ``fsync`` on unless asked otherwise (the tests turn
it off for speed; the benchmark keeps it).

``make test`` installs the ``postgresql`` package when no ``initdb`` is found
(see the Makefile's ``postgresql`` target); nothing here skips.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest


def bindir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: the newest
    /usr/lib/postgresql/*/bin, else wherever PATH finds ``initdb``."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parent.parent.name),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "PostgreSQL's initdb was not found: run `make test` (it installs "
            "the postgresql package) or `apt-get install -y postgresql`"
        )
    return Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """One PostgreSQL cluster in a temp dir; :meth:`database` makes a fresh
    database, :meth:`stop`, :meth:`start` and :meth:`restart` drive the
    server (its port and data stay)."""

    def __init__(self, *, fsync: bool = True) -> None:
        self._as_postgres = os.geteuid() == 0
        self.base = Path(tempfile.mkdtemp(prefix="bulkhead-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        self.port = _free_port()
        self._bin = bindir()
        self._names = itertools.count()
        self.started = 0.0
        """When the server last started (``time.monotonic()``)."""
        if self._as_postgres:
            shutil.chown(self.base, "postgres", "postgres")
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.base}'",
            "max_connections": "200",
            "fsync": "on" if fsync else "off",
            "full_page_writes": "on" if fsync else "off",
            "shared_buffers": "'64MB'",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self._bin / tool), *args]
        if self._as_postgres:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.base)

    def url(self, database: str = "postgres") -> str:
        """A connection URL for ``database`` on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "start")
        self.started = time.monotonic()

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are cut off; ``immediate``:
        a crash, recovered from the WAL at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def restart(self, mode: str = "fast") -> None:
        """Stop and start the server."""
        self.stop(mode)
        self.start()

    def database(self) -> str:
        """A new empty database; return its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        """Stop the server (if running) and remove its files."""
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(*, fsync: bool = True) -> Iterator[PostgresServer]:
    """A running :class:`PostgresServer`, removed at exit."""
    server = PostgresServer(fsync=fsync)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One server for the session (``fsync`` off: the tests never crash the
    machine, only the server)."""
    with postgres_server(fsync=False) as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's server."""
    return postgres.database()
