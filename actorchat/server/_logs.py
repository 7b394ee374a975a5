"""Structured logs: one line per event, as text or JSON.

The server logs ``event key=value ...`` lines (``ws.open conn=3 peer=...``)
and never message content or tokens at INFO. With ``log_format = "json"``
each record becomes one JSON object per line, for log shippers.
"""

from __future__ import annotations

import json
import logging
import time

__all__ = ["JsonFormatter", "configure_logging"]


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg"}`` per line (plus ``exc`` when there is one)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure_logging(level: str, fmt: str) -> None:
    """Apply the configured level and format to the root logger's handlers.

    Leaves handlers alone when the root logger has none (an embedding
    application owns its logging).
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    if fmt == "json":
        for handler in root.handlers:
            handler.setFormatter(JsonFormatter())
