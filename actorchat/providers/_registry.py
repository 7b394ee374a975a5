"""The registry of provider kinds: ``provider = "<kind>"`` in a model's configuration.

Built-in providers register here exactly as a third-party one would, and
every provider comes wrapped in its model's pool and rate limits.
"""

from __future__ import annotations

from collections.abc import Callable

from actorchat.config import Config, ModelConfig
from actorchat.errors import ConfigurationError
from actorchat.providers._base import Provider
from actorchat.providers._limits import LimitedProvider

__all__ = ["ProviderFactory", "create_provider", "provider_kinds", "register_provider"]

ProviderFactory = Callable[[ModelConfig, Config], Provider]
_FACTORIES: dict[str, ProviderFactory] = {}
_UNLIMITED: set[str] = set()


def register_provider(kind: str, factory: ProviderFactory, *, limited: bool = True) -> None:
    """Make ``provider = "<kind>"`` usable in model configuration.

    ``limited=False`` is for providers without a backend to protect (the
    in-process mock): their models get counters but no concurrency, rate
    or queue bound.
    """
    _FACTORIES[kind] = factory
    if limited:
        _UNLIMITED.discard(kind)
    else:
        _UNLIMITED.add(kind)


def create_provider(model: ModelConfig, config: Config) -> Provider:
    """Instantiate the provider a model's configuration names.

    Every provider comes wrapped in its model's pool and rate limits
    (``actorchat.providers._limits.LimitedProvider``).
    """
    try:
        factory = _FACTORIES[model.provider]
    except KeyError:
        msg = (
            f"model {model.name!r}: unknown provider {model.provider!r} "
            f"(known: {sorted(_FACTORIES)})"
        )
        raise ConfigurationError(msg) from None
    return LimitedProvider(factory(model, config), model, limited=model.provider not in _UNLIMITED)


def provider_kinds() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_FACTORIES)
