"""The HTTP routes of one server, registered in one table.

Each route is a plain function of the ``ServerContext`` (and the path's
``cid``) in a module per resource; this table is the one place that says
which method and path reach which. Endpoint names are the functions' names
as the table gives them.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from flask import Blueprint, Response

from actorchat.server import _routes_client as client
from actorchat.server import _routes_conversations as conversations
from actorchat.server import _routes_health as health
from actorchat.server import _routes_messages as messages
from actorchat.server import _routes_ops as ops
from actorchat.server._context import ServerContext

__all__ = ["ROUTES", "make_api"]

Route = Callable[..., Response]

_CONVERSATIONS = "/api/v1/conversations"
_CONVERSATION = "/api/v1/conversations/<cid>"

#: (method, path, endpoint, route function), in the order they are registered.
ROUTES: list[tuple[str, str, str, Route]] = [
    ("GET", "/healthz", "healthz", health.healthz),
    ("GET", "/readyz", "readyz", health.readyz),
    ("GET", "/api/v1/models", "models", client.models),
    ("GET", "/metrics", "metrics", health.metrics),
    ("POST", "/api/v1/auth/token", "dev_token", client.dev_token),
    ("GET", _CONVERSATIONS, "list_conversations", conversations.list_conversations),
    ("POST", _CONVERSATIONS, "create_conversation", conversations.create_conversation),
    ("POST", f"{_CONVERSATIONS}/batch", "batch_create", conversations.batch_create),
    ("POST", f"{_CONVERSATIONS}/broadcast", "broadcast", conversations.broadcast),
    ("GET", _CONVERSATION, "get_conversation", conversations.get_conversation),
    ("PATCH", _CONVERSATION, "update_conversation", conversations.update_conversation),
    ("DELETE", _CONVERSATION, "delete_conversation", conversations.delete_conversation),
    ("GET", f"{_CONVERSATION}/export", "export", conversations.export),
    ("GET", f"{_CONVERSATION}/messages", "list_messages", messages.list_messages),
    ("POST", f"{_CONVERSATION}/messages", "post_message", messages.post_message),
    ("GET", "/api/v1/admin/stats", "admin_stats", ops.stats),
    ("GET", "/api/v1/admin/conversations", "admin_conversations", ops.conversations),
    ("POST", "/api/v1/admin/kill", "admin_kill", ops.kill),
    ("GET", "/api/v1/admin/faults", "admin_faults", ops.faults),
    ("PUT", "/api/v1/admin/faults", "admin_set_faults", ops.set_faults),
]


def make_api(ctx: ServerContext) -> Blueprint:
    """The ``/api/v1`` and operations routes of one server, each given ``ctx``."""
    api = Blueprint("actorchat_api", __name__)
    for method, path, endpoint, route in ROUTES:
        api.add_url_rule(path, endpoint, partial(route, ctx), methods=[method])
    return api
