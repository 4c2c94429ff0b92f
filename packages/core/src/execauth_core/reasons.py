"""The registry of reason codes.

Every authorization outcome carries one or more reason codes from this module.
Codes are stable strings in UPPER_SNAKE case: tests, adapters and users match on
codes, never on messages. A code, once published, keeps its meaning; new codes
are added, old ones are never renamed or reused.
"""

from __future__ import annotations

from enum import Enum


class ReasonCode(str, Enum):
    """Stable reason codes. The value is the wire form."""

    # --- decisions --------------------------------------------------------
    TOOL_ALLOWED = "TOOL_ALLOWED"
    """The policy allows this tool for this principal."""
    POLICY_EMPTY = "POLICY_EMPTY"
    """The policy is missing or allows nothing: default deny."""
    TOOL_NOT_ALLOWED = "TOOL_NOT_ALLOWED"
    """The tool is not allowed by the policy."""
    APPROVAL_REQUIRED = "APPROVAL_REQUIRED"
    """The policy requires a human approval bound to this exact proposal."""
    APPROVAL_GRANTED = "APPROVAL_GRANTED"
    """A valid approval for this exact proposal was presented."""
    APPROVAL_MISMATCH = "APPROVAL_MISMATCH"
    """The approval presented was granted for a different proposal."""
    APPROVAL_REJECTED = "APPROVAL_REJECTED"
    """A person looked at the proposal and said no."""
    APPROVAL_USED = "APPROVAL_USED"
    """The approval was already used: one approval authorizes one execution."""
    APPROVAL_INVALID = "APPROVAL_INVALID"
    """The approval is expired, not yet valid, or its signature does not verify."""

    SHADOW_MODE = "SHADOW_MODE"
    """Shadow (dry-run) policy: the decision was recorded, not enforced."""

    # --- Court: contract pinning --------------------------------------------
    UNKNOWN_TOOL = "UNKNOWN_TOOL"
    """The tool has no registered manifest."""
    MANIFEST_PIN_MISMATCH = "MANIFEST_PIN_MISMATCH"
    """The proposal pins a manifest digest other than the registered one."""
    MANIFEST_PIN_MISSING = "MANIFEST_PIN_MISSING"
    """The policy requires a pinned manifest digest and the proposal has none."""
    ARGS_SCHEMA_VIOLATION = "ARGS_SCHEMA_VIOLATION"
    """The arguments do not match the manifest's JSON Schema."""
    AMOUNT_NOT_DECIMAL_STRING = "AMOUNT_NOT_DECIMAL_STRING"
    """A money amount arrived as a number; money travels as decimal strings."""
    AMOUNT_INVALID = "AMOUNT_INVALID"
    """A money amount is negative, malformed, too long or too precise for its currency."""
    CURRENCY_NOT_ALLOWED = "CURRENCY_NOT_ALLOWED"
    """The currency is not declared, or the principal has no ceiling in it."""

    # --- Court: ceilings ----------------------------------------------------
    PRINCIPAL_UNKNOWN = "PRINCIPAL_UNKNOWN"
    """The principal is not in the policy."""
    AGENT_NOT_ALLOWED = "AGENT_NOT_ALLOWED"
    """This agent may not act for this principal."""
    EFFECT_NOT_ALLOWED = "EFFECT_NOT_ALLOWED"
    """An effect of the tool is not in the principal's allowed effects."""
    RISK_TIER_EXCEEDED = "RISK_TIER_EXCEEDED"
    """The tool's risk tier is above the principal's maximum."""
    AMOUNT_CEILING_EXCEEDED = "AMOUNT_CEILING_EXCEEDED"
    """The amount is above the principal's per-call ceiling."""
    OUTSIDE_TIME_WINDOW = "OUTSIDE_TIME_WINDOW"
    """Now is outside the principal's allowed time windows (DEFER)."""

    # --- Court: counterfactuals ---------------------------------------------
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"
    """After this call the budget for the window would be overspent."""
    RATE_LIMITED = "RATE_LIMITED"
    """After this call the rate limit for the window would be exceeded (DEFER)."""

    # --- Court: invariants --------------------------------------------------
    KILL_SWITCH = "KILL_SWITCH"
    """The policy's kill switch is on: nothing runs."""
    EFFECT_FORBIDDEN = "EFFECT_FORBIDDEN"
    """An effect of the tool is forbidden policy-wide."""

    # --- Court: preflight ---------------------------------------------------
    PREFLIGHT_FAILED = "PREFLIGHT_FAILED"
    """The tool's preflight simulation failed or crashed."""
    PREFLIGHT_MISSING = "PREFLIGHT_MISSING"
    """The effects need a preflight and the tool has none (REQUIRE_EVIDENCE)."""
    EVIDENCE_INSUFFICIENT = "EVIDENCE_INSUFFICIENT"
    """The preflight's evidence grade is below what the effects need (REQUIRE_EVIDENCE)."""

    # --- tokens -----------------------------------------------------------
    NO_TOKEN = "NO_TOKEN"
    """No authority token was presented."""
    TOKEN_MALFORMED = "TOKEN_MALFORMED"
    """Not a compact JWS of three base64url parts with JSON header and claims."""
    TOKEN_ALG_REJECTED = "TOKEN_ALG_REJECTED"
    """The header names an algorithm other than EdDSA, or unexpected header fields."""
    KEYSET_MISSING = "KEYSET_MISSING"
    """No trusted key set is configured: nothing can verify."""
    TOKEN_KID_UNKNOWN = "TOKEN_KID_UNKNOWN"
    """The token's key id is not in the configured trusted key set."""
    TOKEN_KEY_REVOKED = "TOKEN_KEY_REVOKED"
    """The signing key has been revoked."""
    TOKEN_KEY_INACTIVE = "TOKEN_KEY_INACTIVE"
    """The signing key is outside its validity window."""
    TOKEN_SIGNATURE_INVALID = "TOKEN_SIGNATURE_INVALID"
    """The Ed25519 signature does not verify."""
    TOKEN_CLAIMS_INVALID = "TOKEN_CLAIMS_INVALID"
    """Claims are missing, of the wrong type, or carry unknown fields."""
    TOKEN_ISSUER_MISMATCH = "TOKEN_ISSUER_MISMATCH"
    """The token was issued by an issuer this verifier does not trust."""
    TOKEN_AUDIENCE_MISMATCH = "TOKEN_AUDIENCE_MISMATCH"
    """The token is meant for another audience."""
    TOKEN_EXPIRED = "TOKEN_EXPIRED"
    """The token's exp has passed (beyond the allowed clock skew)."""
    TOKEN_NOT_YET_VALID = "TOKEN_NOT_YET_VALID"
    """The token's nbf is in the future (beyond the allowed clock skew)."""
    TOKEN_ISSUED_IN_FUTURE = "TOKEN_ISSUED_IN_FUTURE"
    """The token's iat is in the future (beyond the allowed clock skew)."""
    TOKEN_TTL_EXCEEDED = "TOKEN_TTL_EXCEEDED"
    """exp - iat is longer than the verifier's maximum lifetime, or times are inconsistent."""
    TOKEN_PROPOSAL_MISMATCH = "TOKEN_PROPOSAL_MISMATCH"
    """The token is bound to a different proposal than the one being executed."""
    TOKEN_SCOPE_MISMATCH = "TOKEN_SCOPE_MISMATCH"
    """The token's scope (tool) does not cover the call being executed."""
    TOKEN_POLICY_STALE = "TOKEN_POLICY_STALE"
    """The token was issued under a policy (id, epoch, digest) that is no longer in force."""
    TOKEN_REPLAYED = "TOKEN_REPLAYED"
    """The token's id was already consumed: a token authorizes one execution."""

    # --- guard ------------------------------------------------------------
    REQUEST_INVALID = "REQUEST_INVALID"
    """The proposal is malformed (types, sizes, non-canonical JSON values)."""
    STORE_UNAVAILABLE = "STORE_UNAVAILABLE"
    """A store (replay, state) failed or timed out: fail closed."""
    AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
    """The audit log could not be written: nothing executes unrecorded."""
    SIGNER_UNAVAILABLE = "SIGNER_UNAVAILABLE"
    """The authority could not sign: no token, no execution."""
    GUARD_ERROR = "GUARD_ERROR"
    """An unexpected error inside the guard: fail closed."""

    # --- remote authority and executors -------------------------------------
    AUTHORITY_UNAVAILABLE = "AUTHORITY_UNAVAILABLE"
    """The remote authority could not be reached, timed out, or answered with a server error."""
    AUTHORITY_ANSWER_INVALID = "AUTHORITY_ANSWER_INVALID"
    """The remote authority's answer was malformed, unsigned, or did not match the request."""
    CALLER_UNAUTHENTICATED = "CALLER_UNAUTHENTICATED"
    """The caller presented no credential, or one the authority does not know."""
    CALLER_NOT_BOUND = "CALLER_NOT_BOUND"
    """The caller's credential may not act for the principal or agent named in the request."""
    REQUEST_TOO_LARGE = "REQUEST_TOO_LARGE"
    """The request body is larger than the configured limit."""
    UNSUPPORTED_MEDIA_TYPE = "UNSUPPORTED_MEDIA_TYPE"
    """The request body is not application/json."""
    REQUEST_TIMEOUT = "REQUEST_TIMEOUT"
    """The client did not send its request within the configured time."""

    # --- audit --------------------------------------------------------------
    AUDIT_SPOOLED = "AUDIT_SPOOLED"
    """The audit log was unreachable; the record was kept in the local spool for replay."""
    CHECKPOINT_MISSING = "CHECKPOINT_MISSING"
    """No signed checkpoint of the audit log exists yet (or none that verifies)."""

    # --- approval requests (the durable queue) ------------------------------
    APPROVAL_EXPIRED = "APPROVAL_EXPIRED"
    """The approval request expired before a person decided it: expiry means deny."""
    APPROVAL_UNKNOWN = "APPROVAL_UNKNOWN"
    """No approval request has this id."""
    APPROVAL_DECIDED = "APPROVAL_DECIDED"
    """The approval request was already decided (approved, rejected or expired); the later decision was refused."""

    # --- ledger ---
    LEDGER_ALREADY_SUCCEEDED = "LEDGER_ALREADY_SUCCEEDED"
    """This idempotency key already ran and succeeded: the recorded outcome is returned, the tool is not run again."""
    LEDGER_ALREADY_FAILED = "LEDGER_ALREADY_FAILED"
    """This idempotency key already ran and failed (its effect may have half happened): it is not run again."""
    LEDGER_IN_FLIGHT = "LEDGER_IN_FLIGHT"
    """Another attempt with this idempotency key is running: this one does not run."""
    LEDGER_OUTCOME_UNKNOWN = "LEDGER_OUTCOME_UNKNOWN"
    """An attempt with this idempotency key started and never recorded an outcome: reconcile it, never re-run."""
    LEDGER_KEY_CONFLICT = "LEDGER_KEY_CONFLICT"
    """This idempotency key was used for another proposal (other arguments): refused."""
    LEDGER_RESOLVED = "LEDGER_RESOLVED"
    """A person reconciled a ledger entry whose outcome was unknown (or failed)."""


REGISTRY: frozenset[str] = frozenset(code.value for code in ReasonCode)
"""Every published reason code."""
