"""Two-phase commit for irreversible effects: preflight -> CommitToken -> execute."""

from __future__ import annotations

import asyncio
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from execauth_core import (
    ApprovalRequired,
    Court,
    EvidenceGrade,
    ExecutionDenied,
    Guard,
    KeySet,
    PreflightResult,
    current_call,
    parse_policy,
)
from execauth_core._b64 import b64url_decode
from execauth_core.canonical import loads_strict
from execauth_core.messages import parse_wire
from execauth_core.twophase import PreflightDecision, needs_two_phase

from .court_fixtures import EMAIL, POLICY, SEARCH, TRANSFER, make, policy

WHO = {"principal": "user-42", "agent": "billing-bot"}
NO_RATES = policy(
    principals=[{**POLICY["principals"][0], "rate_limits": []}, POLICY["principals"][1]],
)


class Tool:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.tokens: list[str] = []

    def __call__(self, value: Any = "sent") -> Any:
        self.tokens.append(current_call().token)
        self.calls.append(str(value))
        return value


def email(guard: Guard, to: str = "a@example.com") -> Any:
    return guard.proposal("send_email", {"to": to, "body": "hi"}, **WHO)


def claims(token: str) -> dict[str, Any]:
    value = loads_strict(b64url_decode(token.split(".")[1]))
    assert isinstance(value, dict)
    return value


def events(guard: Guard) -> list[tuple[str, bool, tuple[str, ...]]]:
    return [(e.event, e.executed, tuple(e.body.get("reason_codes", ()))) for e in guard.audit_log.entries()]


def test_irreversible_effects_take_two_phases_others_one() -> None:
    guard, court, _ = make()
    assert needs_two_phase(court, "send_email") and needs_two_phase(court, "drop_table")
    assert not needs_two_phase(court, "search_docs") and not needs_two_phase(court, "refund")
    tool = Tool()
    assert guard.run(email(guard), tool) == "sent"
    assert claims(tool.tokens[0])["phase"] == "commit"
    assert [e[:2] for e in events(guard)] == [("decision", False), ("execution", True), ("result", True)]
    preflight_entry = next(iter(guard.audit_log.entries()))
    assert preflight_entry.body["reason_codes"] == ["TOOL_ALLOWED", "COMMIT_REQUIRED"]
    assert preflight_entry.body["detail"]["phase"] == "preflight"
    # One-phase tools are unchanged: one execution entry, an "execute" token.
    guard.run(guard.proposal("search_docs", {"q": "x"}, **WHO), tool)
    assert claims(tool.tokens[1])["phase"] == "execute"
    assert [e[0] for e in events(guard)][3:] == ["execution", "result"]


def test_commit_token_binds_draft_state_policy_and_ttl() -> None:
    guard, court, clock = make()
    preflight = guard.preflight(email(guard))
    tool = Tool()
    guard.commit(preflight, tool)
    c = claims(tool.tokens[0])
    assert c["phase"] == "commit"
    assert c["proposal_digest"] == preflight.request.content_digest() == preflight.decision.proposal_digest
    assert c["state_digest"] == preflight.state_digest is not None
    assert c["policy"] == court.policy_ref.model_dump(mode="json") == preflight.policy.model_dump(mode="json")
    assert c["exp"] - c["iat"] == 60 and c["iat"] == clock.now()


def test_commit_token_verifies_with_standard_jose_libraries(tmp_path: Any) -> None:
    guard, _, _ = make()
    tool = Tool()
    guard.run(email(guard), tool)
    token = tool.tokens[0]
    assert guard.authority is not None
    jwks = KeySet.of_signer(guard.authority.signer).to_jwks()
    key = jwks["keys"][0]
    public = Ed25519PublicKey.from_public_bytes(b64url_decode(key["x"]))
    decoded = jwt.decode(
        token,
        public,
        algorithms=["EdDSA"],
        audience="execauth-guard",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert decoded["phase"] == "commit"
    header = jwt.get_unverified_header(token)
    assert header["kid"] == key["kid"]
    obj = jwcrypto_jws.JWS()
    obj.deserialize(token)
    obj.verify(jwcrypto_jwk.JWK(**key), alg="EdDSA")
    with pytest.raises(jwt.InvalidSignatureError):
        head, sig = token.rsplit(".", 1)
        tampered = head + "." + ("B" if sig[0] == "A" else "A") + sig[1:]
        jwt.decode(tampered, public, algorithms=["EdDSA"], options={"verify_aud": False, "verify_exp": False})


def test_state_changed_between_preflight_and_commit_runs_nothing() -> None:
    guard, court, _ = make()
    preflight = guard.preflight(email(guard))
    guard.run(guard.proposal("search_docs", {"q": "x"}, **WHO), lambda: None)  # the "*" rate counter moves
    before = court.state.usage("rate/user-42/send_email/3600", 3600, now=guard.clock.now())
    tool = Tool()
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(preflight, tool)
    assert info.value.outcome == "REQUIRE_EVIDENCE"
    assert info.value.reason_codes == ("COMMIT_STATE_CHANGED",)
    assert tool.calls == []
    # The refused commit debited nothing.
    assert court.state.usage("rate/user-42/send_email/3600", 3600, now=guard.clock.now()) == before
    assert events(guard)[-1] == ("denial", False, ("COMMIT_STATE_CHANGED",))
    # A fresh preflight sees the new state and commits.
    assert guard.commit(guard.preflight(email(guard)), tool) == "sent"


def test_policy_changed_between_preflight_and_commit_runs_nothing() -> None:
    guard, court, _ = make()
    preflight = guard.preflight(email(guard))
    assert guard.authority is not None
    guard.authority.decision_point = Court(parse_policy(policy(epoch=8)), court.registry, state=court.state)
    tool = Tool()
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(preflight, tool)
    assert (info.value.outcome, info.value.reason_codes) == ("REQUIRE_EVIDENCE", ("COMMIT_POLICY_CHANGED",))
    assert tool.calls == []


def test_replayed_commit_token_is_refused() -> None:
    guard, _, _ = make()
    tool = Tool()
    request = email(guard)
    guard.run(request, tool)
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(request, tool.tokens[0], tool)
    assert info.value.reason_codes == ("TOKEN_REPLAYED",)
    assert tool.calls == ["sent"]


def test_commit_token_for_another_draft_is_refused() -> None:
    guard, _, _ = make()
    tool = Tool()
    guard.run(email(guard), tool)
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(email(guard, to="mallory@example.com"), tool.tokens[0], tool)
    assert info.value.reason_codes == ("TOKEN_PROPOSAL_MISMATCH",)
    assert tool.calls == ["sent"]


def test_a_preflight_funds_one_commit() -> None:
    guard, _, _ = make(NO_RATES)
    preflight = guard.preflight(email(guard))
    assert preflight.state_digest is None  # no counters: the second commit reaches the replay store
    tool = Tool()
    guard.commit(preflight, tool)
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(preflight, tool)
    assert info.value.reason_codes == ("PREFLIGHT_USED",)
    assert tool.calls == ["sent"]


def test_a_preflight_with_counters_cannot_commit_twice_either() -> None:
    guard, _, _ = make()
    preflight = guard.preflight(email(guard))
    tool = Tool()
    guard.commit(preflight, tool)
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(preflight, tool)
    assert info.value.reason_codes == ("COMMIT_STATE_CHANGED",)  # its own commit moved the counters
    assert tool.calls == ["sent"]


def test_expired_preflight_and_expired_commit_token_are_refused() -> None:
    guard, _, clock = make(NO_RATES)
    preflight = guard.preflight(email(guard))
    clock.advance(61)
    tool = Tool()
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(preflight, tool)
    assert (info.value.outcome, info.value.reason_codes) == ("REQUIRE_EVIDENCE", ("PREFLIGHT_EXPIRED",))
    # A CommitToken presented after its exp (+ skew).
    preflight = guard.preflight(email(guard))
    assert guard.authority is not None
    commit = guard.authority.commit(preflight, now=clock.now(), token_id="commit-token-expired-01")
    assert commit.token is not None and commit.outcome.value == "ALLOW"
    clock.advance(60 + 30)
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(preflight.request, commit.token, tool)
    assert info.value.reason_codes == ("TOKEN_EXPIRED",)
    assert tool.calls == []


def test_tampered_or_foreign_preflight_is_refused() -> None:
    guard, _, _ = make()
    preflight = guard.preflight(email(guard))
    data = preflight.model_dump(mode="json")
    data["decision"]["record"]["request"]["args"]["to"] = "mallory@example.com"
    forged = PreflightDecision.model_validate(data)
    tool = Tool()
    with pytest.raises(ExecutionDenied) as info:
        guard.commit(forged, tool)
    assert info.value.reason_codes == ("PREFLIGHT_INVALID",)
    other, _, _ = make()  # same tools and policy, another authority key
    other.authority.signer = __import__("execauth_core").LocalSigner.generate()  # type: ignore[union-attr]
    other.authority.trusted_keys = KeySet.of_signer(other.authority.signer)  # type: ignore[union-attr]
    with pytest.raises(ExecutionDenied) as info:
        other.commit(preflight, tool)
    assert info.value.reason_codes == ("PREFLIGHT_INVALID",)
    with pytest.raises(ExecutionDenied) as info:
        guard.commit("not a preflight", tool)  # type: ignore[arg-type]
    assert info.value.reason_codes == ("PREFLIGHT_INVALID",)
    assert tool.calls == []


def test_a_stored_preflight_commits_after_a_round_trip() -> None:
    guard, _, _ = make()
    preflight = guard.preflight(email(guard))
    again = parse_wire(PreflightDecision, preflight.model_dump_json())
    assert guard.commit(again, Tool()) == "sent"


def test_preflight_evidence_from_the_caller() -> None:
    guard, _, _ = make(preflights={"drop_table": None})
    request = guard.proposal("drop_table", {"table": "t"}, **WHO)
    with pytest.raises(ExecutionDenied) as info:
        guard.preflight(request)
    assert (info.value.outcome, info.value.reason_codes) == ("REQUIRE_EVIDENCE", ("PREFLIGHT_MISSING",))
    with pytest.raises(ExecutionDenied) as info:
        guard.preflight(request, evidence=PreflightResult(ok=True, grade=EvidenceGrade.SELF_REPORTED))
    assert info.value.reason_codes == ("EVIDENCE_INSUFFICIENT",)
    preflight = guard.preflight(request, evidence=PreflightResult(ok=True, grade=EvidenceGrade.SIMULATED, detail="dry"))
    assert preflight.evidence == {"ok": True, "grade": "simulated", "detail": "dry"}
    tool = Tool()
    assert guard.commit(preflight, lambda: tool("dropped")) == "dropped"


def test_approval_funds_one_two_phase_run() -> None:
    guard, _, _ = make(NO_RATES)
    request = guard.proposal("transfer", {"to": "bob", "amount": "300.00"}, **WHO)
    tool = Tool()
    with pytest.raises(ApprovalRequired) as info:
        guard.run(request, tool)
    grant = guard.approve(info.value.pending, approver="ops@example.com")
    assert guard.run(request, tool, approval=grant) == "sent"
    with pytest.raises(ExecutionDenied) as again:
        guard.run(request, tool, approval=grant)
    assert again.value.reason_codes == ("APPROVAL_USED",)
    assert tool.calls == ["sent"]


def test_async_two_phase() -> None:
    guard, _, _ = make()
    tool = Tool()

    async def call() -> str:
        return str(tool("async"))

    assert asyncio.run(guard.arun(email(guard), call)) == "async"
    assert claims(tool.tokens[0])["phase"] == "commit"
    preflight = asyncio.run(guard.apreflight(email(guard, to="b@example.com")))
    assert asyncio.run(guard.acommit(preflight, call)) == "async"


def test_a_refused_preflight_is_the_same_denial_as_one_phase() -> None:
    """Denials of irreversible tools are recorded exactly as before (conformance)."""
    guard, _, _ = make(policy(kill_switch=True))
    with pytest.raises(ExecutionDenied) as info:
        guard.run(email(guard), Tool())
    assert info.value.reason_codes == ("KILL_SWITCH",)
    one, _, _ = make(policy(kill_switch=True))
    assert one.authority is not None
    direct = one.authority.decide(email(one), now=one.clock.now(), token_id="court-token-00000000")
    assert list(guard.audit_log.entries())[-1].body["record_digest"] == direct.record_digest


def test_remote_style_guard_without_an_authority_cannot_preflight() -> None:
    guard, _, _ = make()
    verify_only = Guard(
        authority=None, verifier=guard.verifier, replay_store=guard.replay_store, audit_log=guard.audit_log
    )
    from execauth_core import ConfigurationError

    with pytest.raises(ConfigurationError, match="in-process Authority"):
        verify_only.preflight(email(guard))


def test_manifest_fixtures_are_what_this_file_assumes() -> None:
    assert EMAIL["effects"] == ["message.email"] and SEARCH["effects"] == ["data.read"]
    assert TRANSFER["effects"] == ["payment.transfer"]
