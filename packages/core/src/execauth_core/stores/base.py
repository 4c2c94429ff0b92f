"""Store protocols. Every backend implements them with atomic operations and
raises :class:`~execauth_core.errors.StoreUnavailable` on any failure, which the
guard turns into a denial."""

from __future__ import annotations

from typing import Protocol

from ..audit import AuditLog

__all__ = ["AuditLog", "ReplayStore"]


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
