"""``/api/v1/conversations/<cid>/messages``: history, live events, posting a message.

Both routes answer as JSON or, asked with ``Accept: text/event-stream``,
as Server-Sent Events carrying the protocol's frames.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flask import Response, request

from actorchat._events import ErrorEvent, Event, MessageReceived, StreamComplete
from actorchat._validate import check_content_length
from actorchat.errors import ActorchatError, InvalidRequest, error_code
from actorchat.server._context import ServerContext
from actorchat.server._http import (
    body,
    conversation_id,
    error_object,
    identity,
    int_arg,
    json_response,
    sse,
    sse_response,
    str_field,
    wants_sse,
)

__all__ = ["list_messages", "post_message"]

#: Seconds between SSE comment lines on an idle stream (keeps proxies from timing out).
_SSE_KEEPALIVE = 15.0


def list_messages(ctx: ServerContext, cid: str) -> Response:
    """``GET``: a page of history, or (SSE) the conversation's events until disconnect."""
    who = identity(ctx)
    cid = conversation_id(cid)
    ctx.check_owner(cid, who.user_id)
    if wants_sse():
        return sse_response(_live(ctx, cid))
    cfg = ctx.config
    limit = int_arg("limit", cfg.history_limit or 50, 1, cfg.max_page)
    before = request.args.get("before") or None
    versions = request.args.get("versions", "").lower() in ("1", "true", "yes")
    msgs = ctx.chat.messages(cid, limit=limit, before=before, versions=versions)
    return json_response({"messages": [m.to_dict() for m in msgs]})


def _live(ctx: ServerContext, cid: str) -> Iterator[str]:
    """A conversation's events as SSE, the reply in progress first, until disconnect."""
    sub = ctx.chat.subscribe(cid, replay=True, maxsize=ctx.config.outbound_queue)
    try:
        yield ": connected\n\n"
        while True:
            event = sub.get(_SSE_KEEPALIVE)
            if event is None:
                if sub.closed:
                    yield sse("error", error_object("OVERLOADED", "too slow; reconnect"))
                    return
                yield ": keepalive\n\n"
                continue
            yield sse(event.type, event.frame())
    finally:
        sub.close()


def post_message(ctx: ServerContext, cid: str) -> Response:
    """``POST``: a user message; the reply as one JSON body, or (SSE) as it streams."""
    who = identity(ctx)
    cid = conversation_id(cid)
    cfg = ctx.config
    obj = body()
    content = str_field(obj, "content", required=True) or ""
    kind = obj.get("message_type", "user")
    if kind != "user":
        raise InvalidRequest("message_type must be 'user'")
    check_content_length(content, cfg.max_content_chars)
    ctx.check_owner(cid, who.user_id)
    ctx.check_open()
    ctx.limiter.take(who.user_id)
    events = ctx.chat.stream_message(cid, content, sender_id=who.user_id, timeout=cfg.reply_timeout)
    # The first event is the stored user message: taking it here makes
    # refusals (queue full, conversation failed) proper HTTP errors.
    first = next(events)
    if wants_sse():
        return sse_response(_stream(first, events))
    return _collect(first, events)


def _stream(first: Event, events: Iterator[Event]) -> Iterator[str]:
    try:
        yield sse(first.type, first.frame())
        for event in events:
            yield sse(event.type, event.frame())
    except ActorchatError as exc:
        yield sse("error", error_object(error_code(exc), str(exc)))
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()


def _collect(first: Event, events: Iterator[Event]) -> Response:
    assert isinstance(first, MessageReceived)
    reply = None
    error = None
    for event in events:
        if isinstance(event, ErrorEvent):
            error = {"code": event.code, "message": event.message}
        elif isinstance(event, StreamComplete) and event.message is not None:
            reply = event.message
    out: dict[str, Any] = {
        "message": first.message.to_dict(),
        "reply": reply.to_dict() if reply is not None else None,
    }
    if error is not None:
        out["error"] = error
    return json_response(out)
