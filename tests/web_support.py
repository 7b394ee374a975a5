"""Shared by the browser tests, the dashboard bench and the screenshot script.

* ``chromium_path`` / ``launch_browser``: Debian's Chromium driven by
  Playwright for Python (``executable_path``; Playwright's own browser
  downloads do not work here). No browser: ``BROWSER_MISSING`` says why, and
  the tests skip with that message (``pytest -ra`` prints it).
* ``web_server``: a real server on a free port (as ``tests/server_support``
  starts one) that also serves ``web/`` at ``/``.
* ``TcpProxy``: a loopback TCP relay whose connections can be cut, to drop a
  browser's WebSocket as a network failure would, and held (``hold()`` /
  ``release()``), to keep the browser away while the server goes on.
* ``axe_violations``: axe-core's WCAG A/AA violations on a page.

The process must be monkey-patched (the tests' conftest does it): the
server runs in greenlets of this process, and Playwright's sync API waits
cooperatively, so the server keeps serving while a test waits on the page.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import gevent
from gevent.event import Event
from gevent.server import StreamServer

from tests.server_support import free_port, running_server

#: The web app's files.
WEB_DIR = Path(__file__).resolve().parents[1] / "web"

#: Chromium flags for running headless in a container, often as root and
#: without a GPU or network access: no sandbox, no GPU, no background
#: networking (update checks, sync), no /dev/shm for shared memory.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str | None:
    """Chromium to drive: ``$ACTORCHAT_CHROMIUM``, else the first one on ``PATH``."""
    env = os.environ.get("ACTORCHAT_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return (
            "BROWSER TESTS SKIPPED: Playwright for Python is not installed "
            "(pip install -e '.[dev]' installs it)"
        )
    if chromium_path() is None:
        return (
            "BROWSER TESTS SKIPPED: no Chromium found (install Debian's package as root: "
            "apt-get install chromium; `make test` and .ci/run do it when root; "
            "or set ACTORCHAT_CHROMIUM=/path/to/chromium)"
        )
    return None


def needs_browser() -> Any:
    """The ``pytestmark`` of a browser test module: skip, saying why, without a browser.

    With ``ACTORCHAT_REQUIRE_BROWSER=1`` (a CI that installed Chromium) a
    missing browser is an error instead.
    """
    import pytest

    reason = browser_missing()
    if reason is not None and os.environ.get("ACTORCHAT_REQUIRE_BROWSER"):
        raise RuntimeError(f"{reason}; ACTORCHAT_REQUIRE_BROWSER is set")
    return pytest.mark.skipif(reason is not None, reason=reason or "")


@contextmanager
def launch_browser() -> Iterator[Any]:
    """Playwright with headless Chromium (a fresh profile each launch)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium_path(), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def require_web_routes(app: Any) -> None:
    """The server serves ``web/`` at ``/`` itself (``actorchat.server._web``)."""
    assert any(rule.rule == "/" for rule in app.url_map.iter_rules()), "server lacks web/"


@contextmanager
def web_server(tmp_path: Path, **overrides: Any) -> Iterator[Any]:
    """A running server (``tests.server_support.running_server``) serving ``web/`` too."""
    with running_server(tmp_path, **overrides) as server:
        assert server.app is not None
        require_web_routes(server.app)
        yield server


@contextmanager
def web_server_process(data_dir: Path, **settings: Any) -> Iterator[str]:
    """A server in a process of its own, serving ``web/`` too; yields its base URL.

    For the bench and the screenshots: there the server is loaded with
    10,000 conversations, and in this process it would hold up Playwright's
    own messages (and the timing of screenshots). ``settings`` are config
    fields (JSON values); ``models`` maps names to ``ModelConfig`` fields.
    """
    config = {
        "data_dir": str(data_dir),
        "port": free_port(),
        "idle_timeout": 0.0,
        "ping_interval": 0.0,
        "shutdown_grace": 0.0,
        "log_level": "WARNING",
        **settings,
    }
    code = (
        "from actorchat._gevent import patch; patch(); import sys; "
        "from tests.web_support import _serve; sys.exit(_serve(sys.argv[1]))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, json.dumps(config)],
        cwd=WEB_DIR.parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if not line or line[0] != "serving":
            raise RuntimeError(f"the server process did not start (exit code {proc.poll()})")
        yield line[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(settings_json: str) -> int:
    """The child of ``web_server_process``: serve until SIGTERM."""
    from gevent.event import Event

    from actorchat import ModelConfig, load_config
    from actorchat.server import Server

    settings = json.loads(settings_json)
    models = {
        name: ModelConfig(name=name, **fields)
        for name, fields in settings.pop("models", {}).items()
    }
    if models:
        settings["models"] = models
    server = Server(load_config(env={}, **settings)).start()
    assert server.app is not None
    require_web_routes(server.app)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    print("serving", server.url, flush=True)
    stop.wait()
    server.stop(grace=0)
    return 0


class TcpProxy:
    """Relays 127.0.0.1:<port> to a target; ``drop()`` cuts every connection at once.

    While ``hold()`` is in force, new connections are accepted but relayed
    only once ``release()`` is called: the browser's reconnection waits (as
    behind a network that is down), with no backoff growing meanwhile.
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (host, target_port)
        self._conns: set[socket.socket] = set()
        self._server = StreamServer((host, 0), self._handle)
        self._open = Event()
        self._open.set()

    def start(self) -> TcpProxy:
        self._server.start()
        return self

    @property
    def port(self) -> int:
        port: int = self._server.server_port
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hold(self) -> None:
        """New connections wait (accepted, not relayed) until ``release()``."""
        self._open.clear()

    def release(self) -> None:
        """Relay the held connections, and new ones at once again."""
        self._open.set()

    def _handle(self, client: socket.socket, _addr: Any) -> None:
        self._open.wait()
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        self._conns.update((client, upstream))
        jobs = [
            gevent.spawn(self._pipe, client, upstream),
            gevent.spawn(self._pipe, upstream, client),
        ]
        gevent.joinall(jobs)
        for s in (client, upstream):
            self._conns.discard(s)
            with suppress(OSError):
                s.close()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def drop(self) -> int:
        """Reset every relayed connection (both sides); returns how many sockets were cut."""
        conns = list(self._conns)
        for s in conns:
            with suppress(OSError):
                # SO_LINGER 0: close sends RST, as a dead network path would look.
                s.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                )
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        return len(conns)

    def stop(self) -> None:
        self.drop()
        self.release()
        self._server.stop(timeout=1)


def axe_violations(page: Any) -> list[str]:
    """axe-core's WCAG A/AA violations on the page, one line each."""
    from axe_playwright_python.sync_playwright import Axe

    options = {
        "resultTypes": ["violations"],
        "runOnly": {"type": "tag", "values": ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]},
    }
    found = Axe().run(page, options=options).response["violations"]
    return [f"{v['id']} ({v['impact']}): {[n['target'] for n in v['nodes']][:5]}" for v in found]
