"""Two-phase commit for irreversible effects: preflight, then commit, then execute.

A tool whose manifest declares an *irreversible* effect (see
:mod:`execauth_core.effects`: ``message.email``, ``payment.transfer``,
``data.delete``...) runs in two phases:

1. **preflight** (:meth:`Guard.preflight <execauth_core.guard.Guard.preflight>`): the
   Court decides the draft with its preflight evidence and debits nothing. An ALLOW
   is a signed :class:`PreflightDecision` (reason ``COMMIT_REQUIRED``) that names the
   state digest the Court read (budgets, rate counters) and the policy in force.
2. **commit** (:meth:`Guard.commit <execauth_core.guard.Guard.commit>`):
   :func:`commit_decision` checks the preflight's signature and lifetime, refuses
   when the policy (``COMMIT_POLICY_CHANGED``) or the state (``COMMIT_STATE_CHANGED``)
   is no longer what the preflight saw, re-runs the Court with the recorded evidence,
   debits, and issues a **CommitToken**: the usual JWS with ``phase: "commit"``, bound
   to the draft's digest, the preflight's state digest, the policy and a TTL, its
   ``record_digest`` naming a signed :class:`CommitRecord` that names the preflight.
3. **execute**: the guard verifies the CommitToken, consumes its id and the
   preflight's id (``preflight:<id>``) once, records, then calls the tool.

``Guard.run`` does all three for such tools (the adapters' path); tools without an
irreversible effect keep the one-phase decision unchanged.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from ._b64 import b64url_decode, b64url_encode
from .canonical import digest_bytes, signing_input_bytes
from .errors import ConfigurationError
from .keys import KeyStatus
from .messages import (
    AuthorizationDecision,
    AuthorizationRequest,
    Digest,
    Outcome,
    PolicyRef,
    Scope,
    StageResult,
    TokenClaims,
    UnixTime,
    _Wire,
)
from .reasons import REGISTRY
from .reasons import ReasonCode as R
from .tokens import issue_token

__all__ = ["CommitDecision", "CommitRecord", "PreflightDecision", "commit_decision", "needs_two_phase"]


def needs_two_phase(decision_point: Any, tool: str) -> bool:
    """True when ``tool`` is registered with the decision point (a Court) and its
    manifest declares an irreversible effect. An allow-list knows no effects: False."""
    registry = getattr(decision_point, "registry", None)
    get = getattr(registry, "get", None)
    if get is None:
        return False
    registered = get(tool)
    if registered is None:
        return False
    from .effects import EFFECTS, Reversibility

    return any(EFFECTS[e].reversibility is Reversibility.IRREVERSIBLE for e in registered.manifest.effects)


class PreflightDecision(_Wire):
    """The first phase of a two-phase call: a signed preflight ALLOW.

    It carries no token and authorizes nothing by itself; :meth:`Guard.commit
    <execauth_core.guard.Guard.commit>` turns it into one execution, once, while it
    is fresh and the policy and state are unchanged. It may be stored (``model_dump_json``)
    and parsed back (:func:`~execauth_core.messages.parse_wire`): the commit checks the
    signature against the authority's trusted keys, not the object's origin.
    """

    v: Literal["execauth.preflight_decision/1"] = "execauth.preflight_decision/1"
    decision: AuthorizationDecision = Field(description="The preflight decision: ALLOW with COMMIT_REQUIRED, no token.")

    @property
    def request(self) -> AuthorizationRequest:
        """The draft that was preflighted (what the commit will run)."""
        return self.decision.record.request

    @property
    def preflight_id(self) -> str | None:
        """Consumed by the commit, once."""
        return self.decision.record.token_id

    @property
    def expires_at(self) -> int | None:
        """The commit must happen by then (Unix seconds)."""
        return self.decision.record.token_exp

    @property
    def state_digest(self) -> str | None:
        """Digest of the counters the preflight read; the commit must read the same."""
        return self.decision.record.state_digest

    @property
    def policy(self) -> PolicyRef:
        return self.decision.record.policy

    @property
    def evidence(self) -> dict[str, Any] | None:
        """The preflight evidence the Court saw (``ok``, ``grade``, ``detail``)."""
        return self.decision.record.preflight


class CommitRecord(_Wire):
    """What the commit of a two-phase call decided, signed like a decision record
    (over ``b"execauth:commit_record/1\\n" + JCS(record)``)."""

    _SPLICED: ClassVar[tuple[str, ...]] = ("policy",)

    v: Literal["execauth.commit_record/1"] = "execauth.commit_record/1"
    proposal_digest: Digest
    preflight_digest: Digest = Field(description="record_digest of the preflight decision this commit follows.")
    preflight_id: str = Field(description="Consumed once, with the CommitToken's id.")
    preflight_exp: UnixTime
    outcome: Outcome
    reason_codes: tuple[str, ...] = Field(min_length=1)
    explanation: tuple[str, ...]
    policy: PolicyRef = Field(description="The policy in force at the commit.")
    state_digest: Digest | None = Field(description="The state digest the preflight saw (and the commit checked).")
    state_snapshot: dict[str, int] | None = Field(default=None, description="Counters the commit read.")
    stages: tuple[StageResult, ...] = ()
    approval_id: str | None = None
    decided_at: UnixTime
    token_id: str | None = Field(default=None, description="jti of the CommitToken, ALLOW only.")
    token_exp: UnixTime | None = None


class CommitDecision(_Wire):
    """The authority's answer to a commit: a signed CommitRecord, and on ALLOW the
    CommitToken."""

    v: Literal["execauth.commit_decision/1"] = "execauth.commit_decision/1"
    outcome: Outcome
    reason_codes: tuple[str, ...]
    explanation: tuple[str, ...]
    proposal_digest: Digest
    record: CommitRecord
    record_digest: Digest
    record_kid: str
    record_signature: str = Field(description="base64url Ed25519 over b'execauth:commit_record/1\\n' + JCS(record).")
    token: str | None = Field(default=None, description="The CommitToken (compact JWS, phase commit), ALLOW only.")


def _preflight_problem(authority: Any, preflight: Any) -> str | None:
    """Why ``preflight`` is not a preflight ALLOW this authority signed, or None."""
    if not isinstance(preflight, PreflightDecision):
        return "not a PreflightDecision"
    d = preflight.decision
    rec = d.record
    key = authority.trusted_keys.get(d.record_kid)
    if key is None or key.status is KeyStatus.REVOKED:
        return "signed by a key that is not trusted"
    raw = rec.canonical_bytes()
    try:
        signature = b64url_decode(d.record_signature)
    except ValueError:
        return "undecodable signature"
    if digest_bytes(raw) != d.record_digest or len(signature) != 64:
        return "record digest does not match"
    if not key.verify(signing_input_bytes("decision_record", raw), signature):
        return "signature does not verify"
    if (
        d.outcome is not Outcome.ALLOW
        or rec.outcome is not Outcome.ALLOW
        or R.COMMIT_REQUIRED.value not in rec.reason_codes
        or d.token is not None
    ):
        return "not a preflight ALLOW"
    if rec.token_id is None or rec.token_exp is None:
        return "no preflight id or lifetime"
    if rec.proposal_digest != d.proposal_digest or rec.request.content_digest() != rec.proposal_digest:
        return "the record's proposal does not match its digest"
    return None


def commit_decision(authority: Any, preflight: PreflightDecision, *, now: int, token_id: str) -> CommitDecision:
    """Decide the commit of ``preflight`` (the second phase) for ``authority``.

    Refused (no token) when: the preflight is not a preflight ALLOW signed by one of
    the authority's trusted keys (DENY ``PREFLIGHT_INVALID``); it expired
    (REQUIRE_EVIDENCE ``PREFLIGHT_EXPIRED``); the policy is no longer the one it was
    decided under (REQUIRE_EVIDENCE ``COMMIT_POLICY_CHANGED``); the counters read now
    differ from those the preflight read (REQUIRE_EVIDENCE ``COMMIT_STATE_CHANGED``);
    or the Court, re-run with the recorded evidence, refuses now (its outcome). On
    ALLOW the budgets are debited under ``token_id`` and the CommitToken issued.
    """
    problem = _preflight_problem(authority, preflight)
    if problem is not None:
        # Nothing of an unverified object is trusted: the refusal names only what
        # can be named safely.
        return _refuse(authority, None, now, Outcome.DENY, R.PREFLIGHT_INVALID, f"Preflight invalid: {problem}.")
    rec = preflight.decision.record
    dp = authority.decision_point
    assert rec.token_exp is not None  # checked in _preflight_problem
    if now > rec.token_exp:
        return _refuse(authority, preflight, now, Outcome.REQUIRE_EVIDENCE, R.PREFLIGHT_EXPIRED, "Preflight expired.")
    if rec.policy != dp.policy_ref:
        return _refuse(
            authority,
            preflight,
            now,
            Outcome.REQUIRE_EVIDENCE,
            R.COMMIT_POLICY_CHANGED,
            f"The policy changed since the preflight (epoch {rec.policy.epoch} -> {dp.policy_ref.epoch}); "
            "preflight again.",
        )
    from .court import Court
    from .effects import EvidenceGrade
    from .manifest import PreflightResult

    evidence = None
    if rec.preflight is not None:
        evidence = PreflightResult(
            ok=bool(rec.preflight.get("ok")),
            grade=EvidenceGrade(rec.preflight.get("grade")),
            detail=str(rec.preflight.get("detail", "")),
        )
    if isinstance(dp, Court):
        ev = dp.evaluate(
            rec.request,
            now=now,
            approved=rec.approved,
            hold_id=token_id,
            preflight_result=evidence,
            expected_state_digest=rec.state_digest,
        )
    else:
        ev = dp.evaluate(rec.request, now=now, approved=rec.approved, hold_id=token_id)
        if ev.outcome is Outcome.ALLOW and ev.state_digest != rec.state_digest:
            dp.release(token_id)
            return _refuse(
                authority,
                preflight,
                now,
                Outcome.REQUIRE_EVIDENCE,
                R.COMMIT_STATE_CHANGED,
                "Budgets or rate counters changed since the preflight; preflight again.",
            )
    unknown = [c for c in ev.reason_codes if c not in REGISTRY]
    if unknown or not ev.reason_codes:
        raise ConfigurationError(f"decision point returned unregistered reason codes {unknown or '(none)'}")
    outcome = Outcome(ev.outcome)
    is_allow = outcome is Outcome.ALLOW
    record = CommitRecord(
        proposal_digest=rec.proposal_digest,
        preflight_digest=preflight.decision.record_digest,
        preflight_id=rec.token_id,
        preflight_exp=rec.token_exp,
        outcome=outcome,
        reason_codes=tuple(ev.reason_codes),
        explanation=tuple(ev.explanation),
        policy=dp.policy_ref,
        state_digest=rec.state_digest,
        state_snapshot=dict(ev.state_snapshot) if ev.state_snapshot is not None else None,
        stages=tuple(StageResult.model_validate(s) for s in ev.stages),
        approval_id=rec.approval_id,
        decided_at=now,
        token_id=token_id if is_allow else None,
        token_exp=now + authority.token_ttl if is_allow else None,
    )
    record_digest, signature = _sign(authority, record)
    token = None
    if is_allow:
        claims = TokenClaims(
            iss=authority.issuer,
            aud=authority.audience,
            sub=rec.request.principal,
            iat=now,
            nbf=now,
            exp=now + authority.token_ttl,
            jti=token_id,
            proposal_digest=rec.proposal_digest,
            scope=Scope(tool=rec.request.tool, effects=tuple(ev.effects), limits=dict(ev.limits)),
            policy=dp.policy_ref,
            state_digest=rec.state_digest,
            record_digest=record_digest,
            phase="commit",
        )
        token = issue_token(claims, authority.signer)
    return CommitDecision(
        outcome=outcome,
        reason_codes=record.reason_codes,
        explanation=record.explanation,
        proposal_digest=rec.proposal_digest,
        record=record,
        record_digest=record_digest,
        record_kid=authority.signer.kid,
        record_signature=signature,
        token=token,
    )


_UNKNOWN = "sha256:" + "0" * 64


def _refuse(
    authority: Any, preflight: PreflightDecision | None, now: int, outcome: Outcome, code: R, why: str
) -> CommitDecision:
    rec = preflight.decision.record if preflight is not None else None
    record = CommitRecord(
        proposal_digest=rec.proposal_digest if rec is not None else _UNKNOWN,
        preflight_digest=preflight.decision.record_digest if preflight is not None else _UNKNOWN,
        preflight_id=(rec.token_id or "") if rec is not None else "",
        preflight_exp=(rec.token_exp or 0) if rec is not None else 0,
        outcome=outcome,
        reason_codes=(code.value,),
        explanation=(why,),
        policy=authority.decision_point.policy_ref,
        state_digest=rec.state_digest if rec is not None else None,
        decided_at=now,
    )
    record_digest, signature = _sign(authority, record)
    return CommitDecision(
        outcome=outcome,
        reason_codes=record.reason_codes,
        explanation=record.explanation,
        proposal_digest=record.proposal_digest,
        record=record,
        record_digest=record_digest,
        record_kid=authority.signer.kid,
        record_signature=signature,
    )


def _sign(authority: Any, record: CommitRecord) -> tuple[str, str]:
    raw = record.canonical_bytes()
    return digest_bytes(raw), b64url_encode(authority.signer.sign(signing_input_bytes("commit_record", raw)))
