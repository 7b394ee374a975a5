"""Root fixtures. Monkey-patching comes first, before anything else imports
sockets or ssl (pytest has imported threading already; gevent copes)."""

from actorchat._gevent import patch

patch()

from collections.abc import Iterator  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from actorchat import ChatSystem, load_config  # noqa: E402
from actorchat.config import Config  # noqa: E402
from tests.pg_support import missing_reason, pg_cluster, pg_url  # noqa: E402, F401 - fixtures
from tests.redis_support import missing_reason as redis_missing  # noqa: E402
from tests.redis_support import redis_namespace, redis_server  # noqa: E402, F401 - fixtures


def make_config(tmp_path: Path, **overrides: Any) -> Config:
    """A config isolated from the environment, with a real SQLite file in tmp."""
    settings: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "mock_tokens": 12,
        "mock_delay_ms": 0.0,
        "idle_timeout": 0.0,
    }
    settings.update(overrides)
    return load_config(env={}, **settings)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return make_config(tmp_path)


@pytest.fixture
def system(config: Config) -> Iterator[ChatSystem]:
    chat = ChatSystem(config).start()
    try:
        yield chat
    finally:
        chat.stop()


@pytest.fixture
def make_system(tmp_path: Path) -> Iterator[Any]:
    """Start systems with config overrides; every one is stopped afterwards."""
    started: list[ChatSystem] = []

    def factory(**overrides: Any) -> ChatSystem:
        chat = ChatSystem(make_config(tmp_path, **overrides)).start()
        started.append(chat)
        return chat

    yield factory
    for chat in reversed(started):
        chat.stop()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    # Loud, at the end, where nobody misses it: skipped is not passed.
    why = missing_reason()
    if why:
        terminalreporter.section("PostgreSQL store NOT TESTED", sep="!", red=True, bold=True)
        terminalreporter.line(why, red=True)
    why = redis_missing()
    if why:
        terminalreporter.section("cluster layer NOT TESTED", sep="!", red=True, bold=True)
        terminalreporter.line(why, red=True)
