"""The approver's signed statement in the core queue, and the queue's listeners."""

from __future__ import annotations

import pytest

from execauth_core import AllowListPolicy, ApprovalRequired, Guard
from execauth_core.approvals import ApprovalError
from execauth_core.approver_keys import decision_statement, sign_decision, verify_approval_record, verify_decision
from execauth_core.keys import KeySet, LocalSigner


def _pending(guard: Guard, order: str = "A1") -> str:
    with pytest.raises(ApprovalRequired) as exc:
        guard.run(guard.proposal("transfer", {"order": order}, principal="alice"), lambda: "ran")
    assert exc.value.request_id is not None
    return exc.value.request_id


@pytest.fixture
def guard() -> Guard:
    return Guard.local(AllowListPolicy(["transfer"], require_approval=["transfer"]), approvals=True)


def test_signed_statement_is_kept_and_verifies_offline(guard: Guard) -> None:
    seen: list[tuple[str, str]] = []
    guard.approvals.listeners.append(lambda record, transition: seen.append((record.id, transition)))
    rid = _pending(guard)
    record = guard.approvals.get(rid)
    key = LocalSigner.generate()
    st = decision_statement(
        request_id=rid, proposal_digest=record.proposal_digest, decision="approve", approver="carol", at=1
    )
    signed = verify_decision(
        sign_decision(key, st).model_dump(mode="json"),
        key.public_key,
        request_id=rid,
        proposal_digest=record.proposal_digest,
        decision="approve",
        approver="carol",
        now=100,
    )
    done = guard.approvals.approve(rid, approver="carol", approver_signature=signed)
    assert done.approver_signature == signed
    authority = guard.approvals.authority
    assert authority is not None
    verify_approval_record(done, authority_keys=KeySet.of_signer(authority.signer), approver_key=key.public_key)
    assert seen == [(rid, "created"), (rid, "approved")]


def test_a_statement_for_another_request_or_approver_decides_nothing(guard: Guard) -> None:
    rid, other = _pending(guard, "A1"), _pending(guard, "A2")
    key = LocalSigner.generate()
    digest = guard.approvals.get(rid).proposal_digest
    for st in (
        decision_statement(request_id=other, proposal_digest=digest, decision="approve", approver="carol", at=1),
        decision_statement(request_id=rid, proposal_digest=digest, decision="reject", approver="carol", at=1),
        decision_statement(request_id=rid, proposal_digest=digest, decision="approve", approver="dave", at=1),
    ):
        with pytest.raises(ApprovalError, match="APPROVER_SIGNATURE_INVALID"):
            guard.approvals.approve(rid, approver="carol", approver_signature=sign_decision(key, st))
    assert guard.approvals.get(rid).state == "pending"


def test_a_failing_listener_never_fails_a_transition(guard: Guard) -> None:
    heard: list[str] = []

    def broken(record: object, transition: str) -> None:
        heard.append(transition)
        raise RuntimeError("receiver down")

    guard.approvals.listeners.append(broken)
    rid = _pending(guard)
    assert guard.approvals.reject(rid, approver="carol").state == "rejected"
    assert heard[-1] == "rejected"  # it was called, and its failure changed nothing
