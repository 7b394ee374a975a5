"""``/api/v1/conversations``: create (one, many), list, read, change, delete, export, broadcast."""

from __future__ import annotations

from dataclasses import fields

from flask import Response, request

from actorchat._export import FORMATS
from actorchat._records import Conversation
from actorchat._validate import check_content_length, check_title
from actorchat.errors import InvalidRequest, NotFound, Overloaded
from actorchat.server._context import ServerContext
from actorchat.server._http import (
    body,
    conversation_id,
    identity,
    int_arg,
    json_response,
    str_field,
)

__all__ = [
    "batch_create",
    "broadcast",
    "create_conversation",
    "delete_conversation",
    "export",
    "get_conversation",
    "list_conversations",
    "update_conversation",
]

# What a conversation object may carry back in a PATCH (the editable fields
# and the read-only ones GET shows), from the record itself.
_CONVERSATION_KEYS = frozenset(f.name for f in fields(Conversation))


def list_conversations(ctx: ServerContext) -> Response:
    """``GET``: the caller's conversations, newest first, a page at a time."""
    who = identity(ctx)
    limit = int_arg("limit", 50, 1, ctx.config.max_page)
    before = request.args.get("before") or None
    convs = ctx.chat.list_conversations(who.user_id, limit, before)
    return json_response({"conversations": [c.to_dict() for c in convs]})


def create_conversation(ctx: ServerContext) -> Response:
    """``POST``: a new conversation of the caller's (201)."""
    who = identity(ctx)
    ctx.check_open()
    obj = body()
    title = check_title(str_field(obj, "title") or "")
    _check_quota(ctx, who.user_id, 1)
    chat = ctx.chat
    cid = chat.start_conversation(
        owner=who.user_id,
        title=title,
        model=str_field(obj, "model"),
        system_prompt=str_field(obj, "system_prompt") or "",
    )
    ctx.hub.learn_owner(cid, who.user_id)
    return json_response(chat.get_conversation(cid).to_dict(), 201)


def batch_create(ctx: ServerContext) -> Response:
    """``POST /batch``: ``count`` conversations alike, in one go (201)."""
    who = identity(ctx)
    ctx.check_open()
    obj = body()
    count = obj.get("count")
    cap = ctx.config.max_batch
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= cap:
        raise InvalidRequest(f"count must be an integer within 1..{cap}")
    _check_quota(ctx, who.user_id, count)
    ids = ctx.chat.start_conversations(
        count,
        owner=who.user_id,
        title=str_field(obj, "title") or "",
        model=str_field(obj, "model"),
        system_prompt=str_field(obj, "system_prompt") or "",
    )
    for cid in ids:
        ctx.hub.learn_owner(cid, who.user_id)
    return json_response({"conversation_ids": ids}, 201)


def _check_quota(ctx: ServerContext, user_id: str, adding: int) -> None:
    cap = ctx.config.max_conversations_per_user
    have = ctx.chat.count_conversations(user_id)
    if have + adding > cap:
        raise Overloaded(
            f"you have {have} conversations and may have at most {cap}; delete some first"
        )


def broadcast(ctx: ServerContext) -> Response:
    """``POST /broadcast``: one message to many of the caller's conversations (202)."""
    who = identity(ctx)
    ctx.check_open()
    cfg = ctx.config
    obj = body()
    ids = obj.get("conversation_ids")
    text = str_field(obj, "message", required=True) or ""
    if (
        not isinstance(ids, list)
        or not ids
        or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids)
    ):
        raise InvalidRequest("conversation_ids must be a non-empty list of ids")
    if len(ids) > cfg.max_broadcast:
        raise InvalidRequest(f"at most {cfg.max_broadcast} conversations per broadcast")
    check_content_length(text, cfg.max_content_chars)
    targets = list(dict.fromkeys(str(i) for i in ids))
    _check_all_owned(ctx, who.user_id, targets)
    ctx.limiter.take(who.user_id)  # a broadcast counts as one message
    accepted = ctx.chat.broadcast_async(targets, text, sender_id=who.user_id)
    return json_response({"accepted": accepted}, 202)


def _check_all_owned(ctx: ServerContext, user_id: str, ids: list[str]) -> None:
    owners = ctx.hub.owners
    unknown = [cid for cid in ids if cid not in owners]
    if unknown:
        cap = ctx.config.max_conversations_per_user
        mine = {c.id for c in ctx.chat.list_conversations(user_id, cap)}
        for cid in unknown:
            if cid in mine:
                ctx.hub.learn_owner(cid, user_id)
    for cid in ids:
        ctx.check_owner(cid, user_id)


def get_conversation(ctx: ServerContext, cid: str) -> Response:
    """``GET /<cid>``: the conversation's settings and counters."""
    who = identity(ctx)
    conv = ctx.chat.get_conversation(conversation_id(cid), owner=who.user_id)
    return json_response(conv.to_dict())


def update_conversation(ctx: ServerContext, cid: str) -> Response:
    """``PATCH /<cid>``: a new title, model or system prompt."""
    who = identity(ctx)
    cid = conversation_id(cid)
    ctx.check_owner(cid, who.user_id)
    obj = body()
    # The conversation object as GET gives it may come back whole: its
    # read-only keys are ignored, anything else unknown is an error.
    unknown = sorted(set(obj) - _CONVERSATION_KEYS)
    if unknown:
        raise InvalidRequest(
            f"unknown fields {', '.join(unknown)}: a conversation has title, model "
            "and system_prompt"
        )
    title = str_field(obj, "title")
    if title is not None:
        check_title(title)
    conv = ctx.chat.update_conversation(
        cid,
        title=title,
        model=str_field(obj, "model"),
        system_prompt=str_field(obj, "system_prompt"),
    )
    return json_response(conv.to_dict())


def delete_conversation(ctx: ServerContext, cid: str) -> Response:
    """``DELETE /<cid>``: the conversation and its history (204)."""
    who = identity(ctx)
    cid = conversation_id(cid)
    ctx.check_owner(cid, who.user_id)
    if not ctx.chat.delete_conversation(cid):
        raise NotFound(f"no conversation {cid!r}")
    return Response(status=204)


def export(ctx: ServerContext, cid: str) -> Response:
    """``GET /<cid>/export?format=``: the conversation as a file to download."""
    who = identity(ctx)
    cid = conversation_id(cid)
    ctx.check_owner(cid, who.user_id)
    fmt = request.args.get("format", "json")
    if fmt not in FORMATS:
        raise InvalidRequest(f"format must be one of {sorted(FORMATS)}")
    media, ext = FORMATS[fmt]
    return Response(
        ctx.chat.export(cid, fmt),
        200,
        content_type=media,
        headers={"Content-Disposition": f'attachment; filename="conversation-{cid}.{ext}"'},
    )
