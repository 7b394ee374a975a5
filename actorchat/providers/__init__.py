"""Model backends: the ``Provider`` base class and the built-in providers."""

from __future__ import annotations

from actorchat.providers._anthropic import AnthropicProvider
from actorchat.providers._anthropic import _factory as _anthropic_factory
from actorchat.providers._base import (
    ChatTurn,
    GenerationCancelled,
    GenerationRequest,
    Provider,
    StreamEnd,
    StreamItem,
)
from actorchat.providers._context import estimate_tokens, fit_context
from actorchat.providers._http import HttpProvider
from actorchat.providers._limits import LimitedProvider
from actorchat.providers._mock import MockCrash, MockProvider
from actorchat.providers._mock import _factory as _mock_factory
from actorchat.providers._openai import OpenAIProvider
from actorchat.providers._openai import _factory as _openai_factory
from actorchat.providers._registry import (
    ProviderFactory,
    create_provider,
    provider_kinds,
    register_provider,
)

register_provider("mock", _mock_factory, limited=False)
register_provider("openai", _openai_factory)
register_provider("anthropic", _anthropic_factory)

__all__ = [
    "AnthropicProvider",
    "ChatTurn",
    "GenerationCancelled",
    "GenerationRequest",
    "HttpProvider",
    "LimitedProvider",
    "MockCrash",
    "MockProvider",
    "OpenAIProvider",
    "Provider",
    "ProviderFactory",
    "StreamEnd",
    "StreamItem",
    "create_provider",
    "estimate_tokens",
    "fit_context",
    "provider_kinds",
    "register_provider",
]
