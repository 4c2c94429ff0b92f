"""An approver's own key: a person's signed decision beside the authority's grant.

Where an approver has an Ed25519 key, a decision is a *statement* signed by that
key::

    {"v": "execauth.approval_decision/1", "request_id": "apr_...",
     "proposal_digest": "sha256:...", "decision": "approve", "approver": "carol",
     "at": 1764700000}

signed over ``b"execauth:approval_decision/1\\n" + JCS(statement)`` (the same domain
separation as every other signed object). The statement names the request *and* the
digest of the exact proposal the person saw, so it cannot be moved to another
request or another set of arguments; a request is decided once, so it cannot be
replayed either. The authority still signs its own :class:`~execauth_core.messages.ApprovalGrant`
over the digest; the stored request keeps both, and :func:`verify_approval_record`
checks both offline with the public keys alone.

Keys are PyNaCl Ed25519 keys: :func:`generate_approver_key` (or ``execauth
approvals keygen``) writes a private key file (a JWK, mode 0600, the same format as
the authority's key) and gives the public key to put in the server config.
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._b64 import b64url_decode, b64url_encode
from .canonical import signing_input
from .errors import ConfigurationError
from .keys import KeySet, LocalSigner, Signer, TrustedKey, jwk_thumbprint
from .messages import Digest, Name
from .reasons import ReasonCode as R

if TYPE_CHECKING:
    from .approvals import ApprovalRequest

__all__ = [
    "DECISION_SKEW",
    "ApproverSignature",
    "DecisionStatement",
    "decision_statement",
    "generate_approver_key",
    "parse_public_key",
    "public_key_text",
    "sign_decision",
    "verify_approval_record",
    "verify_decision",
]

DECISION_SKEW = 300
"""Seconds a statement's ``at`` may differ from the verifier's clock."""
_TYPE = "approval_decision"
# DER SubjectPublicKeyInfo of an Ed25519 key (RFC 8410): this fixed header, then the
# 32 key bytes. Nothing else is a valid Ed25519 SPKI, so a prefix compare is exact.
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")


class DecisionStatement(BaseModel):
    """What an approver signs: this request, this proposal digest, this decision."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal["execauth.approval_decision/1"] = "execauth.approval_decision/1"
    request_id: Name = Field(description="The approval request decided.")
    proposal_digest: Digest = Field(description="sha256 of the canonical proposal the approver saw.")
    decision: Literal["approve", "reject"]
    approver: Name = Field(description="The approver's name, as configured on the server.")
    at: int = Field(ge=0, description="Unix seconds when the approver signed.")


class ApproverSignature(BaseModel):
    """A :class:`DecisionStatement` and the approver's detached Ed25519 signature."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    statement: DecisionStatement
    kid: str = Field(description="RFC 7638 thumbprint of the approver's public key.")
    signature: str = Field(description="base64url Ed25519 over b'execauth:approval_decision/1\\n' + JCS(statement).")


def _error(message: str) -> Exception:
    from .approvals import ApprovalError

    return ApprovalError(R.APPROVER_SIGNATURE_INVALID, message)


def parse_public_key(text: str) -> bytes:
    """An Ed25519 public key from base64url (the 32 raw bytes) or a PEM ``PUBLIC KEY``.

    Raises:
        ConfigurationError: anything else.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigurationError("an approver public_key is base64url of 32 bytes, or a PEM PUBLIC KEY")
    value = text.strip()
    if value.startswith("-----BEGIN"):
        lines = value.splitlines()
        if lines[0].strip() != "-----BEGIN PUBLIC KEY-----" or lines[-1].strip() != "-----END PUBLIC KEY-----":
            raise ConfigurationError("a PEM public_key is one '-----BEGIN PUBLIC KEY-----' block")
        try:
            der = base64.b64decode("".join(line.strip() for line in lines[1:-1]), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigurationError("the PEM public_key is not valid base64") from None
        if len(der) != len(_SPKI_PREFIX) + 32 or not der.startswith(_SPKI_PREFIX):
            raise ConfigurationError("the PEM public_key is not an Ed25519 key")
        return der[len(_SPKI_PREFIX) :]
    try:
        raw = b64url_decode(value)
    except (ValueError, TypeError):
        raise ConfigurationError("the public_key is not base64url") from None
    if len(raw) != 32:
        raise ConfigurationError(f"an Ed25519 public_key is 32 bytes, this one is {len(raw)}")
    return raw


def public_key_text(public_key: bytes) -> str:
    """The base64url form of a public key, as the server config takes it."""
    return b64url_encode(public_key)


def generate_approver_key(path: str | os.PathLike[str]) -> LocalSigner:
    """Write a new approver key to ``path`` (a private JWK, mode 0600, never overwritten)."""
    signer = LocalSigner.generate()
    signer.save(path)
    return signer


def decision_statement(
    *, request_id: str, proposal_digest: str, decision: str, approver: str, at: int
) -> DecisionStatement:
    """The statement an approver signs (validated: a digest, a known decision)."""
    try:
        return DecisionStatement(
            request_id=request_id,
            proposal_digest=proposal_digest,
            decision=decision,  # validated by the model
            approver=approver,
            at=at,
        )
    except ValidationError as exc:
        raise ConfigurationError(f"not a decision statement: {exc.errors()[0]['msg']}") from None


def sign_decision(signer: Signer, statement: DecisionStatement) -> ApproverSignature:
    """Sign ``statement`` with the approver's key (detached)."""
    sig = signer.sign(signing_input(_TYPE, statement.model_dump(mode="json")))
    return ApproverSignature(statement=statement, kid=signer.kid, signature=b64url_encode(sig))


def _check_signature(signed: ApproverSignature, public_key: bytes) -> None:
    if signed.kid != jwk_thumbprint(public_key):
        raise _error("the decision is signed by another key than this approver's")
    try:
        signature = b64url_decode(signed.signature)
    except (ValueError, TypeError):
        raise _error("the approver's signature is not base64url") from None
    key = TrustedKey.from_public_key(public_key)
    if not key.verify(signing_input(_TYPE, signed.statement.model_dump(mode="json")), signature):
        raise _error("the approver's signature does not verify")


def verify_decision(
    signed: ApproverSignature | Any,
    public_key: bytes,
    *,
    request_id: str,
    proposal_digest: str,
    decision: str,
    approver: str,
    now: int,
    skew: int = DECISION_SKEW,
) -> ApproverSignature:
    """Check that ``signed`` is this approver's decision on exactly this request.

    Returns the parsed :class:`ApproverSignature`.

    Raises:
        ApprovalError: ``APPROVER_SIGNATURE_INVALID`` — malformed, another key, a bad
            signature, another request, digest, decision or approver, or an ``at``
            further than ``skew`` seconds from ``now``.
    """
    if not isinstance(signed, ApproverSignature):
        try:
            signed = ApproverSignature.model_validate(signed)
        except ValidationError as exc:
            raise _error(f"not an approver signature: {exc.errors()[0]['msg']}") from None
    _check_signature(signed, public_key)
    st = signed.statement
    if st.request_id != request_id:
        raise _error("the signed statement is for another approval request")
    if st.proposal_digest != proposal_digest:
        raise _error("the signed statement is for another proposal digest")
    if st.decision != decision:
        raise _error(f"the signed statement says {st.decision!r}, not {decision!r}")
    if st.approver != approver:
        raise _error(f"the signed statement names approver {st.approver!r}, not {approver!r}")
    if abs(st.at - now) > skew:
        raise _error(f"the signed statement's time is more than {skew} s from the server's clock")
    return signed


def verify_approval_record(
    record: ApprovalRequest, *, authority_keys: KeySet, approver_key: bytes | None = None
) -> None:
    """Verify a decided request offline: the authority's grant and the approver's statement.

    The grant (an approved request) must verify under a key of ``authority_keys`` and
    name the request's digest. If the record carries an approver signature,
    ``approver_key`` is required and the statement must match the record (request id,
    digest, decision, approver).

    Raises:
        ApprovalError: ``APPROVER_SIGNATURE_INVALID`` or ``APPROVAL_INVALID``.
        ConfigurationError: a signed record and no ``approver_key`` to check it with.
    """
    from .approvals import ApprovalError

    if record.proposal.content_digest() != record.proposal_digest:
        raise ApprovalError(R.APPROVAL_INVALID, "the record's digest is not the digest of its proposal")
    grant = record.grant
    if record.state == "approved":
        if grant is None:
            raise ApprovalError(R.APPROVAL_INVALID, "an approved record without the authority's grant")
        key = authority_keys.get(grant.kid)
        try:
            sig = b64url_decode(grant.signature)
        except (ValueError, TypeError):
            sig = b""
        if key is None or not key.verify(signing_input("approval", grant.signed_part()), sig):
            raise ApprovalError(R.APPROVAL_INVALID, "the authority's grant does not verify under the given keys")
        if grant.proposal_digest != record.proposal_digest or grant.approver != record.decided_by:
            raise ApprovalError(R.APPROVAL_INVALID, "the grant is for another digest or approver")
    signed = record.approver_signature
    if signed is None:
        return
    if approver_key is None:
        raise ConfigurationError("the record carries an approver signature: give approver_key to verify it")
    _check_signature(signed, approver_key)
    st = signed.statement
    wanted = {"approved": "approve", "rejected": "reject"}.get(record.state)
    if (
        st.request_id != record.id
        or st.proposal_digest != record.proposal_digest
        or st.decision != wanted
        or st.approver != record.decided_by
    ):
        raise _error("the approver's statement does not match the record")
