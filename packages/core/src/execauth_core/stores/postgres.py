"""PostgreSQL stores: one shared truth for many guard replicas, kept on disk.

* replay: ``INSERT ... ON CONFLICT DO NOTHING`` on the token id (primary key)
  consumes it once; expired ids are purged in small batches.
* audit: one statement locks the head row (``SELECT ... FOR UPDATE``), hashes
  the new entry on the server, inserts it (``seq`` is the primary key) and moves
  the head, in one transaction: two writers queue, they can never fork the chain.
* state: one transaction per check-and-debit; each counter is an upsert that
  only applies ``WHERE used + amount <= limit``, rows are locked in key order
  (no deadlocks), and anything refused rolls the whole debit back.

Every failure becomes :class:`~execauth_core.errors.StoreUnavailable` within
about ``timeout`` seconds: ``connect_timeout`` bounds connecting (libpq's floor
is 2 s), ``statement_timeout`` bounds each statement on the server, and a
watchdog thread cuts the socket of any operation that outlives its deadline
(a frozen server or a black-holed network answers nothing at all).
"""

# ruff: noqa: S608 - SQL text holds only identifiers from a validated schema name
# (see _SCHEMA_NAME) and module constants; every value travels as a parameter.
from __future__ import annotations

import math
import os
import re
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ..audit import GENESIS, AuditEntry, body_digest, body_template, make_body
from ..canonical import CanonicalizationError, canonicalize_trusted, loads_strict
from ..errors import AuditIntegrityError, ConfigurationError, StoreUnavailable
from ..tlog import Frontier, NodeKey, leaf_hash
from ..tokens import MAX_CLOCK_SKEW
from ._tree import TreeMixin
from .base import Debit, JointBase, window_start

try:
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ConfigurationError("the PostgreSQL stores need psycopg 3: pip install 'execauth-core[postgres]'") from exc

__all__ = [
    "DEFAULT_SCHEMA",
    "DEFAULT_TIMEOUT",
    "PostgresAuditLog",
    "PostgresConnections",
    "PostgresReplayStore",
    "PostgresStateStore",
]

DEFAULT_SCHEMA = "execauth"
DEFAULT_TIMEOUT = 2.0
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
_PURGE_EVERY = 1024
_PURGE_SECONDS = 30
_PURGE_BATCH = 5000
_PAGE = 1000

T = TypeVar("T")
Conn = psycopg.Connection[Any]


class _Reused(Exception):
    """Internal: a hold id came back with different debits."""


class _Refused(Exception):
    """Internal: roll a debit back and report which counter refused it."""

    def __init__(self, index: int) -> None:
        super().__init__(index)
        self.index = index


@dataclass(frozen=True)
class _Tables:
    """What one store needs in the schema: the relations, and the DDL creating them."""

    kind: str
    relations: tuple[str, ...]
    statements: tuple[str, ...]


@dataclass
class _Handle:
    """A connection plus what the watchdog needs to cut it safely."""

    conn: Conn
    fd: int
    inode: int
    deadline: float = math.inf
    fired: bool = False
    # This session's statement_timeout was lowered for one late call: reset before
    # the session is pooled again, or closed if the reset fails.
    narrowed: bool = False


class _Watchdog:
    """Cuts the socket of an operation that outlives its deadline.

    Server-side timeouts cannot help when the server (or the network) answers
    nothing, and psycopg has no public per-call client timeout; shutting the
    socket down wakes the blocked call with a connection error instead. The
    thread sleeps while no operation is in flight.
    """

    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._cond = threading.Condition()
        self._handles: dict[int, _Handle] = {}
        self._sleeping = True
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()

    def start(self, handle: _Handle, deadline: float) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                # First use, or a forked child: the parent's thread did not come along.
                self._handles.clear()
                self._pid, self._sleeping = os.getpid(), False
                self._thread = threading.Thread(target=self._run, name="execauth-pg-watchdog", daemon=True)
                self._thread.start()
            elif self._sleeping:
                self._cond.notify()
            handle.deadline, handle.fired = deadline, False
            self._handles[id(handle)] = handle

    def stop(self, handle: _Handle) -> bool:
        """Forget the operation; returns True if its deadline had fired."""
        with self._cond:
            self._handles.pop(id(handle), None)
            return handle.fired

    def _run(self) -> None:
        with self._cond:
            while True:
                if not self._handles:
                    self._sleeping = True
                    self._cond.wait()
                    self._sleeping = False
                    continue
                now = time.monotonic()
                for handle in self._handles.values():
                    if not handle.fired and handle.deadline <= now:
                        handle.fired = True
                        _cut(handle)
                self._cond.wait(self._tick)


def _cut(handle: _Handle) -> None:
    # The fd could in theory have been closed and reused by libpq's error path;
    # the inode check makes sure we only ever shut down our own socket.
    try:
        dup = os.dup(handle.fd)
    except OSError:
        return
    try:
        sock = socket.socket(fileno=dup) if os.fstat(dup).st_ino == handle.inode else None
    except OSError:
        sock = None
    if sock is None:
        os.close(dup)
        return
    with sock:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class PostgresConnections:
    """A small pool of psycopg connections shared by the PostgreSQL stores.

    Connections are made on demand (one per concurrent caller), kept idle for
    reuse, and closed after any error, so after an outage the next call simply
    connects again. Tables are created on first use, under an advisory lock so
    replicas starting together do not race on the DDL.

    Args:
        url: a libpq URL or conninfo string (``postgresql://user@host:5432/db``).
        schema: the schema holding the tables (created if missing).
        timeout: seconds before an unanswered operation becomes ``StoreUnavailable``.
        max_idle: idle connections kept for reuse.
    """

    def __init__(
        self, url: str, *, schema: str = DEFAULT_SCHEMA, timeout: float = DEFAULT_TIMEOUT, max_idle: int = 8
    ) -> None:
        if not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigurationError(f"schema name must match {_SCHEMA_NAME.pattern}, got {schema!r}")
        if timeout <= 0:
            raise ConfigurationError("the PostgreSQL timeout must be positive")
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigurationError(f"bad PostgreSQL URL: {exc}") from exc
        ms = max(1, int(timeout * 1000))
        # The server must give up on a statement before the client does: a statement
        # still waiting (on a lock, say) when the watchdog cuts the socket could
        # otherwise go on to commit after its caller was told it failed.
        self._margin = min(0.2, max(0.02, timeout / 10))
        self._statement_ms = max(1, ms - int(self._margin * 1000))
        ours = f"-c statement_timeout={self._statement_ms} -c idle_in_transaction_session_timeout={max(1000, ms)}"
        params["options"] = f"{params['options']} {ours}" if params.get("options") else ours
        params.setdefault("application_name", "execauth")
        # libpq counts whole seconds and never less than 2.
        params["connect_timeout"] = max(2, math.ceil(timeout))
        # A peer that stops acknowledging (network gone) is dropped by the kernel.
        params.setdefault("tcp_user_timeout", ms)
        params.setdefault("keepalives", 1)
        params.setdefault("keepalives_idle", 30)
        self._conninfo = make_conninfo("", **params)
        self.schema = schema
        self.timeout = timeout
        self._idle: list[_Handle] = []
        self._inherited: list[_Handle] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._max_idle = max_idle
        self._ready: set[str] = set()
        self._ddl_lock = threading.Lock()
        self._watchdog = _Watchdog(tick=min(0.1, timeout / 4))

    def table(self, name: str) -> str:
        return f'"{self.schema}"."{name}"'

    def _connect(self) -> _Handle:
        conn = psycopg.Connection.connect(self._conninfo, autocommit=True)
        fd = conn.fileno()
        return _Handle(conn, fd, os.fstat(fd).st_ino)

    def _take(self) -> tuple[_Handle, bool]:
        with self._lock:
            if self._pid != os.getpid():
                # A forked child must neither use nor close the parent's sessions
                # (closing would end them for the parent too): keep them, untouched.
                self._inherited += self._idle
                self._idle, self._pid = [], os.getpid()
            if self._idle:
                return self._idle.pop(), True
        return self._connect(), False

    def _give_back(self, handle: _Handle) -> None:
        conn = handle.conn
        if (
            not handle.narrowed
            and not conn.closed
            and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        ):
            with self._lock:
                if len(self._idle) < self._max_idle:
                    self._idle.append(handle)
                    return
        conn.close()

    def _drop_idle(self) -> None:
        with self._lock:
            stale, self._idle = self._idle, []
        for handle in stale:
            handle.conn.close()

    def run(self, what: str, op: Callable[[Conn], T], *, tables: _Tables | Sequence[_Tables] = ()) -> T:
        """Run ``op`` on a connection within the deadline; any failure is ``StoreUnavailable``.

        ``op`` must be safe to run twice: a connection that turns out dead after a
        server restart is replaced and ``op`` retried once, if time remains.
        """
        deadline = time.monotonic() + self.timeout
        for attempt in (1, 2):
            try:
                handle, reused = self._take()
            except (psycopg.Error, OSError) as exc:
                raise StoreUnavailable(f"PostgreSQL {what}: {_first_line(exc)}") from exc
            self._watchdog.start(handle, deadline)
            try:
                self._fit_statement_timeout(handle, deadline)
                for needed in (tables,) if isinstance(tables, _Tables) else tables:
                    if needed.kind not in self._ready:
                        self._create(handle.conn, needed)
                        self._ready.add(needed.kind)
                result = op(handle.conn)
                self._restore_statement_timeout(handle)
            except BaseException as exc:
                fired = self._watchdog.stop(handle)
                dead = handle.conn.closed
                handle.conn.close()
                if not isinstance(exc, (psycopg.Error, OSError)):
                    raise
                if fired or time.monotonic() >= deadline:
                    raise StoreUnavailable(f"PostgreSQL {what}: no answer within {self.timeout} s") from exc
                if attempt == 1 and reused and dead:
                    # Probably every idle connection died with the server; start afresh.
                    self._drop_idle()
                    continue
                raise StoreUnavailable(f"PostgreSQL {what}: {_first_line(exc)}") from exc
            if self._watchdog.stop(handle):
                handle.conn.close()  # cut just as it finished: the result stands, the socket does not
            else:
                self._give_back(handle)
            return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _fit_statement_timeout(self, handle: _Handle, deadline: float) -> None:
        """Lower this session's statement_timeout when less time is left than it allows.

        A pooled session at the start of a call needs nothing (its limit is the timeout
        less the margin); a retry, or a call that spent time connecting, gets the time
        actually left, so its statements end on the server before the client's deadline.
        """
        left_ms = int((deadline - time.monotonic() - self._margin) * 1000)
        # Up to half the margin may go by before the first statement leaves; the other
        # half covers the trip to the server.
        if left_ms >= self._statement_ms - int(self._margin * 500):
            return
        if left_ms < 1:
            raise psycopg.OperationalError("no time left for this call")
        handle.narrowed = True
        handle.conn.execute(f"SET statement_timeout = {left_ms}")

    @staticmethod
    def _restore_statement_timeout(handle: _Handle) -> None:
        # The call succeeded: nothing here may turn it into a failure (and a retry).
        if handle.narrowed:
            try:
                handle.conn.execute("RESET statement_timeout")
                handle.narrowed = False
            except (psycopg.Error, OSError):
                pass  # still narrowed: closed instead of pooled

    def _create(self, conn: Conn, tables: _Tables) -> None:
        # When everything exists, skip the DDL: CREATE ... IF NOT EXISTS still takes
        # table locks, and a replica starting late would deadlock with live traffic.
        names = [f'"{self.schema}"."{r}"' for r in tables.relations]
        present = "SELECT bool_and(to_regclass(r) IS NOT NULL) FROM unnest(%s::text[]) AS r"
        with self._ddl_lock:
            if conn.execute(present, (names,)).fetchone() == (True,):
                return
            # A session lock (released by unlock, or by the connection closing on an
            # error) serialises replicas; the check after it runs in a new transaction,
            # so it sees what the replica before us committed.
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"execauth-ddl:{self.schema}",))
            try:
                if conn.execute(present, (names,)).fetchone() == (True,):
                    return
                with conn.transaction():
                    conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                    for statement in tables.statements:
                        conn.execute(statement)
            finally:
                if not conn.closed:
                    conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (f"execauth-ddl:{self.schema}",))

    def close(self) -> None:
        """Close the idle connections (connections in use close when returned)."""
        self._drop_idle()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connections(target: str | PostgresConnections, schema: str, timeout: float) -> PostgresConnections:
    return PostgresConnections(target, schema=schema, timeout=timeout) if isinstance(target, str) else target


class PostgresReplayStore:
    """Consumed token ids in a table keyed by id; expired rows purged in batches.

    Args:
        target: a PostgreSQL URL, or :class:`PostgresConnections` shared with other stores.
        schema: schema of the tables (ignored when ``target`` is a pool, which has its own).
        timeout: seconds before an unanswered call becomes ``StoreUnavailable``.
        clock_margin: seconds an id is kept past ``expires_at``, for replicas whose
            clocks run behind this one's (the verifier's maximum clock skew).
    """

    def __init__(
        self,
        target: str | PostgresConnections,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout: float = DEFAULT_TIMEOUT,
        clock_margin: int = MAX_CLOCK_SKEW,
    ) -> None:
        if clock_margin < 0:
            raise ConfigurationError("clock_margin cannot be negative")
        self._db = _connections(target, schema, timeout)
        self._margin = clock_margin
        t = self._db.table("consumed_tokens")
        self._tables = _Tables(
            "replay",
            ("consumed_tokens", "consumed_tokens_expires_at"),
            (
                f"CREATE TABLE IF NOT EXISTS {t} (jti text PRIMARY KEY, expires_at bigint NOT NULL)",
                f"CREATE INDEX IF NOT EXISTS consumed_tokens_expires_at ON {t} (expires_at)",
            ),
        )
        self._insert = f"INSERT INTO {t} (jti, expires_at) VALUES (%s, %s) ON CONFLICT (jti) DO NOTHING"
        # Bounded batches: one purge never holds locks or runs long enough to hit the timeout.
        self._purge = (
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE expires_at < %s LIMIT {_PURGE_BATCH}))"
        )
        self._count = 0
        self._next_purge = 0

    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        purge = self._purge_due(now)

        def op(conn: Conn) -> bool:
            if purge:
                conn.execute(self._purge, (now - self._margin,))
            # A retried insert whose first attempt landed finds the id taken: it
            # reads as already consumed, which denies (fail closed).
            return conn.execute(self._insert, (token_id, expires_at)).rowcount == 1

        fresh = self._db.run("replay store", op, tables=self._tables)
        if purge:
            self._next_purge = now + _PURGE_SECONDS
        return fresh

    def _purge_due(self, now: int) -> bool:
        self._count += 1
        return self._count % _PURGE_EVERY == 0 or now >= self._next_purge

    def joint_with(self, audit_log: object) -> _PostgresJoint | None:
        """The atomic consume-and-append for an audit log on the same connection pool
        (as :func:`~execauth_core.stores.urls.open_stores` makes them); else ``None``."""
        if isinstance(audit_log, PostgresAuditLog) and audit_log._db is self._db:
            return _PostgresJoint(self, audit_log)
        return None

    def close(self) -> None:
        self._db.close()


class _PostgresJoint(JointBase["PostgresReplayStore", "PostgresAuditLog"]):
    """Consume token ids and append the entry recording their use, in one statement.

    The ids are inserted first; only if every one was fresh does the statement go on
    to lock the head and append (else it divides by zero, which rolls the whole
    statement back: nothing consumed, nothing appended). Taking the head row only
    after the ids keeps the lock order the same for every writer.
    """

    def __init__(self, replay: PostgresReplayStore, audit: PostgresAuditLog) -> None:
        super().__init__(replay, audit)
        t = replay._db.table("consumed_tokens")
        self._statement = (
            f"WITH RECURSIVE ids AS (INSERT INTO {t} (jti, expires_at) "
            "SELECT * FROM unnest(%(ids)s::text[], %(exps)s::bigint[]) "
            "ON CONFLICT (jti) DO NOTHING RETURNING jti), "
            "fresh AS (SELECT 1 / (count(*) = %(n)s)::int AS ok FROM ids), "
            + audit._append_after("fresh", "fresh.ok = 1")
        )
        self._which = f"SELECT jti FROM {t} WHERE jti = ANY(%s)"

    def _consume_and_append(
        self, ids: Sequence[tuple[str, int]], event: Mapping[str, Any], now: int
    ) -> AuditEntry | str:
        template = body_template(event)  # a malformed event fails here, before any I/O
        names = [token_id for token_id, _ in ids]
        params = {"ids": names, "exps": [expires_at for _, expires_at in ids], "n": len(ids)}
        replay = self._replay
        purge = replay._purge_due(now)
        attempts = 0

        def op(conn: Conn) -> AuditEntry | str:
            nonlocal attempts
            attempts += 1
            if purge:
                conn.execute(replay._purge, (now - replay._margin,))
            try:
                return self._audit._write(conn, event, template, params, self._statement, retry=attempts > 1)
            except psycopg.errors.DivisionByZero:
                pass  # an id was consumed already: the statement was rolled back whole
            taken = {str(row[0]) for row in conn.execute(self._which, (names,)).fetchall()}
            for name in names:
                if name in taken:
                    return name
            # The conflicting id is gone again (another replica purged it as expired in
            # between): nothing is certain, so the caller denies.
            raise StoreUnavailable("PostgreSQL replay store: a token id was consumed, then no longer found")

        result = self._audit._db.run("replay store and audit log", op, tables=(replay._tables, self._audit._tables))
        if purge:
            replay._next_purge = now + _PURGE_SECONDS
        return result


class PostgresAuditLog(TreeMixin):
    """A hash-linked log: rows keyed by ``seq`` plus a head row, changed together.

    The Merkle tree lives in ``audit_tree`` (full subtrees by ``(level, idx)``) with
    its frontier in the head row. The append statement returns the frontier of the
    head it locked; the subtrees the new leaf completes are hashed here and written,
    with the new frontier, before the same transaction commits (a log written before
    the tree existed gets it built there first, under the same lock).

    An append is one statement: it locks the head row (``SELECT ... FOR UPDATE``),
    splices the head's digest and the next ``seq`` into the entry's canonical
    bytes, hashes them (``sha256``), inserts the entry and moves the head, all in
    one transaction. Writers queue on the head row instead of retrying, and two
    of them can never fork the chain (``seq`` is also the primary key).

    Args:
        result_commit: ``"durable"`` (default): every entry is on disk before its
            append returns. ``"async"``: ``result`` entries (what a tool returned,
            written after it ran) commit with ``synchronous_commit=off``; every other
            entry stays durable. A database crash can then lose the newest result
            entries — those not yet flushed by the next durable commit of any writer,
            or by the WAL writer within ``3 x wal_writer_delay`` — never an execution,
            decision or denial entry, and never a link: WAL is replayed in order, so
            only a tail of results can go, and the chain still verifies. Saves one
            fsync per guarded call and holds the head lock for less time.
    """

    def __init__(
        self,
        target: str | PostgresConnections,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout: float = DEFAULT_TIMEOUT,
        result_commit: str = "durable",
    ) -> None:
        if result_commit not in ("durable", "async"):
            raise ConfigurationError(f"result_commit is 'durable' or 'async', got {result_commit!r}")
        self._async_results = result_commit == "async"
        self._db = _connections(target, schema, timeout)
        log_t, head_t = self._db.table("audit_log"), self._db.table("audit_head")
        tree_t, cps_t = self._db.table("audit_tree"), self._db.table("audit_checkpoints")
        self._tables = _Tables(
            "audit",
            ("audit_log", "audit_head", "audit_tree", "audit_checkpoints"),
            (
                f"CREATE TABLE IF NOT EXISTS {log_t} "
                "(seq bigint PRIMARY KEY, digest text NOT NULL, body bytea NOT NULL)",
                f"CREATE TABLE IF NOT EXISTS {head_t} "
                "(id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL, digest text NOT NULL, writer text)",
                f"INSERT INTO {head_t} (id, seq, digest) VALUES (1, 0, '{GENESIS}') ON CONFLICT (id) DO NOTHING",
                f"ALTER TABLE {head_t} ADD COLUMN IF NOT EXISTS tsize bigint NOT NULL DEFAULT 0",
                f"ALTER TABLE {head_t} ADD COLUMN IF NOT EXISTS frontier bytea NOT NULL DEFAULT ''::bytea",
                f"CREATE TABLE IF NOT EXISTS {tree_t} "
                "(level smallint NOT NULL, idx bigint NOT NULL, hash bytea NOT NULL, PRIMARY KEY (level, idx))",
                f"CREATE TABLE IF NOT EXISTS {cps_t} "
                "(id bigserial PRIMARY KEY, size bigint NOT NULL, note text NOT NULL)",
            ),
        )
        self._put_nodes = (
            f"WITH n AS (INSERT INTO {tree_t} (level, idx, hash) "
            "SELECT * FROM unnest(%(l)s::smallint[], %(i)s::bigint[], %(h)s::bytea[]) RETURNING 1) "
            f"UPDATE {head_t} SET tsize = %(size)s, frontier = %(frontier)s WHERE id = 1 AND tsize = %(old)s"
        )
        self._get_nodes = (
            f"SELECT t.level, t.idx, t.hash FROM {tree_t} AS t "
            "JOIN unnest(%s::smallint[], %s::bigint[]) AS k(level, idx) ON t.level = k.level AND t.idx = k.idx"
        )
        self._tree_head = f"SELECT seq, tsize, frontier FROM {head_t} WHERE id = 1"
        self._lock_tree = f"SELECT seq, tsize, frontier FROM {head_t} WHERE id = 1 FOR UPDATE"
        self._bodies = f"SELECT seq, body FROM {log_t} WHERE seq > %s AND seq <= %s ORDER BY seq"
        self._log_t, self._head_t = log_t, head_t
        self._tree_t, self._cps_t = tree_t, cps_t
        self._append = "WITH RECURSIVE " + self._append_after()
        # set_config(..., true) lasts for this statement's own transaction only.
        self._append_async = "WITH RECURSIVE sc AS (SELECT set_config('synchronous_commit', 'off', true) AS v), " + (
            self._append_after("sc", "sc.v = 'off'")
        )
        self._mine = (
            f"SELECT h.seq, h.digest, l.body FROM {head_t} AS h JOIN {log_t} AS l ON l.seq = h.seq "
            "WHERE h.id = 1 AND h.writer = %s"
        )
        self._read_head = f"SELECT seq, digest FROM {head_t} WHERE id = 1"
        self._page = f"SELECT seq, digest, body FROM {log_t} WHERE seq >= %s ORDER BY seq LIMIT {_PAGE}"

    def _append_after(self, source: str | None = None, condition: str | None = None) -> str:
        """The CTEs (and final SELECT) of an append: lock the head, splice it into the
        template, hash on the server, insert, move the head. With ``source``, the head
        is locked only once that CTE's row meets ``condition``."""
        # In READ COMMITTED, FOR UPDATE waits for a concurrent append to commit and
        # then returns the head as that append left it.
        cur = (
            f"cur AS (SELECT h.seq, h.digest, h.tsize, h.frontier FROM {self._head_t} AS h, {source} "
            f"WHERE h.id = 1 AND {condition} FOR UPDATE OF h), "
            if source
            else f"cur AS (SELECT seq, digest, tsize, frontier FROM {self._head_t} WHERE id = 1 FOR UPDATE), "
        )
        # The Merkle update runs in the same statement, from the frontier of the head row
        # just locked (FOR UPDATE reads its newest version, so no other table is read):
        # ``up`` hashes the leaf and merges it with the frontier's last subtrees, one
        # level per trailing 1 bit of the leaf's index. A log whose tree lags behind
        # (written before the tree existed) appends without it; the caller then builds
        # the tree under the head lock (see _catch_up).
        return (
            cur + "new AS (SELECT seq + 1 AS seq, digest AS prev, %(a)s::bytea || convert_to(digest, 'UTF8') "
            "|| %(b)s::bytea || convert_to((seq + 1)::text, 'UTF8') || %(c)s::bytea AS body, "
            "tsize = seq AS tree_ok, seq AS idx, frontier FROM cur), "
            "up (lvl, h) AS (SELECT 0, sha256('\\x00'::bytea || body) FROM new WHERE tree_ok "
            "UNION ALL SELECT up.lvl + 1, sha256('\\x01'::bytea || "
            "substring(new.frontier FROM length(new.frontier) - 32 * (up.lvl + 1) + 1 FOR 32) || up.h) "
            "FROM up, new WHERE ((new.idx >> up.lvl) & 1) = 1), "
            "top AS (SELECT lvl, h FROM up ORDER BY lvl DESC LIMIT 1), "
            f"ins AS (INSERT INTO {self._log_t} (seq, digest, body) "
            "SELECT seq, 'sha256:' || encode(sha256(body), 'hex'), body FROM new RETURNING seq, digest), "
            f"tree AS (INSERT INTO {self._tree_t} (level, idx, hash) SELECT up.lvl, new.idx >> up.lvl, up.h "
            "FROM up, new), "
            f"upd AS (UPDATE {self._head_t} AS h SET seq = ins.seq, digest = ins.digest, writer = %(writer)s, "
            "tsize = CASE WHEN new.tree_ok THEN ins.seq ELSE h.tsize END, "
            "frontier = CASE WHEN new.tree_ok THEN "
            "substring(new.frontier FROM 1 FOR length(new.frontier) - 32 * top.lvl) || top.h ELSE h.frontier END "
            "FROM ins, new LEFT JOIN top ON true WHERE h.id = 1) "
            "SELECT ins.seq, new.prev, ins.digest, new.tree_ok FROM ins JOIN new USING (seq)"
        )

    def append(self, event: Mapping[str, Any]) -> AuditEntry:
        template = body_template(event)  # a malformed event fails here, before any I/O
        params: dict[str, Any] = {}  # one writer token for every attempt of this call
        attempts = 0

        def op(conn: Conn) -> AuditEntry:
            nonlocal attempts
            attempts += 1
            return self._write(conn, event, template, params, statement, retry=attempts > 1)

        relaxed = self._async_results and event.get("event") == "result"
        statement = self._append_async if relaxed else self._append
        return self._db.run("audit log", op, tables=self._tables)

    def _write(
        self,
        conn: Conn,
        event: Mapping[str, Any],
        template: tuple[bytes, bytes, bytes],
        params: dict[str, Any],
        statement: str,
        *,
        retry: bool,
    ) -> AuditEntry:
        # Marks the head this call wrote, so a retry recognises its own entry even
        # when another writer appended an identical event.
        token = params.setdefault("writer", secrets.token_hex(12))
        if retry:
            mine = conn.execute(self._mine, (token,)).fetchone()
            if mine is not None:  # the first attempt committed; only its reply was lost
                return _entry(int(mine[0]), str(mine[1]), bytes(mine[2]))
        a, b, c = template
        row = conn.execute(statement, {**params, "a": a, "b": b, "c": c}).fetchone()
        if row is None:
            raise StoreUnavailable("PostgreSQL audit log: the head row is missing")
        seq, prev, dig = int(row[0]), str(row[1]), str(row[2])
        # The server hashed exactly the bytes this template makes with its head.
        if body_digest(a + prev.encode("ascii") + b + str(seq).encode("ascii") + c) != dig:
            raise StoreUnavailable(f"PostgreSQL audit log: entry {seq} was not stored as hashed here")
        if not row[3]:
            self._build_tree(conn)  # the entry is durable; a failure here is retried on the next call
        return AuditEntry(seq=seq, digest=dig, body=make_body(event, seq=seq, prev=prev))

    def _build_tree(self, conn: Conn) -> Frontier:
        """Bring the tree up to the head (under the head row's lock, in one transaction)."""
        with conn.transaction():
            locked = conn.execute(self._lock_tree).fetchone()
            if locked is None:
                raise StoreUnavailable("PostgreSQL audit log: the head row is missing")
            seq, tsize, packed = locked
            frontier, made = self._catch_up(conn, int(seq), int(tsize), bytes(packed))
            if made:
                self._store_nodes(conn, frontier, made, old=int(tsize))
        return frontier

    def _catch_up(
        self, conn: Conn, size: int, tsize: int, packed: bytes
    ) -> tuple[Frontier, list[tuple[int, int, bytes]]]:
        """The frontier at ``size`` leaves, building the tree over entries written
        before it existed (the caller holds the head row's lock)."""
        try:
            frontier = Frontier.unpack(tsize, packed)
        except ValueError as exc:
            raise StoreUnavailable(f"PostgreSQL audit log: the stored Merkle frontier is damaged: {exc}") from exc
        made: list[tuple[int, int, bytes]] = []
        if tsize < size:
            for row_seq, body in conn.execute(self._bodies, (tsize, size)).fetchall():
                if int(row_seq) != frontier.size + 1:
                    raise StoreUnavailable(f"PostgreSQL audit log: entry {frontier.size + 1} is missing")
                made += frontier.append(leaf_hash(bytes(body)))
        if frontier.size != size:
            raise StoreUnavailable(f"PostgreSQL audit log: the Merkle tree does not fit the log's {size} entries")
        return frontier, made

    def _store_nodes(self, conn: Conn, frontier: Frontier, made: list[tuple[int, int, bytes]], *, old: int) -> None:
        args = {
            "l": [m[0] for m in made],
            "i": [m[1] for m in made],
            "h": [m[2] for m in made],
            "size": frontier.size,
            "frontier": frontier.pack(),
            "old": old,
        }
        if conn.execute(self._put_nodes, args).rowcount != 1:
            raise StoreUnavailable("PostgreSQL audit log: the head row moved under its lock")

    def _fetch_nodes(self, keys: Sequence[NodeKey]) -> dict[NodeKey, bytes]:
        if not keys:
            return {}
        levels, idxs = [k[0] for k in keys], [k[1] for k in keys]

        def op(conn: Conn) -> dict[NodeKey, bytes]:
            rows = conn.execute(self._get_nodes, (levels, idxs)).fetchall()
            return {(int(level), int(idx)): bytes(h) for level, idx, h in rows}

        return self._db.run("audit log", op, tables=self._tables)

    def tree_head(self) -> tuple[int, bytes]:
        def op(conn: Conn) -> Frontier:
            row = conn.execute(self._tree_head).fetchone()
            if row is None:
                return Frontier()
            if int(row[1]) == int(row[0]):
                try:
                    return Frontier.unpack(int(row[1]), bytes(row[2]))
                except ValueError as exc:
                    raise StoreUnavailable(f"PostgreSQL audit log: stored Merkle frontier damaged: {exc}") from exc
            return self._build_tree(conn)  # a log written before the tree: build it now

        frontier = self._db.run("audit log", op, tables=self._tables)
        return frontier.size, frontier.root()

    def add_checkpoint(self, note: str, size: int) -> None:
        def op(conn: Conn) -> None:
            conn.execute(f"INSERT INTO {self._cps_t} (size, note) VALUES (%s, %s)", (size, note))

        self._db.run("audit log", op, tables=self._tables)

    def checkpoints(self) -> list[str]:
        def op(conn: Conn) -> list[str]:
            return [str(r[0]) for r in conn.execute(f"SELECT note FROM {self._cps_t} ORDER BY size, id").fetchall()]

        return self._db.run("audit log", op, tables=self._tables)

    def head(self) -> tuple[int, str]:
        def op(conn: Conn) -> tuple[int, str]:
            row = conn.execute(self._read_head).fetchone()
            return (0, GENESIS) if row is None else (int(row[0]), str(row[1]))

        return self._db.run("audit log", op, tables=self._tables)

    def entries(self, start: int = 1) -> Iterator[AuditEntry]:
        seq = max(start, 1)

        def page(conn: Conn) -> list[Any]:
            return conn.execute(self._page, (seq,)).fetchall()

        while True:
            rows = self._db.run("audit log", page, tables=self._tables)
            for row_seq, dig, raw in rows:
                yield _entry(int(row_seq), str(dig), bytes(raw))
                seq = int(row_seq) + 1
            if len(rows) < _PAGE:
                return

    def __iter__(self) -> Iterator[AuditEntry]:
        return self.entries()

    def close(self) -> None:
        self._db.close()


def _entry(seq: int, dig: str, raw: bytes) -> AuditEntry:
    try:
        body = loads_strict(raw)
    except CanonicalizationError as exc:
        raise AuditIntegrityError(seq, f"stored body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise AuditIntegrityError(seq, "stored body is not an object")
    return AuditEntry(seq=seq, digest=dig, body=body)


class PostgresStateStore:
    """Budgets and rate counters in PostgreSQL, one transaction per check-and-debit."""

    def __init__(
        self,
        target: str | PostgresConnections,
        *,
        schema: str = DEFAULT_SCHEMA,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self._db = _connections(target, schema, timeout)
        c, h = self._db.table("state_counters"), self._db.table("state_holds")
        self._tables = _Tables(
            "state",
            ("state_counters", "state_counters_ends_at", "state_holds", "state_holds_ends_at"),
            (
                f"CREATE TABLE IF NOT EXISTS {c} (key text NOT NULL, window_start bigint NOT NULL, "
                "used bigint NOT NULL, ends_at bigint NOT NULL, PRIMARY KEY (key, window_start))",
                f"CREATE INDEX IF NOT EXISTS state_counters_ends_at ON {c} (ends_at)",
                f"CREATE TABLE IF NOT EXISTS {h} "
                "(hold_id text PRIMARY KEY, items bytea NOT NULL, ends_at bigint NOT NULL)",
                f"CREATE INDEX IF NOT EXISTS state_holds_ends_at ON {h} (ends_at)",
            ),
        )
        self._hold = f"INSERT INTO {h} (hold_id, items, ends_at) VALUES (%s, %s, %s) ON CONFLICT (hold_id) DO NOTHING"
        self._upsert = (
            f"INSERT INTO {c} AS c (key, window_start, used, ends_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (key, window_start) DO UPDATE SET used = c.used + excluded.used "
            "WHERE c.used + excluded.used <= %s"
        )
        self._held = f"SELECT items FROM {h} WHERE hold_id = %s"
        self._release = f"DELETE FROM {h} WHERE hold_id = %s RETURNING items"
        self._give = f"UPDATE {c} SET used = GREATEST(0, used - %s) WHERE key = %s AND window_start = %s"
        self._usage = f"SELECT used FROM {c} WHERE key = %s AND window_start = %s"
        self._purges = tuple(
            f"DELETE FROM {t} WHERE ctid = ANY(ARRAY(SELECT ctid FROM {t} WHERE ends_at <= %s LIMIT {_PURGE_BATCH}))"
            for t in (c, h)
        )
        self._next_purge = 0

    def debit(self, hold_id: str, debits: Sequence[Debit], *, now: int) -> str | None:
        planned = [(d.key, window_start(now, d.window), d) for d in debits]
        items = canonicalize_trusted([[k, s, d.amount] for k, s, d in planned])
        ends_at = max((s + d.window for _, s, d in planned), default=now + 1)
        purge = now >= self._next_purge
        # Rows are locked in key order, so two debits over the same counters
        # can wait for each other but never deadlock.
        order = sorted(range(len(planned)), key=lambda i: planned[i][:2])

        def op(conn: Conn) -> int | None:
            if purge:
                # Windows that ended can never be charged or refunded again.
                for statement in self._purges:
                    conn.execute(statement, (now,))
            try:
                with conn.transaction():
                    if conn.execute(self._hold, (hold_id, items, ends_at)).rowcount == 0:
                        held = conn.execute(self._held, (hold_id,)).fetchone()
                        if held is not None and bytes(held[0]) != items:
                            raise _Reused()
                        return None  # a retry of a debit that already happened
                    refused = []
                    for i in order:
                        key, start, d = planned[i]
                        # An upsert that would pass the limit changes nothing (rowcount 0);
                        # a fresh row gets no such check, hence the explicit one.
                        args = (key, start, d.amount, start + d.window, d.limit)
                        if d.amount > d.limit or conn.execute(self._upsert, args).rowcount == 0:
                            refused.append(i)
                    if refused:
                        raise _Refused(min(refused))
            except _Refused as r:
                return r.index
            return None

        try:
            lost = self._db.run("state store", op, tables=self._tables)
        except _Reused:
            # Only a retry of the same debit is idempotent; a reused id is a bug.
            raise StoreUnavailable(f"hold id {hold_id!r} reused for different debits") from None
        if purge:
            self._next_purge = now + 60
        return None if lost is None else debits[lost].key

    def refund(self, hold_id: str) -> None:
        def op(conn: Conn) -> None:
            with conn.transaction():
                row = conn.execute(self._release, (hold_id,)).fetchone()
                if row is None:
                    return
                for key, start, amount in sorted(loads_strict(bytes(row[0]))):
                    conn.execute(self._give, (amount, key, start))

        self._db.run("state store", op, tables=self._tables)

    def usage(self, key: str, window: int, *, now: int) -> int:
        start = window_start(now, window)

        def op(conn: Conn) -> int:
            row = conn.execute(self._usage, (key, start)).fetchone()
            return 0 if row is None else int(row[0])

        return self._db.run("state store", op, tables=self._tables)

    def close(self) -> None:
        self._db.close()
