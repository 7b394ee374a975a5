"""What a client asks before it chats: a dev token, the models it may pick."""

from __future__ import annotations

from flask import Response

from actorchat.errors import NotFound
from actorchat.server._context import ServerContext
from actorchat.server._http import body, identity, json_response

__all__ = ["dev_token", "models"]


def dev_token(ctx: ServerContext) -> Response:
    """``POST /api/v1/auth/token``: a token for any user, in dev mode only."""
    if not ctx.auth.dev_mode:
        raise NotFound("dev auth is off (a JWT secret is configured)")
    obj = body()
    token = ctx.auth.issue(obj.get("user_id"), obj.get("expires_in"), obj.get("role"))
    ttl = obj.get("expires_in") or ctx.auth.dev_token_ttl
    return json_response(
        {"token": token, "token_type": "bearer", "user_id": obj["user_id"], "expires_in": ttl}
    )


def models(ctx: ServerContext) -> Response:
    """``GET /api/v1/models``: the configured models that have a provider, and the default."""
    identity(ctx)
    chat = ctx.chat
    configured = chat.config.all_models()
    listed = [
        {"name": name, "provider": m.provider, "model": m.model or name}
        for name, m in sorted(configured.items())
        if name in chat.providers
    ]
    return json_response({"models": listed, "default": chat.config.default_model})
