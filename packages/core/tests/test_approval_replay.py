"""One person's approval funds exactly one execution, however it is presented again."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from execauth_core import (
    AllowListPolicy,
    ApprovalGrant,
    ApprovalRequired,
    ConfigurationError,
    ExecutionDenied,
    FixedClock,
    Guard,
    LocalSigner,
    PendingApproval,
)

from .conftest import RFC8032_SEED_1, T0, Tool


def durable_guard(folder: Path) -> Guard:
    """A guard whose replay store and audit log are the SQLite file in ``folder``.

    Without the effect ledger: these tests pin the approval layer on its own. With it
    (the default) a repeat of the same call is refused one step earlier, with
    ``LEDGER_ALREADY_SUCCEEDED`` (test_ledger_guard.py)."""
    return Guard.local(
        AllowListPolicy(("transfer",), require_approval=("transfer",)),
        clock=FixedClock(T0),
        signer=LocalSigner(RFC8032_SEED_1),
        data_dir=folder,
        ledger=False,
    )


def pending_of(guard: Guard, tool: Tool) -> PendingApproval:
    req = guard.proposal("transfer", {"amount": "25.00", "to": "bob"}, principal="alice", call_id="c1")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(req, lambda: tool(**req.args))
    return info.value.pending


def last(guard: Guard) -> Any:
    return list(guard.audit_log.entries())[-1]


def test_a_grant_presented_twice_runs_once(tmp_path: Path, tool: Tool) -> None:
    guard = durable_guard(tmp_path)
    pending = pending_of(guard, tool)
    grant = guard.approve(pending, approver="carol")
    guard.run(pending.request, lambda: tool(**pending.request.args), approval=grant)
    with pytest.raises(ExecutionDenied) as info:
        guard.run(pending.request, lambda: tool(**pending.request.args), approval=grant)
    assert info.value.reason_codes == ("APPROVAL_USED",)
    assert tool.calls == [{"amount": "25.00", "to": "bob"}]
    entry = last(guard)
    assert (entry.event, entry.executed, entry.body["reason_codes"]) == ("denial", False, ["APPROVAL_USED"])


def test_the_same_answer_signed_again_is_the_same_spent_approval(tmp_path: Path, tool: Tool) -> None:
    """An adapter that turns a person's answer into a grant on every resume: the answer
    names its approval id, so the second grant is the same approval, already used."""
    guard = durable_guard(tmp_path)
    pending = pending_of(guard, tool)
    answer_id = "lg-" + "a" * 40
    first = guard.approve(pending, approver="carol", approval_id=answer_id)
    guard.run(pending.request, lambda: tool(), approval=first)
    again = guard.approve(pending_of(guard, tool), approver="carol", approval_id=answer_id)
    assert again.grant_id == first.grant_id
    with pytest.raises(ExecutionDenied) as info:
        guard.run(pending.request, lambda: tool(), approval=again)
    assert info.value.reason_codes == ("APPROVAL_USED",) and len(tool.calls) == 1


def test_a_used_approval_stays_used_after_a_restart(tmp_path: Path, tool: Tool) -> None:
    """Consumed in the guard's stores, not in process memory."""
    guard = durable_guard(tmp_path)
    pending = pending_of(guard, tool)
    grant = guard.approve(pending, approver="carol")
    guard.run(pending.request, lambda: tool(), approval=grant)
    restarted = durable_guard(tmp_path)
    kept = ApprovalGrant.model_validate_json(grant.model_dump_json())
    with pytest.raises(ExecutionDenied) as info:
        restarted.run(pending.request, lambda: tool(), approval=kept)
    assert info.value.reason_codes == ("APPROVAL_USED",) and len(tool.calls) == 1
    entry = last(restarted)
    assert (entry.event, entry.executed) == ("denial", False)


def test_authorize_with_a_grant_issues_one_token(tmp_path: Path, tool: Tool) -> None:
    guard = durable_guard(tmp_path)
    pending = pending_of(guard, tool)
    grant = guard.approve(pending, approver="carol")
    decision = guard.authorize(pending.request, approval=grant)
    assert decision.token is not None
    with pytest.raises(ExecutionDenied) as info:
        guard.authorize(pending.request, approval=grant)
    assert info.value.reason_codes == ("APPROVAL_USED",)
    # nor may the grant now fund a run of its own: its one execution is the token
    with pytest.raises(ExecutionDenied) as info2:
        guard.run(pending.request, lambda: tool(), approval=grant)
    assert info2.value.reason_codes == ("APPROVAL_USED",) and tool.calls == []
    guard.execute(pending.request, decision.token, lambda: tool())
    assert len(tool.calls) == 1


@pytest.mark.parametrize("bad", ["short", "x" * 129, 12345])
def test_an_approval_id_that_cannot_be_a_grant_id_is_refused(tmp_path: Path, tool: Tool, bad: Any) -> None:
    guard = durable_guard(tmp_path)
    with pytest.raises(ConfigurationError):
        guard.approve(pending_of(guard, tool), approver="carol", approval_id=bad)
