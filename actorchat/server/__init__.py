"""The WebSocket and HTTP server speaking PROTOCOL.md over a ``ChatSystem``.

A thin layer: it parses and validates frames, checks auth and ownership,
enforces the limits, and calls the same API as Python users; chat logic
lives in the actors. ``actorchat serve`` runs ``serve``; tests and
embedding applications use ``Server`` (or ``create_app`` with a
``ChatSystem`` of their own and any gevent WSGI server).
"""

from __future__ import annotations

from actorchat.server._app import WS_PATH, Server, create_app, serve

__all__ = ["WS_PATH", "Server", "create_app", "serve"]
