"""Export a conversation as JSON, Markdown or CSV (for spreadsheets and log tools)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence

from actorchat._records import Conversation, Message, iso
from actorchat.errors import InvalidRequest

__all__ = ["FORMATS", "export_conversation"]

#: format name -> (media type, file extension)
FORMATS: dict[str, tuple[str, str]] = {
    "json": ("application/json", "json"),
    "md": ("text/markdown; charset=utf-8", "md"),
    "csv": ("text/csv; charset=utf-8", "csv"),
}


def export_conversation(conv: Conversation, messages: Sequence[Message], fmt: str) -> str:
    """Render a conversation and its messages (in turn order) as text."""
    if fmt == "json":
        return json.dumps(
            {"conversation": conv.to_dict(), "messages": [m.to_dict() for m in messages]},
            ensure_ascii=False,
            indent=2,
        )
    if fmt == "md":
        lines = [f"# {conv.title or 'Untitled conversation'}", ""]
        lines.append(
            f"*Conversation `{conv.id}`, model `{conv.model}`, created {iso(conv.created_at)}*"
        )
        lines.append("")
        for m in messages:
            who = "User" if m.role == "user" else f"Assistant ({m.model or m.sender_id})"
            lines.append(f"## {who} — {iso(m.created_at)}")
            lines.append("")
            lines.append(m.content)
            if m.role == "assistant" and m.finish_reason not in (None, "stop"):
                lines.append("")
                lines.append(f"*(finish reason: {m.finish_reason})*")
            lines.append("")
        return "\n".join(lines)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf)
        writer.writerow(
            [
                "id",
                "turn",
                "role",
                "sender_id",
                "created_at",
                "content",
                "finish_reason",
                "prompt_tokens",
                "completion_tokens",
            ]
        )
        for m in messages:
            u = m.usage
            writer.writerow(
                [
                    m.id,
                    m.turn,
                    m.role,
                    m.sender_id,
                    iso(m.created_at),
                    m.content,
                    m.finish_reason or "",
                    "" if u is None else u.prompt_tokens,
                    "" if u is None else u.completion_tokens,
                ]
            )
        return buf.getvalue()
    raise InvalidRequest(f"unknown export format {fmt!r} (use one of {sorted(FORMATS)})")
