"""Time as an input. Wire times are integer Unix seconds (UTC)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Something that tells the time in integer Unix seconds."""

    def now(self) -> int:
        """Current time, integer Unix seconds."""
        ...


class SystemClock:
    """The machine's clock."""

    def now(self) -> int:
        return int(time.time())


class FixedClock:
    """A clock that only moves when told to (tests, replay, conformance vectors)."""

    def __init__(self, t: int) -> None:
        self.t = t

    def now(self) -> int:
        return self.t

    def advance(self, seconds: int) -> None:
        self.t += seconds
