"""The exception tree of execauth-core.

::

    ExecAuthError                      base of everything raised on purpose
    ├── ConfigurationError             bad keys, key sets, policies, settings
    ├── CanonicalizationError          input that is not strict, canonicalizable JSON
    ├── KeyFileError                   key files that cannot be read or written
    ├── AuthorizationError             carries a stable ``reason_code``
    │   ├── TokenError                 a token failed verification
    │   └── ExecutionDenied            the guard refused to run a tool call
    │       └── ApprovalRequired       ... because a human must approve this proposal
    ├── AuthorityUnavailable           a remote authority failed; callers must fail closed
    ├── StoreUnavailable               a store failed; callers must fail closed
    └── AuditIntegrityError            an audit chain does not verify (``seq`` says where)
        └── SpoolIntegrityError        the audit spool's chain does not verify (execauth_core.spool)

Verification never returns ``False``: it raises a typed error carrying a reason
code from :mod:`execauth_core.reasons`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .reasons import ReasonCode

if TYPE_CHECKING:
    from .messages import PendingApproval


class ExecAuthError(Exception):
    """Base class of every error execauth raises on purpose."""


class ConfigurationError(ExecAuthError):
    """The library is configured in a way that cannot work safely."""


class CanonicalizationError(ExecAuthError, ValueError):
    """A value is not strict JSON that RFC 8785 can canonicalize."""


class KeyFileError(ExecAuthError):
    """A key file is missing, unreadable, malformed, or has unsafe permissions."""


class AuthorizationError(ExecAuthError):
    """An authorization failure with a stable reason code."""

    def __init__(self, reason_code: ReasonCode | str, message: str = "") -> None:
        # Never raise while reporting a failure: an unregistered code is kept as text.
        self.reason_code = reason_code.value if isinstance(reason_code, ReasonCode) else str(reason_code)
        self.message = message or self.reason_code
        super().__init__(f"{self.reason_code}: {self.message}")


class TokenError(AuthorizationError):
    """An authority token did not verify."""


class ExecutionDenied(AuthorizationError):
    """The guard did not run the tool call.

    Attributes:
        outcome: ``DENY``, ``REQUIRE_APPROVAL``, ``REQUIRE_EVIDENCE`` or ``DEFER``.
        reason_codes: every reason code, most important first.
        tool: the tool that was not run.
        proposal_digest: ``sha256:<hex>`` of the proposal, when it could be computed.
        audit_seq: sequence number of the denial record in the audit log, or
            ``None`` if the audit log could not be written (then
            ``AUDIT_SPOOLED`` is among the reason codes when the record was kept in
            the guard's spool for replay, ``AUDIT_UNAVAILABLE`` when it was not).
    """

    def __init__(
        self,
        *,
        outcome: str,
        reason_codes: tuple[str, ...],
        message: str,
        tool: str | None,
        proposal_digest: str | None,
        audit_seq: int | None = None,
    ) -> None:
        super().__init__(reason_codes[0], message)
        self.outcome = outcome
        self.reason_codes = reason_codes
        self.tool = tool
        self.proposal_digest = proposal_digest
        self.audit_seq = audit_seq


class ApprovalRequired(ExecutionDenied):
    """The policy requires a human approval of this exact proposal.

    ``pending`` holds the canonical proposal and its digest; pass it to
    ``Guard.approve`` once a person has approved, then run the *same* proposal
    again with the grant.
    """

    def __init__(self, *, pending: PendingApproval, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.pending = pending
        self.request_id: str | None = pending.request_id
        """Id of the durable approval request (``None`` without an approval store):
        ``Guard.approval_for(request_id)`` gives the grant once a person approved."""


class AuthorityUnavailable(ExecAuthError):
    """A remote authority could not give a usable answer. The guard turns this into a denial.

    Attributes:
        reason_code: ``AUTHORITY_UNAVAILABLE`` or ``AUTHORITY_ANSWER_INVALID``.
    """

    def __init__(self, message: str, *, reason_code: ReasonCode = ReasonCode.AUTHORITY_UNAVAILABLE) -> None:
        self.reason_code = reason_code.value
        super().__init__(f"{self.reason_code}: {message}")


class StoreUnavailable(ExecAuthError):
    """A store could not complete an operation. The guard turns this into a denial."""


class AuditIntegrityError(ExecAuthError):
    """An audit chain failed verification.

    Attributes:
        seq: the first sequence number that does not verify.
    """

    def __init__(self, seq: int, message: str) -> None:
        self.seq = seq
        super().__init__(f"audit chain broken at seq {seq}: {message}")


def denial_message(exc: ExecutionDenied) -> str:
    """Render a denial as one line that a model or a person can act on."""
    codes = ", ".join(exc.reason_codes)
    tool = f"'{exc.tool}'" if exc.tool else "the tool call"
    return f"execauth denied {tool} ({exc.outcome}): {codes}: {exc.message}"
