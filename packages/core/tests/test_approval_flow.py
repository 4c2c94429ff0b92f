"""execauth_core.approval_flow: the approval bookkeeping every adapter's gate shares."""

from __future__ import annotations

import asyncio

import pytest

from execauth_core import AllowListPolicy, ApprovalRequired, ConfigurationError, ExecutionDenied, FixedClock, Guard
from execauth_core.approval_flow import ApprovalFlow, ApprovalGate, ApprovalTimeout, _BoundedMemoryStore
from execauth_core.approvals import ApprovalError, ApprovalRequest

T0 = 1_767_607_200


class Gate(ApprovalGate):
    def __init__(self, guard: Guard) -> None:
        self._approval_flow = ApprovalFlow(guard)


def paused(guard: Guard, gate: Gate, to: str = "bob") -> tuple[str, object]:
    request = guard.proposal("pay", {"to": to}, principal="alice")
    with pytest.raises(ApprovalRequired) as exc:
        guard.run(request, lambda: "paid")
    return gate._approval_flow.open(exc.value), request


@pytest.mark.parametrize("queue", [False, True], ids=["no-queue", "guard-queue"])
def test_approve_grant_once_reject_expire(queue: bool) -> None:
    clock = FixedClock(T0)
    guard = Guard.local(AllowListPolicy(["pay"], require_approval=["pay"]), clock=clock, approvals=queue)
    gate = Gate(guard)
    rid, request = paused(guard, gate)
    assert rid.startswith("apr_") and gate.approval_status(rid) == "pending"
    [listed] = gate.pending_approvals()
    assert (listed.request_id, listed.tool, listed.arguments, listed.expires_at) == (
        rid,
        "pay",
        {"to": "bob"},
        T0 + 3600,
    )
    flow = gate._approval_flow
    with pytest.raises(ExecutionDenied) as early:
        flow.grant_for(rid, request)  # type: ignore[arg-type]
    assert early.value.reason_codes == ("APPROVAL_REQUIRED",)
    record = gate.approve(rid, approver="carol", comment="ok")
    assert isinstance(record, ApprovalRequest) and record.decided_by == "carol"
    grant = flow.grant_for(rid, request)  # type: ignore[arg-type]
    assert guard.run(request, lambda: "paid", approval=grant) == "paid"  # type: ignore[arg-type]
    assert gate.approval_status(rid) == "consumed"
    with pytest.raises(ExecutionDenied) as again:
        flow.grant_for(rid, request)  # type: ignore[arg-type]
    assert again.value.reason_codes == ("APPROVAL_USED",)

    rid2, _ = paused(guard, gate, "eve")
    with pytest.raises(ExecutionDenied) as other:
        flow.grant_for(rid2, request)  # type: ignore[arg-type]  # another proposal
    assert other.value.reason_codes == ("APPROVAL_MISMATCH",)
    gate.reject(rid2, approver="carol")
    assert gate.wait_for_approval(rid2, timeout=0.5, poll_interval=0.01) == "rejected"
    rid3, _ = paused(guard, gate, "dan")
    with pytest.raises(ApprovalTimeout) as waited:
        gate.wait_for_approval(rid3, timeout=0.02, poll_interval=0.01)
    assert waited.value.reason_code == "APPROVAL_REQUIRED"
    clock.advance(3601)
    assert asyncio.run(gate.await_approval(rid3, timeout=0.5, poll_interval=0.01)) == "expired"
    with pytest.raises(ApprovalError, match="APPROVAL_EXPIRED"):
        gate.approve(rid3, approver="carol")


def test_bad_input_is_refused_clearly() -> None:
    guard = Guard.local(AllowListPolicy(["pay"], require_approval=["pay"]))
    gate = Gate(guard)
    with pytest.raises(ConfigurationError, match="approver"):
        gate.approve("apr_x", approver=" ")
    with pytest.raises(ConfigurationError, match="timeout"):
        gate.wait_for_approval("apr_x", timeout=-1)
    with pytest.raises(ConfigurationError, match="poll_interval"):
        gate.wait_for_approval("apr_x", poll_interval=0)
    with pytest.raises(ApprovalError, match="APPROVAL_UNKNOWN"):
        gate.approval_status("apr_unknown")
    with pytest.raises(ExecutionDenied) as free_yes:
        gate._approval_flow.grant_for(True, guard.proposal("pay", {}, principal="alice"))
    assert free_yes.value.reason_codes == ("APPROVAL_INVALID",)


def test_gates_on_one_guard_share_its_in_memory_queue_and_it_is_bounded() -> None:
    guard = Guard.local(AllowListPolicy(["pay"], require_approval=["pay"]))
    first, second = Gate(guard), Gate(guard)
    rid, _ = paused(guard, first)
    assert second.approval_status(rid) == "pending"
    store = _BoundedMemoryStore(2)
    from execauth_core.approvals import Approvals

    queue = Approvals(store, guard.audit_log, authority=guard.authority)
    made = [queue.create(guard.proposal("pay", {"n": i}, principal="alice")).id for i in range(3)]
    assert store.get(made[0]) is None and store.get(made[2]) is not None  # the oldest is gone: it can only deny
