"""A throwaway PostgreSQL cluster, made by the tests (and the store bench) themselves.

``initdb`` in a temporary directory, ``postgres`` on a free loopback port,
once per test run; stopped and removed at the end, also when tests fail.
``initdb`` refuses to run as root, so as root the cluster belongs to the
``postgres`` user (or ``nobody``). Each test gets a schema of its own
(``search_path`` in its URL), so tests never see each other's rows and a
schema costs a millisecond where a database costs a file copy.

Without PostgreSQL's binaries the fixtures skip, saying why and how to get
them (``make test`` installs Debian's ``postgresql`` as root).
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

#: Why the PostgreSQL tests are skipped when they are.
MISSING = (
    "PostgreSQL is not installed (no initdb/postgres found): the PostgreSQL store's "
    "tests are SKIPPED. Install Debian's 'postgresql' package (make test does, as root) "
    "or set ACTORCHAT_PG_BIN to its bin directory."
)


def find_bindir() -> Path | None:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, newest first."""
    given = os.environ.get("ACTORCHAT_PG_BIN")
    candidates = [given] if given else []
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(str(Path(on_path).parent))
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Cluster:
    """One running PostgreSQL: its URLs, and stop / restart for fault tests."""

    def __init__(self, bindir: Path, *, durable: bool = False) -> None:
        self.bindir = bindir
        self.durable = durable
        self.password = secrets.token_hex(12)
        self.user = "actorchat"
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="actorchat-pg-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        self._runas: list[str] = []
        if os.geteuid() == 0:
            owner = "postgres"
            try:
                pwd.getpwnam(owner)
            except KeyError:
                owner = "nobody"
            runuser = shutil.which("runuser") or "/usr/sbin/runuser"
            self._runas = [runuser, "-u", owner, "--"]
            info = pwd.getpwnam(owner)
            os.chown(self.dir, info.pw_uid, info.pw_gid)
        pwfile = self.dir / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._runas:
            os.chown(pwfile, info.pw_uid, info.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            self.user,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        )
        pwfile.unlink()
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        cmd = [*self._runas, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.dir)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} failed: {done.stderr.strip()}\n{log}")

    def start(self) -> None:
        # Tests check the store's contract, not the disk: without fsync a
        # commit costs no flush on this shared machine. The bench keeps the
        # defaults (durable=True).
        opts = [
            f"-p {self.port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={self.dir}",
            "-c max_connections=300",
        ]
        if not self.durable:
            opts += ["-c fsync=off", "-c full_page_writes=off", "-c synchronous_commit=off"]
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                  "-o", " ".join(opts), "start")  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def restart(self, mode: str = "fast") -> None:
        self.stop(mode)
        self.start()

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except Exception:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, schema: str | None = None, password: bool = True) -> str:
        auth = f"{self.user}:{quote(self.password)}" if password else self.user
        url = f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"
        if schema:
            url += f"?options=-csearch_path%3D{schema}"
        return url

    def new_schema(self) -> str:
        """A fresh, empty schema; returns its name."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name

    def sql(self, query: str, schema: str | None = None, *args: Any) -> list[tuple[Any, ...]]:
        """Run one statement as the cluster's superuser; its rows."""
        import psycopg

        with psycopg.connect(self.url(schema), autocommit=True) as conn:
            cur = conn.execute(query, args or None)
            return cur.fetchall() if cur.description else []


_cluster: Cluster | str | None = None


def cluster_or_reason() -> Cluster | str:
    """The run's cluster, started on first use; or why there is none."""
    global _cluster
    if _cluster is None:
        bindir = find_bindir()
        if bindir is None:
            _cluster = MISSING
        else:
            try:
                import psycopg  # noqa: F401
            except ImportError:
                _cluster = "psycopg is not installed: pip install -e '.[dev]'"
            else:
                try:
                    _cluster = Cluster(bindir)
                except Exception as exc:
                    _cluster = f"could not start a throwaway PostgreSQL: {exc}"
                else:
                    # Also when the session's teardown never runs (an interrupted run).
                    atexit.register(stop_cluster)
    return _cluster


def missing_reason() -> str | None:
    """Why the PostgreSQL tests were skipped in this run (None: they ran, or were not asked for)."""
    return _cluster if isinstance(_cluster, str) else None


def stop_cluster() -> None:
    global _cluster
    if isinstance(_cluster, Cluster):
        _cluster.destroy()
    _cluster = None


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    got = cluster_or_reason()
    if isinstance(got, str):
        pytest.skip(got)
    try:
        yield got
    finally:
        stop_cluster()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh, empty schema of the run's cluster."""
    return pg_cluster.url(pg_cluster.new_schema())


#: The durable stores a system or server test may be parametrised over.
STORES = ["sqlite", "postgres"]


def store_settings(request: Any, kind: str) -> dict[str, Any]:
    """Config overrides for ``kind``: PostgreSQL in a fresh schema of the run's cluster.

    Asks for the session's ``pg_cluster`` fixture only for PostgreSQL, so that
    without it only those parameters are skipped.
    """
    if kind != "postgres":
        return {"store": kind}
    cluster = request.getfixturevalue("pg_cluster")
    return {"store": "postgres", "database_url": cluster.url(cluster.new_schema())}


def wait_until(pred: Any, timeout: float = 30.0, step: float = 0.05) -> bool:
    """Poll ``pred`` until true or ``timeout`` (for other processes' progress only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())
