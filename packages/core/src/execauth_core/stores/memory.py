"""In-process stores: fast, bounded, and gone when the process ends."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from typing import Any

from ..audit import GENESIS, AuditEntry, entry_for, make_body
from ..errors import StoreUnavailable


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


class MemoryAuditLog:
    """A hash-linked log in memory, keeping the most recent ``max_entries``.

    Older entries fall off the front (memory stays bounded); the chain of what
    remains still verifies from the first retained entry's ``prev`` link. Use
    the SQLite log when every record must be kept.
    """

    def __init__(self, *, max_entries: int = 100_000) -> None:
        self._entries: deque[AuditEntry] = deque(maxlen=max_entries)
        self._head: tuple[int, str] = (0, GENESIS)
        self._lock = threading.Lock()

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        with self._lock:
            seq, prev = self._head
            entry = entry_for(make_body(event, seq=seq + 1, prev=prev))
            self._entries.append(entry)
            self._head = (entry.seq, entry.digest)
            return entry

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
