"""SQLite stores: the embedded default. One file, WAL mode, no server.

Several processes may share one database file: SQLite's locking makes
``consume`` (``INSERT OR IGNORE`` on a primary key) and ``append`` (one
``BEGIN IMMEDIATE`` transaction that reads the head and writes the entry) atomic
across them.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ..audit import GENESIS, AuditEntry, body_digest, canonical_body, make_body
from ..canonical import CanonicalizationError, canonicalize_trusted, loads_strict
from ..errors import AuditIntegrityError, StoreUnavailable
from ..tlog import Frontier, NodeKey, leaf_hash
from ._tree import TreeMixin
from .base import Debit, JointBase, window_start

_PURGE_EVERY = 1024
_PURGE_SECONDS = 30
_REPLICA_CLOCK_MARGIN = 300  # = tokens.MAX_CLOCK_SKEW


def _check_shared_memory(file: str) -> None:
    """Refuse to touch a database whose ``-shm`` file cannot be written.

    SQLite maps the WAL index (``<db>-shm``) into memory and writes it even to read.
    If an operator makes that file unwritable while the process has it mapped (e.g.
    ``chattr +i``), the next write into the mapping kills the process with SIGBUS:
    no error, no denial record. ``access(2)`` reports such a file (immutable or read
    only) as not writable, so each store call checks it first (one system call) and
    fails closed with :class:`StoreUnavailable` instead. A change between this check
    and SQLite's write can still kill the process: an operator error, see
    docs/deploying.md.
    """
    if not file:
        return
    shm = file + "-shm"
    if not os.access(shm, os.W_OK) and os.path.exists(shm):
        raise StoreUnavailable(
            f"SQLite shared-memory file {shm} is not writable (read-only or immutable): refusing to use the database"
        )


def _set_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """Switch the database to WAL, waiting up to ``timeout`` for other openers.

    Two processes opening a new database at once race on this switch, and SQLite
    answers the loser "database is locked" at once, without calling its busy
    handler; so the switch is retried here until the same timeout as every other
    statement, then the error is raised (the store then refuses: fail closed).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)


def _connect(path: str | os.PathLike[str], timeout: float) -> sqlite3.Connection:
    _check_shared_memory(os.path.abspath(os.fspath(path)) if os.fspath(path) not in ("", ":memory:") else "")
    try:
        conn = sqlite3.connect(os.fspath(path), timeout=timeout, isolation_level=None, check_same_thread=False)
        _set_wal(conn, timeout)
        # WAL + NORMAL: a commit survives a process crash; only an OS crash or
        # power loss can lose the last transactions.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot open SQLite database {os.fspath(path)}: {exc}") from exc
    return conn


class SQLiteReplayStore:
    """Consumed token ids in a SQLite table, expired rows purged periodically."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self._conn = _connect(path, timeout)
        self._file = _database_file(self._conn)
        self._lock = threading.Lock()
        self._count = 0
        self._next_purge = 0
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS consumed_tokens "
                "(jti TEXT PRIMARY KEY, expires_at INTEGER NOT NULL) WITHOUT ROWID"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS consumed_tokens_exp ON consumed_tokens(expires_at)")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise replay store: {exc}") from exc

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                fresh = self._insert(self._conn, token_id, expires_at)
                self._purge_if_due(self._conn, now)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"replay store: {exc}") from exc
            return fresh

    @staticmethod
    def _insert(conn: sqlite3.Connection, token_id: str, expires_at: int) -> bool:
        cur = conn.execute(
            "INSERT OR IGNORE INTO consumed_tokens (jti, expires_at) VALUES (?, ?)", (token_id, expires_at)
        )
        return cur.rowcount == 1

    def _purge_if_due(self, conn: sqlite3.Connection, now: int) -> None:
        self._count += 1
        # Purge by count and by time, so the table stays bounded by
        # (live tokens + one purge interval) under any traffic pattern.
        if self._count % _PURGE_EVERY == 0 or now >= self._next_purge:
            # The margin keeps ids a replica with a slower clock still needs.
            conn.execute("DELETE FROM consumed_tokens WHERE expires_at < ?", (now - _REPLICA_CLOCK_MARGIN,))
            self._next_purge = now + _PURGE_SECONDS

    def joint_with(self, audit_log: object) -> _SQLiteJoint | None:
        """The atomic consume-and-append for an audit log in the same database file
        (as :meth:`Guard.local <execauth_core.Guard.local>` makes them); else ``None``."""
        # Compared as SQLite itself resolved the files when they were opened, not by
        # the path strings (relative paths, links, the working directory moving on).
        if isinstance(audit_log, SQLiteAuditLog) and self._file and self._file == audit_log._file:
            return _SQLiteJoint(self, audit_log)
        return None

    def close(self) -> None:
        self._conn.close()


def _database_file(conn: sqlite3.Connection) -> str:
    """The absolute file of the connection's main database, as SQLite opened it
    ("" for an in-memory or temporary database: never shared with another connection)."""
    try:
        rows = conn.execute("PRAGMA database_list").fetchall()
    except sqlite3.Error:
        return ""  # unknown: never paired, the guard consumes and appends in two steps
    return next((str(file or "") for _, name, file in rows if name == "main"), "")


class _SQLiteJoint(JointBase[SQLiteReplayStore, "SQLiteAuditLog"]):
    """Consume token ids and append the entry recording their use, in one
    ``BEGIN IMMEDIATE`` transaction (one commit instead of two)."""

    def _consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], now: int
    ) -> AuditEntry | str:
        audit, replay = self._audit, self._replay
        # Lock order audit -> replay here; the replay store alone never takes the audit lock.
        with audit._lock, replay._lock:
            _check_shared_memory(audit._file)
            try:
                audit._conn.execute("BEGIN IMMEDIATE")
                try:
                    for token_id, expires_at in ids:
                        if not replay._insert(audit._conn, token_id, expires_at):
                            audit._conn.execute("ROLLBACK")
                            return token_id
                    entry = audit._write(event)
                    replay._purge_if_due(audit._conn, now)
                    audit._conn.execute("COMMIT")
                    audit._frontier = audit._pending
                except BaseException:
                    if audit._conn.in_transaction:
                        audit._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"replay store and audit log: {exc}") from exc
            return entry


class SQLiteAuditLog(TreeMixin):
    """A hash-linked log in SQLite, with a head row updated in the same
    transaction as every append (so a cut-off tail is detected), and the RFC 9162
    Merkle tree over the entries: each append stores the full subtrees it completes
    (table ``audit_tree``) in that same transaction. A log written before the tree
    existed gets its tree built from the stored entries when first opened."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self._conn = _connect(path, timeout)
        self._file = _database_file(self._conn)
        self._lock = threading.Lock()
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_log "
                "(seq INTEGER PRIMARY KEY, digest TEXT NOT NULL, body BLOB NOT NULL)"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_head "
                "(id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, digest TEXT NOT NULL)"
            )
            self._conn.execute("INSERT OR IGNORE INTO audit_head (id, seq, digest) VALUES (1, 0, ?)", (GENESIS,))
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_tree "
                "(level INTEGER NOT NULL, idx INTEGER NOT NULL, hash BLOB NOT NULL, PRIMARY KEY (level, idx)) "
                "WITHOUT ROWID"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS audit_checkpoints "
                "(id INTEGER PRIMARY KEY AUTOINCREMENT, size INTEGER NOT NULL, note TEXT NOT NULL)"
            )
            self._frontier = Frontier()
            self._build_tree_if_missing()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise audit log: {exc}") from exc

    def _build_tree_if_missing(self) -> None:
        """Build the tree of a log written before it existed (once, from the stored bytes)."""
        seq = self._conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0]
        if seq == 0 or self._conn.execute(
            "SELECT 1 FROM audit_tree WHERE level = 0 AND idx = ?", (seq - 1,)
        ).fetchone():
            return
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            seq = self._conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0]
            self._conn.execute("DELETE FROM audit_tree")
            frontier = Frontier()
            rows = self._conn.execute("SELECT body FROM audit_log WHERE seq <= ? ORDER BY seq", (seq,))
            for (raw,) in rows:
                raw = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
                self._conn.executemany(
                    "INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)", frontier.append(leaf_hash(raw))
                )
            if frontier.size != seq:
                # Rows are missing: leave the log as it is for the verifier to report.
                self._conn.execute("ROLLBACK")
                return
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    entry = self._write(event)
                    self._conn.execute("COMMIT")
                    self._frontier = self._pending
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc
            return entry

    def _write(self, event: Mapping[str, Any]) -> AuditEntry:
        """Append inside the caller's transaction."""
        seq, prev = self._conn.execute("SELECT seq, digest FROM audit_head WHERE id = 1").fetchone()
        body = make_body(event, seq=seq + 1, prev=prev)
        raw = canonical_body(body)
        entry = AuditEntry(seq=seq + 1, digest=body_digest(raw), body=body)
        self._conn.execute("INSERT INTO audit_log (seq, digest, body) VALUES (?, ?, ?)", (entry.seq, entry.digest, raw))
        self._conn.execute("UPDATE audit_head SET seq = ?, digest = ? WHERE id = 1", (entry.seq, entry.digest))
        frontier = self._frontier_at(seq)
        made = frontier.append(leaf_hash(raw))
        self._conn.executemany("INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)", made)
        # Kept for the next append only once this transaction commits (see append).
        self._pending = frontier
        return entry

    def _frontier_at(self, size: int) -> Frontier:
        """The frontier for ``size`` leaves: cached when this connection wrote last
        (``seq`` only grows, so an equal size means nobody appended since), else read."""
        if self._frontier.size == size:
            return self._frontier.copy()
        keys = Frontier.keys(size)
        found = self._nodes(keys)
        if len(found) != len(keys):
            raise StoreUnavailable(f"audit log: the Merkle tree does not cover the log's {size} entries")
        return Frontier(size, [found[k] for k in keys])

    def _nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        out: dict[NodeKey, bytes] = {}
        for i in range(0, len(keys), 400):
            chunk = keys[i : i + 400]
            where = " OR ".join("(level = ? AND idx = ?)" for _ in chunk)
            args = [v for k in chunk for v in k]
            # S608: the SQL text is fixed placeholders; every value is a parameter.
            query = f"SELECT level, idx, hash FROM audit_tree WHERE {where}"  # noqa: S608
            for level, idx, h in self._conn.execute(query, args):
                out[(int(level), int(idx))] = bytes(h)
        return out

    def _fetch_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        with self._lock:
            try:
                return self._nodes(keys)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc

    def tree_head(self) -> tuple[int, bytes]:
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                try:
                    seq = int(self._conn.execute("SELECT seq FROM audit_head WHERE id = 1").fetchone()[0])
                    frontier = self._frontier_at(seq)
                finally:
                    self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc
        return seq, frontier.root()

    def add_checkpoint(self, note: str, size: int) -> None:
        with self._lock:
            try:
                self._conn.execute("INSERT INTO audit_checkpoints (size, note) VALUES (?, ?)", (size, note))
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc

    def checkpoints(self) -> list[str]:
        with self._lock:
            try:
                rows = self._conn.execute("SELECT note FROM audit_checkpoints ORDER BY size, id").fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc
        return [str(note) for (note,) in rows]

    def head(self) -> tuple[int, str]:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                row = self._conn.execute("SELECT seq, digest FROM audit_head WHERE id = 1").fetchone()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc
        return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

    def entries(self, start: int = 1) -> Iterator[AuditEntry]:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                rows = self._conn.execute(
                    "SELECT seq, digest, body FROM audit_log WHERE seq >= ? ORDER BY seq", (start,)
                ).fetchall()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"audit log: {exc}") from exc
        for seq, dig, raw in rows:
            if not isinstance(seq, int) or not isinstance(dig, str) or not isinstance(raw, bytes):
                raise AuditIntegrityError(
                    seq if isinstance(seq, int) else 0,
                    f"stored row has the wrong types (seq {type(seq).__name__}, digest {type(dig).__name__}, "
                    f"body {type(raw).__name__}; the body must be the canonical bytes)",
                )
            try:
                body = loads_strict(bytes(raw))
            except CanonicalizationError as exc:
                raise AuditIntegrityError(int(seq), f"stored body is not JSON: {exc}") from exc
            if not isinstance(body, dict):
                raise AuditIntegrityError(int(seq), "stored body is not an object")
            yield AuditEntry(seq=int(seq), digest=str(dig), body=body)

    def __iter__(self) -> Iterator[AuditEntry]:
        return self.entries()

    def close(self) -> None:
        self._conn.close()


class SQLiteStateStore:
    """Budgets and rate counters in SQLite: one ``BEGIN IMMEDIATE`` transaction per
    check-and-debit, so processes sharing the file never overspend a limit."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self._conn = _connect(path, timeout)
        self._file = _database_file(self._conn)
        self._lock = threading.Lock()
        self._next_purge = 0
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS state_counters (key TEXT NOT NULL, window_start INTEGER NOT NULL, "
                "used INTEGER NOT NULL, ends_at INTEGER NOT NULL, PRIMARY KEY (key, window_start)) WITHOUT ROWID"
            )
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS state_holds "
                "(hold_id TEXT PRIMARY KEY, items BLOB NOT NULL, ends_at INTEGER NOT NULL) WITHOUT ROWID"
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise state store: {exc}") from exc

    def debit(self, hold_id: str, debits: Sequence[Debit], *, now: int) -> str | None:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    result = self._debit(hold_id, debits, now)
                    self._conn.execute("COMMIT" if result is None else "ROLLBACK")
                    return result
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"state store: {exc}") from exc

    def _debit(self, hold_id: str, debits: Sequence[Debit], now: int) -> str | None:
        if now >= self._next_purge:
            # Windows that ended can never be charged or refunded again.
            self._conn.execute("DELETE FROM state_counters WHERE ends_at <= ?", (now,))
            self._conn.execute("DELETE FROM state_holds WHERE ends_at <= ?", (now,))
            self._next_purge = now + 60
        held = self._conn.execute("SELECT items FROM state_holds WHERE hold_id = ?", (hold_id,)).fetchone()
        if held is not None:
            wanted = [[d.key, window_start(now, d.window), d.amount] for d in debits]
            if loads_strict(bytes(held[0])) != wanted:
                # Only a retry of the same debit is idempotent; a reused id is a bug.
                raise StoreUnavailable(f"hold id {hold_id!r} reused for different debits")
            return None  # a retry of a debit that already happened
        planned = []
        for d in debits:
            start = window_start(now, d.window)
            row = self._conn.execute(
                "SELECT used FROM state_counters WHERE key = ? AND window_start = ?", (d.key, start)
            ).fetchone()
            if (row[0] if row else 0) + d.amount > d.limit:
                return d.key
            planned.append((d.key, start, d.amount, start + d.window))
        for key, start, amount, ends in planned:
            self._conn.execute(
                "INSERT INTO state_counters (key, window_start, used, ends_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (key, window_start) DO UPDATE SET used = used + excluded.used",
                (key, start, amount, ends),
            )
        items = canonicalize_trusted([[k, s, a] for k, s, a, _ in planned])
        ends_at = max([e for *_, e in planned], default=now + 1)
        self._conn.execute(
            "INSERT INTO state_holds (hold_id, items, ends_at) VALUES (?, ?, ?)", (hold_id, items, ends_at)
        )
        return None

    def refund(self, hold_id: str) -> None:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    row = self._conn.execute("SELECT items FROM state_holds WHERE hold_id = ?", (hold_id,)).fetchone()
                    if row is not None:
                        for key, start, amount in loads_strict(bytes(row[0])):
                            self._conn.execute(
                                "UPDATE state_counters SET used = MAX(0, used - ?) WHERE key = ? AND window_start = ?",
                                (amount, key, start),
                            )
                        self._conn.execute("DELETE FROM state_holds WHERE hold_id = ?", (hold_id,))
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"state store: {exc}") from exc

    def usage(self, key: str, window: int, *, now: int) -> int:
        with self._lock:
            _check_shared_memory(self._file)
            try:
                row = self._conn.execute(
                    "SELECT used FROM state_counters WHERE key = ? AND window_start = ?",
                    (key, window_start(now, window)),
                ).fetchone()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"state store: {exc}") from exc
        return int(row[0]) if row else 0

    def close(self) -> None:
        self._conn.close()
