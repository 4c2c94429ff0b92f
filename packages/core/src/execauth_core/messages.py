"""Versioned wire models (pydantic v2, frozen, unknown fields rejected).

Each model carries ``v = "execauth.<type>/1"``. Digests are always computed over
``model_dump(mode="json")`` through :func:`execauth_core.canonical.digest`, so
every field, including ``v``, is covered.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from enum import Enum
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from .canonical import canonicalize_spliced, canonicalize_strict, canonicalize_trusted, digest_bytes

Digest = Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
UnixTime = Annotated[int, Field(ge=0, le=2**53 - 1)]

MAX_ARGS_BYTES = 1_000_000
"""Canonical arguments larger than this are refused (REQUEST_INVALID)."""


class Outcome(str, Enum):
    """The five outcomes of a decision. Only ALLOW ever carries a token."""

    ALLOW = "ALLOW"
    DENY = "DENY"
    REQUIRE_APPROVAL = "REQUIRE_APPROVAL"
    REQUIRE_EVIDENCE = "REQUIRE_EVIDENCE"
    DEFER = "DEFER"


class _Wire(BaseModel):
    # defer_build: schemas are built on first use, keeping `import execauth_core` fast.
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)
    # Fields holding a model that keeps its own canonical bytes (see PolicyRef),
    # spliced in rather than canonicalized again each time.
    _SPLICED: ClassVar[tuple[str, ...]] = ()

    def canonical_bytes(self) -> bytes:
        """RFC 8785 bytes of this object."""
        return self._canonical_with({})

    def _canonical_with(self, parts: Mapping[str, bytes]) -> bytes:
        # Fields were validated on construction (args through canonicalize).
        spliced = dict(parts)
        for name in self._SPLICED:
            if name not in spliced:
                spliced[name] = getattr(self, name).canonical_bytes()
        return canonicalize_spliced(self.model_dump(mode="json"), spliced)

    def content_digest(self) -> str:
        """``sha256:<hex>`` of this object's canonical form."""
        return digest_bytes(self.canonical_bytes())


_W = TypeVar("_W", bound=_Wire)


@functools.lru_cache(maxsize=256)
def _flat_canonical(members: tuple[tuple[str, type, Any], ...]) -> bytes:
    # Keyed by name, type and value of every member (so 1, 1.0 and True never share
    # an entry); members are JSON scalars.
    return canonicalize_trusted({name: value for name, _, value in members})


class AuthorizationRequest(_Wire):
    """An execution proposal: what an agent wants to run, for whom, with what."""

    v: Literal["execauth.request/1"] = "execauth.request/1"
    tool: Name = Field(description="Name of the tool to run.")
    args: dict[str, Any] = Field(description="Complete bound arguments, JSON values only (money as decimal strings).")
    principal: Name = Field(description="On whose behalf the call is made.")
    agent: Name | None = Field(default=None, description="Which agent proposed the call.")
    call_id: Name | None = Field(default=None, description="The framework's tool-call id, if it has one.")
    manifest_digest: Digest | None = Field(
        default=None, description="Digest of the tool manifest the proposer saw (pinned)."
    )
    context_refs: tuple[Name, ...] = Field(default=(), description="References to context the proposal relied on.")

    @field_validator("args", mode="after")
    @classmethod
    def _args_are_canonical_json(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Canonicalize once at the boundary: a proposal that cannot be digested
        # can never be bound to a token, so it is refused here.
        # Strict: a number that would not read back as itself (1e17) is refused too.
        raw = canonicalize_strict(value)
        if len(raw) > MAX_ARGS_BYTES:
            raise ValueError(f"arguments are {len(raw)} bytes canonical; limit {MAX_ARGS_BYTES}")
        # Keep a private copy decoded from the canonical bytes: no caller-held nested
        # list or dict can change the arguments after the proposal is digested.
        copy: dict[str, Any] = json.loads(raw)
        return copy

    @field_validator("tool", "principal", "agent", "call_id", mode="after")
    @classmethod
    def _utf8(cls, value: str | None) -> str | None:
        if value is not None:
            value.encode("utf-8")  # a lone surrogate raises: it could never be signed or logged
        return value

    @field_validator("context_refs", mode="after")
    @classmethod
    def _utf8_refs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for ref in value:
            ref.encode("utf-8")
        return value


class PolicyRef(_Wire):
    """Which policy decided: id, epoch and digest."""

    id: Name
    epoch: int = Field(ge=0)
    digest: Digest

    def canonical_bytes(self) -> bytes:
        """RFC 8785 bytes, remembered by value: a decision point hands the same
        policy reference to every record and token it makes."""
        return _flat_canonical(tuple((k, type(v), v) for k, v in self.model_dump(mode="json").items()))


class Scope(_Wire):
    """What a token permits: one tool, its declared effects, and limits."""

    tool: Name
    effects: tuple[Name, ...] = ()
    limits: dict[str, str] = Field(default_factory=dict)


class StageResult(_Wire):
    """One stage of the Court's pipeline: its result, codes and human-readable notes."""

    stage: Literal["contract", "ceilings", "counterfactuals", "invariants", "preflight", "emit"]
    result: Literal["pass", "DENY", "REQUIRE_APPROVAL", "REQUIRE_EVIDENCE", "DEFER"]
    reason_codes: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


class DecisionRecord(_Wire):
    """Everything needed to replay a decision: inputs, outcome and why."""

    _SPLICED: ClassVar[tuple[str, ...]] = ("policy",)

    v: Literal["execauth.decision_record/1"] = "execauth.decision_record/1"
    request: AuthorizationRequest
    proposal_digest: Digest
    outcome: Outcome
    reason_codes: tuple[str, ...] = Field(min_length=1)
    explanation: tuple[str, ...] = Field(description="Why, in words a person can read.")
    policy: PolicyRef
    state_digest: Digest | None = None
    approval_id: str | None = None
    decided_at: UnixTime
    token_id: str | None = Field(default=None, description="jti of the token, ALLOW only.")
    token_exp: UnixTime | None = None
    shadow: bool = Field(default=False, description="Shadow (dry-run) decision: recorded, not enforced.")
    shadow_outcome: Outcome | None = Field(default=None, description="In shadow mode, the unenforced outcome.")
    approved: bool = Field(default=False, description="A valid approval of this exact proposal was presented.")
    stages: tuple[StageResult, ...] = Field(default=(), description="The pipeline, stage by stage.")
    state_snapshot: dict[str, int] | None = Field(
        default=None, description="Counters the decision read (budgets, rates), for replay."
    )
    preflight: dict[str, Any] | None = Field(
        default=None, description="The preflight's result (ok, grade, detail), for replay."
    )


class AuthorizationDecision(_Wire):
    """The Authority Court's answer: a signed record, and a token only on ALLOW."""

    v: Literal["execauth.decision/1"] = "execauth.decision/1"
    outcome: Outcome
    reason_codes: tuple[str, ...]
    explanation: tuple[str, ...]
    proposal_digest: Digest
    record: DecisionRecord
    record_digest: Digest
    record_kid: str
    record_signature: str = Field(description="base64url Ed25519 over b'execauth:decision_record/1\\n' + JCS(record).")
    token: str | None = Field(default=None, description="Compact JWS, present only on ALLOW.")


class TokenClaims(_Wire):
    """Claims of an authority token (the JWS payload)."""

    _SPLICED: ClassVar[tuple[str, ...]] = ("policy",)

    v: Literal["execauth.token/1"] = "execauth.token/1"
    iss: Name
    aud: Name
    sub: Name = Field(description="The principal.")
    iat: UnixTime
    nbf: UnixTime
    exp: UnixTime
    jti: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    proposal_digest: Digest
    scope: Scope
    policy: PolicyRef
    state_digest: Digest | None = None
    record_digest: Digest
    phase: Literal["execute", "commit"] = Field(
        default="execute", description='"commit": a CommitToken, issued by the commit of a two-phase call.'
    )


class PendingApproval(_Wire):
    """A proposal waiting for a person's approval."""

    v: Literal["execauth.pending_approval/1"] = "execauth.pending_approval/1"
    proposal_digest: Digest
    request: AuthorizationRequest
    reason_codes: tuple[str, ...]
    requested_at: UnixTime
    request_id: Name | None = Field(
        default=None, description="Id of the durable approval request, when the guard or authority keeps one."
    )


class ApprovalGrant(_Wire):
    """A person's approval of one exact proposal, signed by the authority."""

    v: Literal["execauth.approval/1"] = "execauth.approval/1"
    grant_id: Annotated[str, StringConstraints(min_length=16, max_length=128)]
    proposal_digest: Digest
    approver: Name
    granted_at: UnixTime
    expires_at: UnixTime
    kid: str
    signature: str = Field(
        description="base64url Ed25519 over b'execauth:approval/1\\n' + JCS(grant without signature)."
    )

    def signed_part(self) -> dict[str, Any]:
        """The fields the signature covers."""
        return self.model_dump(mode="json", exclude={"signature"})


def parse_wire(model: type[_W], data: str | bytes) -> _W:
    """Parse untrusted JSON into a wire model: strict JSON first, then strict types.

    Raises:
        CanonicalizationError: the bytes are not strict JSON.
        pydantic.ValidationError: the JSON does not fit the model.
    """
    from .canonical import loads_strict

    loads_strict(data)  # duplicate keys, NaN, huge ints: refused before pydantic sees them
    return model.model_validate_json(data, strict=True)
