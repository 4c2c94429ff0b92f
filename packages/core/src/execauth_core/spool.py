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
    The spool's random id, the last replayed seq with its line's hash and the byte
    offset after it (where the next flush starts reading), and the replay in
    progress (``pending``). Replaced atomically (write, fsync, rename).
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
emptied (compacted); the next line links to the last replayed one, whose hash the
state file keeps. A flush reads only the lines after the replayed offset, one at a
time: memory and the work of one (automatic) flush stay bounded however long the
outage was.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ._log import log
from .audit import GENESIS, AuditLog, make_body
from .canonical import MAX_SAFE_INTEGER, CanonicalizationError, canonicalize, digest_bytes, loads_strict
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
    """``replayed``: the last spool seq known to be in the log, ``replayed_hash`` its
    line's hash, ``offset`` the byte just after that line (0 once compacted)."""

    spool: str
    replayed: int
    replayed_hash: str
    offset: int
    pending: dict[str, int] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "v": STATE_VERSION,
            "spool": self.spool,
            "replayed": self.replayed,
            "replayed_hash": self.replayed_hash,
            "offset": self.offset,
            "pending": self.pending,
        }


@dataclass(frozen=True)
class _Line:
    record: SpoolRecord
    end: int  # byte offset just after this line
    number: int


class Spool:
    """A local, fsync'd, hash-chained spool of audit records (see the module docstring).

    Nothing is written until the first :meth:`append`: a guard configured with a
    spool that never needs it leaves no file behind. The folder must exist and be
    writable when the spool is made (``ConfigurationError`` otherwise). Memory stays
    bounded: a flush reads the file from where the last one stopped, one line at a
    time.

    Args:
        path: the spool file; ``PATH.state`` and ``PATH.flush-lock`` go next to it.
        flush_batch: records replayed between two state-file updates.
        auto_batch: records one :meth:`maybe_flush` (the guard's, after a successful
            append) replays at most, so that no single guarded call pays for a long
            backlog.
        check_every: seconds between two looks at the file by :meth:`maybe_flush`
            in a process that did not spool anything itself.
        clock: seconds since the epoch (the ``spooled_at`` of each line).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        flush_batch: int = 256,
        auto_batch: int = 32,
        check_every: float = 1.0,
        clock: Callable[[], int] | None = None,
    ) -> None:
        if flush_batch < 1 or auto_batch < 1:
            raise ConfigurationError("flush_batch and auto_batch must be at least 1")
        if fcntl is None:  # pragma: no cover
            raise ConfigurationError("the audit spool needs POSIX file locks (fcntl)")
        self.path = Path(path)
        folder = self.path.parent
        # Found now, not in the middle of the outage the spool is there for.
        if not folder.is_dir():
            raise ConfigurationError(f"the audit spool's folder {folder} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigurationError(f"the audit spool's folder {folder} is not writable")
        self.state_path = Path(f"{self.path}.state")
        self.lock_path = Path(f"{self.path}.flush-lock")
        self.flush_batch = flush_batch
        self.auto_batch = auto_batch
        self.check_every = check_every
        self._now: Callable[[], int] = clock if clock is not None else (lambda: int(time.time()))
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

    @contextmanager
    def _flush_locked(self, *, wait: bool) -> Iterator[bool]:
        """One flusher (or reader of the whole state) at a time, across processes.
        Yields ``False`` when ``wait`` is false and another holds it. A file error
        inside (a folder gone, permissions) becomes ``StoreUnavailable``."""
        if not self._flushing.acquire(blocking=wait):
            yield False
            return
        try:
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
            except OSError as exc:
                raise StoreUnavailable(f"audit spool {self.path}: {_why(exc)}") from None
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
                except BlockingIOError:
                    yield False
                    return
                try:
                    yield True
                except OSError as exc:
                    raise StoreUnavailable(f"audit spool {self.path}: {_why(exc)}") from None
            finally:
                os.close(fd)
        finally:
            self._flushing.release()

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
                state = _State(
                    spool=str(data["spool"]),
                    replayed=int(data["replayed"]),
                    replayed_hash=str(data["replayed_hash"]),
                    offset=int(data["offset"]),
                    pending=None if pending is None else {k: int(v) for k, v in dict(pending).items()},
                )
            except (CanonicalizationError, ValueError, KeyError, TypeError) as exc:
                raise SpoolIntegrityError(0, 0, f"state file {self.state_path} is unreadable: {exc}") from None
            if state.replayed < 0 or state.offset < 0:
                raise SpoolIntegrityError(0, 0, f"state file {self.state_path} is unreadable: negative position")
            return state
        if fd is None:
            return None
        first = _first_line(fd)
        if first is None:
            return None
        # The state file was lost: start from the first line, and let the next flush
        # look through the whole log for lines of this spool already replayed.
        log.warning("execauth: spool state file %s missing; rebuilding it from the spool", self.state_path)
        line = _parse_line(first, 1)
        seq = int(line["seq"])
        look_back = {"from": seq, "to": MAX_SAFE_INTEGER, "after": 0}
        return _State(str(line["spool"]), seq - 1, str(line["prev"]), 0, look_back)

    def _write_state(self, state: _State) -> None:
        tmp = Path(f"{self.state_path}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _write_all(fd, canonicalize(state.to_json()) + b"\n")
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.state_path)
        _fsync_dir(self.state_path.parent)

    def _state(self) -> _State | None:
        with self._locked(create=False) as fd:
            return self._read_state(fd)

    # -- writing -------------------------------------------------------------

    def append(self, record: Mapping[str, Any]) -> int:
        """Add one audit record (the event the log refused); durable when this returns.

        Returns:
            The record's spool sequence number.

        Raises:
            StoreUnavailable: it could not be written (full disk, read-only folder...);
                nothing partial is left behind.
            ValueError: not an audit event the log would take (so it would block
                every record behind it at replay); nothing is written.
        """
        make_body(record, seq=1, prev=GENESIS)  # refused now rather than at replay
        try:
            with self._locked(create=True) as fd:
                assert fd is not None
                size = os.fstat(fd).st_size
                state = self._read_state(fd)
                if state is None:
                    state = _State(secrets.token_urlsafe(12), 0, GENESIS, 0, None)
                    self._write_state(state)
                elif not self.state_path.exists():
                    self._write_state(state)  # rebuilt from the spool: keep it (and warn once)
                size = _drop_torn_tail(fd, size, self.path)
                last = _last_line(fd, size)
                if last is None:  # empty, or compacted: the chain goes on from the last replayed line
                    seq, prev = state.replayed + 1, state.replayed_hash
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

    def _scan(self, state: _State, *, start: int) -> Generator[_Line, None, None]:
        """:meth:`_scan_from`; a break found after an offset is reported with its line
        number in the whole file."""
        try:
            yield from self._scan_from(state, start=start)
        except SpoolIntegrityError:
            if start == 0:
                raise
            for _ in self._scan_from(state, start=0):
                pass  # raises with the line counted from the top of the file
            raise

    def _scan_from(self, state: _State, *, start: int) -> Generator[_Line, None, None]:
        """The complete lines from byte ``start`` (0 or ``state.offset``), verified as
        a chain that passes through the last replayed line. A last line without its
        newline (a write in progress or cut off) is not yielded."""
        try:
            f = self.path.open("rb")
        except FileNotFoundError:
            if start or state.pending:
                raise SpoolIntegrityError(state.replayed + 1, 0, "the spool file is gone") from None
            return
        with f:
            size = os.fstat(f.fileno()).st_size
            if start > size:
                raise SpoolIntegrityError(state.replayed + 1, 0, "spool is shorter than its replayed part (truncated)")
            if start > 0:
                f.seek(start - 1)
                if f.read(1) != b"\n":
                    raise SpoolIntegrityError(state.replayed + 1, 0, "replayed offset is not at a line boundary")
            pos, number = start, 0
            prev: tuple[int, str] | None = None
            met_replayed = state.replayed == 0 or start > 0
            while True:
                raw = f.readline()
                if not raw or not raw.endswith(b"\n"):
                    break
                number += 1
                line = _parse_line(raw[:-1], number)
                seq = int(line["seq"])
                if line["spool"] != state.spool:
                    raise SpoolIntegrityError(seq, number, "line belongs to another spool")
                if prev is None:
                    if seq > state.replayed + 1 or (start > 0 and seq != state.replayed + 1):
                        raise SpoolIntegrityError(state.replayed + 1, number, f"found seq {seq}: lines are missing")
                    if seq == state.replayed + 1:
                        if line["prev"] != state.replayed_hash:
                            raise SpoolIntegrityError(seq, number, "does not link to the last replayed line")
                        met_replayed = True  # the file was compacted: the chain goes on from the state
                    if seq == 1 and line["prev"] != GENESIS:
                        raise SpoolIntegrityError(seq, number, "first line does not start the chain")
                else:
                    if seq != prev[0] + 1:
                        raise SpoolIntegrityError(prev[0] + 1, number, f"found seq {seq} (deleted or reordered)")
                    if line["prev"] != prev[1]:
                        raise SpoolIntegrityError(seq, number, "link to the previous line is broken")
                body = {k: v for k, v in line.items() if k != "hash"}
                if digest_bytes(canonicalize(body)) != line["hash"]:
                    raise SpoolIntegrityError(seq, number, "line does not match its hash (edited)")
                if seq == state.replayed:
                    met_replayed = True
                    if line["hash"] != state.replayed_hash:
                        raise SpoolIntegrityError(seq, number, "line differs from the replayed one in the state file")
                if seq == state.replayed + 1 and not met_replayed:
                    raise SpoolIntegrityError(seq, number, "the last replayed line is missing")
                pos += len(raw)
                prev = (seq, str(line["hash"]))
                yield _Line(SpoolRecord(seq, prev[1], int(line["spooled_at"]), line["record"]), pos, number)
            if prev is not None and prev[0] < state.replayed:
                raise SpoolIntegrityError(prev[0] + 1, number, "spool ends before its last replayed line (truncated)")

    def _never_used(self) -> bool:
        """Nothing was ever spooled here (so nothing to lock, read or create)."""
        return not self.path.exists() and not self.state_path.exists()

    def _torn_bytes(self) -> int:
        try:
            with self.path.open("rb") as f:
                size = os.fstat(f.fileno()).st_size
                f.seek(max(0, size - _TAIL_CHUNK))
                tail = f.read()
        except FileNotFoundError:
            return 0
        if not tail or tail.endswith(b"\n"):
            return 0
        cut = tail.rfind(b"\n")
        return len(tail) - cut - 1 if cut >= 0 else len(tail)

    def verify(self) -> int:
        """Verify the spool's hash chain, every line of the file; returns their number.

        Raises:
            SpoolIntegrityError: naming the first line that does not verify.
        """
        if self._never_used():
            return 0
        with self._flush_locked(wait=True):
            state = self._state()
            if state is None:
                return 0
            return sum(1 for _ in self._scan(state, start=0))

    def pending(self) -> list[SpoolRecord]:
        """The verified records not yet replayed, oldest first."""
        if self._never_used():
            return []
        with self._flush_locked(wait=True):
            state = self._state()
            if state is None:
                return []
            return [x.record for x in self._scan(state, start=state.offset) if x.record.seq > state.replayed]

    def status(self) -> SpoolStatus:
        """Pending count, size and the age of the oldest pending record (verifies the
        pending part of the chain; :meth:`verify` checks the whole file)."""
        if self._never_used():
            return SpoolStatus(os.fspath(self.path), 0, 0, 0, 0, None, None, 0)
        with self._flush_locked(wait=True):
            state = self._state()
            try:
                size = self.path.stat().st_size
            except FileNotFoundError:
                size = 0
            if state is None:
                return SpoolStatus(os.fspath(self.path), 0, size, 0, 0, None, None, self._torn_bytes())
            count, oldest, last = 0, None, state.replayed
            for x in self._scan(state, start=state.offset):
                last = max(last, x.record.seq)
                if x.record.seq > state.replayed:
                    count += 1
                    oldest = x.record.spooled_at if oldest is None else oldest
        return SpoolStatus(
            path=os.fspath(self.path),
            pending=count,
            bytes=size,
            last_seq=last,
            replayed_seq=state.replayed,
            oldest_spooled_at=oldest,
            oldest_age=None if oldest is None else max(0, int(self._now()) - oldest),
            torn_tail_bytes=self._torn_bytes(),
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
                (nothing replayed, ``busy``) while one runs.

        Raises:
            SpoolIntegrityError: the spool does not verify; nothing after the broken
                line is replayed.
        """
        if limit is not None and limit < 0:
            raise ConfigurationError("limit must not be negative")
        if self._never_used():
            return FlushResult(0, 0, 0, ())
        with self._flush_locked(wait=wait) as mine:
            if not mine:
                return FlushResult(0, 0, 0, (), "another flush is running", busy=True)
            return self._flush(audit_log, limit)

    def _flush(self, audit_log: AuditLog, limit: int | None) -> FlushResult:
        state = self._state()
        if state is None:
            self._dirty = False
            return FlushResult(0, 0, 0, ())
        recovered = 0
        found = state.replayed
        if state.pending is not None:
            try:
                found = self._recover(audit_log, state)
            except Exception as exc:  # noqa: BLE001 - the log is still down: try later
                return FlushResult(0, 0, self._count_after(state), (), f"audit log: {_why(exc)}")
        lines = self._scan(state, start=state.offset)
        done = state  # what the state file will say
        todo: list[_Line] = []
        seqs: list[int] = []
        error = None
        budget = limit if limit is not None else -1
        try:
            for x in lines:
                if x.record.seq <= done.replayed:
                    done = _at(done, x)  # a leftover of a compaction cut short
                    continue
                if x.record.seq <= found:
                    recovered += 1
                    done = _at(done, x)
                    continue
                if budget == 0:
                    break
                todo.append(x)
                budget -= 1
                if len(todo) >= self.flush_batch:
                    done, error = self._replay(audit_log, done, todo, seqs)
                    todo = []
                    if error is not None:
                        break
            if error is None and todo:
                done, error = self._replay(audit_log, done, todo, seqs)
        finally:
            lines.close()
        if error is None and (done.replayed != state.replayed or state.pending is not None):
            done = self._put(replace(done, pending=None))
        waiting = self._count_after(done)
        if error is None and waiting == 0:
            self._dirty = False
            self._compact(done)
        return FlushResult(len(seqs), recovered, waiting, tuple(seqs), error)

    def _replay(
        self, audit_log: AuditLog, done: _State, batch: list[_Line], seqs: list[int]
    ) -> tuple[_State, str | None]:
        """Append one batch, marked pending first so a crash in between is recoverable."""
        try:
            after = audit_log.head()[0]
            self._put(replace(done, pending={"from": batch[0].record.seq, "to": batch[-1].record.seq, "after": after}))
        except Exception as exc:  # noqa: BLE001 - nothing of this batch was appended
            return done, f"audit log: {_why(exc)}"
        for x in batch:
            try:
                seqs.append(audit_log.append(_replayed_event(x.record, done.spool)).seq)
            except Exception as exc:  # noqa: BLE001 - stop; the pending mark lets the next flush resume
                try:  # what is known to be in; the pending mark stays for the one in doubt
                    self._put(replace(done, pending=self._state_pending()))
                except Exception as again:  # noqa: BLE001 - the pending mark alone is enough
                    log.warning("execauth: could not update the spool state: %s", _why(again))
                return done, f"audit log: {_why(exc)}"
            done = _at(done, x)
        return self._put(replace(done, pending=None)), None

    def _state_pending(self) -> dict[str, int] | None:
        state = self._state()
        return None if state is None else state.pending

    def _count_after(self, state: _State) -> int:
        """Records after the last replayed one, from the seq of the file's last line (the
        lines between were verified by the scan that replayed up to here, or will be)."""
        with self._locked(create=False) as fd:
            if fd is None:
                return 0
            size = os.fstat(fd).st_size
            end = size - self._torn_bytes()
            last = _last_line(fd, end) if end > 0 else None
        if last is None:
            return 0
        return max(0, int(_parse_line(last, 0)["seq"]) - state.replayed)

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

    def _put(self, state: _State) -> _State:
        """Write the state file under the spool lock (appenders read it)."""
        with self._locked(create=False):
            self._write_state(state)
        return state

    def _compact(self, done: _State) -> None:
        """Empty the spool once everything in it is in the log; the next line links to
        the last replayed one, kept in the state file."""
        with self._locked(create=False) as fd:
            if fd is None or os.fstat(fd).st_size != done.offset or done.offset == 0:
                return  # someone spooled more meanwhile (the next flush takes it), or nothing to do
            # The state first: a crash before the truncation leaves only replayed lines.
            self._write_state(replace(done, offset=0, pending=None))
            os.ftruncate(fd, 0)
            os.fsync(fd)

    def maybe_flush(self, audit_log: AuditLog) -> FlushResult | None:
        """Cheap check after a successful append: replay up to ``auto_batch`` records
        if some wait.

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
            result = self.flush(audit_log, limit=self.auto_batch, wait=False)
        except Exception as exc:  # noqa: BLE001 - the caller's record is already in the log
            log.error("execauth: could not flush the audit spool %s: %s", self.path, _why(exc))
            self._backoff_until = now + 30.0
            return None
        if result.error is not None and not result.busy:
            self._backoff_until = now + min(30.0, max(self.check_every, 1.0))
        return result


def _at(state: _State, x: _Line) -> _State:
    return replace(state, replayed=x.record.seq, replayed_hash=x.record.hash, offset=x.end)


def _replayed_event(rec: SpoolRecord, spool_id: str) -> dict[str, Any]:
    event = dict(rec.record)
    event["spooled"] = True
    event["spool"] = {"id": spool_id, "seq": rec.seq, "hash": rec.hash, "at": rec.spooled_at}
    return event


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
