"""What every HTTP route shares: responses, errors, request bodies, SSE, auth.

The routes (``_routes_*.py``, registered by ``_api.py``) are thin
translations to the ``ChatSystem`` API, as the WebSocket handlers are.
Errors are JSON ``{"error": {"code", "message"}}``; the code and the
status both come from ``actorchat.errors`` (each error class carries its
own). SSE responses carry the same ``{type, data}`` objects as WebSocket
frames (PROTOCOL.md rule 11).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Response, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge

from actorchat.errors import (
    HTTP_STATUS,
    ActorchatError,
    AuthRequired,
    Forbidden,
    InvalidJSON,
    InvalidRequest,
    NotFound,
    error_code,
)
from actorchat.server._auth import Identity
from actorchat.server._context import ServerContext
from actorchat.server._protocol import MAX_ID_CHARS, encode, load

__all__ = [
    "admin",
    "body",
    "conversation_id",
    "error_object",
    "error_response",
    "exception_response",
    "identity",
    "int_arg",
    "json_response",
    "sse",
    "sse_response",
    "str_field",
    "timed",
    "wants_sse",
]

# -- responses ------------------------------------------------------------------------------


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


# -- Server-Sent Events ---------------------------------------------------------------------


def sse(kind: str, obj: Any) -> str:
    """One SSE event: ``kind`` as its name, ``obj`` as its JSON data."""
    return f"event: {kind}\ndata: {encode(obj)}\n\n"


def sse_response(events: Iterator[str]) -> Response:
    return Response(
        events,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def wants_sse() -> bool:
    return "text/event-stream" in request.headers.get("Accept", "")


def error_object(code: str, message: str) -> dict[str, Any]:
    """An ``error`` frame's object, for an error met in the middle of a stream."""
    return {"type": "error", "data": {"code": code, "message": message}}


# -- the request ------------------------------------------------------------------------------


def body() -> dict[str, Any]:
    """The request's JSON object (``{}`` when there is no body)."""
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


def str_field(obj: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = obj.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name} must be a string")
    return value


def int_arg(name: str, default: int, low: int, high: int) -> int:
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


def conversation_id(raw: str) -> str:
    """A conversation id from the path (one no conversation could have is ``NotFound``)."""
    if not raw or len(raw) > MAX_ID_CHARS:
        raise NotFound("no such conversation")
    return raw


def identity(ctx: ServerContext) -> Identity:
    """Who sent the request (``Authorization: Bearer <token>``)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthRequired("send Authorization: Bearer <token>")
    return ctx.auth.verify(token.strip())


def admin(ctx: ServerContext) -> Identity:
    """As ``identity``, for the operations routes: the token must have role ``admin``."""
    who = identity(ctx)
    if not who.admin:
        raise Forbidden("the operations endpoints need a token with role 'admin'")
    return who


# -- latency ----------------------------------------------------------------------------------


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
