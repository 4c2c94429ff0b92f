"""The audit log verifier: every entry against the hash chain, the Merkle tree and
every signed checkpoint; it names the first bad record and never says "ok" for a log
it could not check. Also the export bundle and its offline verification.

What it checks, in order (the first failure is reported):

1. every checkpoint's signature (trusted keys only) and that no two checkpoints
   disagree (same size, different roots: a fork);
2. the chain: seq continuity, each body's digest, each ``prev`` link, the head record
   (and that no entry lies beyond it);
3. the Merkle root recomputed from the entries at every checkpoint's size; on a
   mismatch the store's own tree (authenticated against the signed root, node by
   node) locates the first differing record; entries missing under a checkpoint are
   a truncation;
4. the store's tree against the entries (a damaged tree would give proofs that fail);
5. the unsigned tail: entries after the newest checkpoint, and its age, against the
   ``max_unsigned`` / ``max_age`` limits.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import tlog
from .audit import AUDIT_VERSION, EVENTS, GENESIS, AuditEntry, canonical_body
from .canonical import CanonicalizationError, canonicalize_trusted, digest, digest_bytes, loads_strict
from .errors import AuditIntegrityError, StoreUnavailable
from .keys import KeySet
from .tlog import Frontier, leaf_hash, node_hash
from .tlog_checkpoint import CheckpointError, SignedCheckpoint, open_checkpoint

__all__ = ["BUNDLE_VERSION", "Report", "export_bundle", "verify_bundle", "verify_log"]

BUNDLE_VERSION = "execauth.audit-bundle/1"
Progress = Callable[[int, int], None]


@dataclass
class Report:
    """What the verifier found. ``ok`` is True only if every check passed."""

    ok: bool
    records: int = 0
    head: str | None = None
    checkpoint_seq: int | None = None
    first_bad_seq: int | None = None
    message: str = ""
    tree_root: str | None = None
    checkpoints: int = 0
    unsigned: int | None = None
    checkpoint_age: int | None = None
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        if not self.ok:
            # A failure says where and why; counts of a log that does not verify mean nothing.
            return {"ok": False, "first_bad_seq": self.first_bad_seq, "message": self.message}
        out: dict[str, Any] = {
            "ok": self.ok,
            "records": self.records,
            "head": self.head,
            "checkpoint_seq": self.checkpoint_seq,
            "tree_root": self.tree_root,
            "checkpoints_checked": self.checkpoints,
            "unsigned_records": self.unsigned,
            "checkpoint_age": self.checkpoint_age,
        }
        if self.warnings:
            out["warnings"] = self.warnings
        return out


class _Bad(Exception):
    def __init__(self, seq: int | None, message: str) -> None:
        super().__init__(message)
        self.seq, self.message = seq, message


def _open_all(notes: Iterable[str | bytes], keys: KeySet, origin: str | None) -> list[SignedCheckpoint]:
    opened: list[SignedCheckpoint] = []
    for i, note in enumerate(notes, 1):
        try:
            opened.append(open_checkpoint(note, keys, origin=origin))
        except CheckpointError as exc:
            raise _Bad(None, f"checkpoint #{i}: {exc} (forged or damaged)") from None
    by_size: dict[int, SignedCheckpoint] = {}
    for cp in opened:
        seen = by_size.setdefault(cp.size, cp)
        if seen.root != cp.root:
            raise _Bad(cp.size if cp.size else None, f"forked checkpoints: two signed roots for size {cp.size}")
        if cp.time > seen.time:
            by_size[cp.size] = cp  # the same tree signed again later: the age counts from then
    origins = {cp.origin for cp in opened}
    if len(origins) > 1:
        raise _Bad(None, f"checkpoints of different logs: {sorted(origins)}")
    return sorted(by_size.values(), key=lambda c: c.size)


def _guarded(entries: Iterator[AuditEntry], count: list[int]) -> Iterator[AuditEntry]:
    """Entries, with any failure to read one turned into an error naming it."""
    while True:
        try:
            entry = next(entries)
        except StopIteration:
            return
        except (AuditIntegrityError, StoreUnavailable):
            raise
        except (TypeError, ValueError, KeyError, AttributeError, UnicodeError, IndexError) as exc:
            raise AuditIntegrityError(
                count[0] + 1, f"stored record is malformed: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(entry.seq, int) or not isinstance(entry.digest, str) or not isinstance(entry.body, Mapping):
            raise AuditIntegrityError(count[0] + 1, "stored record has the wrong types")
        count[0] += 1
        yield entry


def _subtree(leaves: Sequence[bytes], lo: int, hi: int) -> bytes | None:
    """MTH over leaves[lo:hi]; None if some of those leaves are not there."""
    if hi > len(leaves):
        return None
    return tlog.root_from_leaves(leaves[lo:hi])


def _locate(cp: SignedCheckpoint, leaves: Sequence[bytes], log: Any) -> tuple[int, int, bool]:
    """The first leaf range [lo, hi) where the entries differ from the checkpoint.

    Walks down from the signed root, trusting a stored node only when it hashes up to
    what is already trusted. Returns ``exact=False`` when the stored tree was rewritten
    too (the difference is then somewhere in [lo, hi))."""
    fetch = getattr(log, "stored_nodes", None)
    lo, hi, trusted = 0, cp.size, cp.root
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        mid = lo + k
        if fetch is None:
            return lo, hi, False
        lkeys, rkeys = tlog.range_keys(lo, mid), tlog.range_keys(mid, hi)
        try:
            nodes = fetch([*lkeys, *rkeys])
        except StoreUnavailable:
            return lo, hi, False
        if any(key not in nodes for key in (*lkeys, *rkeys)):
            return lo, hi, False
        left = nodes[lkeys[0]]
        parts = [nodes[key] for key in rkeys]
        right = parts[-1]
        for part in reversed(parts[:-1]):
            right = node_hash(part, right)
        if node_hash(left, right) != trusted:
            return lo, hi, False
        if _subtree(leaves, lo, mid) != left:
            hi, trusted = mid, left
        else:
            lo, trusted = mid, right
    return lo, hi, True


def verify_log(
    log: Any,
    *,
    keys: KeySet | None = None,
    origin: str | None = None,
    checkpoints: Iterable[str | bytes] = (),
    stored_checkpoints: bool = True,
    legacy_checkpoint: Any = None,
    now: int | None = None,
    max_unsigned: int | None = None,
    max_age: int | None = None,
    progress: Progress | None = None,
) -> Report:
    """Verify a whole audit log. Never raises for a bad log: the report says what is wrong.

    Args:
        log: an audit log (any backend).
        keys: trusted keys for checkpoint signatures; without them stored checkpoints
            cannot be checked and the whole log counts as unsigned.
        origin: the log's checkpoint origin (any if ``None``).
        checkpoints: checkpoint notes kept outside the store (safer: the attacker
            who can write the database cannot delete them).
        stored_checkpoints: also check the checkpoints the store holds.
        legacy_checkpoint: an :class:`~execauth_core.audit.Checkpoint` (the older JSON
            checkpoint of a chain head).
        now: for ``max_age`` and the reported age.
        max_unsigned: fail when more entries than this follow the newest checkpoint.
        max_age: fail when the newest checkpoint is older than this many seconds.
        progress: called as ``progress(done, total)`` while reading entries.

    Raises:
        StoreUnavailable: the store could not be read (nothing was verified).
    """
    report = Report(ok=False)
    try:
        notes = list(checkpoints)
        if stored_checkpoints and hasattr(log, "checkpoints"):
            notes += log.checkpoints()
        if notes and keys is None:
            report.warnings.append(f"{len(notes)} checkpoints not checked: no trusted keys given")
            notes = []
        cps = _open_all(notes, keys, origin) if keys is not None else []
        report.checkpoints = len(cps)
        _verify(log, cps, legacy_checkpoint, report, progress)
        newest = cps[-1] if cps else None
        report.checkpoint_seq = newest.size if newest else (legacy_checkpoint.seq if legacy_checkpoint else None)
        report.unsigned = report.records - (report.checkpoint_seq or 0)
        if newest is not None and now is not None:
            report.checkpoint_age = max(0, now - newest.time)
        if max_unsigned is not None and report.unsigned > max_unsigned:
            raise _Bad(
                (report.checkpoint_seq or 0) + 1,
                f"{report.unsigned} records after the newest checkpoint, more than --max-unsigned {max_unsigned}",
            )
        if max_age is not None:
            if newest is None:
                raise _Bad(1 if report.records else None, "no signed checkpoint, so no checkpoint age to allow")
            if report.checkpoint_age is not None and report.checkpoint_age > max_age:
                raise _Bad(
                    newest.size + 1,
                    f"the newest checkpoint is {report.checkpoint_age} s old, more than --max-age {max_age}",
                )
    except _Bad as bad:
        report.ok, report.first_bad_seq, report.message = False, bad.seq, bad.message
        return report
    except AuditIntegrityError as exc:
        report.ok, report.first_bad_seq, report.message = False, exc.seq, str(exc)
        return report
    report.ok = True
    return report


def _verify(log: Any, cps: list[SignedCheckpoint], legacy: Any, report: Report, progress: Progress | None) -> None:
    head = log.head()
    size = head[0]
    leaves: list[bytes] = []
    frontier = Frontier()
    roots: dict[int, bytes] = {}
    wanted = {cp.size for cp in cps}
    count = [0]

    # The chain checks of audit.verify_chain, with each body canonicalized once for
    # both its digest and its leaf.
    seq, last = 0, GENESIS
    at_legacy = None
    for entry in _guarded(iter(log.entries()), count):
        if entry.seq > size:
            break
        n = seq + 1
        body = entry.body
        if entry.seq != n or body.get("seq") != n:
            raise AuditIntegrityError(n, f"expected seq {n}, found {body.get('seq')!r} (deleted or reordered)")
        try:
            raw = canonical_body(body)
        except CanonicalizationError as exc:
            raise AuditIntegrityError(n, f"body is not canonical JSON: {exc}") from exc
        if digest_bytes(raw) != entry.digest:
            raise AuditIntegrityError(n, "body does not match its digest (edited)")
        if body.get("prev") != last:
            raise AuditIntegrityError(n, "link to the previous entry is broken")
        if (
            body.get("v") != AUDIT_VERSION
            or body.get("event") not in EVENTS
            or not isinstance(body.get("executed"), bool)
        ):
            raise AuditIntegrityError(n, "not a well-formed audit entry")
        if legacy is not None and n == legacy.seq:
            at_legacy = entry.digest
            if entry.digest != legacy.digest:
                raise AuditIntegrityError(n, "entry differs from the signed checkpoint")
        leaf = leaf_hash(raw)
        leaves.append(leaf)
        frontier.append(leaf)
        if n in wanted:
            roots[n] = frontier.root()
        if progress is not None and n % 4096 == 0:
            progress(n, size)
        seq, last = n, entry.digest
    if legacy is not None and legacy.seq > 0 and at_legacy is None:
        raise AuditIntegrityError(seq + 1, f"log ends before the checkpoint at seq {legacy.seq} (truncated)")
    if progress is not None:
        progress(frontier.size, size)
    report.records, report.head = seq, last
    if wanted:
        roots.setdefault(0, tlog.EMPTY_ROOT)
    # Checkpoints the entries do not reach: truncated (or, if something earlier
    # differs, that first).
    for cp in cps:
        if cp.size > seq:
            lo, hi, exact = _locate(cp, leaves, log)
            if lo < seq:
                _report_difference(cp, lo, hi, exact)
            raise _Bad(seq + 1, f"log ends at seq {seq}, before the signed checkpoint of size {cp.size} (truncated)")
    bad = [cp for cp in cps if roots[cp.size] != cp.root]
    if bad:
        first = bad[0]
        good_later = [cp for cp in cps if cp.size > first.size and cp not in bad]
        if good_later:
            raise _Bad(
                first.size,
                f"forked checkpoints: the signed root of size {first.size} is not consistent with the "
                f"newer signed checkpoint of size {good_later[0].size}, which the entries match",
            )
        lo, hi, exact = _locate(first, leaves, log)
        _report_difference(first, lo, hi, exact)
    if (seq, last) != head:
        if head[0] > seq:
            raise _Bad(seq + 1, f"log ends before its head record at seq {head[0]} (truncated)")
        raise _Bad(head[0], "head record does not match the chain")
    _check_beyond_head(log, size)
    _check_stored_tree(log, seq, frontier, leaves, report)


def _report_difference(cp: SignedCheckpoint, lo: int, hi: int, exact: bool) -> None:
    if exact:
        raise _Bad(
            lo + 1, f"entry differs from the signed checkpoint of size {cp.size} (edited, replaced or re-hashed)"
        )
    raise _Bad(
        lo + 1,
        f"entries {lo + 1}..{hi} differ from the signed checkpoint of size {cp.size} (edited and re-hashed); "
        "the store's tree was rewritten too, so the record cannot be named more closely",
    )


def _check_beyond_head(log: Any, size: int) -> None:
    """Entries past the head record: a live writer's, or a head moved back / deleted."""
    try:
        nxt = next(iter(log.entries(size + 1)), None)
    except (AuditIntegrityError, TypeError, ValueError):
        nxt = object()
    if nxt is None:
        return
    again = log.head()[0]
    if again <= size:
        raise _Bad(size + 1, f"entries lie beyond the head record at seq {size} (head moved back or deleted)")


def _check_stored_tree(log: Any, seq: int, frontier: Frontier, leaves: list[bytes], report: Report) -> None:
    report.tree_root = base64.b64encode(frontier.root()).decode()
    root_at = getattr(log, "root_at", None)
    if root_at is None or seq == 0:
        return
    try:
        stored = root_at(seq)
    except StoreUnavailable as exc:
        raise _Bad(None, f"the store's Merkle tree cannot be read: {exc}") from None
    if stored == frontier.root():
        return
    for start in range(0, len(leaves), 1024):
        keys = [(0, i) for i in range(start, min(start + 1024, len(leaves)))]
        stored_leaves = log.stored_nodes(keys)
        for key in keys:
            if stored_leaves.get(key) != leaves[key[1]]:
                raise _Bad(
                    key[1] + 1, "entry differs from the store's Merkle tree (edited and re-hashed, tree left alone)"
                )
    raise _Bad(None, "the store's Merkle tree is damaged: its proofs would not verify")


# --- export bundle ---------------------------------------------------------------------


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def export_bundle(log: Any, note: str, keys: KeySet, *, first: int = 1, last: int | None = None) -> Iterator[str]:
    """JSON Lines of a bundle: a header with the checkpoint, then each entry with its
    inclusion proof at the checkpoint's size (see docs/audit.md)."""
    cp = open_checkpoint(note, keys)
    last = cp.size if last is None else min(last, cp.size)
    if first < 1 or first > max(last, 1):
        raise ValueError(f"nothing to export in seq {first}..{last}")
    if log.root_at(cp.size) != cp.root:
        raise ValueError("the store's tree does not match the checkpoint: verify the log first")
    yield canonicalize_trusted({"v": BUNDLE_VERSION, "checkpoint": cp.note, "first": first, "last": last}).decode()
    for entry in log.entries(first):
        if entry.seq > last:
            break
        proof = log.inclusion_proof(entry.seq - 1, cp.size)
        line = {"seq": entry.seq, "digest": entry.digest, "body": dict(entry.body), "proof": [_b64(p) for p in proof]}
        yield canonicalize_trusted(line).decode("utf-8")


def verify_bundle(lines: Iterable[str | bytes], keys: KeySet, *, origin: str | None = None) -> Report:
    """Verify an export bundle offline with the public keys alone."""
    report = Report(ok=False)
    it = iter(lines)
    n = 0
    try:
        try:
            header = loads_strict(next(it))
        except StopIteration:
            raise _Bad(None, "empty bundle") from None
        except CanonicalizationError as exc:
            raise _Bad(None, f"bundle header is not JSON: {exc}") from None
        if not isinstance(header, dict) or header.get("v") != BUNDLE_VERSION:
            raise _Bad(None, "not an execauth audit bundle")
        note, first, last = header.get("checkpoint"), header.get("first"), header.get("last")
        if not isinstance(note, str) or not isinstance(first, int) or not isinstance(last, int):
            raise _Bad(None, "bundle header is malformed")
        try:
            cp = open_checkpoint(note, keys, origin=origin)
        except CheckpointError as exc:
            raise _Bad(None, f"bundle checkpoint: {exc}") from None
        report.checkpoints, report.checkpoint_seq = 1, cp.size
        if not (1 <= first <= last <= cp.size):
            raise _Bad(None, f"bundle range {first}..{last} is not inside the checkpoint's {cp.size} entries")
        prev: str | None = None
        expect = first
        for raw in it:
            if not raw.strip():
                continue
            try:
                item = loads_strict(raw)
            except CanonicalizationError as exc:
                raise _Bad(expect, f"bundle line is not JSON: {exc}") from None
            if not isinstance(item, dict) or set(item) != {"seq", "digest", "body", "proof"}:
                raise _Bad(expect, "bundle line is not an entry with its proof")
            seq, dig, body, proof = item["seq"], item["digest"], item["body"], item["proof"]
            if seq != expect or not isinstance(body, dict) or body.get("seq") != seq:
                raise _Bad(expect, f"expected entry {expect}, found {seq!r} (deleted or reordered)")
            try:
                if digest(body) != dig:
                    raise _Bad(seq, "body does not match its digest (edited)")
                leaf = leaf_hash(canonical_body(body))
            except CanonicalizationError as exc:
                raise _Bad(seq, f"body is not canonical JSON: {exc}") from None
            if prev is not None and body.get("prev") != prev:
                raise _Bad(seq, "link to the previous entry is broken")
            try:
                path = [base64.b64decode(p, validate=True) for p in proof]
                tlog.verify_inclusion(leaf, seq - 1, cp.size, path, cp.root)
            except (binascii.Error, ValueError, TypeError) as exc:
                raise _Bad(seq, f"inclusion proof does not verify: {exc}") from None
            prev, expect, n = dig, expect + 1, n + 1
        if expect != last + 1:
            raise _Bad(expect, f"bundle ends at {expect - 1}, before its stated last entry {last} (truncated)")
    except _Bad as bad:
        report.first_bad_seq, report.message, report.records = bad.seq, bad.message, n
        return report
    report.ok, report.records, report.head = True, n, prev
    report.tree_root = _b64(cp.root)
    return report
