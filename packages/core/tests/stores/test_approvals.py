"""The durable approval queue on every backend: the state machine, atomic
decisions, expiry, one consumption, and the audit trail."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from execauth_core import AllowListPolicy, Guard
from execauth_core.approvals import ApprovalError, Approvals, open_approvals
from execauth_core.clock import FixedClock
from execauth_core.errors import ApprovalRequired, ExecutionDenied
from execauth_core.keys import LocalSigner

from .conftest import Backend, _param

T0 = 1_800_000_000


@pytest.fixture
def queue(backend: Backend) -> Iterator[tuple[Guard, FixedClock, Backend]]:
    clock = FixedClock(T0)
    stores = backend.open()
    approvals_store = open_approvals(backend.url) if backend.name != "memory" else None
    policy = AllowListPolicy(("search", "transfer"), require_approval=("transfer",))
    guard = Guard.local(policy, stores=stores, clock=clock, signer=LocalSigner.generate())
    if approvals_store is not None:
        guard.approvals = Approvals(approvals_store, stores.audit, authority=guard.authority, clock=clock)
    else:
        from execauth_core.approvals import MemoryApprovalStore

        guard.approvals = Approvals(MemoryApprovalStore(), stores.audit, authority=guard.authority, clock=clock)
    try:
        yield guard, clock, backend
    finally:
        guard.approvals.store.close()


def _ask(guard: Guard, amount: str = "10.00") -> tuple[Any, ApprovalRequired]:
    request = guard.proposal("transfer", {"to": "bob", "amount": amount}, principal="alice", agent="bot")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(request, lambda: "ran")
    return request, info.value


def _approval_events(guard: Guard) -> list[dict[str, Any]]:
    return [e.body for e in guard.audit_log.entries() if e.body["event"] == "approval"]


def test_approve_then_run_once(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, clock, _ = queue
    request, asked = _ask(guard)
    rid = asked.request_id
    assert rid is not None and asked.pending.request_id == rid
    record = guard.approvals.get(rid)
    assert record.state == "pending" and record.proposal_digest == asked.pending.proposal_digest
    assert record.proposal == request and record.principal == "alice" and record.agent == "bot"
    assert record.expires_at > record.created_at and "APPROVAL_REQUIRED" in record.reason_codes
    assert [r.id for r in guard.approvals.list("pending")] == [rid]

    with pytest.raises(ApprovalError) as early:
        guard.approval_for(rid)
    assert early.value.reason_code == "APPROVAL_REQUIRED"

    clock.advance(5)
    approved = guard.approvals.approve(rid, approver="carol", comment="ok for bob")
    assert approved.state == "approved" and approved.decided_by == "carol" and approved.decided_at == T0 + 5
    assert approved.grant is not None and approved.grant.proposal_digest == record.proposal_digest
    assert guard.approvals.get(rid).grant == approved.grant  # stored with the record

    calls: list[int] = []
    grant = guard.approval_for(rid, request)
    assert guard.run(request, lambda: calls.append(1) or "ran", approval=grant) == "ran"
    assert calls == [1] and guard.approvals.get(rid).consumed

    with pytest.raises(ExecutionDenied) as again:
        guard.run(request, lambda: calls.append(2), approval=grant)
    assert "APPROVAL_USED" in again.value.reason_codes and calls == [1]
    with pytest.raises(ApprovalError) as used:
        guard.approval_for(rid)
    assert used.value.reason_code == "APPROVAL_USED"

    events = _approval_events(guard)
    assert [e["detail"]["transition"] for e in events] == ["created", "approved", "consumed"]
    assert all(e["proposal_digest"] == record.proposal_digest and e["executed"] is False for e in events)
    assert events[1]["detail"]["by"] == "carol" and events[1]["time"] == T0 + 5
    assert events[1]["detail"]["grant_id"] == grant.grant_id


def test_reject_never_runs(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, _, _ = queue
    _, asked = _ask(guard)
    rejected = guard.approvals.reject(asked.request_id, approver="dave", comment="no")
    assert rejected.state == "rejected" and rejected.grant is None
    with pytest.raises(ApprovalError) as info:
        guard.approval_for(asked.request_id)
    assert info.value.reason_code == "APPROVAL_REJECTED"
    with pytest.raises(ApprovalError) as late:
        guard.approvals.approve(asked.request_id, approver="carol")
    assert late.value.reason_code == "APPROVAL_DECIDED"
    assert [e["detail"]["transition"] for e in _approval_events(guard)] == ["created", "rejected"]


def test_expiry_denies(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, clock, _ = queue
    _, asked = _ask(guard)
    rid = asked.request_id
    clock.advance(guard.approvals.request_ttl + 1)
    assert guard.approvals.get(rid).state == "expired"
    assert [r.id for r in guard.approvals.list("expired")] == [rid]
    assert guard.approvals.list("pending") == []
    with pytest.raises(ApprovalError) as info:
        guard.approvals.approve(rid, approver="carol")
    assert info.value.reason_code == "APPROVAL_EXPIRED"
    with pytest.raises(ApprovalError):
        guard.approval_for(rid)
    # Expired once, recorded once, however often it is read.
    guard.approvals.get(rid)
    assert [e["detail"]["transition"] for e in _approval_events(guard)] == ["created", "expired"]


def test_grant_expiry_denies(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, clock, _ = queue
    _, asked = _ask(guard)
    guard.approvals.approve(asked.request_id, approver="carol")
    clock.advance(guard.approvals.grant_ttl + 1)
    with pytest.raises(ApprovalError) as info:
        guard.approval_for(asked.request_id)
    assert info.value.reason_code == "APPROVAL_EXPIRED"
    assert not guard.approvals.get(asked.request_id).consumed


def test_grant_for_another_proposal_refused(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, _, _ = queue
    _, asked = _ask(guard, "10.00")
    other = guard.proposal("transfer", {"to": "bob", "amount": "9999.00"}, principal="alice", agent="bot")
    guard.approvals.approve(asked.request_id, approver="carol")
    with pytest.raises(ApprovalError) as info:
        guard.approval_for(asked.request_id, other)
    assert info.value.reason_code == "APPROVAL_MISMATCH"
    assert not guard.approvals.get(asked.request_id).consumed
    # The grant itself, presented with the other proposal, is refused by the authority.
    grant = guard.approval_for(asked.request_id)
    ran: list[int] = []
    with pytest.raises(ExecutionDenied) as denied:
        guard.run(other, lambda: ran.append(1), approval=grant)
    assert "APPROVAL_MISMATCH" in denied.value.reason_codes and ran == []


def test_two_approvers_at_once_one_decision(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, _, _ = queue
    _, asked = _ask(guard)
    rid = asked.request_id
    barrier = threading.Barrier(8)
    won: list[str] = []
    lost: list[str] = []

    def decide(i: int) -> None:
        barrier.wait()
        try:
            if i % 2:
                guard.approvals.approve(rid, approver=f"a{i}")
            else:
                guard.approvals.reject(rid, approver=f"a{i}")
            won.append(f"a{i}")
        except ApprovalError as exc:
            lost.append(exc.reason_code)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1 and lost == ["APPROVAL_DECIDED"] * 7
    final = guard.approvals.get(rid)
    assert final.decided_by == won[0]
    decided = [e for e in _approval_events(guard) if e["detail"]["transition"] in ("approved", "rejected")]
    assert len(decided) == 1 and decided[0]["detail"]["by"] == won[0]


def test_concurrent_consume_once(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, _, _ = queue
    _, asked = _ask(guard)
    guard.approvals.approve(asked.request_id, approver="carol")
    barrier = threading.Barrier(6)
    got: list[object] = []

    def take() -> None:
        barrier.wait()
        try:
            got.append(guard.approval_for(asked.request_id))
        except ApprovalError as exc:
            got.append(exc.reason_code)

    threads = [threading.Thread(target=take) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grants = [g for g in got if not isinstance(g, str)]
    assert len(grants) == 1 and sorted(g for g in got if isinstance(g, str)) == ["APPROVAL_USED"] * 5


def test_unknown_request(queue: tuple[Guard, FixedClock, Backend]) -> None:
    guard, _, _ = queue
    with pytest.raises(ApprovalError) as info:
        guard.approval_for("apr_nope")
    assert info.value.reason_code == "APPROVAL_UNKNOWN"


def test_survives_reopen_sqlite(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    policy = AllowListPolicy(("transfer",), require_approval=("transfer",))
    first = Guard.local(policy, data_dir=tmp_path, clock=clock, approvals=True)
    request = first.proposal("transfer", {"to": "bob", "amount": "1.00"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info:
        first.run(request, lambda: None)
    first.close()
    first.approvals.store.close()
    second = Guard.local(policy, data_dir=tmp_path, clock=clock, approvals=True)
    second.approvals.approve(info.value.request_id, approver="carol")
    grant = second.approval_for(info.value.request_id, request)
    assert second.run(request, lambda: "ran", approval=grant) == "ran"


def test_no_queue_keeps_old_behaviour(tmp_path: Path) -> None:
    guard = Guard.local(AllowListPolicy(("transfer",), require_approval=("transfer",)))
    request = guard.proposal("transfer", {"amount": "1.00"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(request, lambda: None)
    assert info.value.request_id is None and info.value.pending.request_id is None
    grant = guard.approve(info.value.pending, approver="carol")
    assert guard.run(request, lambda: "ran", approval=grant) == "ran"


_CHILD = """
import sys, time, os
from execauth_core.approvals import ApprovalError, Approvals, open_approvals
from execauth_core.stores.urls import open_stores
url, rid, name, go, verb = sys.argv[1:6]
queue = Approvals(open_approvals(url), open_stores(url).audit)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    if verb == "reject":
        queue.reject(rid, approver=name)
        print("won")
    else:
        print("grant " + queue.consume(rid).grant_id)
except ApprovalError as exc:
    print(exc.reason_code)
"""


@pytest.mark.parametrize("backend", [_param(n) for n in ("sqlite", "redis", "postgres")], indirect=True)
@pytest.mark.parametrize("verb", ["reject", "consume"])
def test_processes_race_one_wins(queue: tuple[Guard, FixedClock, Backend], tmp_path: Path, verb: str) -> None:
    import subprocess
    import sys
    import time

    guard, _, backend = queue  # memory stores are not shared between processes: not here
    guard.approvals.clock = FixedClock(int(time.time()))  # the children use the real clock
    _, asked = _ask(guard)
    rid = asked.request_id
    if verb == "consume":
        guard.approvals.approve(rid, approver="carol")
    go = tmp_path / "go"
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, backend.url, rid, f"p{i}", str(go), verb],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(4)
    ]
    time.sleep(1.0)  # let them start and wait at the line
    go.touch()
    results = []
    for child in children:
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        results.append(out.strip())
    winners = [r for r in results if r == "won" or r.startswith("grant ")]
    assert len(winners) == 1, results
    loser_code = "APPROVAL_DECIDED" if verb == "reject" else "APPROVAL_USED"
    assert sorted(r for r in results if r not in winners) == [loser_code] * 3
