"""Admissions: how the hook hands one tool call over to the guarded tool.

The before-tool-call hook sees the agent, task and crew but not the arguments
the tool will finally receive (CrewAI validates and fills defaults after the
hook); the tool wrapper sees those arguments but not who is calling. The hook
therefore builds the proposal and leaves an *admission* here, keyed by the
guarded tool and the digest of the exact arguments; the wrapper takes it (once)
when the tool is about to run, and refuses to run without one.

Not a ContextVar: CrewAI's async ReAct path runs the tool through
``loop.run_in_executor`` without copying the context, so a ContextVar set in the
hook is not visible in the tool. Entries expire after a short TTL and the total
is capped, so a call that never reached its tool (cache hit, usage limit,
another hook blocked it) cannot leave an admission behind for long; the
after-call hook also discards its own call's admission when the tool never took it.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from execauth_core import AuthorizationRequest


@dataclass(eq=False)
class Admission:
    """One tool call the hook admitted: the proposal to decide and its hook context.

    Compared by identity: two identical calls are two admissions.
    """

    tool_uid: str
    args_digest: str
    request: AuthorizationRequest
    context: Any
    expires: float
    taken: bool = False


@dataclass(eq=False)
class CallNote:
    """What the before-hook left for the after-hook of the same call."""

    admission: Admission | None = None
    block_message: str | None = None
    # Held so that id(tool_input) cannot be reused by another dict while noted.
    tool_input: Any = None
    expires: float = 0.0


@dataclass
class _Bucket:
    items: deque[Admission] = field(default_factory=deque)


class Admissions:
    """Thread-safe, bounded, expiring admissions and call notes.

    Args:
        ttl: seconds an admission stays valid; the hook runs moments before the tool.
        capacity: most admissions (and notes) kept; the oldest is dropped first, which
            can only make a call fail closed.
        clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, *, ttl: float, capacity: int, clock: Callable[[], float] = time.monotonic) -> None:
        if ttl <= 0 or capacity <= 0:
            raise ValueError("ttl and capacity must be positive")
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        # Insertion order == expiry order (one TTL for all), so purging only ever
        # looks at the front: O(1) amortised per call, never a scan of history.
        self._order: deque[Admission] = deque()
        self._notes: OrderedDict[int, CallNote] = OrderedDict()

    def admit(self, tool_uid: str, args_digest: str, request: AuthorizationRequest, context: Any) -> Admission:
        """Record that the hook admitted a call of ``tool_uid`` with these exact arguments."""
        with self._lock:
            now = self._clock()
            self._purge(now)
            admission = Admission(tool_uid, args_digest, request, context, now + self._ttl)
            self._buckets.setdefault((tool_uid, args_digest), _Bucket()).items.append(admission)
            self._order.append(admission)
            while len(self._order) > self._capacity:
                self._drop(self._order.popleft())
            return admission

    def take(self, tool_uid: str, args_digest: str) -> Admission | None:
        """Remove and return the oldest live admission for this tool and arguments."""
        with self._lock:
            self._purge(self._clock())
            key = (tool_uid, args_digest)
            bucket = self._buckets.get(key)
            found: Admission | None = None
            while bucket is not None and bucket.items and found is None:
                admission = bucket.items.popleft()
                if not admission.taken:
                    admission.taken = True
                    found = admission
            if bucket is not None and not bucket.items:
                del self._buckets[key]
            return found

    def discard(self, admission: Admission) -> None:
        """Withdraw an admission its tool never took (the call did not run)."""
        with self._lock:
            if not admission.taken:
                admission.taken = True
                self._drop(admission)

    def note(self, tool_input: Any, note: CallNote) -> None:
        """Leave a note for the after-hook of the call whose arguments dict is ``tool_input``.

        CrewAI hands the before- and after-hooks of one call the same dict object.
        """
        with self._lock:
            now = self._clock()
            self._purge(now)
            note.tool_input = tool_input
            note.expires = now + self._ttl
            self._notes[id(tool_input)] = note
            self._notes.move_to_end(id(tool_input))
            while len(self._notes) > self._capacity:
                self._notes.popitem(last=False)

    def pop_note(self, tool_input: Any) -> CallNote | None:
        """Return and forget the note for this call, if any."""
        with self._lock:
            note = self._notes.get(id(tool_input))
            if note is None or note.tool_input is not tool_input:
                return None
            del self._notes[id(tool_input)]
            return note

    def __len__(self) -> int:
        with self._lock:
            return sum(len(b.items) for b in self._buckets.values())

    def _drop(self, admission: Admission) -> None:
        key = (admission.tool_uid, admission.args_digest)
        bucket = self._buckets.get(key)
        if bucket is None:
            return
        try:
            bucket.items.remove(admission)
        except ValueError:
            pass
        if not bucket.items:
            del self._buckets[key]

    def _purge(self, now: float) -> None:
        while self._order and (self._order[0].expires <= now or self._order[0].taken):
            admission = self._order.popleft()
            if not admission.taken:
                admission.taken = True
                self._drop(admission)
        while self._notes:
            first = next(iter(self._notes.values()))
            if first.expires > now:
                break
            self._notes.popitem(last=False)
