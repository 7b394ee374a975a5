"""The WebSocket protocol's handlers: one function per client frame type.

Each takes the ``Connection`` the frame came on and the validated
``Request``, calls the ``ChatSystem`` API, and answers through the
connection (``send``, or ``answer_from_bus`` when the bus carries the same
news). A handler raises an ``actorchat.errors`` exception to refuse; the
connection turns it into an ``error`` frame. ``HANDLERS`` is the table the
app hands to every connection; a type without a handler fails at import.

The first ``auth`` frame is the connection's own business (nothing is
served before it); the ``auth`` handler here renews a session's token.
"""

from __future__ import annotations

from itertools import chain
from typing import Any

from actorchat._events import (
    ConversationDeleted,
    ConversationUpdated,
    Event,
    MessageReceived,
    StreamContent,
    StreamStart,
)
from actorchat._records import Conversation, Message, Usage
from actorchat._validate import check_content_length, check_title
from actorchat.errors import NotFound, Overloaded
from actorchat.server._connection import Connection, Handler
from actorchat.server._protocol import CLIENT_TYPES, Request, frame

__all__ = ["HANDLERS"]


def _auth(conn: Connection, req: Request) -> None:
    conn.reauthenticate(conn.ctx.auth.verify(req["token"]))
    conn.send(frame("auth_success", {"user_id": conn.user_id}, req.id, user_id=conn.user_id))


def _ping(conn: Connection, req: Request) -> None:
    conn.send(frame("pong", {}, req.id))


def _create_conversation(conn: Connection, req: Request) -> None:
    ctx = conn.ctx
    ctx.check_open()
    cap = ctx.config.max_conversations_per_user
    if ctx.chat.count_conversations(conn.user_id) >= cap:
        raise Overloaded(f"you have {cap} conversations, the most allowed; delete some first")
    title = check_title(req.get("title", ""))
    rid = req.id

    def render(cid: str, event: Event | None) -> str:
        conv = (
            event.conversation
            if isinstance(event, ConversationUpdated)
            else ctx.chat.get_conversation(cid)
        )
        return frame("conversation_created", {"conversation": conv.to_dict()}, rid)

    def created(cid: str, e: Event) -> bool:
        return isinstance(e, ConversationUpdated) and e.created and e.conversation_id == cid

    cid = conn.answer_from_bus(
        lambda: ctx.chat.start_conversation(
            owner=conn.user_id,
            title=title,
            model=req.get("model"),
            system_prompt=req.get("system_prompt", ""),
        ),
        created,
        render,
    )
    ctx.hub.learn_owner(cid, conn.user_id)
    # The creator is joined (PROTOCOL.md); nothing has happened in it yet.
    conn.subscribe(cid)


def _join_conversation(conn: Connection, req: Request) -> None:
    ctx = conn.ctx
    cid: str = req["conversation_id"]
    conv = ctx.chat.get_conversation(cid, owner=conn.user_id)
    ctx.hub.learn_owner(cid, conv.owner)
    limit = min(req.get("history_limit", ctx.config.history_limit), ctx.config.max_page)
    after_index: int | None = req.get("after_index")
    named: str | None = req.get("message_id")

    def read(replay: list[Event]) -> tuple[list[Message], Message | None]:
        history = ctx.chat.get_history(cid, limit)
        if named is None:
            return history, None
        ended = next((m for m in history if m.id == named), None)
        if ended is None and named != _live(replay):
            # Not in progress and not in the recent history: an earlier
            # version (a crash interrupted it), or unknown. Read while the
            # join still holds events back, so nothing overtakes the answer.
            ended = next((m for m in ctx.chat.messages(cid, versions=True) if m.id == named), None)
        return history, ended

    # Subscribe first, buffering, then read history: a reply that completes
    # meanwhile is either in the history or in the buffer, never in neither.
    replay, (history, ended), buffered = conn.join_reading(cid, read)
    conn.send(
        frame(
            "conversation_joined",
            {"conversation": conv.to_dict(), "messages": [m.to_dict() for m in history]},
            req.id,
        )
    )
    done = {m.id for m in history}
    live = _live(replay)
    # Resuming a named reply (PROTOCOL.md, lifecycle 6): the skip applies to
    # it alone; any other reply in progress (the new answer after a crash)
    # is replayed from index 0. Without a name, it applies to the live one.
    skip = named if named is not None else live
    if named is not None and (named != live or named in done):
        # It ended while the client was away (or during this join): say how.
        conn.send(_resumed_end(cid, named, ended))
    for event in chain(replay, buffered):
        if _message_id_of(event) in done:
            continue  # completed during the join: it is in `messages`
        if (
            after_index is not None
            and isinstance(event, StreamContent)
            and event.message_id == skip
            and event.index <= after_index
        ):
            continue
        conn.deliver(event, cid)


def _live(replay: list[Event]) -> str | None:
    """The reply in progress a replay begins with, if any."""
    return replay[0].message_id if replay and isinstance(replay[0], StreamStart) else None


def _message_id_of(event: Event) -> str | None:
    if isinstance(event, MessageReceived):
        return event.message.id
    return getattr(event, "message_id", None)


def _resumed_end(cid: str, message_id: str, message: Message | None) -> str:
    """The ``stream_complete`` of a named reply that ended while its client was away.

    A reply a crash interrupted is stored superseded (its user message was
    answered again), and one the server never stored (it restarted
    mid-reply) is answered the same way: ``finish_reason: "error"``,
    ``superseded: true``. A reply replaced by a regeneration keeps its own
    finish reason and says it was superseded.
    """
    usage = message.usage if message is not None and message.usage is not None else Usage()
    data: dict[str, Any] = {
        "message_id": message_id,
        "conversation_id": cid,
        "usage": usage.to_dict(),
        "finish_reason": (message.finish_reason if message is not None else None) or "error",
    }
    if message is None or message.superseded:
        data["superseded"] = True
    return frame("stream_complete", data)


def _leave_conversation(conn: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    if cid not in conn.joined:  # leaving one it joined always works, even if deleted since
        conn.check_owned(cid)  # NOT_FOUND / FORBIDDEN like every other conversation request
    conn.leave(cid)
    conn.send(frame("conversation_left", {"conversation_id": cid}, req.id))


def _send_message(conn: Connection, req: Request) -> None:
    ctx = conn.ctx
    cid: str = req["conversation_id"]
    content: str = req["content"]
    check_content_length(content, ctx.config.max_content_chars)
    conn.check_owned(cid)
    ctx.check_open()
    ctx.limiter.take(conn.user_id)
    conn.implicit_join(cid)
    rid = req.id

    def render(msg: Message, _event: Event | None) -> str:
        return frame("message_received", {"message": msg.to_dict()}, rid)

    def received(msg: Message, e: Event) -> bool:
        return isinstance(e, MessageReceived) and e.message.id == msg.id

    conn.answer_from_bus(
        lambda: ctx.chat.post_message(cid, content, sender_id=conn.user_id),
        received,
        render,
    )


def _stream_response(conn: Connection, req: Request) -> None:
    ctx = conn.ctx
    cid: str = req["conversation_id"]
    conn.check_owned(cid)
    ctx.check_open()
    ctx.limiter.take(conn.user_id)
    conn.implicit_join(cid)
    ctx.chat.regenerate(cid, req.get("message_id"), req.get("assistant_id"))


def _cancel_stream(conn: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    conn.check_owned(cid)
    mid: str = req["message_id"]
    if not conn.ctx.chat.cancel(cid, mid):
        raise NotFound(f"no reply {mid!r} is being generated in conversation {cid!r}")


def _typing(conn: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    conn.check_owned(cid)
    is_typing = req["is_typing"] if req.type == "typing" else req.type == "typing_start"
    text = frame(
        "typing_indicator",
        {"conversation_id": cid, "user_id": conn.user_id, "is_typing": is_typing},
    )
    for other in conn.ctx.hub.joined(cid):
        if other is not conn and isinstance(other, Connection):
            other.send(text)


def _list_conversations(conn: Connection, req: Request) -> None:
    cfg = conn.ctx.config
    limit = min(req.get("limit", 50), cfg.max_page)
    convs = conn.ctx.chat.list_conversations(conn.user_id, limit, req.get("before"))
    conn.send(frame("conversations", {"conversations": [c.to_dict() for c in convs]}, req.id))


def _rename_conversation(conn: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    title = check_title(req["title"])
    conn.check_owned(cid)
    rid = req.id

    def render(conv: Conversation, _event: Event | None) -> str:
        return frame("conversation_updated", {"conversation": conv.to_dict()}, rid)

    def updated(conv: Conversation, e: Event) -> bool:
        return isinstance(e, ConversationUpdated) and e.conversation is conv

    conn.answer_from_bus(lambda: conn.ctx.chat.rename_conversation(cid, title), updated, render)


def _delete_conversation(conn: Connection, req: Request) -> None:
    cid: str = req["conversation_id"]
    conn.check_owned(cid)
    rid = req.id

    def delete() -> bool:
        if not conn.ctx.chat.delete_conversation(cid):
            raise NotFound(f"no conversation {cid!r}")
        return True

    def deleted(_ok: bool, e: Event) -> bool:
        return isinstance(e, ConversationDeleted) and e.conversation_id == cid

    conn.answer_from_bus(
        delete,
        deleted,
        lambda _ok, _e: frame("conversation_deleted", {"conversation_id": cid}, rid),
    )
    conn.joined.discard(cid)


#: The handler of each client frame type (PROTOCOL.md, "Client to server").
HANDLERS: dict[str, Handler] = {
    "auth": _auth,
    "ping": _ping,
    "create_conversation": _create_conversation,
    "join_conversation": _join_conversation,
    "leave_conversation": _leave_conversation,
    "send_message": _send_message,
    "stream_response": _stream_response,
    "cancel_stream": _cancel_stream,
    "typing": _typing,
    "typing_start": _typing,
    "typing_stop": _typing,
    "list_conversations": _list_conversations,
    "rename_conversation": _rename_conversation,
    "delete_conversation": _delete_conversation,
}
assert set(HANDLERS) == CLIENT_TYPES, "every protocol type needs a handler"
