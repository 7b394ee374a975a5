"""A throwaway redis-server, started by the tests themselves once per run.

Debian's ``redis-server`` on a free loopback port, in a temporary directory,
with no persistence (``--save '' --appendonly no``) and a password (so the
tests see that it never leaks into a message); stopped and removed at the
end, also when tests fail or the session's teardown never runs. ``restart()``
stops and starts it on the same port, for the fault tests. Each test gets a
key namespace of its own, so tests never see each other's nodes.

Without ``redis-server`` (or redis-py) the fixtures skip, saying why, and
the run ends with a loud "cluster layer NOT TESTED" (``tests/conftest.py``).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

MISSING = (
    "redis-server is not installed: the cluster layer's tests are SKIPPED. Install "
    "Debian's 'redis-server' package (make test does, as root) or set "
    "ACTORCHAT_REDIS_SERVER to its path."
)


def find_server() -> str | None:
    given = os.environ.get("ACTORCHAT_REDIS_SERVER")
    for candidate in (given, shutil.which("redis-server"), "/usr/bin/redis-server"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class RedisServer:
    """One running redis-server: its URL, and stop / start / restart for fault tests."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.password = secrets.token_hex(12)
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="actorchat-redis-"))
        self.log = self.dir / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None
        try:
            self.start()
        except BaseException:
            self.destroy()
            raise

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def start(self) -> None:
        cmd = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "no",
            "--requirepass", self.password,
            "--logfile", str(self.log),
            "--daemonize", "no",
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, cwd=self.dir, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                log = self.log.read_text()[-2000:] if self.log.exists() else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
                    if b"PONG" in s.recv(64) or b"PONG" in s.recv(64):
                        return
            except OSError:
                pass
            time.sleep(0.02)  # waiting for another process: bounded by the deadline
        raise RuntimeError("redis-server did not answer within 30 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


_server: RedisServer | str | None = None


def server_or_reason() -> RedisServer | str:
    """The run's redis-server, started on first use; or why there is none."""
    global _server
    if _server is None:
        binary = find_server()
        if binary is None:
            _server = MISSING
        else:
            try:
                import redis  # noqa: F401
            except ImportError:
                _server = "redis-py is not installed: pip install -e '.[dev]'"
            else:
                try:
                    _server = RedisServer(binary)
                except Exception as exc:
                    _server = f"could not start a throwaway redis-server: {exc}"
                else:
                    atexit.register(stop_server)
    return _server


def missing_reason() -> str | None:
    """Why the cluster tests were skipped in this run (None: they ran, or were not asked for)."""
    return _server if isinstance(_server, str) else None


def stop_server() -> None:
    global _server
    if isinstance(_server, RedisServer):
        _server.destroy()
    _server = None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    got = server_or_reason()
    if isinstance(got, str):
        pytest.skip(got)
    try:
        yield got
    finally:
        stop_server()


@pytest.fixture
def redis_namespace() -> str:
    """A key prefix of this test's own."""
    return "t" + secrets.token_hex(6)
