"""The public surface is curated: adding or removing a name is a deliberate act."""

from __future__ import annotations

import execauth_core
from execauth_core.reasons import REGISTRY, ReasonCode

PUBLIC = {
    "AllowListPolicy",
    "ApprovalGrant",
    "ApprovalRequired",
    "AuditEntry",
    "AuditIntegrityError",
    "Authority",
    "AuthorizationDecision",
    "AuthorizationError",
    "AuthorizationRequest",
    "CanonicalizationError",
    "Capability",
    "Checkpoint",
    "Clock",
    "ConfigurationError",
    "CurrentCall",
    "DecisionPoint",
    "DecisionRecord",
    "Evaluation",
    "ExecAuthError",
    "ExecutionDenied",
    "FixedClock",
    "Guard",
    "KeyFileError",
    "KeySet",
    "KeyStatus",
    "LocalSigner",
    "Outcome",
    "PendingApproval",
    "PolicyRef",
    "ReasonCode",
    "Scope",
    "Signer",
    "Spool",
    "SpoolIntegrityError",
    "AuthorityUnavailable",
    "StoreUnavailable",
    "SystemClock",
    "TokenClaims",
    "TokenError",
    "TokenVerifier",
    "TrustedKey",
    "__version__",
    "bind_arguments",
    "canonicalize",
    "current_call",
    "denial_message",
    "digest",
    "issue_token",
    "jwk_thumbprint",
    "loads_strict",
    "verify_chain",
    "Court",
    "EFFECTS",
    "EffectSpec",
    "EvidenceGrade",
    "RiskTier",
    "PreflightResult",
    "ToolManifest",
    "ToolRegistry",
    "load_registry",
    "PolicyDocument",
    "load_policy",
    "parse_policy",
    "JWKSKeys",
    "RemoteAuthority",
    "AlreadyExecuted",
    "Ledger",
    "idempotency_key",
}


def test_all_is_pinned() -> None:
    assert set(execauth_core.__all__) == PUBLIC
    for name in PUBLIC:
        assert hasattr(execauth_core, name), name


def test_reason_codes_are_stable_upper_snake() -> None:
    for code in ReasonCode:
        assert code.value == code.name and code.value.replace("_", "").isalnum() and code.value.isupper()
    assert len(REGISTRY) == len(ReasonCode)


def test_wire_models_are_frozen_and_versioned() -> None:
    import pydantic

    req = execauth_core.AuthorizationRequest(tool="t", args={}, principal="p")
    assert req.v == "execauth.request/1"
    try:
        req.tool = "other"  # type: ignore[misc]
    except pydantic.ValidationError:
        pass
    else:
        raise AssertionError("AuthorizationRequest must be frozen")
    try:
        execauth_core.AuthorizationRequest(tool="t", args={}, principal="p", surprise=1)  # type: ignore[call-arg]
    except pydantic.ValidationError:
        pass
    else:
        raise AssertionError("unknown fields must be rejected")


def test_model_copy_digests_the_new_content() -> None:
    """Never cache canonical bytes on a model: model_copy would carry a stale digest."""
    req = execauth_core.AuthorizationRequest(tool="t", args={"a": 1}, principal="p")
    before = req.content_digest()
    changed = req.model_copy(update={"tool": "x"})
    assert changed.content_digest() != before
    assert (
        changed.content_digest()
        == execauth_core.AuthorizationRequest(tool="x", args={"a": 1}, principal="p").content_digest()
    )
