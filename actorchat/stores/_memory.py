"""A store in process memory: fast, never yields, lost at exit (tests, benches)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from actorchat._records import Conversation, Message
from actorchat.stores._base import Store

__all__ = ["MemoryStore"]


def _order(m: Message) -> tuple[int, int]:
    return (m.turn, m.role == "assistant")


class MemoryStore(Store):
    """Keeps copies, so callers cannot change what was stored by accident."""

    callbacks_never_wait = True  # no I/O at all

    def __init__(self) -> None:
        self._convs: dict[str, Conversation] = {}
        self._msgs: dict[str, list[Message]] = {}

    def create_conversations(self, conversations: Sequence[Conversation]) -> None:
        for conv in conversations:
            self._convs[conv.id] = dataclasses.replace(conv)
            self._msgs[conv.id] = []

    def append_message(self, message: Message) -> None:
        conv = self._convs.get(message.conversation_id)
        if conv is None:
            return
        # Stored as is: messages are not changed after they are stored (the
        # one exception, superseding, goes through this store).
        self._msgs[message.conversation_id].append(message)
        if not message.superseded:  # stored as an earlier version already (a crashed reply)
            conv.message_count += 1
        conv.updated_at = message.created_at

    def supersede_message(self, conversation_id: str, message_id: str) -> None:
        for m in self._msgs.get(conversation_id, ()):
            if m.id == message_id:
                m.superseded = True
                self._convs[conversation_id].message_count -= 1

    def _sorted(self, conversation_id: str, versions: bool) -> list[Message]:
        msgs = [m for m in self._msgs.get(conversation_id, ()) if versions or not m.superseded]
        return sorted(msgs, key=_order)

    def load(self, conversation_id: str) -> tuple[Conversation, list[Message]] | None:
        conv = self._convs.get(conversation_id)
        if conv is None:
            return None
        msgs = [dataclasses.replace(m) for m in self._sorted(conversation_id, False)]
        return dataclasses.replace(conv), msgs

    def get_conversation(self, conversation_id: str) -> Conversation | None:
        conv = self._convs.get(conversation_id)
        return None if conv is None else dataclasses.replace(conv)

    def update_conversation(self, conversation: Conversation) -> None:
        old = self._convs.get(conversation.id)
        if old is not None:
            old.title = conversation.title
            old.model = conversation.model
            old.system_prompt = conversation.system_prompt
            old.updated_at = conversation.updated_at

    def delete_conversation(self, conversation_id: str) -> bool:
        self._msgs.pop(conversation_id, None)
        return self._convs.pop(conversation_id, None) is not None

    def list_conversations(
        self, owner: str | None, limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        convs = [c for c in self._convs.values() if owner is None or c.owner == owner]
        convs.reverse()
        if before is not None:
            ids = [c.id for c in convs]
            convs = convs[ids.index(before) + 1 :] if before in ids else []
        return [dataclasses.replace(c) for c in convs[:limit]]

    def messages(
        self,
        conversation_id: str,
        limit: int | None = None,
        before: str | None = None,
        versions: bool = False,
    ) -> list[Message]:
        msgs = self._sorted(conversation_id, versions)
        if before is not None:
            ids = [m.id for m in msgs]
            msgs = msgs[: ids.index(before)] if before in ids else []
        if limit is not None:
            msgs = msgs[-limit:] if limit else []
        return [dataclasses.replace(m) for m in msgs]

    def count_conversations(self, owner: str | None = None) -> int:
        if owner is None:
            return len(self._convs)
        return sum(1 for c in self._convs.values() if c.owner == owner)
