"""Fenced ownership for the PostgreSQL store: owner epochs, checked per transaction.

Every write transaction checks the owner epochs of the conversations it
touches, takes over those older than its own, and is refused (``Fenced``)
where the row's is newer. What one process has checked is cached
(``EpochGuard.known``) and trusted until ``epoch_fences`` says a takeover
moved rows away from that epoch; ``EpochGuard.check`` says why this needs
no row locks on the hot path.
"""

from __future__ import annotations

from typing import Any

import psycopg

from actorchat.errors import Fenced

__all__ = ["Checked", "EpochGuard", "fenced"]


class Checked(dict[str, int | None]):
    """What a transaction checked: each conversation's owner epoch (None: no such row).

    Once checked, an epoch holds until the commit: a newer owner's takeover
    waits for this transaction (see ``EpochGuard.check``).
    """

    __slots__ = ("deleted", "fences", "guarded", "trusted")

    def __init__(self, known: dict[str, int]) -> None:
        super().__init__()
        #: Epochs whose shared advisory lock this transaction holds.
        self.guarded: set[int] = set()
        #: ``epoch_fences`` as this transaction read it.
        self.fences: dict[int, int] = {}
        #: Known ids whose epoch no takeover has moved (a lazy view: all
        #: known, minus those of an epoch whose fence moved).
        self.trusted: _AllBut = _AllBut(known)
        #: Conversations this transaction deleted.
        self.deleted: set[str] = set()


class _AllBut:
    """Membership in ``known`` minus what was taken out (no copy of ``known``)."""

    __slots__ = ("known", "out")

    def __init__(self, known: dict[str, int]) -> None:
        self.known = known
        self.out: set[str] = set()

    def __contains__(self, cid: object) -> bool:
        return cid in self.known and cid not in self.out

    def difference_update(self, cids: list[str]) -> None:
        self.out.update(cids)


#: Known owner epochs kept at most (then forgotten and checked again).
_KNOWN_MAX = 1_000_000
#: First key of the epochs' advisory locks ("acts"), apart from other users' keys.
_EPOCH_LOCKS = 0x61637473


def _lock_key(epoch: int) -> int:
    # The second key is an int4: epochs wrap (a collision only makes one wait longer).
    return epoch % 0x7FFFFFFF


class EpochGuard:
    """One store's fencing: the epochs it has seen committed, and the check."""

    def __init__(self) -> None:
        # Owner epochs seen in committed transactions: id -> the row's epoch,
        # trusted while ``epoch_fences`` says no takeover moved rows away
        # from that epoch since (``seen_fences``); a newer epoch than ours
        # stays newer, so those entries need no check.
        self.known: dict[str, int] = {}
        self.seen_fences: dict[int, int] = {}

    def begin(self) -> Checked:
        """The record of a new transaction's checks."""
        return Checked(self.known)

    def committed(self, owners: Checked) -> None:
        """The transaction committed: what it checked is now known."""
        for cid, epoch in owners.items():
            if epoch is not None:
                self.known[cid] = epoch
        for cid in owners.deleted:
            self.known.pop(cid, None)
        self.seen_fences.update(owners.fences)
        if len(self.known) > _KNOWN_MAX:
            self.known.clear()  # checked again as they come: bounded memory

    def check(self, conn: psycopg.Connection[Any], wanted: dict[str, int], owners: Checked) -> None:
        """Check the owner epochs of ``wanted`` (id: epoch), taking over the older ones.

        Why no row locks on the hot path: locking 10,000 rows per batch cost
        40% of the append rate. Instead every transaction holds a *shared*
        advisory lock named by its epoch, and a takeover, after moving the
        row to its newer epoch, waits for the *exclusive* lock of the old
        epoch: so for every transaction of the old owner still in flight,
        which checked the row before the move, to end. Its next one checks
        again and is refused. Waits go only from newer epochs to older ones,
        so they form no cycle.
        """
        for epoch in set(wanted.values()) - owners.guarded:
            conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, %s)", (_EPOCH_LOCKS, _lock_key(epoch))
            )
            owners.guarded.add(epoch)
            # Read after the lock, in a statement of its own: a snapshot
            # taken before a takeover's wait ended would miss its move.
            row = conn.execute(
                "SELECT moved FROM epoch_fences WHERE epoch = %s", (epoch,)
            ).fetchone()
            fence = 0 if row is None else int(row[0])
            owners.fences[epoch] = fence
            if self.seen_fences.get(epoch, 0) != fence:
                owners.trusted.difference_update(
                    [cid for cid, e in self.known.items() if e == epoch]
                )
        new: list[str] = []
        for cid, e in wanted.items():
            if cid in owners:
                continue
            known = self.known.get(cid)
            if known is not None and (known > e or (known == e and cid in owners.trusted)):
                owners[cid] = known
            else:
                new.append(cid)
        if new:
            rows = conn.execute(
                "SELECT id, owner_epoch FROM conversations WHERE id = ANY(%s)", (new,)
            ).fetchall()
            for cid in new:
                owners[cid] = None
            for cid, epoch in rows:
                owners[cid] = int(epoch)
        older = sorted(
            cid for cid, e in wanted.items() if (cur := owners.get(cid)) is not None and e > cur
        )
        if not older:
            return
        # A takeover (rare): lock the rows, in id order so that two takers
        # never deadlock, and read their epochs again under the lock.
        rows = conn.execute(
            "SELECT id, owner_epoch FROM conversations WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (older,),
        ).fetchall()
        moved: list[str] = []
        old_epochs: set[int] = set()
        for cid, cur in rows:
            owners[cid] = int(cur)
            if wanted[cid] > cur:
                moved.append(cid)
                old_epochs.add(int(cur))
        if moved:
            conn.execute(
                "UPDATE conversations c SET owner_epoch = v.epoch "
                "FROM unnest(%s::text[], %s::bigint[]) AS v(id, epoch) WHERE c.id = v.id",
                (moved, [wanted[cid] for cid in moved]),
            )
            for cid in moved:
                owners[cid] = wanted[cid]
        for old in sorted(old_epochs - {0}):
            conn.execute(
                "INSERT INTO epoch_fences VALUES (%s, 1) "
                "ON CONFLICT (epoch) DO UPDATE SET moved = epoch_fences.moved + 1",
                (old,),
            )
        # Also for an epoch this transaction holds shared: its own lock never
        # conflicts with itself, others' do.
        for old in sorted(old_epochs - {0}):
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (_EPOCH_LOCKS, _lock_key(old)))


def fenced(epoch: int, owners: Checked, cid: str) -> Fenced | None:
    """``Fenced`` if ``cid``'s owner is newer than ``epoch`` (by what ``owners`` checked)."""
    current = owners.get(cid)
    if current is not None and epoch < current:
        return Fenced(f"conversation {cid} is owned by a newer process (epoch {current} > {epoch})")
    return None
