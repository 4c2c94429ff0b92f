"""One approval funds exactly one execution, through CrewAI's real agent loop (the
field test's replay, issue 16): re-sending or reusing an approval is refused by the
guard (APPROVAL_USED), recorded with executed: false, and the tool does not run again."""

from __future__ import annotations

from typing import Any

import pytest

from execauth_core import ExecutionDenied
from execauth_crewai import CrewGuard
from execauth_crewai.testing import tool_call, tool_results

from .helpers import audit, crew_for, llm_of

TRANSFER = {"amount": "25.00", "to": "bob"}


def script() -> list[Any]:
    # The identical call with the same call id, whichever turn it is proposed in.
    return [[tool_call("transfer", TRANSFER, "call_1")], "done"]


def test_a_grant_resent_for_the_same_call_in_a_later_turn_is_refused(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    cg.kickoff(crew_for([guarded], script()))
    [pending] = cg.pending_approvals.values()
    grant = cg.approve(pending, approver="alice")
    cg.kickoff(crew_for([guarded], script()))  # the crew uses the grant: runs once
    assert ledger.calls == [("transfer", TRANSFER)]

    # A later turn: the model proposes the identical call again; it waits for a person.
    crew = crew_for([guarded], script())
    cg.kickoff(crew)
    assert "APPROVAL_REQUIRED" in tool_results(llm_of(crew))[0]
    [again] = cg.pending_approvals.values()
    assert again.proposal_digest == pending.proposal_digest
    # The old approval sent once more.
    with pytest.raises(ExecutionDenied) as denied:
        cg.resume(again, grant=grant)
    assert denied.value.reason_codes == ("APPROVAL_USED",)
    assert ledger.calls == [("transfer", TRANSFER)]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "transfer")


def test_a_grant_used_outside_the_crew_is_refused_when_the_crew_takes_it_from_its_dict(ledger, tools, make_guard):
    """The grant kept by approve() for the crew is spent in the guard's replay store,
    not only in CrewGuard's dict: used once anywhere, it is used."""
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    cg.kickoff(crew_for([guarded], script()))
    [pending] = cg.pending_approvals.values()
    grant = cg.approve(pending, approver="alice")
    guard.run(pending.request, lambda: ledger.calls.append(("transfer", TRANSFER)), approval=grant)

    crew = crew_for([guarded], script())
    cg.kickoff(crew)  # the dict still holds the grant; the guard refuses it
    assert ledger.calls == [("transfer", TRANSFER)]
    assert "APPROVAL_USED" in tool_results(llm_of(crew))[0]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "transfer")


def test_resume_twice_with_the_same_grant_runs_once(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    cg.kickoff(crew_for([cg.tool(tools["transfer"])], script()))
    [pending] = cg.pending_approvals.values()
    grant = guard.approve(pending, approver="alice")
    assert cg.resume(pending, grant=grant) == "sent 25.00 to bob"
    with pytest.raises(ExecutionDenied) as denied:
        cg.resume(pending, grant=grant)
    assert denied.value.reason_codes == ("APPROVAL_USED",)
    assert ledger.calls == [("transfer", TRANSFER)]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "transfer")


def test_one_request_approved_twice_funds_one_run(ledger, tools, make_guard):
    """approve() keeps a grant for the crew; resume(approver=...) approves the same
    request again. Both grants answer one request: they carry its id, and the guard
    lets that id fund one execution."""
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    cg.kickoff(crew_for([guarded], script()))
    [pending] = cg.pending_approvals.values()
    kept = cg.approve(pending, approver="alice")
    assert cg.resume(pending, approver="bob") == "sent 25.00 to bob"

    with pytest.raises(ExecutionDenied) as denied:
        cg.resume(pending, grant=kept)  # alice's grant for the same request
    assert denied.value.reason_codes == ("APPROVAL_USED",)
    assert ledger.calls == [("transfer", TRANSFER)]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_USED"], "transfer")


def test_a_new_request_for_the_same_call_can_be_approved_afresh(ledger, tools, make_guard):
    guard = make_guard(["transfer"], require_approval=["transfer"], ledger=False)  # the approval layer alone
    cg = CrewGuard(guard, principal="user-42")
    guarded = cg.tool(tools["transfer"])
    cg.kickoff(crew_for([guarded], script()))
    [pending] = cg.pending_approvals.values()
    cg.resume(pending, approver="alice")
    cg.kickoff(crew_for([guarded], script()))  # a later turn: a new request
    [again] = cg.pending_approvals.values()
    assert cg.resume(again, approver="alice") == "sent 25.00 to bob"
    assert ledger.calls == [("transfer", TRANSFER)] * 2
