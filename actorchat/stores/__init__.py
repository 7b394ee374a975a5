"""Conversation stores: the ``Store`` base class, the built-in stores, and their registry."""

from __future__ import annotations

from typing import TYPE_CHECKING

from actorchat._redact import redact
from actorchat.stores._base import Store
from actorchat.stores._memory import MemoryStore
from actorchat.stores._registry import (
    StoreKind,
    create_store,
    register_store,
    store_kind,
    store_kinds,
)
from actorchat.stores._sqlite import SQLiteStore

if TYPE_CHECKING:
    from actorchat.config import Config
    from actorchat.stores._postgres import PostgresStore


def __getattr__(name: str) -> object:
    # PostgresStore imports psycopg, an optional dependency: only when asked for.
    if name == "PostgresStore":
        from actorchat.stores._postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: Where the SQLite store keeps its file, inside the data dir.
SQLITE_FILE = "actorchat.sqlite3"

register_store(
    StoreKind(
        "sqlite",
        lambda cfg: SQLiteStore(cfg.data_dir / SQLITE_FILE, synchronous=cfg.sqlite_synchronous),
        durable=True,
        describe=lambda cfg: str(cfg.data_dir / SQLITE_FILE),
    )
)


def _postgres(cfg: Config) -> Store:
    # Imported here: psycopg is an optional dependency (the ``postgres`` extra).
    from actorchat.errors import ConfigurationError

    try:
        from actorchat.stores._postgres import PostgresStore
    except ImportError as exc:
        msg = f"store = 'postgres' needs psycopg 3: pip install 'actorchat[postgres]' ({exc})"
        raise ConfigurationError(msg) from None
    password = None
    if cfg.database_password_file:
        try:
            with open(cfg.database_password_file, encoding="utf-8") as fh:
                password = fh.read().rstrip("\r\n")
        except OSError as exc:
            msg = f"cannot read database_password_file {cfg.database_password_file}: {exc.strerror}"
            raise ConfigurationError(msg) from None
    return PostgresStore(cfg.database_url, password=password, pool_size=cfg.database_pool_size)


def _describe_postgres(cfg: Config) -> str:
    return redact(cfg.database_url)


# Durable: the data outlives the process (the dev-auth key stays in data_dir).
register_store(StoreKind("postgres", _postgres, durable=True, describe=_describe_postgres))
register_store(
    StoreKind("memory", lambda cfg: MemoryStore(), durable=False, describe=lambda cfg: "in memory")
)

__all__ = [
    "SQLITE_FILE",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "Store",
    "StoreKind",
    "create_store",
    "register_store",
    "store_kind",
    "store_kinds",
]
