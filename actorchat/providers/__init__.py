"""Model backends: the ``Provider`` base class and the built-in providers."""

from __future__ import annotations

from actorchat.providers._base import (
    ChatTurn,
    GenerationCancelled,
    GenerationRequest,
    Provider,
    ProviderFactory,
    StreamEnd,
    StreamItem,
    create_provider,
    register_provider,
)
from actorchat.providers._mock import MockCrash, MockProvider
from actorchat.providers._mock import _factory as _mock_factory

register_provider("mock", _mock_factory)

__all__ = [
    "ChatTurn",
    "GenerationCancelled",
    "GenerationRequest",
    "MockCrash",
    "MockProvider",
    "Provider",
    "ProviderFactory",
    "StreamEnd",
    "StreamItem",
    "create_provider",
    "register_provider",
]
