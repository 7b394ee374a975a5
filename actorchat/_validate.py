"""The checks on what a user writes: message content and conversation titles.

One home for each rule and its words, read by the Python API
(``ChatSystem``), the WebSocket handlers and the HTTP routes alike, so that
a limit said in one place is the limit everywhere. The server calls them
itself where the protocol checks a field before the conversation is even
looked at (a too-long message is refused before ownership is checked).
"""

from __future__ import annotations

from typing import Any

from actorchat.errors import InvalidRequest, MessageTooLong

__all__ = ["MAX_TITLE", "check_content", "check_content_length", "check_no_nul", "check_title"]

#: Longest conversation title accepted, in characters.
MAX_TITLE = 1000


def check_content_length(text: str, limit: int) -> None:
    """Raise ``MessageTooLong`` if ``text`` is over ``limit`` (``max_content_chars``)."""
    if len(text) > limit:
        raise MessageTooLong(f"content is {len(text)} characters; the limit is {limit}")


def check_content(text: Any, limit: int) -> str:
    """A message's content: a non-empty string of at most ``limit`` characters."""
    if not isinstance(text, str):
        raise InvalidRequest("content must be a string")
    if not text.strip():
        raise InvalidRequest("content must not be empty")
    check_content_length(text, limit)
    return text


def check_title(title: Any) -> str:
    """A conversation's title: a string of at most ``MAX_TITLE`` characters, no NUL.

    NUL is refused in every store alike: PostgreSQL's text cannot hold it,
    and a title one store took would not move to the other.
    """
    if not isinstance(title, str):
        raise InvalidRequest("title must be a string")
    if len(title) > MAX_TITLE:
        raise InvalidRequest(f"title is longer than {MAX_TITLE} characters")
    check_no_nul(title, "title")
    return title


def check_no_nul(text: str, name: str) -> str:
    """Refuse a NUL character in a stored name or setting (titles, prompts, user ids)."""
    if "\x00" in text:
        raise InvalidRequest(f"{name} must not contain a NUL character")
    return text
