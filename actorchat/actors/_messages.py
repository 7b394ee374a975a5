"""Every message that crosses between actors, in one place.

Conversations, the supervisor and the registry talk only through these
small slotted objects (sent with ``tell``, or ``ask`` for reads; Pykka's
proxies cost 4x an ask). Keeping them apart from the actors that handle
them is what lets each actor module import the messages it sends without
importing the actor that receives them: no import circles.

A conversation's messages to itself (a generation's end, a reply handed
over to run in place) stay private to ``_conversation.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pykka

from actorchat._records import Conversation
from actorchat.actors._base import Envelope, GreenletActor

__all__ = [
    "Activate",
    "Callback",
    "Cancel",
    "ChildFailed",
    "ChildStopped",
    "Counts",
    "Forget",
    "GetHistory",
    "GetInfo",
    "GetStats",
    "Kill",
    "Passivate",
    "Ping",
    "Redeliver",
    "Regenerate",
    "Register",
    "Send",
    "Shutdown",
    "StartNew",
    "States",
    "StopAll",
    "StopChild",
    "Sweep",
    "Unregister",
    "UpdateSettings",
]

#: A caller's continuation: called once with the result or an ``ActorchatError``.
Callback = Callable[[Any], None]


# -- to a conversation ------------------------------------------------------------


class Send:
    """A user message; ``on_ack`` gets the stored Message, ``on_done`` the reply."""

    __slots__ = ("content", "on_ack", "on_done", "sender_id")

    def __init__(
        self,
        content: str,
        sender_id: str,
        on_ack: Callback | None = None,
        on_done: Callback | None = None,
    ) -> None:
        self.content = content
        self.sender_id = sender_id
        self.on_ack = on_ack
        self.on_done = on_done


class Regenerate:
    """Answer a user message again (``stream_response``)."""

    __slots__ = ("message_id", "model", "on_ack", "on_done")

    def __init__(
        self,
        message_id: str | None,
        model: str | None,
        on_ack: Callback | None = None,
        on_done: Callback | None = None,
    ) -> None:
        self.message_id = message_id
        self.model = model
        self.on_ack = on_ack
        self.on_done = on_done


@dataclass(slots=True)
class Cancel:
    message_id: str | None = None


@dataclass(slots=True)
class GetHistory:
    limit: int | None = None


class GetStats:
    __slots__ = ()


class GetInfo:
    __slots__ = ()


class Ping:
    """Answered with ``"pong"``: measures a bare ask round trip."""

    __slots__ = ()


@dataclass(slots=True)
class UpdateSettings:
    title: str | None = None
    model: str | None = None
    system_prompt: str | None = None


class Kill:
    """Crash on purpose (fault injection)."""

    __slots__ = ()


@dataclass(slots=True)
class Passivate:
    """Stop if idle since ``deadline`` (sent by the supervisor's sweep)."""

    deadline: float


class Shutdown:
    """Stop now: cancel a reply in progress, keeping its partial text."""

    __slots__ = ()


# -- to the supervisor ------------------------------------------------------------


@dataclass(slots=True)
class StartNew:
    conversations: Sequence[Conversation]


@dataclass(slots=True)
class Activate:
    conversation_id: str


@dataclass(slots=True)
class ChildFailed:
    conversation_id: str
    actor: GreenletActor
    reason: str
    inbox: list[Envelope[Any]]
    waiters: dict[str, list[Callback]]


@dataclass(slots=True)
class ChildStopped:
    conversation_id: str
    actor: GreenletActor
    reason: str


@dataclass(slots=True)
class StopChild:
    conversation_id: str
    reason: str = "stopped"


@dataclass(slots=True)
class Sweep:
    idle_timeout: float


@dataclass(slots=True)
class StopAll:
    pass


@dataclass(slots=True)
class States:
    state: str | None = None
    limit: int | None = None


@dataclass(slots=True)
class Counts:
    pass


@dataclass(slots=True)
class Redeliver:
    """Requests left in a conversation that stopped on request: hand them on."""

    conversation_id: str
    envelopes: list[Envelope[Any]]


@dataclass(slots=True)
class Forget:
    """The conversation was deleted: it must not be restarted or reported."""

    conversation_id: str


# -- to the registry ----------------------------------------------------------


@dataclass(slots=True)
class Register:
    """Map each id to its actor (the supervisor sends these in batches)."""

    entries: Sequence[tuple[str, pykka.ActorRef[Any]]]


@dataclass(slots=True)
class Unregister:
    """Forget an id, if it still maps to ``ref`` (any ref with None)."""

    conversation_id: str
    ref: pykka.ActorRef[Any] | None = None
