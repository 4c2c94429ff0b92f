"""Append-only, hash-linked audit records and their offline verification.

Each entry's body holds its sequence number and the digest of the previous
entry; its own digest is ``sha256(JCS(body))`` over *every* field, so no field
(decision, reason codes, proposal digest, policy...) can be edited unnoticed.
Deleting or reordering entries breaks the sequence or the links. Cutting off the
tail is caught by the store's head record only if the head was left alone: an
attacker who can write the database can fix the head too. What a signed checkpoint
(kept outside the database) covers is protected against truncation; entries after
the newest checkpoint are not. Take checkpoints regularly (``execauth audit
checkpoint``) and verify against the latest one.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._b64 import b64url_decode, b64url_encode
from .canonical import CanonicalizationError, canonicalize_trusted, digest, digest_bytes, is_digest, signing_input
from .errors import AuditIntegrityError, ConfigurationError
from .keys import KeySet, KeyStatus, Signer

GENESIS = "sha256:" + "0" * 64
AUDIT_VERSION = "execauth.audit/1"
EVENTS = frozenset({"decision", "denial", "execution", "result", "approval", "ledger"})


@dataclass(frozen=True)
class AuditEntry:
    """One record of the log: its body (what was hashed) and its digest."""

    seq: int
    digest: str
    body: Mapping[str, Any]

    @property
    def executed(self) -> bool:
        return bool(self.body["executed"])

    @property
    def event(self) -> str:
        return str(self.body["event"])


def make_body(event: Mapping[str, Any], *, seq: int, prev: str) -> dict[str, Any]:
    """Build the body of entry ``seq`` from an event, checking its shape."""
    kind = event.get("event")
    if kind not in EVENTS:
        raise ValueError(f"unknown audit event {kind!r}")
    if not isinstance(event.get("executed"), bool):
        raise ValueError("an audit event must say explicitly whether it executed")
    if not isinstance(event.get("time"), int):
        raise ValueError("an audit event needs an integer time")
    body = dict(event)
    body.update(v=AUDIT_VERSION, seq=seq, prev=prev)
    return body


def entry_for(body: dict[str, Any]) -> AuditEntry:
    return AuditEntry(seq=body["seq"], digest=digest_bytes(canonical_body(body)), body=body)


class AuditLog(Protocol):
    """An append-only, hash-linked log.

    ``append`` is atomic: two writers can never produce two entries with one
    sequence number or fork the chain. It raises ``StoreUnavailable`` when the
    entry could not be made durable.
    """

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        """Add an event; returns the stored entry."""
        ...

    def head(self) -> tuple[int, str]:
        """``(seq, digest)`` of the last entry, ``(0, GENESIS)`` when empty."""
        ...

    def entries(self, start: int = 1) -> Iterator[AuditEntry]:
        """Entries in sequence order from ``start``."""
        ...


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement: "the log's entry ``seq`` has digest ``digest``"."""

    seq: int
    digest: str
    time: int
    kid: str
    signature: str

    def signed_part(self) -> dict[str, Any]:
        return {
            "v": "execauth.checkpoint/1",
            "seq": self.seq,
            "digest": self.digest,
            "time": self.time,
            "kid": self.kid,
        }

    def to_json(self) -> dict[str, Any]:
        return {**self.signed_part(), "signature": self.signature}

    @classmethod
    def sign(cls, log: AuditLog, signer: Signer, *, now: int, head: tuple[int, str] | None = None) -> Checkpoint:
        """Sign the log's head, or ``head`` (a ``(seq, digest)`` just verified, so
        that appends made since by other writers are not vouched for unread)."""
        seq, head_digest = head if head is not None else log.head()
        unsigned = cls(seq=seq, digest=head_digest, time=now, kid=signer.kid, signature="")
        sig = signer.sign(signing_input("checkpoint", unsigned.signed_part()))
        return cls(seq=seq, digest=head_digest, time=now, kid=signer.kid, signature=b64url_encode(sig))

    @classmethod
    def from_json(cls, data: Any, keys: KeySet) -> Checkpoint:
        """Parse a checkpoint and verify its signature with a trusted key.

        Raises:
            ConfigurationError: malformed, or not signed by a trusted, unrevoked key.
        """
        fields = {"v", "seq", "digest", "time", "kid", "signature"}
        if not isinstance(data, dict) or set(data) != fields or data["v"] != "execauth.checkpoint/1":
            raise ConfigurationError("not an execauth checkpoint")
        if not all(isinstance(data[k], int) and not isinstance(data[k], bool) for k in ("seq", "time")):
            raise ConfigurationError("checkpoint seq/time must be integers")
        if not is_digest(data["digest"]) and data["digest"] != GENESIS:
            raise ConfigurationError("checkpoint digest malformed")
        cp = cls(
            seq=data["seq"],
            digest=data["digest"],
            time=data["time"],
            kid=str(data["kid"]),
            signature=str(data["signature"]),
        )
        key = keys.get(cp.kid)
        if key is None or key.status is KeyStatus.REVOKED:
            raise ConfigurationError("checkpoint is not signed by a trusted key")
        try:
            sig = b64url_decode(cp.signature)
        except ValueError as exc:
            raise ConfigurationError("checkpoint signature malformed") from exc
        if not key.verify(signing_input("checkpoint", cp.signed_part()), sig):
            raise ConfigurationError("checkpoint signature does not verify")
        return cp


def verify_chain(
    entries: Iterable[AuditEntry],
    *,
    checkpoint: Checkpoint | None = None,
    expected_head: tuple[int, str] | None = None,
) -> tuple[int, str]:
    """Verify a chain of entries from seq 1; returns the verified ``(seq, digest)``.

    Args:
        checkpoint: a signed checkpoint; entries it covers must match it.
        expected_head: the store's own head record, if it keeps one.

    Raises:
        AuditIntegrityError: at the first sequence number that does not verify.
    """
    prev_seq, prev_digest = 0, GENESIS
    at_checkpoint = None
    for entry in entries:
        seq = prev_seq + 1
        body = entry.body
        if entry.seq != seq or body.get("seq") != seq:
            raise AuditIntegrityError(seq, f"expected seq {seq}, found {body.get('seq')!r} (deleted or reordered)")
        try:
            actual = digest(dict(body))
        except CanonicalizationError as exc:
            raise AuditIntegrityError(seq, f"body is not canonical JSON: {exc}") from exc
        if actual != entry.digest:
            raise AuditIntegrityError(seq, "body does not match its digest (edited)")
        if body.get("prev") != prev_digest:
            raise AuditIntegrityError(seq, "link to the previous entry is broken")
        if (
            body.get("v") != AUDIT_VERSION
            or body.get("event") not in EVENTS
            or not isinstance(body.get("executed"), bool)
        ):
            raise AuditIntegrityError(seq, "not a well-formed audit entry")
        if checkpoint is not None and seq == checkpoint.seq:
            at_checkpoint = entry.digest
            if entry.digest != checkpoint.digest:
                raise AuditIntegrityError(seq, "entry differs from the signed checkpoint")
        prev_seq, prev_digest = seq, entry.digest
    if checkpoint is not None and checkpoint.seq > 0 and at_checkpoint is None:
        raise AuditIntegrityError(prev_seq + 1, f"log ends before the checkpoint at seq {checkpoint.seq} (truncated)")
    if expected_head is not None and expected_head != (prev_seq, prev_digest):
        if expected_head[0] > prev_seq:
            raise AuditIntegrityError(
                prev_seq + 1, f"log ends before its head record at seq {expected_head[0]} (truncated)"
            )
        raise AuditIntegrityError(expected_head[0], "head record does not match the chain")
    return prev_seq, prev_digest


def canonical_body(body: Mapping[str, Any]) -> bytes:
    """Bytes stored for a body (canonical, so the stored text is the hashed text)."""
    return canonicalize_trusted(dict(body))


def body_digest(raw: bytes) -> str:
    return digest_bytes(raw)


def body_template(event: Mapping[str, Any]) -> tuple[bytes, bytes, bytes]:
    """The entry's canonical bytes, cut around the values of ``prev`` and ``seq``:
    ``a + prev + b + str(seq) + c`` is ``canonical_body(make_body(event, seq=seq, prev=prev))``
    for every head, so a writer that lost a race re-hashes without re-canonicalizing
    (and a server can hash what it splices).

    JCS orders keys by name alone, a digest and an integer need no escaping, and
    ``"prev":"`` / ``"seq":`` with a bare quote appear only as top-level keys (quotes
    inside strings are escaped), so the server can splice the real head in and get
    exactly the canonical bytes of the finished entry. Random markers make the cut
    points unambiguous.
    """
    while True:
        prev_mark = "execauth-prev-" + secrets.token_hex(16)
        seq_mark = 10**15 + secrets.randbelow(2**53 - 10**15)
        raw = canonical_body(make_body(event, seq=seq_mark, prev=prev_mark))
        prev_at, seq_at = f'"prev":"{prev_mark}"'.encode(), f'"seq":{seq_mark}'.encode()
        if raw.count(prev_at) == 1 and raw.count(seq_at) == 1:
            break
    p = raw.index(prev_at) + len(b'"prev":"')
    q = raw.index(seq_at) + len(b'"seq":')
    if p > q:  # pragma: no cover - "prev" sorts before "seq" in JCS
        raise AssertionError("unexpected key order")
    return raw[:p], raw[p + len(prev_mark) : q], raw[q + len(str(seq_mark)) :]
