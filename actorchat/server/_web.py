"""Serving the web app in ``web/`` at ``/``.

The app is plain files (ES modules, CSS, vendored libraries), so Flask
serves them as they are. Every response carries a strict
Content-Security-Policy: everything from this origin, nothing inline.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, send_from_directory

__all__ = ["CSP", "default_web_dir", "serve_web"]

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)


def default_web_dir() -> Path | None:
    """The checkout's ``web/`` beside the package, when there is one.

    An installed wheel has no ``web/``: the server then offers the API only.
    """
    candidate = Path(__file__).resolve().parents[2] / "web"
    return candidate if (candidate / "index.html").is_file() else None


def serve_web(app: Flask, web_dir: Path) -> None:
    """Add ``GET /`` and ``GET /<path>`` for the files under ``web_dir``."""
    root = str(web_dir)

    def web_file(path: str = "index.html") -> Response:
        response = send_from_directory(root, path, max_age=0)
        # Modules change together: always revalidate (ETag), never serve stale.
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Content-Security-Policy"] = CSP
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    app.add_url_rule("/", "web_index", web_file, methods=["GET"])
    app.add_url_rule("/<path:path>", "web_file", web_file, methods=["GET"])
