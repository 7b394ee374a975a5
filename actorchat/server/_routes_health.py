"""Liveness, readiness and metrics: what a balancer and a scraper ask, without a token."""

from __future__ import annotations

from typing import Any

from flask import Response

from actorchat.server._context import ServerContext
from actorchat.server._http import json_response
from actorchat.server._metrics import CONTENT_TYPE

__all__ = ["healthz", "metrics", "readyz"]


def healthz(ctx: ServerContext) -> Response:
    """``GET /healthz``: the process answers (even while draining)."""
    return json_response({"status": "ok"})


def readyz(ctx: ServerContext) -> Response:
    """``GET /readyz``: 200 when this instance should get traffic, else 503."""
    # Ready: started, the store answers, not draining. Models are
    # reported, never gating: a remote model that is down is down for
    # every instance, and a balancer that took them all out for it
    # would turn one broken model into a broken service.
    chat = ctx.chat
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


def metrics(ctx: ServerContext) -> Response:
    """``GET /metrics``: the Prometheus exposition."""
    return Response(ctx.metrics.render(), 200, content_type=CONTENT_TYPE)
