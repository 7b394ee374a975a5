"""The HTTP side of the protocol: REST, Server-Sent Events, operations.

Every route is a thin translation to the ``ChatSystem`` API, as the
WebSocket handlers are. Errors are JSON ``{"error": {"code", "message"}}``
with the status of ``HTTP_STATUS`` (the code itself comes from
``actorchat.errors.error_code``, the one mapping). SSE responses carry the
same ``{type, data}`` objects as WebSocket frames (PROTOCOL.md rule 11).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import fields
from typing import Any

import gevent
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from actorchat._events import ErrorEvent, MessageReceived, StreamComplete
from actorchat._export import FORMATS
from actorchat._records import Conversation
from actorchat.errors import (
    ActorchatError,
    AuthRequired,
    Forbidden,
    InvalidJSON,
    InvalidRequest,
    MessageTooLong,
    NotFound,
    Overloaded,
    error_code,
)
from actorchat.server._auth import Identity
from actorchat.server._context import ServerContext
from actorchat.server._metrics import CONTENT_TYPE
from actorchat.server._protocol import encode, load
from actorchat.server._ws import MAX_TITLE

__all__ = [
    "HTTP_STATUS",
    "error_response",
    "exception_response",
    "json_response",
    "make_api",
    "timed",
]

log = logging.getLogger("actorchat.server")

#: HTTP status of each protocol error code.
HTTP_STATUS: dict[str, int] = {
    "AUTH_REQUIRED": 401,
    "AUTH_FAILED": 401,
    "INVALID_JSON": 400,
    "INVALID_MESSAGE": 400,
    "UNKNOWN_TYPE": 400,
    "MESSAGE_TOO_LONG": 413,
    "NOT_FOUND": 404,
    "FORBIDDEN": 403,
    "RATE_LIMITED": 429,
    "OVERLOADED": 503,
    "PROVIDER_ERROR": 502,
    "TIMEOUT": 504,
    "CONVERSATION_MOVED": 409,
    "INTERNAL_ERROR": 500,
}

#: Seconds between SSE comment lines on an idle stream (keeps proxies from timing out).
_SSE_KEEPALIVE = 15.0


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(encode(body), status, headers, mimetype="application/json")


def error_response(code: str, message: str, retry_after: float | None = None) -> Response:
    """The JSON error body and status for a protocol code."""
    error: dict[str, Any] = {"code": code, "message": message}
    headers: dict[str, str] = {}
    if retry_after is not None:
        error["retry_after"] = retry_after
        headers["Retry-After"] = str(max(1, round(retry_after + 0.5)))
    if code in ("AUTH_REQUIRED", "AUTH_FAILED"):
        headers["WWW-Authenticate"] = "Bearer"
    return json_response({"error": error}, HTTP_STATUS.get(code, 500), headers)


def exception_response(exc: ActorchatError) -> Response:
    return error_response(error_code(exc), str(exc), getattr(exc, "retry_after", None))


def _sse(kind: str, obj: Any) -> str:
    return f"event: {kind}\ndata: {encode(obj)}\n\n"


def _sse_response(body: Iterator[str]) -> Response:
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _wants_sse() -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


# What a conversation object may carry back in a PATCH (the editable fields
# and the read-only ones GET shows), from the record itself.
_CONVERSATION_KEYS = frozenset(f.name for f in fields(Conversation))


def _body() -> dict[str, Any]:
    raw = request.get_data(cache=False)
    if not raw:
        return {}
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # Chunked: Werkzeug stops reading at the limit instead of refusing, and
        # the truncated body read as "not valid JSON".
        raise RequestEntityTooLarge()
    try:
        return load(raw)
    except InvalidJSON as exc:  # the frame parser's words, said of a request body
        raise InvalidJSON(str(exc).replace("the frame", "the request body")) from None


def _str_field(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer") from None
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be within {low}..{high}")
    return value


def make_api(ctx: ServerContext) -> Blueprint:
    """The ``/api/v1`` and operations routes of one server."""
    api = Blueprint("actorchat_api", __name__)
    chat = ctx.chat
    cfg = ctx.config

    def identity() -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthRequired("send Authorization: Bearer <token>")
        return ctx.auth.verify(token.strip())

    def admin() -> Identity:
        who = identity()
        if not who.admin:
            raise Forbidden("the operations endpoints need a token with role 'admin'")
        return who

    def conversation_id(raw: str) -> str:
        if not raw or len(raw) > 256:
            raise NotFound("no such conversation")
        return raw

    # -- liveness, readiness, metrics -------------------------------------------------------

    @api.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok"})

    @api.get("/readyz")
    def readyz() -> Response:
        # Ready: started, the store answers, not draining. Models are
        # reported, never gating: a remote model that is down is down for
        # every instance, and a balancer that took them all out for it
        # would turn one broken model into a broken service.
        checks: dict[str, bool] = {}
        try:
            checks["store"] = bool(chat.store is not None and chat.store.check())
        except Exception:  # noqa: BLE001 - a failing check is "not ready", not a 500
            checks["store"] = False
        models: dict[str, bool] = {}
        for name, provider in chat.providers.items():
            try:
                models[name] = bool(provider.check())
            except Exception:  # noqa: BLE001
                models[name] = False
        ready = all(checks.values()) and not ctx.draining and chat.started
        schema = chat.store.schema_version() if chat.store is not None else None
        body: dict[str, Any] = {
            "status": "ready" if ready else "unavailable",
            "checks": {**checks, "schema": schema},
            "models": models,
            "draining": ctx.draining,
        }
        return json_response(body, 200 if ready else 503)

    @api.get("/api/v1/models")
    def models() -> Response:
        identity()
        configured = chat.config.all_models()
        listed = [
            {"name": name, "provider": m.provider, "model": m.model or name}
            for name, m in sorted(configured.items())
            if name in chat.providers
        ]
        return json_response({"models": listed, "default": chat.config.default_model})

    @api.get("/metrics")
    def metrics() -> Response:
        return Response(ctx.metrics.render(), 200, content_type=CONTENT_TYPE)

    # -- dev auth -----------------------------------------------------------------------------

    @api.post("/api/v1/auth/token")
    def dev_token() -> Response:
        if not ctx.auth.dev_mode:
            raise NotFound("dev auth is off (a JWT secret is configured)")
        body = _body()
        token = ctx.auth.issue(body.get("user_id"), body.get("expires_in"), body.get("role"))
        ttl = body.get("expires_in") or ctx.auth.dev_token_ttl
        return json_response(
            {"token": token, "token_type": "bearer", "user_id": body["user_id"], "expires_in": ttl}
        )

    # -- conversations ---------------------------------------------------------

    @api.get("/api/v1/conversations")
    def list_conversations() -> Response:
        who = identity()
        limit = _int_arg("limit", 50, 1, cfg.max_page)
        before = request.args.get("before") or None
        convs = chat.list_conversations(who.user_id, limit, before)
        return json_response({"conversations": [c.to_dict() for c in convs]})

    @api.post("/api/v1/conversations")
    def create_conversation() -> Response:
        who = identity()
        ctx.check_open()
        body = _body()
        title = _str_field(body, "title") or ""
        if len(title) > MAX_TITLE:
            raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")
        _check_quota(who.user_id, 1)
        cid = chat.start_conversation(
            owner=who.user_id,
            title=title,
            model=_str_field(body, "model"),
            system_prompt=_str_field(body, "system_prompt") or "",
        )
        ctx.hub.learn_owner(cid, who.user_id)
        return json_response(chat.get_conversation(cid).to_dict(), 201)

    def _check_quota(user_id: str, adding: int) -> None:
        cap = cfg.max_conversations_per_user
        have = chat.count_conversations(user_id)
        if have + adding > cap:
            raise Overloaded(
                f"you have {have} conversations and may have at most {cap}; delete some first"
            )

    @api.post("/api/v1/conversations/batch")
    def batch_create() -> Response:
        who = identity()
        ctx.check_open()
        body = _body()
        count = body.get("count")
        if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= cfg.max_batch:
            raise InvalidRequest(f"count must be an integer within 1..{cfg.max_batch}")
        _check_quota(who.user_id, count)
        ids = chat.start_conversations(
            count,
            owner=who.user_id,
            title=_str_field(body, "title") or "",
            model=_str_field(body, "model"),
            system_prompt=_str_field(body, "system_prompt") or "",
        )
        for cid in ids:
            ctx.hub.learn_owner(cid, who.user_id)
        return json_response({"conversation_ids": ids}, 201)

    @api.post("/api/v1/conversations/broadcast")
    def broadcast() -> Response:
        who = identity()
        ctx.check_open()
        body = _body()
        ids = body.get("conversation_ids")
        text = _str_field(body, "message", required=True) or ""
        if (
            not isinstance(ids, list)
            or not ids
            or not all(isinstance(i, str | int) and not isinstance(i, bool) for i in ids)
        ):
            raise InvalidRequest("conversation_ids must be a non-empty list of ids")
        if len(ids) > cfg.max_broadcast:
            raise InvalidRequest(f"at most {cfg.max_broadcast} conversations per broadcast")
        if len(text) > cfg.max_content_chars:
            raise MessageTooLong(
                f"content is {len(text)} characters; the limit is {cfg.max_content_chars}"
            )
        targets = list(dict.fromkeys(str(i) for i in ids))
        _check_all_owned(who.user_id, targets)
        ctx.limiter.take(who.user_id)  # a broadcast counts as one message
        accepted = chat.broadcast_async(targets, text, sender_id=who.user_id)
        return json_response({"accepted": accepted}, 202)

    def _check_all_owned(user_id: str, ids: list[str]) -> None:
        owners = ctx.hub.owners
        unknown = [cid for cid in ids if cid not in owners]
        if unknown:
            mine = {c.id for c in chat.list_conversations(user_id, cfg.max_conversations_per_user)}
            for cid in unknown:
                if cid in mine:
                    ctx.hub.learn_owner(cid, user_id)
        for cid in ids:
            ctx.check_owner(cid, user_id)

    @api.get("/api/v1/conversations/<cid>")
    def get_conversation(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        conv = chat.get_conversation(cid, owner=who.user_id)
        return json_response(conv.to_dict())

    @api.patch("/api/v1/conversations/<cid>")
    def update_conversation(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        ctx.check_owner(cid, who.user_id)
        body = _body()
        # The conversation object as GET gives it may come back whole: its
        # read-only keys are ignored, anything else unknown is an error.
        unknown = sorted(set(body) - _CONVERSATION_KEYS)
        if unknown:
            raise InvalidRequest(
                f"unknown fields {', '.join(unknown)}: a conversation has title, model "
                "and system_prompt"
            )
        title = _str_field(body, "title")
        if title is not None and len(title) > MAX_TITLE:
            raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")
        conv = chat.update_conversation(
            cid,
            title=title,
            model=_str_field(body, "model"),
            system_prompt=_str_field(body, "system_prompt"),
        )
        return json_response(conv.to_dict())

    @api.delete("/api/v1/conversations/<cid>")
    def delete_conversation(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        ctx.check_owner(cid, who.user_id)
        if not chat.delete_conversation(cid):
            raise NotFound(f"no conversation {cid!r}")
        return Response(status=204)

    @api.get("/api/v1/conversations/<cid>/export")
    def export(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        ctx.check_owner(cid, who.user_id)
        fmt = request.args.get("format", "json")
        if fmt not in FORMATS:
            raise InvalidRequest(f"format must be one of {sorted(FORMATS)}")
        media, ext = FORMATS[fmt]
        return Response(
            chat.export(cid, fmt),
            200,
            content_type=media,
            headers={"Content-Disposition": f'attachment; filename="conversation-{cid}.{ext}"'},
        )

    # -- messages --------------------------------------------------------------

    @api.get("/api/v1/conversations/<cid>/messages")
    def list_messages(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        ctx.check_owner(cid, who.user_id)
        if _wants_sse():
            return _sse_response(_live(cid))
        limit = _int_arg("limit", cfg.history_limit or 50, 1, cfg.max_page)
        before = request.args.get("before") or None
        versions = request.args.get("versions", "").lower() in ("1", "true", "yes")
        msgs = chat.messages(cid, limit=limit, before=before, versions=versions)
        return json_response({"messages": [m.to_dict() for m in msgs]})

    def _live(cid: str) -> Iterator[str]:
        """A conversation's events as SSE, the reply in progress first, until disconnect."""
        sub = chat.subscribe(cid, replay=True, maxsize=cfg.outbound_queue)
        try:
            yield ": connected\n\n"
            while True:
                event = sub.get(_SSE_KEEPALIVE)
                if event is None:
                    if sub.closed:
                        yield _sse("error", _error_obj("OVERLOADED", "too slow; reconnect"))
                        return
                    yield ": keepalive\n\n"
                    continue
                yield _sse(event.type, event.frame())
        finally:
            sub.close()

    @api.post("/api/v1/conversations/<cid>/messages")
    def post_message(cid: str) -> Response:
        who = identity()
        cid = conversation_id(cid)
        body = _body()
        content = _str_field(body, "content", required=True) or ""
        kind = body.get("message_type", "user")
        if kind != "user":
            raise InvalidRequest("message_type must be 'user'")
        if len(content) > cfg.max_content_chars:
            raise MessageTooLong(
                f"content is {len(content)} characters; the limit is {cfg.max_content_chars}"
            )
        ctx.check_owner(cid, who.user_id)
        ctx.check_open()
        ctx.limiter.take(who.user_id)
        events = chat.stream_message(cid, content, sender_id=who.user_id, timeout=cfg.reply_timeout)
        # The first event is the stored user message: taking it here makes
        # refusals (queue full, conversation failed) proper HTTP errors.
        first = next(events)
        if _wants_sse():
            return _sse_response(_stream(first, events))
        return _collect(first, events)

    def _stream(first: Any, events: Iterator[Any]) -> Iterator[str]:
        try:
            yield _sse(first.type, first.frame())
            for event in events:
                yield _sse(event.type, event.frame())
        except ActorchatError as exc:
            yield _sse("error", _error_obj(error_code(exc), str(exc)))
        finally:
            close = getattr(events, "close", None)
            if close is not None:
                close()

    def _collect(first: Any, events: Iterator[Any]) -> Response:
        assert isinstance(first, MessageReceived)
        reply = None
        error = None
        for event in events:
            if isinstance(event, ErrorEvent):
                error = {"code": event.code, "message": event.message}
            elif isinstance(event, StreamComplete) and event.message is not None:
                reply = event.message
        body: dict[str, Any] = {
            "message": first.message.to_dict(),
            "reply": reply.to_dict() if reply is not None else None,
        }
        if error is not None:
            body["error"] = error
        return json_response(body)

    # -- operations ------------------------------------------------------------

    def _stats() -> dict[str, Any]:
        stats = chat.stats()
        stats["connections"] = len(ctx.connections)
        stats["bus"] = chat.bus.stats()
        return stats

    @api.get("/api/v1/admin/stats")
    def admin_stats() -> Response:
        admin()
        if _wants_sse():
            return _sse_response(_stats_stream())
        return json_response(_stats())

    def _stats_stream() -> Iterator[str]:
        # Ends when the server drains or the system stops: a generator that
        # outlives the actors would only fail, and a client reconnects.
        while chat.started and not ctx.draining:
            try:
                data = _stats()
            except ActorchatError:
                return
            yield _sse("stats", {"type": "stats", "data": data})
            gevent.sleep(1.0)

    @api.get("/api/v1/admin/conversations")
    def admin_conversations() -> Response:
        admin()
        state = request.args.get("state") or None
        limit = _int_arg("limit", 1000, 1, 1_000_000)
        rows = chat.states(state, limit)
        return json_response({"conversations": [{"id": c, "state": s} for c, s in rows]})

    @api.post("/api/v1/admin/kill")
    def admin_kill() -> Response:
        admin()
        body = _body()
        ids = body.get("conversation_ids")
        fraction = body.get("fraction")
        if ids is not None:
            if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
                raise InvalidRequest("conversation_ids must be a list of ids")
            killed = chat.kill_many([str(i) for i in ids])
        elif isinstance(fraction, int | float) and not isinstance(fraction, bool):
            killed = chat.kill_many(fraction=float(fraction))
        else:
            raise InvalidRequest("give conversation_ids (a list) or fraction (0..1)")
        return json_response({"killed": killed, "count": len(killed)})

    @api.get("/api/v1/admin/faults")
    def admin_faults() -> Response:
        admin()
        return json_response(chat.faults())

    @api.put("/api/v1/admin/faults")
    def admin_set_faults() -> Response:
        admin()
        body = _body()
        unknown = sorted(set(body) - {"mock_crash_rate", "mock_failure_rate"})
        if unknown:
            msg = f"unknown fields {', '.join(unknown)} (mock_crash_rate, mock_failure_rate)"
            raise InvalidRequest(msg)
        return json_response(
            chat.inject_faults(
                mock_crash_rate=body.get("mock_crash_rate"),
                mock_failure_rate=body.get("mock_failure_rate"),
            )
        )

    return api


def _error_obj(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "data": {"code": code, "message": message}}


def timed(ctx: ServerContext) -> tuple[Callable[[], None], Callable[[Response], Response]]:
    """before/after request hooks that observe request latency by route."""

    def before() -> None:
        request.environ["actorchat.t0"] = time.perf_counter()

    def after(response: Response) -> Response:
        t0 = request.environ.get("actorchat.t0")
        if t0 is not None:
            rule = request.url_rule.rule if request.url_rule is not None else "unmatched"
            ctx.metrics.latency.labels(f"http:{request.method} {rule}").observe(
                time.perf_counter() - t0
            )
        return response

    return before, after
