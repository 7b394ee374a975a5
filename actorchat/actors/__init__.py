"""The actor core: conversations, their supervisor and the id registry.

Not public API (``actorchat``'s ``__init__`` re-exports what is); this is the
package's face to the rest of actorchat (the ``ChatSystem`` wiring):

- ``_base``: the greenlet actor, the only module that touches Pykka internals;
- ``_messages``: every message between actors;
- ``_core``: a conversation's rules as plain objects (history, queue,
  the reply lifecycle as a state machine, stats), driven by tests directly;
- ``_conversation``: the actor shell that carries the core's decisions out;
- ``_supervisor``: starts and restarts conversations, OTP-style;
- ``_registry``: the id -> actor map, read without a mailbox.
"""

from __future__ import annotations

from actorchat.actors._base import GreenletActor
from actorchat.actors._conversation import ConversationActor, Deps, InjectedCrash
from actorchat.actors._core import (
    ConversationCore,
    ConversationStats,
    Generation,
    IllegalTransition,
    Outcome,
    ReplyState,
    Turn,
)
from actorchat.actors._messages import (
    Activate,
    Callback,
    Cancel,
    Counts,
    Forget,
    GetHistory,
    GetInfo,
    GetStats,
    Kill,
    Passivate,
    Ping,
    Regenerate,
    Register,
    Send,
    Shutdown,
    StartNew,
    States,
    StopAll,
    StopChild,
    Sweep,
    UpdateSettings,
)
from actorchat.actors._registry import Registry, RegistryActor
from actorchat.actors._supervisor import CONVERSATION_STATES, SupervisorActor

__all__ = [
    "CONVERSATION_STATES",
    "Activate",
    "Callback",
    "Cancel",
    "ConversationActor",
    "ConversationCore",
    "ConversationStats",
    "Counts",
    "Deps",
    "Forget",
    "Generation",
    "GetHistory",
    "GetInfo",
    "GetStats",
    "GreenletActor",
    "IllegalTransition",
    "InjectedCrash",
    "Kill",
    "Outcome",
    "Passivate",
    "Ping",
    "Regenerate",
    "Register",
    "Registry",
    "RegistryActor",
    "ReplyState",
    "Send",
    "Shutdown",
    "StartNew",
    "States",
    "StopAll",
    "StopChild",
    "SupervisorActor",
    "Sweep",
    "Turn",
    "UpdateSettings",
]
