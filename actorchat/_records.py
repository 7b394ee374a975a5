"""Value objects that cross every boundary: conversations, messages, usage.

They are plain slotted dataclasses (cheap to create by the million, no
reference cycles) with ``to_dict`` giving the wire shape of
``PROTOCOL.md``.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["Conversation", "Message", "Usage", "iso", "new_id"]


# Ids are opaque, not secrets (ownership is checked on every request), so a
# PRNG seeded from the OS is enough, and 3x cheaper than a syscall per id.
_ids = random.Random(os.urandom(16))
# A forked worker must not repeat its parent's sequence.
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(16)))


def new_id() -> str:
    """A fresh opaque id: 16 hex characters, unique across processes."""
    return _ids.randbytes(8).hex()


_iso_second: tuple[int, str] = (-1, "")


def iso(ts: float) -> str:
    """An ISO 8601 UTC timestamp in the protocol's form.

    Every message sent to a client carries one, so the formatted second is
    reused while it lasts (strftime was 3% of a loaded server's time).
    """
    global _iso_second
    second = int(ts)
    cached_second, prefix = _iso_second
    if second != cached_second:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _iso_second = (second, prefix)
    return f"{prefix}.{int((ts - second) * 1_000_000):06d}Z"


@dataclass(slots=True)
class Usage:
    """Token counts of one generation.

    ``estimated`` is true when the provider sent no usage and actorchat
    counted the tokens itself.
    """

    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }
        if self.estimated:
            out["estimated"] = True
        return out


@dataclass(slots=True)
class Message:
    """One message of a conversation.

    ``turn`` orders history: a user message opens turn *n* and the
    assistant reply that answers it carries the same turn, so history reads
    u1, a1, u2, a2 even when u2 arrived while a1 was streaming.
    """

    id: str
    conversation_id: str
    role: str
    content: str
    sender_id: str
    created_at: float
    turn: int
    usage: Usage | None = None
    finish_reason: str | None = None
    model: str | None = None
    superseded: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "conversation_id": self.conversation_id,
            "content": self.content,
            "message_type": self.role,
            "sender_id": self.sender_id,
            "created_at": iso(self.created_at),
        }
        if self.role == "assistant":
            out["model"] = self.model
            out["finish_reason"] = self.finish_reason
            if self.usage is not None:
                out["usage"] = self.usage.to_dict()
        if self.superseded:
            out["superseded"] = True
        return out


@dataclass(slots=True)
class Conversation:
    """A conversation's settings and counters, as stored."""

    id: str
    owner: str
    title: str = ""
    model: str = "mock"
    system_prompt: str = ""
    created_at: float = field(default_factory=time.time)
    updated_at: float = 0.0
    message_count: int = 0

    def __post_init__(self) -> None:
        if not self.updated_at:
            self.updated_at = self.created_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "model": self.model,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "message_count": self.message_count,
        }
