"""The SQL both database stores page with: one home for the order of messages.

History is ordered by turn, a user message before its reply (``role``
sorts ``'user'`` after ``'assistant'``, hence ``DESC``), then by insertion;
a page is "the last ``limit`` before an anchor", read newest first and
reversed by the caller. SQLite and PostgreSQL differ only in the
placeholder, the boolean spelling and the insertion column, given here.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ORDER", "ORDER_DESC", "conversations_page", "messages_page"]

#: Turn order of a conversation's messages.
ORDER = "turn, role DESC, seq"
#: The same, newest first (paging backwards).
ORDER_DESC = "turn DESC, role ASC, seq DESC"


def messages_page(
    cols: str,
    ph: str,
    current_only: str,
    conversation_id: str,
    limit: int | None,
    before: str | None,
    versions: bool,
) -> tuple[str, list[Any]]:
    """``(sql, args)`` for a page of messages, newest first.

    ``ph`` is the placeholder (``?`` or ``%s``); ``current_only`` the
    condition leaving earlier versions out (``superseded = 0``, ``NOT superseded``).
    """
    sql = f"SELECT {cols} FROM messages WHERE conversation_id = {ph}"
    args: list[Any] = [conversation_id]
    if not versions:
        sql += f" AND {current_only}"
    if before is not None:
        sql += (
            " AND (turn, role = 'assistant', seq) < "
            f"(SELECT turn, role = 'assistant', seq FROM messages WHERE id = {ph})"
        )
        args.append(before)
    sql += f" ORDER BY {ORDER_DESC}"
    if limit is not None:
        sql += f" LIMIT {ph}"
        args.append(limit)
    return sql, args


def conversations_page(
    select: str, ph: str, seq: str, owner: str | None, limit: int, before: str | None
) -> tuple[str, list[Any]]:
    """``(sql, args)`` for a page of conversations, newest first (``seq``: insertion order)."""
    where: list[str] = []
    args: list[Any] = []
    if owner is not None:
        where.append(f"c.owner = {ph}")
        args.append(owner)
    if before is not None:
        where.append(f"c.{seq} < (SELECT {seq} FROM conversations WHERE id = {ph})")
        args.append(before)
    sql = select
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += f" ORDER BY c.{seq} DESC LIMIT {ph}"
    args.append(limit)
    return sql, args
