"""The PostgreSQL store's schema: its numbered migrations, columns and rows.

The logical model is the SQLite store's (conversations; messages with turns
and earlier versions; counters derived on read), plus the owner epochs of
fenced ownership (``_pg_fencing.py``). Message content is stored as UTF-8
in a ``BYTEA``: a PostgreSQL ``TEXT`` cannot hold the NUL character, which a
message may.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import psycopg

from actorchat._records import Conversation, Message, Usage

__all__ = [
    "CONV_COLS",
    "CONV_SELECT",
    "COPY_CONVERSATIONS",
    "COPY_MESSAGES",
    "MIGRATIONS",
    "MSG_COLS",
    "conv_from_row",
    "message_from_row",
    "message_row",
    "migrate",
]

log = logging.getLogger("actorchat.store")

#: Each entry upgrades the schema by one version (``actorchat_schema.version``).
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE conversations (
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        title TEXT NOT NULL DEFAULT '',
        model TEXT NOT NULL DEFAULT '',
        system_prompt TEXT NOT NULL DEFAULT '',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX conversations_owner ON conversations (owner, seq);
    CREATE TABLE messages (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        conversation_id TEXT NOT NULL,
        turn INTEGER NOT NULL,
        role TEXT NOT NULL,
        content BYTEA NOT NULL,
        sender_id TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        prompt_tokens BIGINT,
        completion_tokens BIGINT,
        usage_estimated BOOLEAN NOT NULL DEFAULT FALSE,
        finish_reason TEXT,
        model TEXT,
        superseded BOOLEAN NOT NULL DEFAULT FALSE
    );
    -- history order straight from the index: user before assistant is role DESC
    CREATE INDEX messages_order ON messages (conversation_id, turn, role DESC, seq);
    """,
    # 2: fenced ownership. Epochs come from a sequence, so a process opened
    # later always outranks the ones before it.
    """
    ALTER TABLE conversations ADD COLUMN owner_epoch BIGINT NOT NULL DEFAULT 0;
    CREATE SEQUENCE owner_epochs;
    -- How many takeovers moved conversations away from each epoch: its
    -- owner reads one row per transaction instead of re-checking every row.
    CREATE TABLE epoch_fences (epoch BIGINT PRIMARY KEY, moved BIGINT NOT NULL);
    """,
    # 3: secrets every process of a deployment shares (the dev-auth key).
    """
    CREATE TABLE actorchat_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
)

# Any constant the migrating processes agree on: "actorchat" in ASCII.
MIGRATION_LOCK = 0x6163746F72636861


def migrate(conn: psycopg.Connection[Any]) -> int:
    """Bring the schema up to date under the migration lock; its version."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS actorchat_schema (version INTEGER NOT NULL)")
        row = conn.execute("SELECT version FROM actorchat_schema").fetchone()
        if row is None:
            conn.execute("INSERT INTO actorchat_schema VALUES (0)")
            version = 0
        else:
            version = int(row[0])
        for number, script in enumerate(MIGRATIONS, start=1):
            if number > version:
                conn.execute(script)
        if version > len(MIGRATIONS):
            # A newer actorchat migrated this database; what this one
            # writes is still understood by it (migrations only add).
            log.warning(
                "store: schema version %d is newer than this actorchat's %d",
                version,
                len(MIGRATIONS),
            )
        else:
            conn.execute("UPDATE actorchat_schema SET version = %s", (len(MIGRATIONS),))
        return max(version, len(MIGRATIONS))


CONV_COLS = "id, owner, title, model, system_prompt, created_at, updated_at"
# Counters are derived on read, so that appending a message is one row
# written (the hot path), as in the SQLite store.
CONV_SELECT = (
    "SELECT c.id, c.owner, c.title, c.model, c.system_prompt, c.created_at, "
    "GREATEST(c.updated_at, COALESCE((SELECT MAX(m.created_at) FROM messages m "
    "WHERE m.conversation_id = c.id), 0)), "
    "(SELECT COUNT(*) FROM messages m WHERE m.conversation_id = c.id AND NOT m.superseded) "
    "FROM conversations c"
)
MSG_COLS = (
    "id, conversation_id, role, content, sender_id, created_at, turn, prompt_tokens, "
    "completion_tokens, usage_estimated, finish_reason, model, superseded"
)
COPY_MESSAGES = f"COPY messages ({MSG_COLS}) FROM STDIN"
COPY_CONVERSATIONS = f"COPY conversations ({CONV_COLS}, owner_epoch) FROM STDIN"


def message_row(m: Message) -> tuple[Any, ...]:
    u = m.usage
    return (
        m.id,
        m.conversation_id,
        m.role,
        m.content.encode("utf-8", "surrogatepass"),
        m.sender_id,
        m.created_at,
        m.turn,
        None if u is None else u.prompt_tokens,
        None if u is None else u.completion_tokens,
        False if u is None else u.estimated,
        m.finish_reason,
        m.model,
        m.superseded,
    )


def message_from_row(row: Sequence[Any]) -> Message:
    (mid, cid, role, content, sender, created, turn, pt, ct, est, finish, model, sup) = row
    usage = None if pt is None else Usage(pt, ct or 0, bool(est))
    text = bytes(content).decode("utf-8", "surrogatepass")
    return Message(mid, cid, role, text, sender, created, turn, usage, finish, model, bool(sup))


def conv_from_row(row: Sequence[Any]) -> Conversation:
    cid, owner, title, model, prompt, created, updated, count = row
    return Conversation(cid, owner, title, model, prompt, created, updated, count)
