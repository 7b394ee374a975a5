"""Keeping database passwords out of messages (no driver needed to import it)."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["redact", "scrub"]


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for banners and messages)."""
    url = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url, flags=re.IGNORECASE)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` without any of ``secrets``, URL password or ``password=`` value."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    text = redact(text)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", text, flags=re.IGNORECASE)
