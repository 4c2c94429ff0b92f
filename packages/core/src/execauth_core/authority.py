"""The authority: runs a decision point, checks approvals, signs the decision
record, and issues a token only on ALLOW.

Deterministic: time (``now``), randomness (``token_id``) and the policy come in as
arguments, so the same inputs give a byte-identical decision.
"""

from __future__ import annotations

from typing import Any, Literal, cast

from ._b64 import b64url_decode, b64url_encode
from .canonical import digest_bytes, signing_input, signing_input_bytes
from .errors import ConfigurationError
from .keys import KeySet, KeyStatus, Signer
from .messages import (
    ApprovalGrant,
    AuthorizationDecision,
    AuthorizationRequest,
    DecisionRecord,
    Outcome,
    PendingApproval,
    Scope,
    StageResult,
    TokenClaims,
)
from .policy import DecisionPoint
from .reasons import REGISTRY
from .reasons import ReasonCode as R
from .tokens import issue_token

MAX_APPROVAL_TTL = 86_400


class Authority:
    """Issues signed decisions and authority tokens.

    Args:
        decision_point: the policy engine (allow-list now, the Court later).
        signer: signs records, tokens and approval grants.
        issuer: ``iss`` of every token.
        audience: ``aud`` of every token (the guard that will verify it).
        token_ttl: token lifetime in seconds.
        trusted_keys: keys whose approval grants are accepted; defaults to the
            signer's own key.
    """

    def __init__(
        self,
        decision_point: DecisionPoint,
        signer: Signer,
        *,
        issuer: str,
        audience: str,
        token_ttl: int = 60,
        trusted_keys: KeySet | None = None,
    ) -> None:
        if decision_point is None:
            raise ConfigurationError("an authority needs a decision point (policy)")
        if not 1 <= token_ttl <= 3600:
            raise ConfigurationError("token_ttl must be within 1..3600 seconds")
        self.decision_point = decision_point
        self.signer = signer
        self.issuer = issuer
        self.audience = audience
        self.token_ttl = token_ttl
        self.trusted_keys = trusted_keys if trusted_keys is not None else KeySet.of_signer(signer)

    def _check_approval(
        self, approval: ApprovalGrant | None, proposal_digest: str, now: int
    ) -> tuple[bool, str | None]:
        """Return (approved, reason code if an approval was presented and refused)."""
        if approval is None:
            return False, None
        if not isinstance(approval, ApprovalGrant):
            return False, R.APPROVAL_INVALID.value
        key = self.trusted_keys.get(approval.kid)
        try:
            signature = b64url_decode(approval.signature)
        except ValueError:
            return False, R.APPROVAL_INVALID.value
        if (
            key is None
            or key.status is KeyStatus.REVOKED
            or not key.verify(signing_input("approval", approval.signed_part()), signature)
        ):
            return False, R.APPROVAL_INVALID.value
        if approval.proposal_digest != proposal_digest:
            return False, R.APPROVAL_MISMATCH.value
        if not approval.granted_at <= now <= approval.expires_at:
            return False, R.APPROVAL_INVALID.value
        return True, None

    def decide(
        self,
        request: AuthorizationRequest,
        *,
        now: int,
        token_id: str,
        approval: ApprovalGrant | None = None,
        proposal_digest: str | None = None,
        request_bytes: bytes | None = None,
        phase: Literal["execute", "preflight"] = "execute",
        evidence: Any = None,
    ) -> AuthorizationDecision:
        """Decide a proposal and, only on ALLOW, issue a token with id ``token_id``.

        Args:
            phase: ``"preflight"``: the first phase of a two-phase call
                (:mod:`execauth_core.twophase`): nothing is debited, no token is
                issued, an ALLOW carries ``COMMIT_REQUIRED`` and ``token_id`` is the
                preflight's id, ``token_exp`` its end.
            evidence: with ``phase="preflight"``, a
                :class:`~execauth_core.manifest.PreflightResult` the caller gathered,
                used instead of the tool's preflight callable (a Court only).
            proposal_digest: ``request.content_digest()``, if the caller has it.
            request_bytes: ``request.canonical_bytes()``, if the caller has them (the
                guard does): the record embeds them as they are, and the proposal
                digest is theirs.

        Raises:
            ConfigurationError: ``proposal_digest`` is not the digest of ``request_bytes``.
        """
        if request_bytes is not None:
            pd = digest_bytes(request_bytes)
            if proposal_digest is not None and proposal_digest != pd:
                raise ConfigurationError("proposal_digest is not the digest of request_bytes")
        else:
            pd = proposal_digest or request.content_digest()
        approved, approval_problem = self._check_approval(approval, pd, now)
        preflight = phase == "preflight"
        if evidence is not None:
            if not preflight:
                raise ConfigurationError("evidence is given to a preflight (phase='preflight') only")
            ev = cast(Any, self.decision_point).evaluate(
                request, now=now, approved=approved, hold_id=None, preflight_result=evidence
            )
        else:
            hold = None if preflight else token_id
            ev = self.decision_point.evaluate(request, now=now, approved=approved, hold_id=hold)
        outcome = Outcome(ev.outcome)
        reasons = tuple(ev.reason_codes)
        unknown = [c for c in reasons if c not in REGISTRY]
        if unknown or not reasons:
            # A decision point must speak the registry's language; anything else is a bug.
            raise ConfigurationError(f"decision point returned unregistered reason codes {unknown or '(none)'}")
        explanation = tuple(ev.explanation)
        if approval_problem is not None and outcome is not Outcome.ALLOW:
            reasons = (*reasons, approval_problem)
            explanation = (*explanation, "The approval presented does not apply to this proposal.")
        is_allow = outcome is Outcome.ALLOW
        if preflight and is_allow:
            reasons = (*reasons, R.COMMIT_REQUIRED.value)
            explanation = (*explanation, "Preflight passed: it runs after a commit with unchanged state and policy.")
        record = DecisionRecord(
            request=request,
            proposal_digest=pd,
            outcome=outcome,
            reason_codes=reasons,
            explanation=explanation,
            policy=self.decision_point.policy_ref,
            state_digest=ev.state_digest,
            approval_id=approval.grant_id if approved and approval is not None else None,
            decided_at=now,
            token_id=token_id if is_allow else None,
            token_exp=now + self.token_ttl if is_allow else None,
            shadow=ev.shadow_outcome is not None,
            shadow_outcome=ev.shadow_outcome,
            approved=approved,
            stages=tuple(StageResult.model_validate(s) for s in ev.stages),
            state_snapshot=dict(ev.state_snapshot) if ev.state_snapshot is not None else None,
            preflight=dict(ev.preflight) if ev.preflight is not None else None,
        )
        record_bytes = record._canonical_with({"request": request_bytes} if request_bytes is not None else {})
        record_digest = digest_bytes(record_bytes)
        record_sig = self.signer.sign(signing_input_bytes("decision_record", record_bytes))
        token = None
        if is_allow and not preflight:
            claims = TokenClaims(
                iss=self.issuer,
                aud=self.audience,
                sub=request.principal,
                iat=now,
                nbf=now,
                exp=now + self.token_ttl,
                jti=token_id,
                proposal_digest=pd,
                scope=Scope(tool=request.tool, effects=tuple(ev.effects), limits=dict(ev.limits)),
                policy=self.decision_point.policy_ref,
                state_digest=ev.state_digest,
                record_digest=record_digest,
            )
            token = issue_token(claims, self.signer)
        return AuthorizationDecision(
            outcome=outcome,
            reason_codes=reasons,
            explanation=explanation,
            proposal_digest=pd,
            record=record,
            record_digest=record_digest,
            record_kid=self.signer.kid,
            record_signature=b64url_encode(record_sig),
            token=token,
        )

    def grant_approval(
        self, pending: PendingApproval, *, approver: str, now: int, grant_id: str, ttl: int = 900
    ) -> ApprovalGrant:
        """Sign a person's approval of exactly the pending proposal.

        Raises:
            ConfigurationError: the pending approval's digest is not the digest of its
                request (what the person was shown is not what would be approved).
        """
        if pending.request.content_digest() != pending.proposal_digest:
            raise ConfigurationError("pending approval digest does not match its proposal; refusing to sign")
        if not 1 <= ttl <= MAX_APPROVAL_TTL:
            raise ConfigurationError(f"approval ttl must be within 1..{MAX_APPROVAL_TTL} seconds")
        fields: dict[str, Any] = {
            "grant_id": grant_id,
            "proposal_digest": pending.proposal_digest,
            "approver": approver,
            "granted_at": now,
            "expires_at": now + ttl,
            "kid": self.signer.kid,
        }
        unsigned = ApprovalGrant(**fields, signature="")
        sig = self.signer.sign(signing_input("approval", unsigned.signed_part()))
        return ApprovalGrant(**fields, signature=b64url_encode(sig))

    def commit(self, preflight: Any, *, now: int, token_id: str) -> Any:
        """The second phase of a two-phase call: check that the signed ``preflight``
        still holds (same policy, same state, not expired), debit, and issue a
        CommitToken. Returns a :class:`~execauth_core.twophase.CommitDecision`
        (see :func:`execauth_core.twophase.commit_decision`)."""
        from .twophase import commit_decision

        return commit_decision(self, preflight, now=now, token_id=token_id)
