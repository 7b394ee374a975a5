"""Events that conversations publish on the bus.

One class per protocol event; ``type`` is the protocol's name and
``to_dict`` the ``data`` payload, so the server forwards events without
knowing chat logic. Events are created for every token, so they are slotted
dataclasses without cycles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from actorchat._records import Conversation, Message, Usage

__all__ = [
    "ConversationDeleted",
    "ConversationState",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "MessageReceived",
    "StreamComplete",
    "StreamContent",
    "StreamStart",
]


class Event:
    """Base of every event; ``conversation_id`` says whose it is."""

    __slots__ = ()
    type: ClassVar[str] = "event"
    conversation_id: str

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def frame(self) -> dict[str, Any]:
        """The whole protocol frame: ``{type, data}``."""
        return {"type": self.type, "data": self.to_dict()}


@dataclass(slots=True)
class MessageReceived(Event):
    """A user message is durable and queued for its reply."""

    type: ClassVar[str] = "message_received"
    conversation_id: str
    message: Message

    def to_dict(self) -> dict[str, Any]:
        return {"message": self.message.to_dict()}


@dataclass(slots=True)
class StreamStart(Event):
    """A reply starts; ``message_id`` is the new assistant message's id."""

    type: ClassVar[str] = "stream_start"
    conversation_id: str
    message_id: str
    model: str
    reply_to: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "model": self.model,
            # The user message this reply answers. Not "reply_to": on the
            # wire that name means the client request a frame answers.
            "user_message_id": self.reply_to,
        }


@dataclass(slots=True)
class StreamContent(Event):
    """One delta of a reply; ``index`` counts from 0 per generation.

    ``first_index`` is set only on a merged delta (chunks ``first_index``
    to ``index``) made for a subscriber that fell behind.
    """

    type: ClassVar[str] = "stream_content"
    conversation_id: str
    message_id: str
    content: str
    index: int
    first_index: int | None = None

    def merged_after(self, last: object) -> StreamContent | None:
        """``last`` and this delta as one, or None if they belong to different replies.

        For queues of slow readers (the bus's subscriptions, the server's
        outboxes): no text is lost and the indexes stay gap-free.
        """
        if type(last) is not StreamContent or last.message_id != self.message_id:
            return None
        first = last.index if last.first_index is None else last.first_index
        return StreamContent(
            self.conversation_id, self.message_id, last.content + self.content, self.index, first
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "content": self.content,
            "is_complete": False,
            "index": self.index,
        }
        if self.first_index is not None:
            out["first_index"] = self.first_index
        return out


@dataclass(slots=True)
class StreamComplete(Event):
    """A reply ended, exactly once per generation.

    ``finish_reason`` is ``stop``, ``length``, ``cancelled`` or ``error``;
    ``message`` is the assistant message as stored (None if none was).
    ``superseded``: a crash interrupted it, and its user message is answered
    again (the text shown so far is kept as an earlier version).
    """

    type: ClassVar[str] = "stream_complete"
    conversation_id: str
    message_id: str
    usage: Usage
    finish_reason: str
    message: Message | None = None
    superseded: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "message_id": self.message_id,
            "conversation_id": self.conversation_id,
            "usage": self.usage.to_dict(),
            "finish_reason": self.finish_reason,
        }
        if self.superseded:
            out["superseded"] = True
        return out


@dataclass(slots=True)
class ErrorEvent(Event):
    """Something went wrong in a conversation (e.g. the provider failed)."""

    type: ClassVar[str] = "error"
    conversation_id: str
    code: str
    message: str
    message_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "conversation_id": self.conversation_id,
        }
        if self.message_id is not None:
            out["message_id"] = self.message_id
        return out


@dataclass(slots=True)
class ConversationUpdated(Event):
    """A conversation was created, renamed or otherwise changed."""

    type: ClassVar[str] = "conversation_updated"
    conversation_id: str
    conversation: Conversation
    created: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"conversation": self.conversation.to_dict()}


@dataclass(slots=True)
class ConversationDeleted(Event):
    """A conversation and its data were deleted."""

    type: ClassVar[str] = "conversation_deleted"
    conversation_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"conversation_id": self.conversation_id}


@dataclass(slots=True)
class ConversationState(Event):
    """The supervisor's view of a conversation changed.

    ``state`` is one of ``idle``, ``generating``, ``crashed``,
    ``restarting``, ``failed``, ``passivated``; ``reason`` says why.
    """

    type: ClassVar[str] = "conversation_state"
    conversation_id: str
    state: str
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "state": self.state,
            "reason": self.reason,
        }
