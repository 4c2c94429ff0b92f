"""The approval flow through CrewAI's real agent loop (issue 16): a refused call opens
an approval request; a person decides it; ``resume(request_id)`` (or the crew's next
identical proposal) runs it once. One approval funds exactly one execution: re-sending
it is refused (APPROVAL_USED), recorded with executed: false, and nothing runs again."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from execauth_core import ConfigurationError, ExecutionDenied
from execauth_core.approval_flow import ApprovalTimeout
from execauth_crewai import CrewGuard
from execauth_crewai.testing import tool_call, tool_results

from .helpers import audit, crew_for, llm_of

TRANSFER = {"amount": "25.00", "to": "bob"}


def script() -> list[Any]:
    # The identical call with the same call id, whichever turn it is proposed in.
    return [[tool_call("transfer", TRANSFER, "call_1")], "done"]


def paused(cg: CrewGuard, guarded: Any) -> str:
    crew = crew_for([guarded], script())
    cg.kickoff(crew)
    [seen] = tool_results(llm_of(crew))
    [pending] = cg.pending_approvals()
    assert "APPROVAL_REQUIRED" in seen and pending.request_id in seen
    assert (pending.tool, pending.arguments) == ("transfer", TRANSFER)
    return pending.request_id


def test_approve_then_resume_runs_once(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    rid = paused(cg, cg.tool(tools["transfer"]))
    assert cg.approval_status(rid) == "pending" and ledger.calls == []
    cg.approve(rid, approver="alice", comment="ok")
    assert cg.wait_for_approval(rid, timeout=1, poll_interval=0.01) == "approved"
    assert cg.resume(rid) == "sent 25.00 to bob"
    assert ledger.calls == [("transfer", TRANSFER)] and cg.approval_status(rid) == "consumed"
    with pytest.raises(ExecutionDenied) as again:
        cg.resume(rid)  # the old answer, once more
    assert again.value.reason_codes == ("APPROVAL_USED",)
    assert ledger.calls == [("transfer", TRANSFER)]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "transfer")


def test_resume_before_a_decision_and_after_a_rejection_runs_nothing(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    rid = paused(cg, cg.tool(tools["transfer"]))
    with pytest.raises(ExecutionDenied) as early:
        cg.resume(rid)
    assert early.value.reason_codes == ("APPROVAL_REQUIRED",)
    with pytest.raises(ApprovalTimeout):
        cg.wait_for_approval(rid, timeout=0.05, poll_interval=0.01)
    cg.reject(rid, approver="alice", comment="wrong payee")
    assert cg.approval_status(rid) == "rejected"
    with pytest.raises(ExecutionDenied) as rejected:
        cg.resume(rid)
    assert rejected.value.reason_codes == ("APPROVAL_REJECTED",) and ledger.calls == []


def test_an_expired_request_denies(ledger, tools, make_guard, clock):
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    rid = paused(cg, cg.tool(tools["transfer"]))
    clock.advance(3601)
    assert asyncio.run(cg.await_approval(rid, timeout=1, poll_interval=0.01)) == "expired"
    with pytest.raises(ExecutionDenied) as expired:
        cg.resume(rid)
    assert expired.value.reason_codes == ("APPROVAL_EXPIRED",) and ledger.calls == []
    with pytest.raises(Exception, match="APPROVAL_EXPIRED"):
        cg.approve(rid, approver="alice")


def test_an_approved_request_runs_when_the_crew_proposes_it_again(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    rid = paused(cg, guarded)
    cg.approve(rid, approver="alice")
    crew = crew_for([guarded], script())
    cg.kickoff(crew)  # the identical call: the approved request funds it, once
    assert ledger.calls == [("transfer", TRANSFER)] and tool_results(llm_of(crew)) == ["sent 25.00 to bob"]
    # A later turn: the identical call waits for a new decision; the old one is spent.
    rid2 = paused(cg, guarded)
    assert rid2 != rid
    with pytest.raises(ExecutionDenied) as again:
        cg.resume(rid)
    assert again.value.reason_codes == ("APPROVAL_USED",)
    assert ledger.calls == [("transfer", TRANSFER)]
    cg.approve(rid2, approver="alice")
    assert cg.resume(rid2) == "sent 25.00 to bob"
    assert ledger.calls == [("transfer", TRANSFER)] * 2


def test_remote_style_errors_are_clear(tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"])
    cg = CrewGuard(guard, principal="user-42")
    with pytest.raises(ConfigurationError, match="approver"):
        cg.approve("apr_x", approver="")
    with pytest.raises(Exception, match="APPROVAL_UNKNOWN"):
        cg.approval_status("apr_unknown")


def test_the_shared_approval_methods():
    import inspect

    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate

    for name in GATE_METHODS:
        assert inspect.signature(getattr(CrewGuard, name)) == inspect.signature(getattr(ApprovalGate, name))
