"""In-process stores: fast, bounded, and gone when the process ends."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..audit import GENESIS, AuditEntry, canonical_body, make_body
from ..canonical import digest_bytes
from ..errors import StoreUnavailable
from ..tlog import Frontier, NodeKey, leaf_hash
from ._tree import TreeMixin
from .base import Debit, window_start

_MAX_CHECKPOINTS = 1024


class MemoryReplayStore:
    """Consumed token ids in a dict, expired ones dropped via a heap.

    Args:
        max_entries: hard bound on live ids. When full of unexpired ids, consume
            raises ``StoreUnavailable`` (deny) rather than forget a live id.
    """

    def __init__(self, *, max_entries: int = 1_000_000) -> None:
        self._ids: dict[str, int] = {}
        self._expiry: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        self._max = max_entries

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        with self._lock:
            while self._expiry and self._expiry[0][0] < now:
                _, old = heapq.heappop(self._expiry)
                if self._ids.get(old, now) < now:
                    del self._ids[old]
            if token_id in self._ids:
                return False
            if len(self._ids) >= self._max:
                raise StoreUnavailable("replay store is full of unexpired token ids")
            self._ids[token_id] = expires_at
            heapq.heappush(self._expiry, (expires_at, token_id))
            return True

    def __len__(self) -> int:
        return len(self._ids)


class MemoryAuditLog(TreeMixin):
    """A hash-linked log in memory, keeping the most recent ``max_entries``.

    Older entries fall off the front (memory stays bounded); the chain of what
    remains still verifies from the first retained entry's ``prev`` link. Use
    the SQLite log when every record must be kept.

    The Merkle tree covers every entry ever appended; it keeps the subtrees that
    proofs of the retained entries need (a few per level for what fell off), so
    an inclusion proof of an entry that fell off, or a consistency proof from a
    size before the retained window, is refused (``StoreUnavailable``).
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=max_entries)
        self._head: tuple[int, str] = (0, GENESIS)
        self._lock = threading.Lock()
        self._frontier = Frontier()
        self._levels: list[dict[int, bytes]] = []
        self._max = max_entries
        self._checkpoints: deque[tuple[int, str]] = deque(maxlen=_MAX_CHECKPOINTS)

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        with self._lock:
            seq, prev = self._head
            body = make_body(event, seq=seq + 1, prev=prev)
            raw = canonical_body(body)  # once: the digest and the Merkle leaf are of these bytes
            entry = AuditEntry(seq=seq + 1, digest=digest_bytes(raw), body=body)
            for level, index, h in self._frontier.append(leaf_hash(raw)):
                if level == len(self._levels):
                    self._levels.append({})
                self._levels[level][index] = h
            self._entries.append(entry)
            self._head = (entry.seq, entry.digest)
            if entry.seq > self._max and entry.seq % max(1, self._max // 4) == 0:
                self._prune(entry.seq - self._max)
            return entry

    def _prune(self, first: int) -> None:
        # Proofs of leaves >= first need, below first, only the node just left of
        # first's ancestor on each level.
        for level, nodes in enumerate(self._levels):
            keep = max(0, (first >> level) - 1)
            for index in [i for i in nodes if i < keep]:
                del nodes[index]

    def _fetch_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        with self._lock:
            out = {}
            for level, index in keys:
                h = self._levels[level].get(index) if level < len(self._levels) else None
                if h is not None:
                    out[(level, index)] = h
            return out

    def tree_head(self) -> tuple[int, bytes]:
        with self._lock:
            return self._frontier.size, self._frontier.root()

    def add_checkpoint(self, note: str, size: int) -> None:
        with self._lock:
            self._checkpoints.append((size, note))

    def checkpoints(self) -> list[str]:
        with self._lock:
            return [note for _, note in sorted(self._checkpoints, key=lambda c: c[0])]

    def head(self) -> tuple[int, str]:
        return self._head

    def entries(self, start: int = 1) -> Iterator[AuditEntry]:
        with self._lock:
            snapshot = list(self._entries)
        return (e for e in snapshot if e.seq >= start)

    def __iter__(self) -> Iterator[AuditEntry]:
        return self.entries()

    def __len__(self) -> int:
        return len(self._entries)


class MemoryStateStore:
    """Budgets and rate counters in a dict; windows that ended are dropped."""

    def __init__(self) -> None:
        self._used: dict[tuple[str, int], int] = {}
        self._holds: dict[str, tuple[int, list[tuple[str, int, int]]]] = {}
        self._ends: list[tuple[int, str, int]] = []
        self._hold_ends: list[tuple[int, str]] = []
        self._lock = threading.Lock()

    def _expire(self, now: int) -> None:
        while self._ends and self._ends[0][0] <= now:
            _, key, start = heapq.heappop(self._ends)
            self._used.pop((key, start), None)
        # A hold outlives nothing it could refund: drop it when its windows end.
        while self._hold_ends and self._hold_ends[0][0] <= now:
            _, hold_id = heapq.heappop(self._hold_ends)
            self._holds.pop(hold_id, None)

    def debit(self, hold_id: str, debits: Sequence[Debit], *, now: int) -> str | None:
        with self._lock:
            self._expire(now)
            if hold_id in self._holds:
                wanted = [(d.key, window_start(now, d.window), d.amount) for d in debits]
                if self._holds[hold_id][1] != wanted:
                    # Only a retry of the same debit is idempotent; a reused id is a bug.
                    raise StoreUnavailable(f"hold id {hold_id!r} reused for different debits")
                return None
            planned = []
            for d in debits:
                start = window_start(now, d.window)
                if self._used.get((d.key, start), 0) + d.amount > d.limit:
                    return d.key
                planned.append((d.key, start, d.amount, start + d.window))
            last_end = now
            for key, start, amount, end in planned:
                if (key, start) not in self._used:
                    heapq.heappush(self._ends, (end, key, start))
                    self._used[(key, start)] = 0
                self._used[(key, start)] += amount
                last_end = max(last_end, end)
            self._holds[hold_id] = (last_end, [(k, s, a) for k, s, a, _ in planned])
            heapq.heappush(self._hold_ends, (last_end, hold_id))
            return None

    def refund(self, hold_id: str) -> None:
        with self._lock:
            hold = self._holds.pop(hold_id, None)
            if hold is None:
                return
            for key, start, amount in hold[1]:
                if (key, start) in self._used:
                    self._used[(key, start)] = max(0, self._used[(key, start)] - amount)

    def usage(self, key: str, window: int, *, now: int) -> int:
        with self._lock:
            return self._used.get((key, window_start(now, window)), 0)
