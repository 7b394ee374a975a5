"""Conversation stores: the ``Store`` base class, SQLite and in-memory, and their registry."""

from __future__ import annotations

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
register_store(
    StoreKind("memory", lambda cfg: MemoryStore(), durable=False, describe=lambda cfg: "in memory")
)

__all__ = [
    "SQLITE_FILE",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "StoreKind",
    "create_store",
    "register_store",
    "store_kind",
    "store_kinds",
]
