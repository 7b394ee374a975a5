"""actorchat: massively concurrent AI chat on the actor model.

Every conversation is a Pykka actor running as a gevent greenlet, supervised
and restarted OTP-style, with replies streamed token by token to every
watcher. Call ``actorchat.patch()`` first in your program, then::

    with actorchat.ChatSystem() as chat:
        cid = chat.start_conversation()
        print(chat.send_message(cid, "Hello!"))
"""

from __future__ import annotations

from actorchat import errors
from actorchat._bus import EventBus, Subscription
from actorchat._default import (
    broadcast_message,
    conversation_count,
    default_system,
    get_history,
    get_stats,
    send_message,
    start_conversation,
    start_conversations,
)
from actorchat._events import (
    ConversationDeleted,
    ConversationState,
    ConversationUpdated,
    ErrorEvent,
    Event,
    MessageReceived,
    StreamComplete,
    StreamContent,
    StreamStart,
)
from actorchat._gevent import is_patched, patch
from actorchat._records import Conversation, Message, Usage
from actorchat._system import ChatSystem
from actorchat._version import __version__
from actorchat.actors import ConversationStats
from actorchat.config import Config, ModelConfig, load_config

__all__ = [
    "ChatSystem",
    "Config",
    "Conversation",
    "ConversationDeleted",
    "ConversationState",
    "ConversationStats",
    "ConversationUpdated",
    "ErrorEvent",
    "Event",
    "EventBus",
    "Message",
    "MessageReceived",
    "ModelConfig",
    "StreamComplete",
    "StreamContent",
    "StreamStart",
    "Subscription",
    "Usage",
    "__version__",
    "broadcast_message",
    "conversation_count",
    "default_system",
    "errors",
    "get_history",
    "get_stats",
    "is_patched",
    "load_config",
    "patch",
    "send_message",
    "start_conversation",
    "start_conversations",
]
