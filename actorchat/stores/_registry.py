"""The registry of store kinds: ``store = "<kind>"`` in the configuration.

One home for the fact "which stores exist": the configuration checks
``store`` against it, the command line offers its kinds, the system builds
its store through it, and the server asks it whether a store keeps its data
on disk (where dev auth keeps its key) and how to name it in the banner.
Built-in stores register here exactly as a third-party one would.

An unknown kind is a ``ConfigurationError`` naming the setting and the
kinds there are, raised when the store is made (at start-up).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from actorchat.config import Config
from actorchat.errors import ConfigurationError
from actorchat.stores._base import Store

__all__ = ["StoreKind", "create_store", "register_store", "store_kind", "store_kinds"]


@dataclass(frozen=True, slots=True)
class StoreKind:
    """A kind of store: how to build one, and what operators are told of it.

    ``durable``: it keeps data in the data dir across restarts (so the
    server keeps its dev-auth key there too). ``describe`` names where the
    data lives, for the start-up banner.
    """

    name: str
    factory: Callable[[Config], Store]
    durable: bool
    describe: Callable[[Config], str]


_KINDS: dict[str, StoreKind] = {}


def register_store(kind: StoreKind) -> None:
    """Make ``store = "<kind.name>"`` usable in the configuration."""
    _KINDS[kind.name] = kind


def store_kinds() -> list[str]:
    """The registered kinds, sorted."""
    return sorted(_KINDS)


def store_kind(name: str) -> StoreKind:
    """The kind called ``name``; ``ConfigurationError`` if there is none."""
    try:
        return _KINDS[name]
    except KeyError:
        kinds = ", ".join(map(repr, store_kinds()))
        msg = f"invalid configuration: store: must be one of {kinds} (got {name!r})"
        raise ConfigurationError(msg) from None


def create_store(config: Config) -> Store:
    """A new, unopened store of the configured kind."""
    return store_kind(config.store).factory(config)
