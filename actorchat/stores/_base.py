"""The ``Store`` extension point: where conversations and messages persist.

A subclass MUST implement every abstract method. Calls come from greenlets
and must not block the gevent hub for long: a store doing blocking I/O (as
``sqlite3`` does, since it never yields) runs it off the hub, as
``SQLiteStore`` does with one writer thread and group commit.

Contract the conversations rely on:

- ``append_message`` returns only once the message is durable: a user is
  told a message was received only after this returns.
- ``append_message_async`` and ``supersede_message_async`` queue the write
  and call ``done`` once it is durable (or failed), in submission order, and
  without yielding inside ``done``'s caller: conversations use them so that
  they never wait on the disk. ``done`` must never call a blocking store
  method (it may run on the store's own writer). The defaults here run the
  synchronous method and call ``done`` at once. A store whose ``*_async``
  methods never yield (they only queue, or need no I/O) sets
  ``callbacks_never_wait``: a finished reply is then handed over by its
  generation directly, one mailbox hop fewer.
- ``load`` returns the conversation and its *active* messages in turn order
  (a regenerated reply replaces the one before it, which stays stored as an
  earlier version and is listed by ``messages(versions=True)``).
- Methods raise ``actorchat.errors.StoreError`` on I/O failure.

Fenced ownership: one process at a time may write a conversation (its actor
numbers the turns). A store shared by many processes (``PostgresStore``)
gives every conversation row an *owner epoch* and every write the epoch of
the process that owns the conversation: ``epoch`` (one per store, taken from
a sequence at ``open``) unless ``set_epoch`` gave that conversation its own
(what a cluster layer does when it places a conversation). A write whose
epoch is older than the row's is refused with ``actorchat.errors.Fenced``,
and a newer one takes the row over, so a stale owner can never append
between the new owner's writes. ``claim`` takes conversations over (a
store shared by processes does it in ``load`` and ``load_many`` as well:
loading is how a conversation starts in a process, and its history must
hold every message of the owner before). A store only one process can open (SQLite keeps a
lock file) or that no other process sees (memory) ignores epochs: the
defaults here do.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence

from actorchat._records import Conversation, Message
from actorchat.errors import StoreError

__all__ = ["Done", "Store"]

#: Called when a queued write is durable (None) or failed (the error).
Done = Callable[[StoreError | None], None]


class Store(ABC):
    """Base class of conversation stores: conversations, their messages and versions."""

    #: True only if ``append_message_async`` and ``supersede_message_async``
    #: never yield to other greenlets (see the module docstring).
    callbacks_never_wait: bool = False

    def open(self) -> None:  # noqa: B027 - optional hook
        """Prepare for use (create files, run migrations)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Flush pending writes and release resources."""

    def shared_secret(self, name: str, make: Callable[[], str]) -> str | None:
        """A secret every process using this store shares, made once with ``make``.

        None (the default): the store is one process's (SQLite's lock, the
        memory store), and the caller keeps its secret in the data dir. A
        store that many processes share (PostgreSQL) MAY keep it, so that a
        dev token one process signed is accepted by all of them.
        """
        return None

    def check(self) -> bool:
        """Whether the store can serve requests (for ``/readyz``)."""
        return True

    def schema_version(self) -> int | None:
        """The version of the open store's schema (None: it has none)."""
        return None

    #: The owner epoch of this store's writes (None: epochs are not used).
    epoch: int | None = None

    def set_epoch(self, conversation_id: str, epoch: int | None) -> None:  # noqa: B027
        """Write ``conversation_id`` with ``epoch`` from now on (None: the store's own)."""

    def claim(self, conversation_ids: Sequence[str]) -> None:  # noqa: B027
        """Take conversations over (raise ``Fenced`` if a newer owner has one)."""

    @abstractmethod
    def create_conversations(self, conversations: Sequence[Conversation]) -> None:
        """Persist new conversations, all at once."""

    @abstractmethod
    def append_message(self, message: Message) -> None:
        """Persist a message durably and bump its conversation's counters."""

    @abstractmethod
    def supersede_message(self, conversation_id: str, message_id: str) -> None:
        """Mark a reply as an earlier version (it was regenerated)."""

    def append_message_async(self, message: Message, done: Done) -> None:
        """Persist a message, then call ``done(None)`` (or ``done(error)``)."""
        try:
            self.append_message(message)
        except StoreError as exc:
            done(exc)
            return
        done(None)

    def supersede_message_async(
        self, conversation_id: str, message_id: str, done: Done | None = None
    ) -> None:
        """``supersede_message``, queued like ``append_message_async``."""
        try:
            self.supersede_message(conversation_id, message_id)
        except StoreError as exc:
            if done is not None:
                done(exc)
            return
        if done is not None:
            done(None)

    @abstractmethod
    def load(self, conversation_id: str) -> tuple[Conversation, list[Message]] | None:
        """The conversation and its active messages in turn order, or None."""

    def load_many(
        self, conversation_ids: Sequence[str]
    ) -> dict[str, tuple[Conversation, list[Message]]]:
        """``load`` for many conversations at once (restarts come in bursts)."""
        out: dict[str, tuple[Conversation, list[Message]]] = {}
        for cid in conversation_ids:
            state = self.load(cid)
            if state is not None:
                out[cid] = state
        return out

    @abstractmethod
    def get_conversation(self, conversation_id: str) -> Conversation | None:
        """The conversation's settings and counters, or None."""

    @abstractmethod
    def update_conversation(self, conversation: Conversation) -> None:
        """Save changed settings (title, model, system prompt)."""

    @abstractmethod
    def delete_conversation(self, conversation_id: str) -> bool:
        """Delete a conversation and its messages; False if there was none."""

    @abstractmethod
    def list_conversations(
        self, owner: str | None, limit: int = 50, before: str | None = None
    ) -> list[Conversation]:
        """An owner's conversations, newest first, paged by ``before`` (an id)."""

    @abstractmethod
    def messages(
        self,
        conversation_id: str,
        limit: int | None = None,
        before: str | None = None,
        versions: bool = False,
    ) -> list[Message]:
        """Messages in turn order; the last ``limit`` before message ``before``."""

    @abstractmethod
    def count_conversations(self, owner: str | None = None) -> int:
        """How many conversations are stored (for one owner, or all)."""
