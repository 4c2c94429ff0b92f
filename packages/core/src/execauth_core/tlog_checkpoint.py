"""Signed checkpoints of the audit log's Merkle tree: C2SP tlog-checkpoint text in a
C2SP signed note, signed with Ed25519.

The note text is::

    <origin>
    <tree size, decimal>
    <root hash, standard base64>
    time <Unix seconds>            (an extension line: when the authority signed it)

followed by a blank line and one signature line per signer::

    — <key name> <base64(key id (4 bytes) || Ed25519 signature of the text)>

The key id is the first four bytes of ``SHA-256(key name || 0x0A || 0x01 || public
key)``; our log signs with the key name equal to its origin. A reader trusts a
checkpoint only when a *configured* key (a JWKS, never a key carried in the note)
signed it under the expected origin; lines from keys it does not know (witness
cosignatures, say) are ignored, and a line from a known key that does not verify
rejects the whole note.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from .clock import SystemClock
from .errors import ConfigurationError, StoreUnavailable
from .keys import KeySet, KeyStatus, Signer, TrustedKey
from .tlog import HASH_SIZE

__all__ = [
    "CheckpointError",
    "CheckpointedLog",
    "Checkpointer",
    "SignedCheckpoint",
    "TreeLog",
    "key_id",
    "open_checkpoint",
    "sign_checkpoint",
    "vkey",
]

SIG_PREFIX = "\u2014 "  # em dash, space
ED25519 = b"\x01"
MAX_NOTE = 16_384
_NAME = re.compile(r"[^\s+]+")


class CheckpointError(ConfigurationError):
    """A checkpoint is malformed or not signed by a trusted key."""


class TreeLog(Protocol):
    """What the checkpointer needs from an audit log with a Merkle tree."""

    def tree_head(self) -> tuple[int, bytes]: ...

    def add_checkpoint(self, note: str, size: int) -> None: ...

    def checkpoints(self) -> list[str]: ...


def key_id(name: str, public_key: bytes) -> bytes:
    """The signed-note key id of an Ed25519 key under ``name``."""
    return hashlib.sha256(name.encode("utf-8") + b"\n" + ED25519 + public_key).digest()[:4]


def vkey(name: str, public_key: bytes) -> str:
    """The signed-note verifier key text ``name+hex(id)+base64(0x01 || key)``, for tools
    of the C2SP ecosystem."""
    return f"{name}+{key_id(name, public_key).hex()}+{base64.b64encode(ED25519 + public_key).decode()}"


@dataclass(frozen=True)
class SignedCheckpoint:
    """A verified (or just signed) checkpoint: ``size`` leaves with Merkle ``root``."""

    origin: str
    size: int
    root: bytes
    time: int
    note: str

    def to_json(self) -> dict[str, Any]:
        return {
            "origin": self.origin,
            "size": self.size,
            "root": base64.b64encode(self.root).decode(),
            "time": self.time,
        }


def _body(origin: str, size: int, root: bytes, time: int) -> str:
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\ntime {time}\n"


def _check_origin(origin: str) -> None:
    if not _NAME.fullmatch(origin):
        raise ConfigurationError(f"a checkpoint origin has no spaces or '+': {origin!r}")


def sign_checkpoint(origin: str, size: int, root: bytes, signer: Signer, *, now: int) -> SignedCheckpoint:
    """Sign "the log ``origin`` has ``size`` entries with Merkle root ``root``"."""
    _check_origin(origin)
    if size < 0 or len(root) != HASH_SIZE:
        raise ValueError("a checkpoint needs a size >= 0 and a 32-byte root")
    text = _body(origin, size, root, now)
    sig = signer.sign(text.encode("utf-8"))
    line = f"{SIG_PREFIX}{origin} {base64.b64encode(key_id(origin, signer.public_key) + sig).decode()}\n"
    return SignedCheckpoint(origin=origin, size=size, root=root, time=now, note=f"{text}\n{line}")


def _trusted(keys: KeySet | Iterable[TrustedKey]) -> list[TrustedKey]:
    return [k for k in keys if k.status is not KeyStatus.REVOKED]


def open_checkpoint(
    note: str | bytes, keys: KeySet | Iterable[TrustedKey], *, origin: str | None = None
) -> SignedCheckpoint:
    """Parse a checkpoint note and verify it against configured keys.

    Args:
        note: the note text (UTF-8).
        keys: the trusted keys; revoked keys verify nothing.
        origin: the log the checkpoint must be of (any origin if ``None``).

    Raises:
        CheckpointError: malformed, of another log, or not signed (under its origin)
            by a trusted key; or a trusted key's signature line does not verify.
    """
    if isinstance(note, bytes):
        if len(note) > MAX_NOTE:
            raise CheckpointError("checkpoint note is too large")
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("checkpoint note is not UTF-8") from None
    if len(note) > MAX_NOTE:
        raise CheckpointError("checkpoint note is too large")
    cut = note.rfind("\n\n")
    if cut < 0 or not note.endswith("\n"):
        raise CheckpointError("not a signed note (no blank line before the signatures)")
    text, sigs = note[: cut + 1], note[cut + 2 :]
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise CheckpointError("checkpoint note holds control characters")
    lines = text.split("\n")[:-1]
    if len(lines) < 3:
        raise CheckpointError("a checkpoint has an origin, a size and a root hash")
    cp_origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not _NAME.fullmatch(cp_origin):
        raise CheckpointError("checkpoint origin is malformed")
    if origin is not None and cp_origin != origin:
        raise CheckpointError(f"checkpoint is of log {cp_origin!r}, not {origin!r}")
    if not re.fullmatch(r"0|[1-9][0-9]{0,18}", size_text):
        raise CheckpointError("checkpoint tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise CheckpointError("checkpoint root hash is not base64") from None
    if len(root) != HASH_SIZE or base64.b64encode(root).decode() != root_text:
        raise CheckpointError("checkpoint root hash is not a base64 SHA-256 hash")
    time = None
    for ext in lines[3:]:
        if ext.startswith("time "):
            if time is not None or not re.fullmatch(r"time (0|[1-9][0-9]{0,18})", ext):
                raise CheckpointError("checkpoint time line is malformed")
            time = int(ext[5:])
    if time is None:
        raise CheckpointError("checkpoint has no time line")
    trusted = _trusted(keys)
    verified = False
    sig_lines = sigs.split("\n")[:-1]
    if not sig_lines or len(sig_lines) > 100:
        raise CheckpointError("a signed note has 1 to 100 signature lines")
    for line in sig_lines:
        if not line.startswith(SIG_PREFIX):
            raise CheckpointError("signature line does not start with an em dash")
        parts = line[len(SIG_PREFIX) :].split(" ")
        if len(parts) != 2 or not _NAME.fullmatch(parts[0]):
            raise CheckpointError("signature line is malformed")
        name = parts[0]
        try:
            blob = base64.b64decode(parts[1], validate=True)
        except (binascii.Error, ValueError):
            raise CheckpointError("signature is not base64") from None
        if len(blob) < 5:
            raise CheckpointError("signature is too short")
        for key in trusted:
            if key_id(name, key.public_key) != blob[:4]:
                continue
            if not key.verify(text.encode("utf-8"), blob[4:]):
                raise CheckpointError(f"signature of trusted key {key.kid} does not verify")
            if not key.valid_at(time):
                raise CheckpointError(f"key {key.kid} was not valid when the checkpoint says it was signed")
            if name == cp_origin:
                verified = True
    if not verified:
        raise CheckpointError("checkpoint is not signed by a trusted key under its origin")
    return SignedCheckpoint(origin=cp_origin, size=int(size_text), root=root, time=time, note=note)


def _peek(note: str) -> tuple[int, int]:
    """``(size, time)`` of a note this log stored, unverified: only for the cadence."""
    lines = note.split("\n")
    times = [int(x[5:]) for x in lines[3:] if x.startswith("time ")]
    return int(lines[1]), times[0]


class Checkpointer:
    """Signs the log's tree head at a cadence and on demand, and stores the note in the log.

    Args:
        log: an audit log with a Merkle tree (every execauth backend).
        signer: the authority's signing key.
        origin: the log's name in its checkpoints (``host/path`` style).
        every: sign once this many entries were appended since the last checkpoint.
        interval: sign once this many seconds passed since the last checkpoint (and
            something was appended).
        shared: other writers (server workers, guard replicas) append to and
            checkpoint the same log: when this one's view says a checkpoint is due, it
            first re-reads the newest stored checkpoint, so that N writers do not each
            sign the same stretch of the log. (Duplicates would not conflict: the tree
            of a given size has one root whoever signs it; this only saves rows. It
            costs reading the stored notes once per due checkpoint.)
    """

    def __init__(
        self,
        log: TreeLog,
        signer: Signer,
        *,
        origin: str,
        every: int | None = None,
        interval: int | None = None,
        clock: Any = None,
        shared: bool = False,
    ) -> None:
        _check_origin(origin)
        for name, value in (("every", every), ("interval", interval)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigurationError(f"checkpoint {name} must be a positive integer or None, not {value!r}")
        self.log, self.signer, self.origin = log, signer, origin
        self.every, self.interval, self.shared = every, interval, shared
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._last: tuple[int, int] | None = None  # (size, time) of the newest checkpoint
        self._started = self._clock.now()  # the interval of a log never checkpointed runs from here
        try:
            self._last = _peek(log.checkpoints()[-1])
        except (IndexError, ValueError, StoreUnavailable):
            pass  # none yet, or unreadable: the first due append signs one

    def checkpoint(self, *, now: int | None = None) -> SignedCheckpoint:
        """Sign the current tree head now and store it."""
        with self._lock:
            return self._sign(self._clock.now() if now is None else now)

    def _sign(self, now: int) -> SignedCheckpoint:
        size, root = self.log.tree_head()
        cp = sign_checkpoint(self.origin, size, root, self.signer, now=now)
        self.log.add_checkpoint(cp.note, size)
        self._last = (size, now)
        return cp

    def due(self, size: int, now: int) -> bool:
        if self._last is None:
            return size > 0 and (
                (self.every is not None and size >= self.every)
                or (self.interval is not None and now - self._started >= self.interval)
            )
        last_size, last_time = self._last
        if size <= last_size:
            return False
        return (self.every is not None and size - last_size >= self.every) or (
            self.interval is not None and now - last_time >= self.interval
        )

    def maybe(self, *, size: int | None = None, now: int | None = None) -> SignedCheckpoint | None:
        """Sign if the cadence says so. A store failure is left for the next call: the
        entries stay unsigned a little longer, which the verifier reports."""
        now = self._clock.now() if now is None else now
        with self._lock:
            if size is None:
                try:
                    size = self.log.tree_head()[0]
                except StoreUnavailable:
                    return None
            if not self.due(size, now):
                return None
            if self.shared:
                try:
                    self._last = max(self._last or (0, 0), _peek(self.log.checkpoints()[-1]))
                except (IndexError, ValueError, StoreUnavailable):
                    pass
                if not self.due(size, now):
                    return None
            try:
                return self._sign(now)
            except StoreUnavailable:
                return None


class CheckpointedLog:
    """An audit log whose appends drive a :class:`Checkpointer`'s cadence.

    Everything else is the wrapped log's. The checkpoint is signed after the append
    returned durable, so a signing or storing failure never loses or fails the entry
    (it is retried on the next append). Note that a guard given this wrapper consumes
    token ids and appends in two steps instead of the joint one-step admission (each
    step is still atomic; the joint form only saves a round trip): for a guard, give
    the :class:`Checkpointer` to the guard instead (``Guard(checkpointer=...)``, or
    ``Guard.local(checkpoint_every=..., checkpoint_interval=...)``), which keeps it.
    """

    def __init__(self, log: Any, checkpointer: Checkpointer) -> None:
        self.log = log
        self.checkpointer = checkpointer

    def append(self, event: Any) -> Any:
        entry = self.log.append(event)
        self.checkpointer.maybe(size=entry.seq)
        return entry

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)
