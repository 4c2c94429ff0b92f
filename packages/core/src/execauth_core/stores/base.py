"""Store protocols. Every backend implements them with atomic operations and
raises :class:`~execauth_core.errors.StoreUnavailable` on any failure, which the
guard turns into a denial."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from ..audit import AuditEntry, AuditLog

__all__ = ["AuditLog", "Debit", "JointAdmission", "ReplayStore", "StateStore", "window_start"]


def window_start(now: int, window: int) -> int:
    """Start of the fixed window of ``window`` seconds that contains ``now``.

    Windows are aligned to the Unix epoch, so every backend and every replica
    computes the same window for the same time.
    """
    return now - (now % window)


@dataclass(frozen=True)
class Debit:
    """One counter to charge: a budget (amount in minor units) or a rate (count 1).

    Attributes:
        key: the counter, e.g. ``"budget/user-42/USD/86400"``; built by the Court.
        amount: non-negative integer to add (cents, or 1 call).
        limit: the counter may never exceed this within one window.
        window: window length in seconds (fixed windows aligned to the epoch).
    """

    key: str
    amount: int
    limit: int
    window: int

    def __post_init__(self) -> None:
        if not self.key or self.amount < 0 or self.limit < 0 or self.window <= 0:
            raise ValueError(f"invalid debit {self!r}")


class ReplayStore(Protocol):
    """Remembers consumed token ids until they expire."""

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        """Atomically mark ``token_id`` consumed.

        Returns:
            True if this call consumed it; False if it was already consumed.
            Ids are kept at least until ``expires_at``; after that the token's
            own expiry refuses it, so the id may be forgotten (bounded growth).

        Raises:
            StoreUnavailable: the outcome is unknown; callers must deny.
        """
        ...

    # Optional: ``joint_with(audit_log) -> JointAdmission | None``, the atomic
    # consume-and-record for an audit log this store shares a database with. The
    # guard uses it when offered and falls back to ``consume`` then ``append``.


class JointAdmission(Protocol):
    """Consume token ids and record their use in the audit log, as one atomic step.

    Offered by a replay store for an audit log in the same database (see
    ``joint_with`` on the Redis, PostgreSQL and SQLite replay stores): one round
    trip instead of two, and no moment at which an id is consumed but its execution
    not yet recorded, or recorded but not consumed.
    """

    def consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], *, now: int
    ) -> AuditEntry | str:
        """Consume every ``(token_id, expires_at)`` of ``ids`` and append ``event``,
        all or nothing.

        Returns:
            The appended entry when every id was fresh. Otherwise the first id, in
            the given order, that was already consumed: then nothing was consumed and
            nothing appended.

        Raises:
            StoreUnavailable: the outcome is unknown; callers must deny.
        """
        ...


JointCache = tuple[ReplayStore, AuditLog, "JointAdmission | None"]
"""What a guard or an executor remembers of the joint admission its stores offer."""


def joint_admission_of(
    cached: JointCache | None, replay: ReplayStore, audit: AuditLog
) -> tuple[JointCache, JointAdmission | None]:
    """The joint admission ``replay`` offers for ``audit`` (``None``: consume, then
    append), worked out once per (replay store, audit log) pair: ``cached`` is what
    the last call returned, reused while both stores are the same objects (either may
    be swapped on a guard)."""
    if cached is not None and cached[0] is replay and cached[1] is audit:
        return cached, cached[2]
    offer = getattr(replay, "joint_with", None)
    joint = offer(audit) if callable(offer) else None
    return (replay, audit, joint), joint


class StateStore(Protocol):
    """Budgets and rate counters with an atomic, all-or-nothing check-and-debit.

    The Court debits when it decides ALLOW; if the call is then not executed
    (token refused, audit unavailable) or the tool fails, the guard refunds the
    hold, so a denied or failed call consumes nothing.
    """

    def debit(self, hold_id: str, debits: Sequence[Debit], *, now: int) -> str | None:
        """Atomically check every debit against its limit in the window containing
        ``now`` and, only if all fit, apply all of them under ``hold_id``.

        Returns:
            ``None`` when applied; otherwise the key of the first debit that would
            exceed its limit (and nothing was applied). Retrying the same
            ``hold_id`` returns ``None`` without charging twice.

        Raises:
            StoreUnavailable: the outcome is unknown; callers must deny.
        """
        ...

    def refund(self, hold_id: str) -> None:
        """Undo the debits of ``hold_id`` (idempotent; unknown ids are ignored)."""
        ...

    def usage(self, key: str, window: int, *, now: int) -> int:
        """Current value of ``key`` in the window containing ``now``."""
        ...


_R = TypeVar("_R")
_A = TypeVar("_A")


class JointBase(Generic[_R, _A]):
    """What every backend's :class:`JointAdmission` shares: the pair of stores it
    works on, and the refusal of an empty id list (there is nothing to record the
    use of). Subclasses implement :meth:`_consume_and_append`."""

    def __init__(self, replay: _R, audit: _A) -> None:
        self._replay = replay
        self._audit = audit

    def consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], *, now: int
    ) -> AuditEntry | str:
        if not ids:
            raise ValueError("consume_and_append needs at least one token id")
        return self._consume_and_append(ids, event, now)

    def _consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], now: int
    ) -> AuditEntry | str:
        raise NotImplementedError
