"""Module-level shortcuts (``actorchat.start_conversation``...) on one lazily started system.

``actorchat.start_conversation()`` and friends start a ``ChatSystem`` from
the environment on first use and stop it at interpreter exit. Applications
that want control create their own ``ChatSystem`` instead.
"""

from __future__ import annotations

import atexit
from collections.abc import Sequence
from typing import Any

from actorchat._records import Message
from actorchat._system import ChatSystem
from actorchat.actors import ConversationStats

__all__ = [
    "broadcast_message",
    "conversation_count",
    "default_system",
    "get_history",
    "get_stats",
    "send_message",
    "start_conversation",
    "start_conversations",
]

_default: ChatSystem | None = None


def default_system() -> ChatSystem:
    """The process-wide system the shortcuts use, started on first call."""
    global _default
    if _default is None or not _default.started:
        _default = ChatSystem().start()
        atexit.register(_default.stop)
    return _default


def start_conversation(**settings: Any) -> str:
    return default_system().start_conversation(**settings)


def start_conversations(n: int, **settings: Any) -> list[str]:
    return default_system().start_conversations(n, **settings)


def send_message(conversation_id: str, text: str, *, timeout: float | None = None) -> str:
    return default_system().send_message(conversation_id, text, timeout=timeout)


def get_history(conversation_id: str) -> list[Message]:
    return default_system().get_history(conversation_id)


def get_stats(conversation_id: str) -> ConversationStats:
    return default_system().get_stats(conversation_id)


def broadcast_message(
    conversation_ids: Sequence[str], text: str, *, timeout: float | None = None
) -> dict[str, str | Exception]:
    return default_system().broadcast_message(conversation_ids, text, timeout=timeout)


def conversation_count() -> int:
    return default_system().conversation_count()
