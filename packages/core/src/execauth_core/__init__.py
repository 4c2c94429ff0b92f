"""execauth-core: decide before an agent's tool call runs, and prove it.

Agents propose, the authority disposes: a decision point evaluates each proposal,
only ALLOW carries an Ed25519 authority token bound to the canonical proposal, and
the guard verifies and consumes that token once before it calls the tool. Every
denial is recorded with ``executed: false`` in a hash-linked audit log.
"""

from ._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mypy reads it the same)

if TYPE_CHECKING:  # every public name, for type checkers and IDEs; loaded lazily below
    from .audit import AuditEntry, Checkpoint, verify_chain
    from .authority import Authority
    from .binding import bind_arguments
    from .canonical import canonicalize, digest, loads_strict
    from .clock import Clock, FixedClock, SystemClock
    from .court import Court
    from .current import CurrentCall, current_call
    from .effects import EFFECTS, EffectSpec, EvidenceGrade, RiskTier
    from .errors import (
        ApprovalRequired,
        AuditIntegrityError,
        AuthorityUnavailable,
        AuthorizationError,
        CanonicalizationError,
        ConfigurationError,
        ExecAuthError,
        ExecutionDenied,
        KeyFileError,
        StoreUnavailable,
        TokenError,
        denial_message,
    )
    from .guard import Capability, Guard
    from .keys import KeySet, KeyStatus, LocalSigner, Signer, TrustedKey, jwk_thumbprint
    from .ledger import AlreadyExecuted, Ledger, idempotency_key
    from .manifest import PreflightResult, ToolManifest, ToolRegistry, load_registry
    from .messages import (
        ApprovalGrant,
        AuthorizationDecision,
        AuthorizationRequest,
        DecisionRecord,
        Outcome,
        PendingApproval,
        PolicyRef,
        Scope,
        TokenClaims,
    )
    from .policy import AllowListPolicy, DecisionPoint, Evaluation
    from .policyfile import PolicyDocument, load_policy, parse_policy
    from .reasons import ReasonCode
    from .remote import JWKSKeys, RemoteAuthority
    from .spool import Spool, SpoolIntegrityError
    from .tokens import TokenVerifier, issue_token

# Every name loads on first use (PEP 562), so `import execauth_core` costs next to
# nothing: pydantic, PyNaCl and the stores come with the first name that needs them,
# and code that only guards with an allow-list never loads the Court.
_LAZY = {
    "AuditEntry": "audit",
    "Checkpoint": "audit",
    "verify_chain": "audit",
    "Authority": "authority",
    "bind_arguments": "binding",
    "canonicalize": "canonical",
    "digest": "canonical",
    "loads_strict": "canonical",
    "Clock": "clock",
    "FixedClock": "clock",
    "SystemClock": "clock",
    "Court": "court",
    "CurrentCall": "current",
    "current_call": "current",
    "EFFECTS": "effects",
    "EffectSpec": "effects",
    "EvidenceGrade": "effects",
    "RiskTier": "effects",
    "ApprovalRequired": "errors",
    "AuditIntegrityError": "errors",
    "AuthorityUnavailable": "errors",
    "AuthorizationError": "errors",
    "CanonicalizationError": "errors",
    "ConfigurationError": "errors",
    "ExecAuthError": "errors",
    "ExecutionDenied": "errors",
    "KeyFileError": "errors",
    "StoreUnavailable": "errors",
    "TokenError": "errors",
    "denial_message": "errors",
    "Capability": "guard",
    "Guard": "guard",
    "KeySet": "keys",
    "AlreadyExecuted": "ledger",
    "Ledger": "ledger",
    "idempotency_key": "ledger",
    "KeyStatus": "keys",
    "LocalSigner": "keys",
    "Signer": "keys",
    "TrustedKey": "keys",
    "jwk_thumbprint": "keys",
    "PreflightResult": "manifest",
    "ToolManifest": "manifest",
    "ToolRegistry": "manifest",
    "load_registry": "manifest",
    "ApprovalGrant": "messages",
    "AuthorizationDecision": "messages",
    "AuthorizationRequest": "messages",
    "DecisionRecord": "messages",
    "Outcome": "messages",
    "PendingApproval": "messages",
    "PolicyRef": "messages",
    "Scope": "messages",
    "TokenClaims": "messages",
    "AllowListPolicy": "policy",
    "DecisionPoint": "policy",
    "Evaluation": "policy",
    "PolicyDocument": "policyfile",
    "load_policy": "policyfile",
    "parse_policy": "policyfile",
    "ReasonCode": "reasons",
    "JWKSKeys": "remote",
    "RemoteAuthority": "remote",
    "Spool": "spool",
    "SpoolIntegrityError": "spool",
    "TokenVerifier": "tokens",
    "issue_token": "tokens",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'execauth_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


# A library does not print: the NullHandler on the "execauth" logger is set in _log,
# which every module that logs imports.

__all__ = [
    "AllowListPolicy",
    "ApprovalGrant",
    "ApprovalRequired",
    "AlreadyExecuted",
    "Ledger",
    "idempotency_key",
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
    "Court",
    "DecisionPoint",
    "DecisionRecord",
    "EFFECTS",
    "EffectSpec",
    "Evaluation",
    "EvidenceGrade",
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
    "PolicyDocument",
    "PolicyRef",
    "PreflightResult",
    "ReasonCode",
    "RiskTier",
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
    "ToolManifest",
    "ToolRegistry",
    "TrustedKey",
    "__version__",
    "bind_arguments",
    "canonicalize",
    "current_call",
    "denial_message",
    "digest",
    "issue_token",
    "jwk_thumbprint",
    "load_policy",
    "load_registry",
    "loads_strict",
    "parse_policy",
    "verify_chain",
    "JWKSKeys",
    "RemoteAuthority",
]
