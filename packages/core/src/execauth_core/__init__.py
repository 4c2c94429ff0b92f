"""execauth-core: decide before an agent's tool call runs, and prove it.

Agents propose, the authority disposes: a decision point evaluates each proposal,
only ALLOW carries an Ed25519 authority token bound to the canonical proposal, and
the guard verifies and consumes that token once before it calls the tool. Every
denial is recorded with ``executed: false`` in a hash-linked audit log.
"""

from ._version import __version__
from .audit import AuditEntry, Checkpoint, verify_chain
from .authority import Authority
from .binding import bind_arguments
from .canonical import canonicalize, digest, loads_strict
from .clock import Clock, FixedClock, SystemClock
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
from .reasons import ReasonCode
from .tokens import TokenVerifier, issue_token

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
    "StoreUnavailable",
    "SystemClock",
    "TokenClaims",
    "TokenError",
    "TokenVerifier",
    "TrustedKey",
    "__version__",
    "bind_arguments",
    "canonicalize",
    "denial_message",
    "digest",
    "issue_token",
    "jwk_thumbprint",
    "loads_strict",
    "verify_chain",
]
