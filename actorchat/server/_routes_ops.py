"""``/api/v1/admin``: the operations routes (stats, states, kills, faults); role ``admin``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
from flask import Response, request

from actorchat.errors import ActorchatError, InvalidRequest
from actorchat.server._context import ServerContext
from actorchat.server._http import admin, body, int_arg, json_response, sse, sse_response, wants_sse

__all__ = ["conversations", "faults", "kill", "set_faults", "stats"]


def stats(ctx: ServerContext) -> Response:
    """``GET /stats``: a system snapshot, or (SSE) one a second until the server drains."""
    admin(ctx)
    if wants_sse():
        return sse_response(_stats_stream(ctx))
    return json_response(_stats(ctx))


def _stats(ctx: ServerContext) -> dict[str, Any]:
    chat = ctx.chat
    out = chat.stats()
    out["connections"] = len(ctx.connections)
    out["bus"] = chat.bus.stats()
    return out


def _stats_stream(ctx: ServerContext) -> Iterator[str]:
    # Ends when the server drains or the system stops: a generator that
    # outlives the actors would only fail, and a client reconnects.
    while ctx.chat.started and not ctx.draining:
        try:
            data = _stats(ctx)
        except ActorchatError:
            return
        yield sse("stats", {"type": "stats", "data": data})
        gevent.sleep(1.0)


def conversations(ctx: ServerContext) -> Response:
    """``GET /conversations?state=``: conversation ids and their states."""
    admin(ctx)
    state = request.args.get("state") or None
    limit = int_arg("limit", 1000, 1, 1_000_000)
    rows = ctx.chat.states(state, limit)
    return json_response({"conversations": [{"id": c, "state": s} for c, s in rows]})


def kill(ctx: ServerContext) -> Response:
    """``POST /kill``: crash the given conversations, or a random fraction of the live ones."""
    admin(ctx)
    obj = body()
    ids = obj.get("conversation_ids")
    fraction = obj.get("fraction")
    chat = ctx.chat
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str | int) for i in ids):
            raise InvalidRequest("conversation_ids must be a list of ids")
        killed = chat.kill_many([str(i) for i in ids])
    elif isinstance(fraction, int | float) and not isinstance(fraction, bool):
        killed = chat.kill_many(fraction=float(fraction))
    else:
        raise InvalidRequest("give conversation_ids (a list) or fraction (0..1)")
    return json_response({"killed": killed, "count": len(killed)})


def faults(ctx: ServerContext) -> Response:
    """``GET /faults``: the fault injection in force."""
    admin(ctx)
    return json_response(ctx.chat.faults())


def set_faults(ctx: ServerContext) -> Response:
    """``PUT /faults``: set the mock model's crash and failure rates."""
    admin(ctx)
    obj = body()
    unknown = sorted(set(obj) - {"mock_crash_rate", "mock_failure_rate"})
    if unknown:
        msg = f"unknown fields {', '.join(unknown)} (mock_crash_rate, mock_failure_rate)"
        raise InvalidRequest(msg)
    return json_response(
        ctx.chat.inject_faults(
            mock_crash_rate=obj.get("mock_crash_rate"),
            mock_failure_rate=obj.get("mock_failure_rate"),
        )
    )
