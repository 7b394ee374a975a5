"""Helpers for the provider tests: models pointed at fake servers, requests, streams."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import pytest

from actorchat import ModelConfig
from actorchat.providers import ChatTurn, GenerationRequest, StreamEnd
from actorchat.testing import FakeServer

#: Generous bound for waits that should take milliseconds.
WAIT = 20.0

S = TypeVar("S", bound=FakeServer)


def fake_server_fixtures(cls: type[S]) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """A test module's ``server`` (one ``cls`` per module) and its reset before each test.

    Use as ``server, _fresh = fake_server_fixtures(FakeOpenAIServer)``.
    """

    @pytest.fixture(scope="module")
    def server() -> Iterator[S]:
        with cls() as srv:
            yield srv

    @pytest.fixture(autouse=True)
    def _fresh(server: S) -> None:
        server.reset()
        server.api_key = None

    return server, _fresh


def model_for(server: FakeServer, provider: str, name: str = "m", **fields: Any) -> ModelConfig:
    """A model aimed at ``server``, with short backoff so retries are quick."""
    options = {"backoff_base": 0.01, "backoff_max": 0.05}
    options.update(fields.pop("options", {}))
    return ModelConfig(
        name,
        provider=provider,
        base_url=fields.pop("base_url", server.base_url),
        model=fields.pop("model", "fake-model"),
        options=options,
        **fields,
    )


def request(
    model: ModelConfig,
    text: str = "hello",
    *,
    system: str = "",
    history: Iterable[tuple[str, str]] = (),
    max_tokens: int | None = None,
    temperature: float | None = None,
) -> GenerationRequest:
    turns = [ChatTurn(role, content) for role, content in history]
    turns.append(ChatTurn("user", text))
    return GenerationRequest(
        model=model,
        messages=turns,
        system_prompt=system,
        max_tokens=max_tokens or model.max_tokens,
        temperature=temperature,
    )


def collect(stream: Iterator[Any]) -> tuple[list[str], StreamEnd]:
    """Read a provider stream the way a conversation does: deltas, then the end."""
    deltas: list[str] = []
    try:
        for item in stream:
            if isinstance(item, str):
                deltas.append(item)
            else:
                assert isinstance(item, StreamEnd)
                return deltas, item
    finally:
        stream.close()  # type: ignore[attr-defined]
    raise AssertionError(f"the stream ended without a StreamEnd after {deltas!r}")


def read_partial(stream: Iterator[Any], into: list[str]) -> StreamEnd:
    """Like ``collect`` but keeps the deltas read so far when the stream raises."""
    try:
        for item in stream:
            if isinstance(item, str):
                into.append(item)
            else:
                return item  # type: ignore[no-any-return]
    finally:
        stream.close()  # type: ignore[attr-defined]
    raise AssertionError("the stream ended without a StreamEnd")
