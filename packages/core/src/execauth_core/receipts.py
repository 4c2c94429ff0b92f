"""Signed execution receipts: what happened after ALLOW.

An :class:`ExecutionReceipt` (``execauth.receipt/1``) says which token ran which
proposal, under which idempotency key, whether the tool returned or raised, a digest
of what it returned, and when it started and ended. The authority's key signs it, over
``b"execauth:receipt/1\\n" + JCS(receipt without signature)`` (the wire convention of
every signed non-JWS object), so anyone holding the JWKS can check it offline
(:func:`verify_receipt`, ``execauth receipt verify``). The guard appends it to the
audit log inside the ``result`` entry of the call.

The result digest, in order of preference:

* ``source: "jcs"``: ``sha256`` of the RFC 8785 form of a JSON value the tool returned;
* ``source: "declared"``: a result that is not JSON but carries a ``result_hash``
  attribute (``sha256:<64 hex>``): the tool's own digest of what it produced;
* ``null``, with ``result_digest_reason`` saying why (not JSON and nothing declared;
  the call raised).
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic
from pydantic import Field

from ._b64 import b64url_decode, b64url_encode
from .canonical import CanonicalizationError, canonicalize, digest_bytes, is_digest, loads_strict, signing_input
from .errors import AuthorizationError, ExecAuthError
from .keys import KeySet, KeyStatus, Signer
from .messages import Digest, Name, UnixTime, _Wire
from .reasons import ReasonCode as R

__all__ = ["ExecutionFailed", "ExecutionReceipt", "ReceiptError", "issue_receipt", "result_digest", "verify_receipt"]

RECEIPT_TYPE = "receipt"


class ExecutionReceipt(_Wire):
    """A signed statement of one execution's outcome."""

    v: Literal["execauth.receipt/1"] = "execauth.receipt/1"
    iss: Name = Field(description="The authority that signed it (the token issuer).")
    kid: str = Field(description="Key id (RFC 7638 thumbprint) of the signing key.")
    token_id: Name = Field(description="jti of the token the call ran under.")
    proposal_digest: Digest = Field(description="Digest of the proposal that ran.")
    tool: Name
    idempotency_key: str | None = Field(description="The call's idempotency key, when the guard assigned one.")
    execution_seq: int = Field(ge=0, description="Audit seq of the call's execution entry.")
    status: Literal["succeeded", "failed"]
    error: str | None = Field(default=None, description="Type name of the exception, when the call raised.")
    result_digest: Digest | None = Field(description="sha256 of the result (see result_digest_source).")
    result_digest_source: Literal["jcs", "declared"] | None = Field(
        description="jcs: RFC 8785 of the JSON result; declared: the result's own result_hash."
    )
    result_digest_reason: str | None = Field(default=None, description="Why result_digest is null.")
    started_at: UnixTime
    ended_at: UnixTime
    signature: str = Field(
        description="base64url Ed25519 over b'execauth:receipt/1\\n' + JCS(receipt without signature)."
    )

    def signed_part(self) -> dict[str, Any]:
        """The fields the signature covers."""
        return self.model_dump(mode="json", exclude={"signature"})


class ReceiptError(AuthorizationError):
    """A receipt did not verify (reason ``RECEIPT_INVALID``)."""


class ExecutionFailed(ExecAuthError):
    """The tool raised under ``guard.run(..., receipt=True)``: the receipt (status
    ``failed``) is on ``.receipt``, the tool's exception is ``__cause__``."""

    def __init__(self, receipt: ExecutionReceipt | None, cause: BaseException) -> None:
        super().__init__(f"the tool raised {type(cause).__name__}")
        self.receipt = receipt


def result_digest(result: Any) -> tuple[str | None, str | None, str | None]:
    """``(digest, source, reason)`` of a tool's result (see the module docstring)."""
    try:
        return digest_bytes(canonicalize(result)), "jcs", None
    except (CanonicalizationError, TypeError, ValueError, RecursionError):
        pass
    try:
        declared = getattr(result, "result_hash", None)
    except Exception:  # noqa: BLE001 - a hostile attribute is "nothing declared"
        declared = None
    if isinstance(declared, str) and is_digest(declared):
        return declared, "declared", None
    return None, None, f"the result ({type(result).__name__}) is not JSON and declares no result_hash"


def issue_receipt(
    signer: Signer,
    *,
    issuer: str,
    token_id: str,
    proposal_digest: str,
    tool: str,
    idempotency_key: str | None,
    execution_seq: int,
    started_at: int,
    ended_at: int,
    result: Any = None,
    error: BaseException | None = None,
) -> ExecutionReceipt:
    """Sign the receipt of one call: ``error`` set means it raised."""
    if error is None:
        digest, source, reason = result_digest(result)
    else:
        digest, source, reason = None, None, f"the call raised {type(error).__name__}"
    fields: dict[str, Any] = {
        "iss": issuer,
        "kid": signer.kid,
        "token_id": token_id,
        "proposal_digest": proposal_digest,
        "tool": tool,
        "idempotency_key": idempotency_key if isinstance(idempotency_key, str) else None,
        "execution_seq": execution_seq,
        "status": "succeeded" if error is None else "failed",
        "error": type(error).__name__ if error is not None else None,
        "result_digest": digest,
        "result_digest_source": source,
        "result_digest_reason": reason,
        "started_at": started_at,
        "ended_at": ended_at,
    }
    unsigned = ExecutionReceipt(**fields, signature="")
    signature = signer.sign(signing_input(RECEIPT_TYPE, unsigned.signed_part()))
    return ExecutionReceipt(**fields, signature=b64url_encode(signature))


_NOT_GIVEN: Any = object()


def verify_receipt(
    receipt: ExecutionReceipt | str | bytes, keys: KeySet, *, result: Any = _NOT_GIVEN
) -> ExecutionReceipt:
    """Check a receipt against configured trusted keys (never a key it carries).

    Args:
        receipt: the receipt, or its JSON.
        result: if given, the receipt's ``result_digest`` must be this result's digest.

    Returns:
        The verified receipt.

    Raises:
        ReceiptError: malformed, unknown or revoked kid, bad signature, inconsistent
            fields, or another result (reason ``RECEIPT_INVALID``).
    """
    if not isinstance(receipt, ExecutionReceipt):
        try:
            loads_strict(receipt)
            receipt = ExecutionReceipt.model_validate_json(receipt, strict=True)
        except (CanonicalizationError, pydantic.ValidationError, TypeError, ValueError) as exc:
            raise ReceiptError(R.RECEIPT_INVALID, f"malformed receipt: {str(exc).splitlines()[0]}") from None
    key = keys.get(receipt.kid) if keys else None
    if key is None:
        raise ReceiptError(R.RECEIPT_INVALID, "the receipt's kid is not in the trusted key set")
    if key.status is KeyStatus.REVOKED:
        raise ReceiptError(R.RECEIPT_INVALID, "the signing key is revoked")
    try:
        signature = b64url_decode(receipt.signature)
    except ValueError:
        raise ReceiptError(R.RECEIPT_INVALID, "undecodable signature") from None
    if len(signature) != 64 or not key.verify(signing_input(RECEIPT_TYPE, receipt.signed_part()), signature):
        raise ReceiptError(R.RECEIPT_INVALID, "signature does not verify")
    if receipt.ended_at < receipt.started_at:
        raise ReceiptError(R.RECEIPT_INVALID, "ended before it started")
    if (receipt.result_digest is None) != (receipt.result_digest_source is None) or (
        receipt.result_digest is None and not receipt.result_digest_reason
    ):
        raise ReceiptError(R.RECEIPT_INVALID, "result digest, source and reason are inconsistent")
    if (receipt.status == "failed") != (receipt.error is not None):
        raise ReceiptError(R.RECEIPT_INVALID, "status and error are inconsistent")
    if result is not _NOT_GIVEN and result_digest(result)[0] != receipt.result_digest:
        raise ReceiptError(R.RECEIPT_INVALID, "the receipt is for another result")
    return receipt
