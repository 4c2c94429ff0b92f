"""execauth-core: decide before an agent's tool call runs, and prove it.

Agents propose, the authority disposes: a decision point evaluates each proposal,
only ALLOW carries an Ed25519 authority token bound to the canonical proposal, and
the guard verifies and consumes that token once before it calls the tool. Every
denial is recorded with ``executed: false`` in a hash-linked audit log.
"""

import logging as _logging
from typing import TYPE_CHECKING

from ._version import __version__
from .audit import AuditEntry, Checkpoint, verify_chain
from .authority import Authority
from .binding import bind_arguments
from .canonical import canonicalize, digest, loads_strict
from .clock import Clock, FixedClock, SystemClock
from .current import CurrentCall, current_call
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
from .reasons import ReasonCode
from .spool import Spool, SpoolIntegrityError
from .tokens import TokenVerifier, issue_token

if TYPE_CHECKING:  # the lazy names below, for type checkers and IDEs
    from .court import Court
    from .effects import EFFECTS, EffectSpec, EvidenceGrade, RiskTier
    from .manifest import PreflightResult, ToolManifest, ToolRegistry, load_registry
    from .policyfile import PolicyDocument, load_policy, parse_policy
    from .remote import JWKSKeys, RemoteAuthority

# The Court (manifests, policy files, effect taxonomy) loads on first use: code that
# only guards with an allow-list, or only verifies tokens, never pays for it.
_LAZY = {
    "Court": "court",
    "EFFECTS": "effects",
    "EffectSpec": "effects",
    "EvidenceGrade": "effects",
    "RiskTier": "effects",
    "PreflightResult": "manifest",
    "ToolManifest": "manifest",
    "ToolRegistry": "manifest",
    "load_registry": "manifest",
    "PolicyDocument": "policyfile",
    "load_policy": "policyfile",
    "parse_policy": "policyfile",
    "JWKSKeys": "remote",
    "RemoteAuthority": "remote",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'execauth_core' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


# A library does not print: the host application decides where "execauth" logs go.
_logging.getLogger("execauth").addHandler(_logging.NullHandler())

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
