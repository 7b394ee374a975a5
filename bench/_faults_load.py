"""The clients of ``bench/faults.py``: WebSocket users that chat, lose their connection and resume.

Each client is one user with one conversation, kept for the whole run. It sends
its messages one at a time (the next once the previous one is settled:
answered, or failed explicitly), follows every reply chunk by chunk, and when
its connection drops (its own planned disconnect, the server killed, a 1008
close) reconnects with backoff and resumes: ``join_conversation`` with
``after_index`` and ``message_id`` of the reply it was following, then carries
on from what the join says (the history, the named reply's end, the reply in
progress replayed).

What a client saw is recorded raw, not judged here: acknowledgements,
every chunk's index range and text, every error and close, the time a crash
was seen and the next chunk after it. ``_faults_audit`` judges it against
the store.

Clients run on asyncio + uvloop + ``websockets`` in worker processes that the
controller starts with ``run_worker`` (fork) and drives over two pipes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import time
from multiprocessing.connection import Connection
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

WS_PATH = "/api/v1/chat/ws"
#: Width of the timeline's buckets, in seconds.
BUCKET_S = 0.5
#: A client stops trying to reconnect after this long.
RECONNECT_FOR = 90.0
#: Handshake, auth and join each get this long.
STEP_TIMEOUT = 15.0
#: Messages a join asks for: enough to find the one awaited and its reply.
HISTORY = 8
#: A small receive buffer, as on a phone: a client that stops reading pushes
#: back on the server after a few frames instead of after megabytes.
RCVBUF = 8192
#: Frames websockets reads ahead of the application before it stops reading.
MAX_QUEUE = 4
#: Columns of the timeline's buckets.
COUNTS = ("chunks", "errors", "reconnects", "drops")

now = time.monotonic  # system-wide on Linux: the controller's clock too

Record = dict[str, Any]


class Tallies:
    """Per-bucket event counts of one worker, for the timeline."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.buckets: dict[int, list[int]] = {}

    def count(self, what: str, n: int = 1) -> None:
        b = int((now() - self.t0) / BUCKET_S)
        row = self.buckets.get(b)
        if row is None:
            row = self.buckets[b] = [0] * len(COUNTS)
        row[COUNTS.index(what)] += n

    def take(self) -> dict[int, list[int]]:
        out, self.buckets = self.buckets, {}
        return out


class Dropped(Exception):
    """The connection is gone (and the client will reconnect)."""


class Client:
    """One user: its conversation, what it sent, and everything it saw."""

    def __init__(self, index: int, token: str, port: int, tallies: Tallies, seed: int) -> None:
        self.index = index
        self.token = token
        self.port = port
        self.tallies = tallies
        self.rng = random.Random(seed)
        self.ws: ClientConnection | None = None
        self.cid = ""
        #: Every acknowledgement of the run: (when, message id).
        self.acked: list[tuple[float, str]] = []
        self.follow: str | None = None
        self._ids = 0
        #: Every reply seen, across phases: a reply's end can arrive after
        #: its message was settled (a resume learns the end from the join's
        #: history, then gets its stream_complete), even in the next phase.
        self.replies: dict[str, Record] = {}
        self.new_phase("setup", {})

    # -- records -------------------------------------------------------------------------

    def new_phase(self, name: str, plan: dict[str, Any]) -> None:
        self.phase = name
        self.plan = plan
        self.messages: list[Record] = []
        for rec in self.replies.values():
            rec["chunks"] = rec["chunks"][-1:]  # reported already; the last index is enough
            rec["phase"] = None
        self.errors: list[Record] = []
        self.recoveries: list[Record] = []
        self.drops = 0
        self.planned_drops = 0
        self.reconnects = 0
        self.merged = 0
        self.gave_up = False
        self.crashed_at: dict[str, float] = {}
        self.acted: set[tuple[str, int]] = set()
        self.action: tuple[str, float] | None = None

    def report(self) -> Record:
        return {
            "index": self.index,
            "cid": self.cid,
            "messages": self.messages,
            "replies": self._phase_replies(),
            "errors": self.errors,
            "recoveries": self.recoveries,
            "drops": self.drops,
            "planned_drops": self.planned_drops,
            "reconnects": self.reconnects,
            "merged": self.merged,
            "gave_up": self.gave_up,
        }

    def _phase_replies(self) -> list[Record]:
        """The replies to this phase's messages (and any of unknown origin seen in it)."""
        mine = {m["id"] for m in self.messages if m["id"] is not None}
        return [
            r
            for r in self.replies.values()
            if r["user_message_id"] in mine
            or (r["user_message_id"] is None and r["phase"] == self.phase)
        ]

    def _reply(self, mid: str, uid: str | None) -> Record:
        rec = self.replies.get(mid)
        if rec is None:
            rec = self.replies[mid] = {
                "id": mid,
                "user_message_id": uid,
                "chunks": [],
                "finish": None,
                "superseded": False,
                "error_code": None,
                "resumed": 0,
                "after_join": False,
                "ended_away": False,
                "history_text": None,
                "first_chunk_at": None,
                "phase": self.phase,
            }
        elif rec["user_message_id"] is None and uid is not None:
            rec["user_message_id"] = uid
        return rec

    def _message(self, uid: str | None) -> Record | None:
        if uid is None:
            return None
        for m in self.messages:
            if m["id"] == uid:
                return m
        return None

    def unsettled(self) -> list[Record]:
        return [m for m in self.messages if m["settled"] is None and not m["replaced"]]

    # -- frames --------------------------------------------------------------------------

    def handle(self, f: Record) -> None:
        kind = f.get("type")
        d = f.get("data") or {}
        t = now()
        if kind == "stream_content":
            rec = self._reply(d["message_id"], None)
            hi = int(d["index"])
            lo = int(d.get("first_index", hi))
            if lo != hi:
                self.merged += 1
            rec["chunks"].append([lo, hi, d["content"]])
            rec["after_join"] = False
            if rec["first_chunk_at"] is None:
                rec["first_chunk_at"] = t
                uid = rec["user_message_id"]
                crashed = self.crashed_at.pop(uid, None) if uid else None
                if crashed is not None:
                    self.recoveries.append({"cid": self.cid, "crash_at": crashed, "chunk_at": t})
            self.tallies.count("chunks", hi - lo + 1)
            self._plan_action(rec, hi)
        elif kind == "stream_start":
            uid = d.get("user_message_id")
            rec = self._reply(d["message_id"], uid)
            m = self._message(rec["user_message_id"])
            # Followed unless it answers a message already settled (the start
            # may come before the acknowledgement that names its message).
            if rec["finish"] is None and (m is None or m["settled"] is None):
                self.follow = rec["id"]
        elif kind == "stream_complete":
            rec = self._reply(d["message_id"], None)
            rec["finish"] = d.get("finish_reason")
            rec["superseded"] = bool(d.get("superseded"))
            live = not rec["after_join"]
            if not live:
                rec["ended_away"] = True  # the join told its end, without the rest of its chunks
            if self.follow == rec["id"]:
                self.follow = None
            self._settle_from(rec, t, live)
        elif kind == "error":
            mid = d.get("message_id")
            self.errors.append(
                {
                    "t": t,
                    "code": d.get("code"),
                    "message_id": mid,
                    "message": str(d.get("message", ""))[:120],
                }
            )
            self.tallies.count("errors")
            if mid in self.replies:
                self.replies[mid]["error_code"] = d.get("code")
        elif kind == "message_received":
            msg = d.get("message") or {}
            for m in self.messages:
                if m["id"] is None and m["content"] == msg.get("content"):
                    m["id"] = msg["id"]
                    m["ack_at"] = t
                    self.acked.append((t, msg["id"]))
                    break
        elif kind == "conversation_joined":
            self._joined(d.get("messages") or [], t)

    def _settle_from(self, rec: Record, t: float, live: bool = False) -> None:
        m = self._message(rec["user_message_id"])
        if m is None or m["settled"] is not None:
            return
        finish = rec["finish"]
        if finish in ("stop", "length"):
            outcome = "answered"
        elif finish == "error" and (rec["superseded"] or rec["error_code"] == "INTERNAL_ERROR"):
            # A crash interrupted it: the conversation answers again after its
            # restart. Seen live, it starts the recovery clock (seen on a
            # resume, the time is the client's reconnect, not the recovery).
            if live:
                self.crashed_at[m["id"]] = t
            return
        else:
            outcome = "failed"
        m["settled"] = outcome
        m["reply"] = rec["id"]
        m["settled_at"] = t

    def _joined(self, history: list[Record], t: float) -> None:
        """What a join's history says about the messages still awaited."""
        for m in self.unsettled():
            idx = None
            for i, h in enumerate(history):
                if h.get("message_type") != "user":
                    continue
                if (m["id"] is not None and h["id"] == m["id"]) or (
                    m["id"] is None and h.get("content") == m["content"]
                ):
                    idx = i
                    break
            if idx is None:
                if m["id"] is None:
                    m["resend"] = True  # never stored (the server died first): send it again
                continue
            m.pop("resend", None)
            if m["id"] is None:  # stored, but the acknowledgement was lost with the connection
                m["id"] = history[idx]["id"]
                m["ack_at"] = t
                m["late_ack"] = True
                self.acked.append((t, m["id"]))
            nxt = history[idx + 1] if idx + 1 < len(history) else None
            if nxt is not None and nxt.get("message_type") == "assistant":
                rec = self._reply(nxt["id"], m["id"])
                rec["history_text"] = nxt.get("content", "")
                if rec["finish"] is None:
                    rec["finish"] = nxt.get("finish_reason")
                    rec["ended_away"] = True
                if self.follow == rec["id"]:
                    self.follow = None
                self._settle_from(rec, t)

    def _plan_action(self, rec: Record, hi: int) -> None:
        m = self._message(rec["user_message_id"])
        if m is None:
            return
        n = m["n"]
        for what in ("disconnect", "slow"):
            spec = self.plan.get(what, {}).get(n)
            if spec is not None and hi >= spec[0] and (what, n) not in self.acted:
                self.acted.add((what, n))
                self.action = (what, float(spec[1]))

    # -- connection ----------------------------------------------------------------------

    async def _open(self) -> ClientConnection:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(
                asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", self.port)),
                STEP_TIMEOUT,
            )
            ws = await connect(
                f"ws://127.0.0.1:{self.port}{WS_PATH}",
                sock=sock,
                compression=None,
                max_size=None,
                max_queue=MAX_QUEUE,
                ping_interval=None,
                open_timeout=STEP_TIMEOUT,
                close_timeout=1,
            )
        except BaseException:
            sock.close()
            raise
        try:
            await ws.send(json.dumps({"type": "auth", "token": self.token}))
            auth = json.loads(await asyncio.wait_for(ws.recv(), STEP_TIMEOUT))
            if auth.get("type") != "auth_success":
                raise InvalidHandshake(f"auth refused: {auth}")
        except BaseException:
            ws.transport.abort()
            raise
        return ws

    async def start(self, gate: asyncio.Semaphore) -> None:
        """Connect, sign in and create the conversation (retried: a thousand connect at once)."""
        async with gate:
            for attempt in range(5):
                try:
                    self.ws = await self._open()
                    await self._send({"type": "create_conversation", "data": {"title": "faults"}})
                    while not self.cid:
                        f = await self._recv(STEP_TIMEOUT)
                        if f is not None and f.get("type") == "conversation_created":
                            self.cid = f["data"]["conversation"]["id"]
                    return
                except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, Dropped):
                    self._abort()
                    await asyncio.sleep(0.2 * (attempt + 1))
            raise RuntimeError(f"client {self.index} could not connect")

    def _abort(self) -> None:
        if self.ws is not None:
            self.ws.transport.abort()
            self.ws = None

    async def close(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.ws.close(), 2)
            self._abort()

    async def _send(self, frame: Record) -> None:
        if self.ws is None:
            raise Dropped
        self._ids += 1
        frame.setdefault("id", f"c{self.index}-{self._ids}")
        try:
            await self.ws.send(json.dumps(frame))
        except (ConnectionClosed, OSError) as exc:
            self._lost(exc)
            raise Dropped from exc

    async def _recv(self, timeout: float) -> Record | None:
        """The next frame, or None after ``timeout``; ``Dropped`` when the connection is gone."""
        if self.ws is None:
            raise Dropped
        try:
            raw = await asyncio.wait_for(self.ws.recv(), max(timeout, 0.0))
        except TimeoutError:
            return None
        except (ConnectionClosed, OSError) as exc:
            self._lost(exc)
            raise Dropped from exc
        frame: Record = json.loads(raw)
        return frame

    def _lost(self, exc: BaseException) -> None:
        code = None
        reason = ""
        if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
            code, reason = exc.rcvd.code, exc.rcvd.reason
        self.drops += 1
        self.tallies.count("drops")
        if code is not None:
            # A close frame from the server is something it decided: recorded
            # with the errors (a kill -9 sends none).
            self.errors.append(
                {"t": now(), "code": f"close {code}", "message_id": None, "message": reason}
            )
        self._abort()

    async def reconnect(self, deadline: float) -> bool:
        """Connect again and resume; False when the server stayed away too long."""
        started = now()
        delay = 0.05
        while True:
            self._abort()
            try:
                self.ws = await self._open()
            except (OSError, TimeoutError, ConnectionClosed, InvalidHandshake):
                self._abort()
                if now() - started > RECONNECT_FOR or now() > deadline:
                    self.gave_up = True
                    return False
                await asyncio.sleep(delay * (0.5 + self.rng.random()))
                delay = min(delay * 2, 1.0)
                continue
            self.reconnects += 1
            self.tallies.count("reconnects")
            try:
                await self._resume()
            except Dropped:
                continue
            return True

    async def _resume(self) -> None:
        """Join the conversation again, naming the reply followed and the last chunk seen."""
        data: Record = {"conversation_id": self.cid, "history_limit": HISTORY}
        rec = self.replies.get(self.follow) if self.follow else None
        if rec is not None:
            rec["resumed"] += 1
            rec["after_join"] = True
            if rec["chunks"]:
                data["after_index"] = rec["chunks"][-1][1]
                data["message_id"] = rec["id"]
        self._ids += 1
        rid = f"j{self.index}-{self._ids}"
        await self._send({"type": "join_conversation", "id": rid, "data": data})
        while True:
            f = await self._recv(STEP_TIMEOUT)
            if f is None:
                self._abort()
                raise Dropped
            self.handle(f)
            if f.get("type") == "conversation_joined" and f.get("reply_to") == rid:
                break
        for m in self.unsettled():
            if m.pop("resend", False):
                m["replaced"] = True
                await self._send_user(m["n"], m["directive"], m["attempt"] + 1)

    # -- a phase -------------------------------------------------------------------------

    async def _send_user(self, n: int, directive: str | None, attempt: int = 1) -> None:
        tag = f" [fault:{directive}]" if directive else ""
        content = f"c{self.index} {self.phase} m{n}{tag} a{attempt}"
        m: Record = {
            "n": n,
            "attempt": attempt,
            "content": content,
            "directive": directive,
            "sent_at": now(),
            "id": None,
            "ack_at": None,
            "late_ack": False,
            "settled": None,
            "settled_at": None,
            "reply": None,
            "replaced": False,
        }
        self.messages.append(m)
        try:
            await self._send(
                {"type": "send_message", "data": {"conversation_id": self.cid, "content": content}}
            )
        except Dropped:
            m["resend"] = True  # unless the join finds it stored
            raise

    async def pump(self, until: float, hard_end: float, settled: bool = False) -> None:
        """Read and handle frames until ``until`` (with ``settled``: until nothing is awaited)."""
        while not self.gave_up:
            if settled and not self.unsettled():
                return
            remaining = until - now()
            if remaining <= 0:
                return
            try:
                if self.ws is None:
                    raise Dropped
                f = await self._recv(remaining)
                if f is not None:
                    self.handle(f)
                if self.action is not None:
                    what, seconds = self.action
                    self.action = None
                    if what == "disconnect":
                        self.planned_drops += 1
                        self._abort()
                        await asyncio.sleep(seconds)
                        raise Dropped
                    await asyncio.sleep(seconds)  # a slow client: stops reading for a while
            except Dropped:
                await self.reconnect(hard_end)

    async def run_phase(self, spec: Record) -> Record:
        self.new_phase(spec["name"], spec["plans"].get(self.index, {}))
        interval = float(spec["interval"])
        offset = self.rng.random()
        hard_end = float(spec["t_end"]) + float(spec["grace"])
        for n in range(int(spec["messages"])):
            await self.pump(float(spec["t_start"]) + (n + offset) * interval, hard_end)
            if self.gave_up:
                break
            directive = self.plan.get("directive", {}).get(n)
            try:
                await self._send_user(n, directive)
            except Dropped:
                await self.reconnect(hard_end)
            await self.pump(hard_end, hard_end, settled=True)
        return self.report()


async def _worker(
    cmd: Connection, out: Connection, port: int, users: list[tuple[int, str]], t0: float, seed: int
) -> None:
    tallies = Tallies(t0)
    clients = [Client(i, token, port, tallies, seed * 100_003 + i) for i, token in users]
    gate = asyncio.Semaphore(100)
    await asyncio.gather(*(c.start(gate) for c in clients))
    out.send(("ready", {c.index: c.cid for c in clients}))
    loop = asyncio.get_running_loop()
    running: set[asyncio.Task[None]] = set()

    async def phase(spec: Record) -> None:
        cpu0 = time.process_time()
        reports = await asyncio.gather(*(c.run_phase(spec) for c in clients))
        out.send(
            (
                "phase_done",
                {
                    "clients": reports,
                    "buckets": tallies.take(),
                    "cpu_s": time.process_time() - cpu0,
                },
            )
        )

    while True:
        msg = await loop.run_in_executor(None, cmd.recv)
        if msg[0] == "phase":
            task = asyncio.create_task(phase(msg[1]))
            running.add(task)
            task.add_done_callback(running.discard)
        elif msg[0] == "acks":
            since, before = float(msg[1]), float(msg[2])
            acks = [
                (c.index, c.cid, mid) for c in clients for t, mid in c.acked if since <= t < before
            ]
            out.send(("acks", acks))
        elif msg[0] == "stop":
            await asyncio.gather(*(c.close() for c in clients))
            return


def run_worker(
    cmd: Connection, out: Connection, port: int, users: list[tuple[int, str]], t0: float, seed: int
) -> None:
    """A worker process's body: the clients ``users`` (index, token) on ``port``."""
    try:
        uvloop.run(_worker(cmd, out, port, users, t0, seed))
    except BaseException as exc:
        with contextlib.suppress(Exception):
            out.send(("failed", f"{type(exc).__name__}: {exc}"))
        raise
