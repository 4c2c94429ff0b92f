"""Fixtures both AutoGen APIs share. Imports neither framework: each API's tests
live in their own folder (agentchat/, classic/) whose conftest skips without it."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest

from execauth_core import AllowListPolicy, AuditEntry, Guard, StoreUnavailable


class DownReplayStore:
    """A replay store whose consume fails, as an unreachable Redis would."""

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        raise StoreUnavailable("replay store unreachable")


@pytest.fixture
def make_guard() -> Callable[..., Guard]:
    def make(allow: Iterable[str] = (), require_approval: Iterable[str] = (), ledger: bool = True) -> Guard:
        policy = AllowListPolicy(list(allow), require_approval=list(require_approval))
        return Guard.local(policy, data_dir=None, ledger=ledger)

    return make


@pytest.fixture
def down_store() -> DownReplayStore:
    return DownReplayStore()


def audit(guard: Guard) -> list[AuditEntry]:
    return list(guard.audit_log.entries())


@pytest.fixture
def events() -> Callable[[Guard], list[tuple[str, bool, list[str], Any]]]:
    """(event, executed, reason_codes, call_id) of every audit entry (the approval
    queue's own ``approval`` entries left out)."""

    def read(guard: Guard) -> list[tuple[str, bool, list[str], Any]]:
        return [
            (e.event, e.executed, list(e.body.get("reason_codes") or []), e.body.get("call_id"))
            for e in audit(guard)
            if e.event != "approval"
        ]

    return read
