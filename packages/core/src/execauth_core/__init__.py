"""execauth-core: decide before an agent's tool call runs, and prove it.

Agents propose, the authority disposes: a decision point evaluates each proposal,
only ALLOW carries an Ed25519 authority token bound to the canonical proposal, and
the guard verifies and consumes that token once before it calls the tool. Every
denial is recorded with ``executed: false`` in a hash-linked audit log.
"""

import logging as _logging

from ._version import __version__
from .audit import AuditEntry, Checkpoint, verify_chain
from .authority import Authority
from .binding import bind_arguments
from .canonical import canonicalize, digest, loads_strict
from .clock import Clock, FixedClock, SystemClock
from .court import Court
from .effects import EFFECTS, EffectSpec, EvidenceGrade, RiskTier
from .errors import (
    ApprovalRequired,
    AuditIntegrityError,
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
from .manifest import PreflightResult, ToolManifest, ToolRegistry, load_registry
from .keys import KeySet, KeyStatus, LocalSigner, Signer, TrustedKey, jwk_thumbprint
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
from .tokens import TokenVerifier, issue_token

# A library does not print: the host application decides where "execauth" logs go.
_logging.getLogger("execauth").addHandler(_logging.NullHandler())

__all__ = [
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
    "denial_message",
    "digest",
    "issue_token",
    "jwk_thumbprint",
    "load_policy",
    "load_registry",
    "loads_strict",
    "parse_policy",
    "verify_chain",
]
