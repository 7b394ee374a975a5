"""Conversation stores: the ``Store`` base class, SQLite and in-memory."""

from __future__ import annotations

from actorchat.stores._base import Store
from actorchat.stores._memory import MemoryStore
from actorchat.stores._sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store"]
