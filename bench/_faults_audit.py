"""The audit of ``bench/faults.py``: what clients saw, judged against what the store holds.

Pure functions of their inputs (the clients' raw records, the stored messages
read back through the public API, and which conversations each fault
targeted), so that ``--sabotage`` can break the inputs on purpose and show
that every kind of broken promise is reported.

The promises, per phase:

- every acknowledged user message (the client saw ``message_received``, or a
  join's history showed it after the acknowledgement was lost with the
  connection) is stored exactly once, in the order it was sent;
- every reply a client saw complete (``finish_reason`` ``stop``/``length``)
  is stored with exactly the text the client assembled from its chunks (a
  prefix of it, for a reply that ended while the client was away);
- no followed stream has a gap or a repeated chunk in ``index``, and each one
  the client saw start has an end (``stream_complete``, live or on resume);
- every acknowledged message is answered, or failed explicitly (an error
  reply stored);
- no conversation saw an error that no fault aimed at it.
"""

from __future__ import annotations

import copy
import itertools
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

Record = dict[str, Any]

#: Failures of the model that end a reply with an error after text was sent.
MODEL_ERROR_CODES = ("PROVIDER_ERROR", "TIMEOUT")
#: Failures the fake model (``_faults_model``) injects, and what actorchat
#: should make of each: answered after a retry, or failed explicitly.
KINDS: dict[str, str] = {
    "429": "answered",
    "500": "answered",
    "529": "answered",
    "drop0": "answered",
    "drop": "failed",
    "hang": "failed",
    "cut": "failed",
    "error": "failed",
}
#: At most this many examples are kept per kind of problem.
EXAMPLES = 5


@dataclass
class Targets:
    """Which conversations (by client index) each fault of a phase aimed at."""

    killed: set[str] = field(default_factory=set)  # conversation ids
    crashes_everywhere: bool = False  # the embedded model's crash rate was on
    model_faults_everywhere: bool = False  # the embedded model's failure rate was on
    kill9: bool = False  # the server was killed -9 (every client lost its connection)
    disconnect: set[int] = field(default_factory=set)
    slow: set[int] = field(default_factory=set)
    directive: set[int] = field(default_factory=set)
    #: When the server was down (kill -9 -> serving again): a crash seen just
    #: before one recovers only after it, which is not a recovery time.
    outages: list[tuple[float, float]] = field(default_factory=list)


#: The promises, each a count that must be 0, with its table heading.
PROMISES: dict[str, str] = {
    "lost": "acked msgs lost",
    "duplicated": "acked msgs duplicated",
    "out_of_order": "out of order",
    "text_mismatch": "text ≠ store",
    "gaps": "index gaps",
    "repeats": "repeated chunks",
    "unended": "streams without end",
    "unanswered": "unanswered",
    "untargeted_errors": "errors off target",
}


@dataclass
class Audit:
    phase: str
    clients: int = 0
    acked: int = 0
    late_acked: int = 0
    answered: int = 0
    failed: int = 0
    seen_complete: int = 0
    ended_away: int = 0
    streams: int = 0
    resumed: int = 0
    merged_frames: int = 0
    drops: int = 0
    reconnects: int = 0
    gave_up: int = 0
    client_unsettled: int = 0
    recoveries_across_restart: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    text_mismatch: int = 0
    gaps: int = 0
    repeats: int = 0
    unended: int = 0
    unanswered: int = 0
    untargeted_errors: int = 0
    errors_seen: Counter[str] = field(default_factory=Counter)
    failed_reasons: Counter[str] = field(default_factory=Counter)
    recovery_ms: list[float] = field(default_factory=list)
    recovery_at: list[float] = field(default_factory=list)  # when each crash was seen
    examples: dict[str, list[str]] = field(default_factory=dict)

    def note(self, kind: str, example: str, count: int = 1) -> None:
        setattr(self, kind, getattr(self, kind) + count)
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES:
            shown.append(example)

    def broken(self) -> dict[str, int]:
        """The promises broken in this phase, with their counts."""
        return {k: getattr(self, k) for k in PROMISES if getattr(self, k)}

    def to_dict(self) -> Record:
        out = {k: v for k, v in self.__dict__.items() if k not in ("recovery_ms", "recovery_at")}
        out["errors_seen"] = dict(self.errors_seen)
        out["failed_reasons"] = dict(self.failed_reasons)
        out["recovery_samples"] = len(self.recovery_ms)
        return out


def _stream_faults(chunks: list[list[Any]]) -> tuple[int, int]:
    """Gaps and repeats in one stream's ``[first_index, index, text]`` frames."""
    gaps = repeats = 0
    expected = 0
    for lo, hi, _text in chunks:
        if lo > expected:
            gaps += 1
        elif lo < expected:
            repeats += 1
        expected = max(expected, int(hi) + 1)
    return gaps, repeats


def _ranges(reply: Record) -> str:
    """A stream's indices in arrival order, runs collapsed: ``9, 0-8, 10-19``."""
    runs: list[list[int]] = []
    for lo, hi, _text in reply["chunks"]:
        if runs and int(lo) == runs[-1][1] + 1:
            runs[-1][1] = int(hi)
        else:
            runs.append([int(lo), int(hi)])
    return ", ".join(f"{a}-{b}" if b > a else str(a) for a, b in runs)


def across_outage(recovery: Record, outages: list[tuple[float, float]]) -> bool:
    """Whether the server was down between a crash and the next chunk."""
    crash, chunk = recovery["crash_at"], recovery["chunk_at"]
    return any(crash <= end and start <= chunk for start, end in outages)


def audit(
    phase: str,
    clients: list[Record],
    stored: dict[str, list[Record]],
    earlier_acks: dict[str, list[str]],
    targets: Targets,
) -> Audit:
    """Judge one phase. ``stored`` maps a conversation id to its messages (turn order,
    current versions); ``earlier_acks`` holds each conversation's acknowledged
    message ids of the phases before, for the order check."""
    a = Audit(phase, clients=len(clients))
    for c in clients:
        _audit_client(a, c, stored.get(c["cid"], []), earlier_acks.get(c["cid"], []), targets)
    return a


def _audit_client(
    a: Audit, c: Record, history: list[Record], earlier: list[str], targets: Targets
) -> None:
    cid = c["cid"]
    who = f"client {c['index']} ({cid})"
    position = {m["id"]: i for i, m in enumerate(history)}
    contents = Counter(m.get("content") for m in history if m.get("message_type") == "user")
    a.drops += c["drops"]
    a.reconnects += c["reconnects"]
    a.merged_frames += c["merged"]
    a.gave_up += int(c["gave_up"])
    killed = cid in targets.killed or targets.crashes_everywhere
    model_targeted = targets.model_faults_everywhere or c["index"] in targets.directive

    # Acknowledged messages: stored once, in order, answered or failed explicitly.
    order = list(earlier)
    for m in c["messages"]:
        if m["settled"] is None and not m["replaced"]:
            a.client_unsettled += 1
        if m["id"] is None:
            continue
        a.acked += 1
        a.late_acked += int(m["late_ack"])
        order.append(m["id"])
        pos = position.get(m["id"])
        if pos is None or history[pos].get("content") != m["content"]:
            a.note("lost", f"{who}: acknowledged {m['id']} ({m['content']!r}) not in the store")
            continue
        if contents[m["content"]] > 1:
            a.note("duplicated", f"{who}: {m['content']!r} stored {contents[m['content']]} times")
        nxt = history[pos + 1] if pos + 1 < len(history) else None
        if nxt is None or nxt.get("message_type") != "assistant":
            a.note("unanswered", f"{who}: {m['id']} ({m['content']!r}) has no reply stored")
            continue
        reason = nxt.get("finish_reason")
        if reason in ("stop", "length"):
            a.answered += 1
        else:
            a.failed += 1
            a.failed_reasons[str(reason)] += 1
            explained = model_targeted and (targets.model_faults_everywhere or m["directive"])
            if not explained:
                a.note(
                    "untargeted_errors",
                    f"{who}: reply {nxt['id']} to {m['content']!r} stored with {reason}",
                )
    positions = [position[i] for i in order if i in position]
    if any(later <= before for before, later in itertools.pairwise(positions)):
        a.note("out_of_order", f"{who}: acknowledged messages stored out of order")

    # Replies followed: gap-free, ended, and as stored.
    for r in c["replies"]:
        if r["chunks"] or r["finish"] is not None:
            a.streams += 1
        a.resumed += int(r["resumed"] > 0)
        gaps, repeats = _stream_faults(r["chunks"])
        if gaps:
            a.note("gaps", f"{who}: reply {r['id']}, indices as received: {_ranges(r)}", gaps)
        if repeats:
            a.note("repeats", f"{who}: reply {r['id']}, indices as received: {_ranges(r)}", repeats)
        if r["finish"] is None and r["chunks"]:
            a.note(
                "unended",
                f"{who}: reply {r['id']} seen up to index {r['chunks'][-1][1]} "
                f"(resumed {r['resumed']} times; conversation killed: {killed})",
            )
        if r["finish"] in ("stop", "length"):
            a.seen_complete += 1
            a.ended_away += int(r["ended_away"])
            text = "".join(str(ch[2]) for ch in r["chunks"])
            pos = position.get(r["id"])
            stored_text = history[pos].get("content") if pos is not None else None
            if stored_text is None:
                a.note("text_mismatch", f"{who}: reply {r['id']} seen complete, not stored")
            elif r["ended_away"]:
                if not stored_text.startswith(text) or r["history_text"] not in (
                    None,
                    stored_text,
                ):
                    a.note("text_mismatch", f"{who}: reply {r['id']}: {text!r} not a prefix")
            elif stored_text != text:
                a.note(
                    "text_mismatch",
                    f"{who}: reply {r['id']}: seen {text!r}, stored {stored_text!r}",
                )
        elif r["finish"] == "error":
            crash = r["error_code"] == "INTERNAL_ERROR"
            if r["superseded"]:
                explained = killed or targets.kill9 or c["index"] in targets.disconnect
            elif crash:
                explained = killed
            else:
                explained = model_targeted
            if not explained:
                a.note("untargeted_errors", f"{who}: reply {r['id']} ended with an error")

    # Errors: each must come from a fault aimed at this conversation.
    for e in c["errors"]:
        code = str(e["code"])
        a.errors_seen[code] += 1
        if code == "INTERNAL_ERROR":
            explained = killed
        elif code in MODEL_ERROR_CODES:
            explained = model_targeted
        elif code == "close 1008":
            explained = c["index"] in targets.slow
        else:
            explained = False
        if not explained:
            a.note("untargeted_errors", f"{who}: {code} {e['message']!r}")

    for rec in c["recoveries"]:
        if across_outage(rec, targets.outages):
            a.recoveries_across_restart += 1
        else:
            a.recovery_ms.append((rec["chunk_at"] - rec["crash_at"]) * 1000.0)
            a.recovery_at.append(rec["crash_at"])


# -- sabotage: the audit must catch what it exists to catch ---------------------------------


def sabotage(
    phase: str,
    clients: list[Record],
    stored: dict[str, list[Record]],
    earlier_acks: dict[str, list[str]],
    targets: Targets,
) -> list[tuple[str, str, bool]]:
    """Break copies of one phase's inputs three ways; (what, how it showed, caught) each.

    A deleted message (an acknowledged one removed from the store), a dropped
    chunk (one frame removed from a followed stream) and a fake
    acknowledgement (a message the client claims was acknowledged and the
    store never had) must each be reported.
    """
    base = audit(phase, clients, stored, earlier_acks, targets)
    out: list[tuple[str, str, bool]] = []

    # A deleted message.
    st = copy.deepcopy(stored)
    victim = next(
        (
            (c["cid"], m["id"])
            for c in clients
            for m in c["messages"]
            if m["id"] and any(h["id"] == m["id"] for h in st.get(c["cid"], []))
        ),
        None,
    )
    if victim is None:
        out.append(("deleted message", "no acknowledged message to delete", False))
    else:
        st[victim[0]] = [h for h in st[victim[0]] if h["id"] != victim[1]]
        got = audit(phase, clients, st, earlier_acks, targets)
        caught = got.lost > base.lost
        out.append(("deleted message", f"lost {base.lost} -> {got.lost}", caught))

    # A dropped chunk.
    cl = copy.deepcopy(clients)
    reply = next(
        (
            r
            for c in cl
            for r in c["replies"]
            if len(r["chunks"]) >= 3 and r["finish"] in ("stop", "length")
        ),
        None,
    )
    if reply is None:
        out.append(("dropped chunk", "no complete reply with 3 chunks", False))
    else:
        del reply["chunks"][1]
        got = audit(phase, cl, stored, earlier_acks, targets)
        caught = got.gaps > base.gaps
        how = f"gaps {base.gaps} -> {got.gaps}, text ≠ store {base.text_mismatch} -> "
        out.append(("dropped chunk", how + str(got.text_mismatch), caught))

    # A fake acknowledgement.
    cl = copy.deepcopy(clients)
    if not cl:
        out.append(("fake acknowledgement", "no client", False))
    else:
        fake = copy.deepcopy(cl[0]["messages"][-1]) if cl[0]["messages"] else {}
        fake.update(
            {
                "n": -1,
                "content": "a message the server never acknowledged",
                "id": "never-acknowledged",
                "late_ack": False,
                "replaced": False,
                "settled": "answered",
                "directive": None,
            }
        )
        cl[0]["messages"].append(fake)
        got = audit(phase, cl, stored, earlier_acks, targets)
        caught = got.lost > base.lost
        out.append(("fake acknowledgement", f"lost {base.lost} -> {got.lost}", caught))
    return out
