"""The audit spool: records the audit log could not take, kept on local disk until it can.

When an append to the audit log fails (Redis or PostgreSQL unreachable, a full disk,
a read-only SQLite file), the guard still denies at once and the tool still does not
run; the record goes here instead of being lost, and :meth:`Spool.flush` replays it
into the log, in order and exactly once, when the log is back.

Files (``PATH`` is the spool, e.g. ``data_dir/audit.spool``):

``PATH``
    JSON Lines, append-only while records are pending. Each line is the RFC 8785
    form of ``{"v", "spool", "seq", "prev", "spooled_at", "record", "hash"}``, where
    ``hash = sha256(JCS(line without "hash"))`` and ``prev`` is the previous line's
    hash: a hash chain, so an edited, deleted or reordered line is found by
    :meth:`Spool.verify`. Every append is ``fsync``'d before the guard returns.
``PATH.state``
    Which spool seq was last replayed, the chain's base after compaction, and the
    replay in progress (``pending``). Replaced atomically (write, fsync, rename).
``PATH.flush-lock``
    Held by the one process flushing at a time.

Several processes on one host may share a spool: appends and state changes hold an
exclusive ``flock`` on ``PATH`` (plus a thread lock), a flush also holds
``PATH.flush-lock``.

Exactly once: before appending a batch, the flush writes ``pending = {from, to,
after}`` (``after`` = the log's head seq at that moment) to the state file; each
replayed entry carries ``"spooled": true`` and ``"spool": {"id", "seq", "hash",
"at"}``. After a crash (or an append whose outcome is unknown) the next flush reads
the log's entries after ``after`` to see which of ``from..to`` arrived, and goes on
from there: no record twice, none skipped. When every record is replayed the file is
emptied (compacted); the chain goes on from the base kept in the state file.
"""

from __future__ import annotations

import errno
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .audit import GENESIS, AuditLog
from .canonical import CanonicalizationError, canonicalize, digest_bytes, loads_strict
from .errors import AuditIntegrityError, ConfigurationError, StoreUnavailable

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: a Spool refuses to be created
    fcntl = None  # type: ignore[assignment]

__all__ = ["SPOOL_VERSION", "Spool", "SpoolIntegrityError", "SpoolRecord", "SpoolStatus", "FlushResult"]

SPOOL_VERSION = "execauth.spool/1"
STATE_VERSION = "execauth.spool-state/1"
_LINE_FIELDS = frozenset({"v", "spool", "seq", "prev", "spooled_at", "record", "hash"})
_TAIL_CHUNK = 64 * 1024

log = logging.getLogger("execauth")


class SpoolIntegrityError(AuditIntegrityError):
    """The spool's hash chain does not verify.

    Attributes:
        seq: the spool sequence number where it breaks (the expected one, for a gap).
        line: the 1-based line of the spool file.
    """

    def __init__(self, seq: int, line: int, message: str) -> None:
        self.seq = seq
        self.line = line
        Exception.__init__(self, f"spool chain broken at line {line} (seq {seq}): {message}")


@dataclass(frozen=True)
class SpoolRecord:
    """One verified line of the spool."""

    seq: int
    hash: str
    spooled_at: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class SpoolStatus:
    """What :meth:`Spool.status` reports."""

    path: str
    pending: int
    bytes: int
    last_seq: int
    replayed_seq: int
    oldest_spooled_at: int | None
    oldest_age: int | None
    torn_tail_bytes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "pending": self.pending,
            "bytes": self.bytes,
            "last_seq": self.last_seq,
            "replayed_seq": self.replayed_seq,
            "oldest_spooled_at": self.oldest_spooled_at,
            "oldest_age_seconds": self.oldest_age,
            "torn_tail_bytes": self.torn_tail_bytes,
        }


@dataclass(frozen=True)
class FlushResult:
    """What one :meth:`Spool.flush` did.

    Attributes:
        replayed: records appended to the log by this call.
        recovered: records an earlier, interrupted flush had appended (found in the
            log, not appended again).
        remaining: records still waiting (a ``limit`` was reached or the log failed).
        audit_seqs: log sequence numbers of the records this call appended.
        error: why the flush stopped early, or ``None``.
        busy: another flush was running, so this one did nothing (``wait=False``).
    """

    replayed: int
    recovered: int
    remaining: int
    audit_seqs: tuple[int, ...]
    error: str | None = None
    busy: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "replayed": self.replayed,
            "recovered": self.recovered,
            "remaining": self.remaining,
            "audit_seqs": list(self.audit_seqs),
            "error": self.error,
            "busy": self.busy,
        }


@dataclass
class _State:
    spool: str
    replayed: int
    base_seq: int
    base_hash: str
    pending: dict[str, int] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "spool": self.spool,
            "replayed": self.replayed,
            "base_seq": self.base_seq,
            "base_hash": self.base_hash,
            "pending": self.pending,
        }


class Spool:
    """A local, fsync'd, hash-chained spool of audit records (see the module docstring).

    Nothing touches the disk until the first :meth:`append`: a guard configured with a
    spool that never needs it leaves no file behind.

    Args:
        path: the spool file; ``PATH.state`` and ``PATH.flush-lock`` go next to it.
        flush_batch: records replayed between two state-file updates.
        check_every: seconds between two looks at the file by :meth:`maybe_flush`
            in a process that did not spool anything itself.
        clock: seconds since the epoch (the ``spooled_at`` of each line).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_batch: int = 256,
        check_every: float = 1.0,
        clock: Any = None,
    ) -> None:
        if flush_batch < 1:
            raise ConfigurationError("flush_batch must be at least 1")
        if fcntl is None:  # pragma: no cover
            raise ConfigurationError("the audit spool needs POSIX file locks (fcntl)")
        self.path = Path(path)
        self.state_path = Path(f"{self.path}.state")
        self.lock_path = Path(f"{self.path}.flush-lock")
        self.flush_batch = flush_batch
        self.check_every = check_every
        self._now = clock if clock is not None else (lambda: int(time.time()))
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._dirty = self.path.exists()
        self._next_check = 0.0
        self._backoff_until = 0.0

    def __repr__(self) -> str:
        return f"Spool({os.fspath(self.path)!r})"

    # -- locks and files -----------------------------------------------------

    @contextmanager
    def _locked(self, *, create: bool) -> Iterator[int | None]:
        """The spool file's descriptor, under the thread lock and an exclusive flock.
        ``None`` when the file does not exist and ``create`` is false."""
        with self._lock:
            flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
            existed = self.path.exists()
            try:
                fd = os.open(self.path, flags, 0o600)
            except FileNotFoundError:
                if create:
                    raise
                yield None
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if create and not existed:
                    _fsync_dir(self.path.parent)
                yield fd
            finally:
                os.close(fd)  # also releases the flock

    def _read_state(self, fd: int | None) -> _State | None:
        """The state file, or one derived from the spool's first line if it is missing."""
        try:
            raw = self.state_path.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            try:
                data = loads_strict(raw)
                if not isinstance(data, dict) or data.get("v") != STATE_VERSION:
                    raise ValueError("not a spool state file")
                pending = data.get("pending")
                return _State(
                    spool=str(data["spool"]),
                    replayed=int(data["replayed"]),
                    base_seq=int(data["base_seq"]),
                    base_hash=str(data["base_hash"]),
                    pending=None if pending is None else {k: int(v) for k, v in dict(pending).items()},
                )
            except (CanonicalizationError, ValueError, KeyError, TypeError) as exc:
                raise SpoolIntegrityError(0, 0, f"state file {self.state_path} is unreadable: {exc}") from None
        if fd is None:
            return None
        first = _first_line(fd)
        if first is None:
            return None
        # The state file was lost: start from the first line (nothing of it replayed).
        log.warning("execauth: spool state file %s missing; rebuilding it from the spool", self.state_path)
        line = _parse_line(first, 1)
        return _State(
            spool=str(line["spool"]),
            replayed=int(line["seq"]) - 1,
            base_seq=int(line["seq"]) - 1,
            base_hash=str(line["prev"]),
            pending=None,
        )

    def _write_state(self, state: _State) -> None:
        tmp = Path(f"{self.state_path}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, canonicalize(state.to_json()) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        _fsync_dir(self.state_path.parent)

    # -- writing -------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> int:
        """Add one audit record (the event the log refused); durable when this returns.

        Returns:
            The record's spool sequence number.

        Raises:
            StoreUnavailable: it could not be written (full disk, read-only folder...);
                nothing partial is left behind.
        """
        try:
            with self._locked(create=True) as fd:
                assert fd is not None
                size = os.fstat(fd).st_size
                state = self._read_state(fd)
                if state is None:
                    state = _State(secrets.token_urlsafe(12), 0, 0, GENESIS, None)
                    self._write_state(state)
                size = _drop_torn_tail(fd, size, self.path)
                last = _last_line(fd, size)
                if last is None:
                    seq, prev = state.base_seq + 1, state.base_hash
                else:
                    parsed = _parse_line(last, 0)
                    seq, prev = int(parsed["seq"]) + 1, str(parsed["hash"])
                body = {
                    "v": SPOOL_VERSION,
                    "spool": state.spool,
                    "seq": seq,
                    "prev": prev,
                    "spooled_at": int(self._now()),
                    "record": dict(record),
                }
                line = canonicalize({**body, "hash": digest_bytes(canonicalize(body))}) + b"\n"
                try:
                    _write_all(fd, line)
                    os.fsync(fd)
                except BaseException:
                    # A line that is not durable was never acknowledged: take it back.
                    try:
                        os.ftruncate(fd, size)
                    except OSError:
                        pass
                    raise
                self._dirty = True
                return seq
        except (OSError, SpoolIntegrityError, CanonicalizationError) as exc:
            raise StoreUnavailable(f"audit spool {self.path}: {_why(exc)}") from None

    # -- reading -------------------------------------------------------------

    def _lines(self, fd: int) -> tuple[list[bytes], int]:
        """Complete lines of the file and the byte count of a torn last line."""
        os.lseek(fd, 0, os.SEEK_SET)
        chunks = []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        data = b"".join(chunks)
        cut = data.rfind(b"\n") + 1
        return data[:cut].splitlines(), len(data) - cut

    def _verified(self, fd: int, state: _State) -> tuple[list[SpoolRecord], int]:
        """Every line, verified as a chain from the state's base."""
        lines, torn = self._lines(fd)
        records: list[SpoolRecord] = []
        prev_seq: int | None = None
        prev_hash = ""
        base_seen = False
        for number, raw in enumerate(lines, start=1):
            line = _parse_line(raw, number)
            seq = int(line["seq"])
            if line["spool"] != state.spool:
                raise SpoolIntegrityError(seq, number, "line belongs to another spool")
            if prev_seq is None:
                if seq > state.base_seq + 1:
                    raise SpoolIntegrityError(state.base_seq + 1, number, f"lines before seq {seq} are missing")
                if seq == state.base_seq + 1 and line["prev"] != state.base_hash:
                    raise SpoolIntegrityError(seq, number, "first line does not link to the spool's base")
            else:
                if seq != prev_seq + 1:
                    raise SpoolIntegrityError(prev_seq + 1, number, f"found seq {seq} (deleted or reordered)")
                if line["prev"] != prev_hash:
                    raise SpoolIntegrityError(seq, number, "link to the previous line is broken")
            body = {k: v for k, v in line.items() if k != "hash"}
            if digest_bytes(canonicalize(body)) != line["hash"]:
                raise SpoolIntegrityError(seq, number, "line does not match its hash (edited)")
            if seq == state.base_seq:
                base_seen = True
                if line["hash"] != state.base_hash:
                    raise SpoolIntegrityError(seq, number, "line differs from the base kept in the state file")
            prev_seq, prev_hash = seq, str(line["hash"])
            records.append(SpoolRecord(seq, prev_hash, int(line["spooled_at"]), line["record"]))
        if records and records[0].seq <= state.base_seq and not base_seen:
            raise SpoolIntegrityError(state.base_seq, len(lines), "spool ends before its base (truncated)")
        if records and records[-1].seq < state.replayed:
            raise SpoolIntegrityError(records[-1].seq + 1, len(lines), "spool ends before its last replayed seq")
        return records, torn

    def verify(self) -> int:
        """Verify the spool's hash chain; returns the number of lines.

        Raises:
            SpoolIntegrityError: naming the first line that does not verify.
        """
        with self._locked(create=False) as fd:
            if fd is None:
                return 0
            state = self._read_state(fd)
            if state is None:
                return 0
            return len(self._verified(fd, state)[0])

    def pending(self) -> list[SpoolRecord]:
        """The verified records not yet replayed, oldest first."""
        with self._locked(create=False) as fd:
            if fd is None:
                return []
            state = self._read_state(fd)
            if state is None:
                return []
            records, _ = self._verified(fd, state)
            return [r for r in records if r.seq > state.replayed]

    def status(self) -> SpoolStatus:
        """Pending count, size and the age of the oldest pending record (verifies the chain)."""
        with self._locked(create=False) as fd:
            if fd is None:
                return SpoolStatus(os.fspath(self.path), 0, 0, 0, 0, None, None, 0)
            size = os.fstat(fd).st_size
            state = self._read_state(fd)
            if state is None:
                return SpoolStatus(os.fspath(self.path), 0, size, 0, 0, None, None, self._lines(fd)[1])
            records, torn = self._verified(fd, state)
        waiting = [r for r in records if r.seq > state.replayed]
        oldest = waiting[0].spooled_at if waiting else None
        return SpoolStatus(
            path=os.fspath(self.path),
            pending=len(waiting),
            bytes=size,
            last_seq=records[-1].seq if records else state.base_seq,
            replayed_seq=state.replayed,
            oldest_spooled_at=oldest,
            oldest_age=None if oldest is None else max(0, int(self._now()) - oldest),
            torn_tail_bytes=torn,
        )

    # -- replay --------------------------------------------------------------

    def flush(self, audit_log: AuditLog, *, limit: int | None = None, wait: bool = True) -> FlushResult:
        """Replay the pending records into ``audit_log``, oldest first, exactly once.

        Each replayed entry is the spooled record as it was (its original ``time``)
        plus ``"spooled": true`` and ``"spool": {"id", "seq", "hash", "at"}``. A failing
        log stops the flush (reported in ``error``); the next flush resumes where this
        one stopped, without duplicates, even if this process dies mid-way.

        Args:
            limit: replay at most this many records.
            wait: wait for another process's flush to end; if false, return at once
                (nothing replayed) while one runs.

        Raises:
            SpoolIntegrityError: the spool does not verify; nothing is replayed.
        """
        if not self.path.exists() and not self.state_path.exists():
            return FlushResult(0, 0, 0, ())  # nothing was ever spooled
        if not self._flushing.acquire(blocking=wait):
            return FlushResult(0, 0, 0, (), "another flush is running", busy=True)
        try:
            try:
                lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except FileNotFoundError:
                return FlushResult(0, 0, 0, ())  # no folder, so no spool
            try:
                try:
                    fcntl.flock(lock_fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    return FlushResult(0, 0, 0, (), "another flush is running", busy=True)
                return self._flush(audit_log, limit)
            finally:
                os.close(lock_fd)
        finally:
            self._flushing.release()

    def _flush(self, audit_log: AuditLog, limit: int | None) -> FlushResult:
        with self._locked(create=False) as fd:
            if fd is None:
                self._dirty = False
                return FlushResult(0, 0, 0, ())
            state = self._read_state(fd)
            if state is None:
                self._dirty = False
                return FlushResult(0, 0, 0, ())
            records, _ = self._verified(fd, state)
        recovered = 0
        if state.pending is not None:
            try:
                found = self._recover(audit_log, state)
            except Exception as exc:  # noqa: BLE001 - the log is still down: try later
                waiting = sum(1 for r in records if r.seq > state.replayed)
                return FlushResult(0, 0, waiting, (), f"audit log: {_why(exc)}")
            recovered = max(0, found - state.replayed)
            state = self._update(replayed=found, pending=None)
        todo = [r for r in records if r.seq > state.replayed]
        if limit is not None:
            todo = todo[: max(0, limit)]
        seqs: list[int] = []
        error = None
        for start in range(0, len(todo), self.flush_batch):
            batch = todo[start : start + self.flush_batch]
            try:
                after = audit_log.head()[0]
                self._update(pending={"from": batch[0].seq, "to": batch[-1].seq, "after": after})
                for rec in batch:
                    seqs.append(audit_log.append(_replayed_event(rec, state.spool)).seq)
                    state = _advance(state, rec.seq)
            except Exception as exc:  # noqa: BLE001 - stop; the pending mark lets the next flush resume
                error = f"audit log: {_why(exc)}"
                try:  # what is known to be in; the pending mark stays for the one in doubt
                    self._update(replayed=state.replayed)
                except Exception as again:  # noqa: BLE001 - the pending mark alone is enough
                    log.warning("execauth: could not update the spool state: %s", _why(again))
                break
            state = self._update(replayed=batch[-1].seq, pending=None)
        waiting = sum(1 for r in records if r.seq > state.replayed)
        if error is None and waiting == 0:
            self._dirty = False
            if records:
                self._compact(records[-1].seq, records[-1].hash)
        return FlushResult(len(seqs), recovered, waiting, tuple(seqs), error)

    def _recover(self, audit_log: AuditLog, state: _State) -> int:
        """After an interrupted flush: the highest spool seq of the pending batch that
        reached the log (records are appended in order, so all before it did too)."""
        assert state.pending is not None
        lo, hi, after = state.pending["from"], state.pending["to"], state.pending["after"]
        found = state.replayed
        for entry in audit_log.entries(after + 1):
            mark = entry.body.get("spool")
            if entry.body.get("spooled") is True and isinstance(mark, Mapping) and mark.get("id") == state.spool:
                seq = mark.get("seq")
                if isinstance(seq, int) and lo <= seq <= hi:
                    found = max(found, seq)
        return found

    def _update(self, **changes: Any) -> _State:
        """Change the state file under the spool lock (appenders read it)."""
        with self._locked(create=False) as fd:
            state = self._read_state(fd)
            if state is None:
                raise SpoolIntegrityError(0, 0, "the spool disappeared during a flush")
            for key, value in changes.items():
                setattr(state, key, value)
            self._write_state(state)
            return state

    def _compact(self, last_seq: int, last_hash: str) -> None:
        """Empty the spool once everything in it is in the log; the chain goes on
        from the base kept in the state file."""
        with self._locked(create=False) as fd:
            if fd is None:
                return
            state = self._read_state(fd)
            lines, torn = self._lines(fd)
            if state is None or torn or not lines:
                self._dirty = bool(torn)
                return
            if _parse_line(lines[-1], len(lines))["seq"] != last_seq or state.replayed != last_seq:
                return  # someone spooled more meanwhile: the next flush takes them
            state.base_seq, state.base_hash = last_seq, last_hash
            self._write_state(state)  # base first: a crash before the truncation leaves lines <= base
            os.ftruncate(fd, 0)
            os.fsync(fd)
            self._dirty = False

    def maybe_flush(self, audit_log: AuditLog) -> FlushResult | None:
        """Cheap check after a successful append: flush one batch if records wait.

        Never raises and never waits for another flusher. This process's own spooling
        is noticed at once; another process's within ``check_every`` seconds.
        """
        now = time.monotonic()
        if now < self._backoff_until:
            return None
        if not self._dirty:
            if now < self._next_check:
                return None
            self._next_check = now + self.check_every
            try:
                if self.path.stat().st_size == 0:
                    return None
            except OSError:
                return None
        try:
            result = self.flush(audit_log, limit=self.flush_batch, wait=False)
        except Exception as exc:  # noqa: BLE001 - the caller's record is already in the log
            log.error("execauth: could not flush the audit spool %s: %s", self.path, _why(exc))
            self._backoff_until = now + 30.0
            return None
        if result.error is not None and not result.busy:
            self._backoff_until = now + min(30.0, max(self.check_every, 1.0))
        return result


def _replayed_event(rec: SpoolRecord, spool_id: str) -> dict[str, Any]:
    event = dict(rec.record)
    event["spooled"] = True
    event["spool"] = {"id": spool_id, "seq": rec.seq, "hash": rec.hash, "at": rec.spooled_at}
    return event


def _advance(state: _State, seq: int) -> _State:
    state.replayed = seq
    return state


def _parse_line(raw: bytes, number: int) -> dict[str, Any]:
    try:
        line = loads_strict(raw)
    except CanonicalizationError as exc:
        raise SpoolIntegrityError(0, number, f"not JSON: {exc}") from None
    if not isinstance(line, dict) or set(line) != _LINE_FIELDS or line["v"] != SPOOL_VERSION:
        raise SpoolIntegrityError(0, number, "not an execauth spool line")
    seq = line["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise SpoolIntegrityError(0, number, "seq is not a positive integer")
    if not isinstance(line["record"], dict) or not isinstance(line["spooled_at"], int):
        raise SpoolIntegrityError(seq, number, "record or spooled_at malformed")
    if not all(isinstance(line[k], str) for k in ("spool", "prev", "hash")):
        raise SpoolIntegrityError(seq, number, "spool, prev or hash malformed")
    return line


def _first_line(fd: int) -> bytes | None:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while b"\n" not in data:
        chunk = os.read(fd, _TAIL_CHUNK)
        if not chunk:
            return None
        data += chunk
    return data[: data.index(b"\n")]


def _last_line(fd: int, size: int) -> bytes | None:
    """The last complete line of a file that ends with a newline (or is empty)."""
    if size == 0:
        return None
    data = b""
    pos = size
    while pos > 0:
        step = min(_TAIL_CHUNK, pos)
        pos -= step
        data = os.pread(fd, step, pos) + data
        cut = data.rfind(b"\n", 0, len(data) - 1)
        if cut >= 0:
            return data[cut + 1 : -1]
    return data[:-1]


def _drop_torn_tail(fd: int, size: int, path: Path) -> int:
    """Cut a last line without its newline (a write that never completed, so was never
    acknowledged); returns the new size."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    keep = size
    while keep > 0:
        step = min(_TAIL_CHUNK, keep)
        chunk = os.pread(fd, step, keep - step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            keep = keep - step + cut + 1
            break
        keep -= step
    log.warning("execauth: dropping %d bytes of an unfinished line at the end of %s", size - keep, path)
    os.ftruncate(fd, keep)
    os.fsync(fd)
    return keep


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(errno.EIO, "short write")
        view = view[written:]


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
