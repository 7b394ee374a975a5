"""The bench's peer: the classic real-time chat backend, written the usual way.

FastAPI + uvicorn (uvloop, httptools, the ``websockets`` implementation,
permessage-deflate off, one worker process), a ``ConnectionManager`` of
dicts, one asyncio task per generation, and the same mock model as
actorchat's (``ACTORCHAT_MOCK_TOKENS`` words, ``ACTORCHAT_MOCK_DELAY_MS``
before each, none at 0). It speaks the protocol subset the load client
uses: ``auth`` (HS256 JWT from ``ACTORCHAT_JWT_SECRET``),
``create_conversation``, ``join_conversation`` (with the reply in progress
replayed), ``send_message`` and the stream events. Messages live in memory,
as actorchat's ``store = "memory"`` does, so the two are compared on the
real-time layer alone.

It is meant to be fair and idiomatic, not a straw man: it fixes the classic
one-socket-per-user map (so tabs work), queues a conversation's
generations in order with an ``asyncio.Lock``, and drops a socket that
fails instead of stopping the broadcast.

Run: ``python bench/peers/fastapi_peer.py --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

SECRET = os.environ.get("ACTORCHAT_JWT_SECRET", "")
TOKENS = int(os.environ.get("ACTORCHAT_MOCK_TOKENS", "20"))
DELAY = float(os.environ.get("ACTORCHAT_MOCK_DELAY_MS", "10")) / 1000.0
WORDS = [
    "actors",
    "keep",
    "their",
    "own",
    "state",
    "and",
    "talk",
    "only",
    "through",
    "messages",
    "so",
    "one",
    "crash",
    "stays",
    "local",
    "a",
    "supervisor",
    "restarts",
    "what",
    "failed",
    "and",
    "the",
    "history",
    "comes",
    "back",
    "from",
    "the",
    "store",
]

app = FastAPI()


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclass
class Conversation:
    id: str
    owner: str
    title: str = ""
    messages: list[dict[str, Any]] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    # the reply in progress: its stream_start and chunks so far, for late joiners
    live: list[dict[str, Any]] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "model": "mock",
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "message_count": len(self.messages),
        }


class ConnectionManager:
    """Who is connected, and who listens to which conversation."""

    def __init__(self) -> None:
        self.active_connections: dict[str, set[WebSocket]] = {}
        self.conversation_members: dict[str, set[WebSocket]] = {}

    def connect(self, websocket: WebSocket, user_id: str) -> None:
        self.active_connections.setdefault(user_id, set()).add(websocket)

    def disconnect(self, websocket: WebSocket, user_id: str) -> None:
        self.active_connections.get(user_id, set()).discard(websocket)
        for members in self.conversation_members.values():
            members.discard(websocket)

    def join(self, websocket: WebSocket, conversation_id: str) -> None:
        self.conversation_members.setdefault(conversation_id, set()).add(websocket)

    async def send_personal_message(self, message: dict[str, Any], websocket: WebSocket) -> None:
        await websocket.send_text(json.dumps(message))

    async def broadcast_to_conversation(
        self, message: dict[str, Any], conversation_id: str
    ) -> None:
        text = json.dumps(message)
        for websocket in list(self.conversation_members.get(conversation_id, ())):
            try:
                await websocket.send_text(text)
            except Exception:
                self.conversation_members[conversation_id].discard(websocket)


manager = ConnectionManager()
conversations: dict[str, Conversation] = {}
generations: set[asyncio.Task[None]] = set()


def verify_token(token: Any) -> str | None:
    try:
        claims = jwt.decode(token, SECRET, algorithms=["HS256"], options={"require": ["exp"]})
    except Exception:
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) else None


async def generate_reply(conversation: Conversation, user_message: dict[str, Any]) -> None:
    """One asyncio task per generation; the conversation's lock keeps them in order."""
    async with conversation.lock:
        cid = conversation.id
        message_id = uuid.uuid4().hex[:16]
        start = {
            "type": "stream_start",
            "data": {"message_id": message_id, "conversation_id": cid, "model": "mock"},
        }
        conversation.live = [start]
        await manager.broadcast_to_conversation(start, cid)
        seed = hash(user_message["content"])
        parts = []
        for i in range(TOKENS):
            if DELAY:
                await asyncio.sleep(DELAY)
            token = ("" if i == 0 else " ") + WORDS[(seed + i) % len(WORDS)]
            parts.append(token)
            chunk = {
                "type": "stream_content",
                "data": {
                    "message_id": message_id,
                    "conversation_id": cid,
                    "content": token,
                    "is_complete": False,
                    "index": i,
                },
            }
            conversation.live.append(chunk)
            await manager.broadcast_to_conversation(chunk, cid)
        usage = {"prompt_tokens": 1, "completion_tokens": TOKENS, "total_tokens": TOKENS + 1}
        conversation.messages.append(
            {
                "id": message_id,
                "conversation_id": cid,
                "content": "".join(parts),
                "message_type": "assistant",
                "sender_id": "mock",
                "created_at": now_iso(),
            }
        )
        conversation.live = []
        complete = {
            "type": "stream_complete",
            "data": {
                "message_id": message_id,
                "conversation_id": cid,
                "usage": usage,
                "finish_reason": "stop",
            },
        }
        await manager.broadcast_to_conversation(complete, cid)


def error(code: str, message: str) -> dict[str, Any]:
    return {"type": "error", "data": {"code": code, "message": message}}


async def handle_websocket_message(
    websocket: WebSocket, user_id: str, message: dict[str, Any]
) -> None:
    kind = message.get("type")
    data = message.get("data") or {}
    reply_to = message.get("id")
    if kind == "create_conversation":
        conv = Conversation(uuid.uuid4().hex[:16], user_id, data.get("title", ""))
        conversations[conv.id] = conv
        manager.join(websocket, conv.id)
        out = {"type": "conversation_created", "data": {"conversation": conv.info()}}
        if reply_to is not None:
            out["reply_to"] = reply_to
        await manager.send_personal_message(out, websocket)
    elif kind == "join_conversation":
        conv = conversations.get(str(data.get("conversation_id")))
        if conv is None or conv.owner != user_id:
            await manager.send_personal_message(
                error("NOT_FOUND", "no such conversation"), websocket
            )
            return
        manager.join(websocket, conv.id)
        await manager.send_personal_message(
            {
                "type": "conversation_joined",
                "data": {"conversation": conv.info(), "messages": conv.messages[-50:]},
            },
            websocket,
        )
        for event in list(conv.live):
            await manager.send_personal_message(event, websocket)
    elif kind == "send_message":
        conv = conversations.get(str(data.get("conversation_id")))
        if conv is None or conv.owner != user_id:
            await manager.send_personal_message(
                error("NOT_FOUND", "no such conversation"), websocket
            )
            return
        manager.join(websocket, conv.id)
        user_message = {
            "id": uuid.uuid4().hex[:16],
            "conversation_id": conv.id,
            "content": data.get("content", ""),
            "message_type": "user",
            "sender_id": user_id,
            "created_at": now_iso(),
        }
        conv.messages.append(user_message)
        await manager.broadcast_to_conversation(
            {"type": "message_received", "data": {"message": user_message}}, conv.id
        )
        task = asyncio.create_task(generate_reply(conv, user_message))
        generations.add(task)  # a reference, so the task is not collected mid-way
        task.add_done_callback(generations.discard)
    elif kind == "ping":
        await manager.send_personal_message({"type": "pong", "data": {}}, websocket)
    else:
        await manager.send_personal_message(
            error("UNKNOWN_TYPE", f"unknown type {kind!r}"), websocket
        )


@app.websocket("/api/v1/chat/ws")
async def websocket_endpoint(websocket: WebSocket) -> None:
    user_id = None
    try:
        await websocket.accept()
        auth_message = json.loads(await asyncio.wait_for(websocket.receive_text(), 10))
        if auth_message.get("type") != "auth":
            await websocket.close(code=4001, reason="Authentication required")
            return
        token = auth_message.get("token") or (auth_message.get("data") or {}).get("token")
        user_id = verify_token(token)
        if not user_id:
            await websocket.close(code=4001, reason="Invalid token")
            return
        manager.connect(websocket, user_id)
        await manager.send_personal_message(
            {"type": "auth_success", "user_id": user_id, "data": {"user_id": user_id}}, websocket
        )
        while True:
            data = await websocket.receive_text()
            try:
                message = json.loads(data)
            except ValueError:
                await manager.send_personal_message(error("INVALID_JSON", "not JSON"), websocket)
                continue
            await handle_websocket_message(websocket, user_id, message)
    except (TimeoutError, WebSocketDisconnect):
        pass
    finally:
        if user_id:
            manager.disconnect(websocket, user_id)


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets",
        ws_per_message_deflate=False,
        ws_max_size=1024 * 1024,
        log_level="warning",
        backlog=4096,
        workers=1,
    )


if __name__ == "__main__":
    main()
