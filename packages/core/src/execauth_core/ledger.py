"""The effect ledger: each authorized effect runs at most once per idempotency key.

Every guarded execution has an idempotency key (by default
:func:`idempotency_key` of the run or thread id, the tool-call id and the proposal
digest; callers may set their own). The ledger keeps one :class:`LedgerEntry` per key:

``reserved`` -> ``started`` -> ``succeeded`` / ``failed`` / ``unknown``

A second attempt with a key already in the ledger never runs the tool again:

* ``succeeded``: :class:`AlreadyExecuted` (``LEDGER_ALREADY_SUCCEEDED``), carrying the
  recorded result where one was kept (JSON, at most :data:`MAX_RESULT_BYTES`);
* ``failed``: refused with ``LEDGER_ALREADY_FAILED`` (the tool raised, so its effect
  may have half happened); a ledger built with ``retry_failed=True`` lets a new
  attempt, under a new decision and token, take the key over instead;
* ``reserved`` / ``started`` within the lease: refused with ``LEDGER_IN_FLIGHT``;
* ``started`` past its lease (the process died between start and outcome), or
  ``unknown``: refused with ``LEDGER_OUTCOME_UNKNOWN``; a person reconciles it
  (``execauth ledger resolve KEY --succeeded|--failed``). Never re-executed.

A key reused for another proposal is refused with ``LEDGER_KEY_CONFLICT``.

Every transition is one atomic compare-and-set in the backend (insert-if-absent for
the first), so four processes racing on one key give one execution. Backends
(:func:`open_ledger`, from the same store URLs as
:func:`~execauth_core.stores.urls.open_stores`): ``memory://``, ``sqlite:...``,
``redis://...`` and ``postgresql://...``. Resolutions by a person are recorded in the
audit log (event ``ledger``).
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from .audit import AuditLog
from .canonical import canonicalize, digest_bytes
from .clock import Clock, SystemClock
from .errors import ConfigurationError, ExecutionDenied, StoreUnavailable
from .reasons import ReasonCode as R

__all__ = [
    "DEFAULT_LEASE",
    "MAX_RESULT_BYTES",
    "STATES",
    "AlreadyExecuted",
    "Ledger",
    "LedgerEntry",
    "LedgerRefusal",
    "LedgerStore",
    "MemoryLedgerStore",
    "PostgresLedgerStore",
    "RedisLedgerStore",
    "SQLiteLedgerStore",
    "idempotency_key",
    "open_ledger",
]

STATES = ("reserved", "started", "succeeded", "failed", "unknown")
State = Literal["reserved", "started", "succeeded", "failed", "unknown"]
DEFAULT_LEASE = 300
"""Seconds a started call may take before a missing outcome reads as ``unknown``."""
MAX_LEASE = 7 * 86_400
MAX_RESULT_BYTES = 65_536
"""The largest canonical result the ledger keeps to hand back to a repeated attempt."""
MAX_KEY_LENGTH = 256


def idempotency_key(run_id: str | None, call_id: str | None, proposal_digest: str) -> str:
    """The default idempotency key of one tool call: ``ik_`` + the SHA-256 of the
    canonical JSON of ``["execauth.idempotency/1", run_id, call_id, proposal_digest]``.

    The same call of the same run with the same arguments has the same key (a retry,
    a resume in another process); another run, another call id or other arguments
    give another key, and so a new decision.
    """
    for name, value in (("run_id", run_id), ("call_id", call_id)):
        if value is not None and not isinstance(value, str):
            raise ConfigurationError(f"{name} is a string or None, not {type(value).__name__}")
    if not isinstance(proposal_digest, str) or not proposal_digest:
        raise ConfigurationError("proposal_digest is the proposal's sha256:<hex> digest")
    seed = canonicalize(["execauth.idempotency/1", run_id, call_id, proposal_digest])
    return "ik_" + hashlib.sha256(seed).hexdigest()


def check_key(key: object) -> str:
    """A caller-set key: a non-empty printable string of at most 256 characters."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_LENGTH or not key.isprintable():
        raise ConfigurationError(f"an idempotency key is a printable string of 1..{MAX_KEY_LENGTH} characters")
    return key


class LedgerEntry(BaseModel):
    """One idempotency key's entry, as stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal["execauth.ledger_entry/1"] = "execauth.ledger_entry/1"
    key: str = Field(description="The idempotency key.")
    state: State = Field(description="The stored state (a started entry past its lease reads as unknown).")
    version: int = Field(default=1, description="Bumped by every write; compare-and-set is on it.")
    proposal_digest: str = Field(description="sha256 of the canonical proposal this key belongs to.")
    token_id: str | None = Field(default=None, description="The token of the attempt that holds the key.")
    tool: str | None = None
    call_id: str | None = None
    attempts: int = Field(default=1, description="Attempts that held this key (more only with retry_failed).")
    reserved_at: int
    started_at: int | None = None
    finished_at: int | None = None
    lease_until: int = Field(description="When a reserved or started entry with no outcome reads as unknown.")
    status: str | None = Field(default=None, description="'ok', 'error', or 'resolved' (set by a person).")
    error: str | None = Field(default=None, description="The exception type the tool raised.")
    result_digest: str | None = Field(default=None, description="sha256 of the canonical result, when it had one.")
    result: Any = Field(default=None, description="The canonical result, if JSON and small enough.")
    has_result: bool = False
    resolved_by: str | None = None
    resolved_at: int | None = None
    note: str | None = None

    def effective_state(self, now: int) -> str:
        """The state as reported: ``started`` (or ``reserved``) past the lease is ``unknown``."""
        if self.state in ("reserved", "started") and now > self.lease_until:
            return "unknown"
        return self.state

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> LedgerEntry:
        return cls.model_validate_json(raw)

    def summary(self, now: int) -> dict[str, Any]:
        """JSON form for listings, with the reported state."""
        out = self.model_dump(mode="json")
        out["state"] = self.effective_state(now)
        out["stored_state"] = self.state
        return out


class LedgerRefusal(Exception):
    """Internal to the guard: a key the ledger will not let run, with the code and the entry."""

    def __init__(self, code: R, message: str, entry: LedgerEntry) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.entry = entry


class AlreadyExecuted(ExecutionDenied):
    """This idempotency key already ran and succeeded: the tool was not run again.

    Attributes:
        idempotency_key: the key.
        entry: the ledger entry (state, times, result digest).
        has_result: whether the ledger kept the result.
        result: the recorded result (JSON), when ``has_result``.
    """

    def __init__(self, *, entry: LedgerEntry, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.entry = entry
        self.idempotency_key = entry.key
        self.has_result = entry.has_result
        self.result = entry.result


def result_record(value: Any) -> tuple[str | None, Any, bool]:
    """``(digest, kept, has_result)`` for a tool's return value: its canonical JSON
    digest when it is JSON (a pydantic model by its JSON dump), and the value itself
    when that is at most :data:`MAX_RESULT_BYTES`. Never raises."""
    try:
        dump = getattr(value, "model_dump", None)
        plain = dump(mode="json") if callable(dump) and isinstance(value, BaseModel) else value
        raw = canonicalize(plain)
    except Exception:  # noqa: BLE001 - a result we cannot encode is simply not kept
        return None, None, False
    if len(raw) > MAX_RESULT_BYTES:
        return digest_bytes(raw), None, False
    import json

    return digest_bytes(raw), json.loads(raw), True


# -- stores -----------------------------------------------------------------------


class LedgerStore(Protocol):
    """Where ledger entries live. Every method is atomic; failures raise
    :class:`~execauth_core.errors.StoreUnavailable`."""

    def insert(self, entry: LedgerEntry) -> LedgerEntry | None:
        """Store ``entry`` if its key is absent: ``None`` then; else the stored entry."""
        ...

    def get(self, key: str) -> LedgerEntry | None: ...

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        """Entries in a stored state (all when ``None``), newest reservation first."""
        ...

    def replace(self, old: LedgerEntry, new: LedgerEntry) -> bool:
        """Write ``new`` only if the stored entry still has ``old``'s version."""
        ...

    def delete(self, old: LedgerEntry) -> bool:
        """Remove the entry only if it still has ``old``'s version."""
        ...

    def close(self) -> None: ...


class MemoryLedgerStore:
    """In-process; gone with the process. Bounded: past ``max_entries`` the oldest
    finished entries are forgotten (a retry after that runs under a new decision);
    entries without an outcome are never dropped."""

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ConfigurationError("max_entries must be positive")
        self._rows: OrderedDict[str, LedgerEntry] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_entries

    def __len__(self) -> int:
        return len(self._rows)

    def insert(self, entry: LedgerEntry) -> LedgerEntry | None:
        with self._lock:
            cur = self._rows.get(entry.key)
            if cur is not None:
                return cur
            self._rows[entry.key] = entry
            self._trim()
            return None

    def _trim(self) -> None:
        if len(self._rows) <= self._max:
            return
        for key in list(self._rows)[: len(self._rows) - self._max + 64]:
            if len(self._rows) <= self._max:
                break
            if self._rows[key].state in ("succeeded", "failed"):
                del self._rows[key]

    def get(self, key: str) -> LedgerEntry | None:
        with self._lock:
            return self._rows.get(key)

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        with self._lock:
            rows = [r for r in self._rows.values() if state is None or r.state == state]
        rows.sort(key=lambda r: (r.reserved_at, r.key), reverse=True)
        return rows[:limit]

    def replace(self, old: LedgerEntry, new: LedgerEntry) -> bool:
        with self._lock:
            cur = self._rows.get(old.key)
            if cur is None or cur.version != old.version:
                return False
            self._rows[old.key] = new
            return True

    def delete(self, old: LedgerEntry) -> bool:
        with self._lock:
            cur = self._rows.get(old.key)
            if cur is None or cur.version != old.version:
                return False
            del self._rows[old.key]
            return True

    def close(self) -> None:
        pass


class SQLiteLedgerStore:
    """A table ``ledger_entries`` in the SQLite file (the embedded default)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        from .stores.sqlite import _connect

        self.path = os.fspath(path)
        self._conn = _connect(path, timeout)
        self._lock = threading.Lock()
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS ledger_entries (key TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "version INTEGER NOT NULL, reserved_at INTEGER NOT NULL, body TEXT NOT NULL)"
            )
            self._conn.execute("CREATE INDEX IF NOT EXISTS ledger_entries_state ON ledger_entries (state, reserved_at)")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise the ledger: {exc}") from exc

    def _run(self, sql: str, params: tuple[Any, ...]) -> tuple[list[Any], int]:
        with self._lock:  # rows read to the end under the lock (see SQLiteApprovalStore)
            try:
                cur = self._conn.execute(sql, params)
                return cur.fetchall(), cur.rowcount
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"ledger: {exc}") from exc

    def insert(self, entry: LedgerEntry) -> LedgerEntry | None:
        _, count = self._run(
            "INSERT OR IGNORE INTO ledger_entries (key, state, version, reserved_at, body) VALUES (?, ?, ?, ?, ?)",
            (entry.key, entry.state, entry.version, entry.reserved_at, entry.to_json()),
        )
        if count == 1:
            return None
        found = self.get(entry.key)
        if found is None:  # inserted by another, then released in between: report as in flight
            return entry.model_copy(update={"token_id": None})
        return found

    def get(self, key: str) -> LedgerEntry | None:
        rows, _ = self._run("SELECT body FROM ledger_entries WHERE key = ?", (key,))
        return LedgerEntry.from_json(rows[0][0]) if rows else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        if state is None:
            rows, _ = self._run("SELECT body FROM ledger_entries ORDER BY reserved_at DESC, key DESC LIMIT ?", (limit,))
        else:
            rows, _ = self._run(
                "SELECT body FROM ledger_entries WHERE state = ? ORDER BY reserved_at DESC, key DESC LIMIT ?",
                (state, limit),
            )
        return [LedgerEntry.from_json(r[0]) for r in rows]

    def replace(self, old: LedgerEntry, new: LedgerEntry) -> bool:
        _, count = self._run(
            "UPDATE ledger_entries SET state = ?, version = ?, body = ? WHERE key = ? AND version = ?",
            (new.state, new.version, new.to_json(), old.key, old.version),
        )
        return count == 1

    def delete(self, old: LedgerEntry) -> bool:
        _, count = self._run("DELETE FROM ledger_entries WHERE key = ? AND version = ?", (old.key, old.version))
        return count == 1

    def close(self) -> None:
        self._conn.close()


class PostgresLedgerStore:
    """A table ``ledger_entries`` in the stores' PostgreSQL schema."""

    def __init__(self, target: Any, *, schema: str | None = None, timeout: float | None = None) -> None:
        from .stores import postgres as pg

        self._owned = isinstance(target, str)  # a pool passed in is its owner's to close
        if isinstance(target, str):
            kw: dict[str, Any] = {"schema": schema or pg.DEFAULT_SCHEMA}
            if timeout is not None:
                kw["timeout"] = timeout
            target = pg.PostgresConnections(target, **kw)
        self._db = target
        t = self._db.table("ledger_entries")
        self._t = t
        self._tables = pg._Tables(
            "ledger",
            ("ledger_entries",),
            (
                f"CREATE TABLE IF NOT EXISTS {t} (key text PRIMARY KEY, state text NOT NULL, "
                "version bigint NOT NULL, reserved_at bigint NOT NULL, body text NOT NULL)",
                f"CREATE INDEX IF NOT EXISTS ledger_entries_state ON {t} (state, reserved_at)",
            ),
        )

    def _run(self, op: Any) -> Any:
        return self._db.run("ledger", op, tables=self._tables)

    def insert(self, entry: LedgerEntry) -> LedgerEntry | None:
        # One statement: the insert, or the row that was there. A retry of a lost reply
        # finds our own row and reads it as taken (refused), never as a second start.
        sql = (
            f"WITH ins AS (INSERT INTO {self._t} (key, state, version, reserved_at, body) "  # noqa: S608
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT (key) DO NOTHING RETURNING key) "
            f"SELECT (SELECT count(*) FROM ins), (SELECT body FROM {self._t} WHERE key = %s)"
        )
        params = (entry.key, entry.state, entry.version, entry.reserved_at, entry.to_json(), entry.key)
        row = self._run(lambda c: c.execute(sql, params).fetchone())
        if row[0] == 1:
            return None
        if row[1] is None:
            # The conflicting row committed after our snapshot: read it afresh.
            found = self.get(entry.key)
            return found if found is not None else entry.model_copy(update={"token_id": None})
        return LedgerEntry.from_json(row[1])

    def get(self, key: str) -> LedgerEntry | None:
        sql = f"SELECT body FROM {self._t} WHERE key = %s"  # noqa: S608
        row = self._run(lambda c: c.execute(sql, (key,)).fetchone())
        return LedgerEntry.from_json(row[0]) if row else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        where = "WHERE state = %s " if state is not None else ""
        sql = f"SELECT body FROM {self._t} {where}ORDER BY reserved_at DESC, key DESC LIMIT %s"  # noqa: S608
        params = (state, limit) if state is not None else (limit,)
        rows = self._run(lambda c: c.execute(sql, params).fetchall())
        return [LedgerEntry.from_json(r[0]) for r in rows]

    def replace(self, old: LedgerEntry, new: LedgerEntry) -> bool:
        sql = f"UPDATE {self._t} SET state = %s, version = %s, body = %s WHERE key = %s AND version = %s"  # noqa: S608
        params = (new.state, new.version, new.to_json(), old.key, old.version)
        # A retried update whose first attempt landed finds the version moved on:
        # it reads as lost, never as two writes.
        count: int = self._run(lambda c: c.execute(sql, params).rowcount)
        return count == 1

    def delete(self, old: LedgerEntry) -> bool:
        sql = f"DELETE FROM {self._t} WHERE key = %s AND version = %s"  # noqa: S608
        count: int = self._run(lambda c: c.execute(sql, (old.key, old.version)).rowcount)
        return count == 1

    def close(self) -> None:
        if self._owned:
            self._db.close()


_REDIS_INSERT = """
local cur = redis.call('HGET', KEYS[1], 'body')
if cur then return cur end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'version', ARGV[2], 'body', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return false
"""

_REDIS_CAS = """
local cur = redis.call('HGET', KEYS[1], 'version')
if cur == false or cur ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'version', ARGV[3], 'body', ARGV[4])
return 1
"""

_REDIS_DELETE = """
local cur = redis.call('HGET', KEYS[1], 'version')
if cur == false or cur ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""


class RedisLedgerStore:
    """A hash per key (``<prefix>ledger:<key>``) and an index sorted by reservation
    time; every write is one Lua script. Entries are kept until deleted (run Redis with
    ``appendonly yes``, docs/deploying.md, or a restart forgets what ran)."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._insert = client.register_script(_REDIS_INSERT)
        self._cas = client.register_script(_REDIS_CAS)
        self._delete = client.register_script(_REDIS_DELETE)

    def _key(self, key: str) -> str:
        return f"{self._prefix}ledger:{key}"

    def _index(self) -> str:
        return f"{self._prefix}ledger-index"

    def _call(self, op: Any) -> Any:
        import redis

        try:
            return op()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"ledger: {type(exc).__name__}: {exc}") from exc

    def insert(self, entry: LedgerEntry) -> LedgerEntry | None:
        args = [entry.state, str(entry.version), entry.to_json(), str(entry.reserved_at), entry.key]
        found = self._call(lambda: self._insert(keys=[self._key(entry.key), self._index()], args=args))
        return LedgerEntry.from_json(found) if found else None

    def get(self, key: str) -> LedgerEntry | None:
        raw = self._call(lambda: self._client.hget(self._key(key), "body"))
        return LedgerEntry.from_json(raw) if raw else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        out: list[LedgerEntry] = []
        start, page = 0, 500
        while len(out) < limit:
            keys = self._call(lambda s=start: self._client.zrevrange(self._index(), s, s + page - 1))
            if not keys:
                break
            names = [self._key(k.decode() if isinstance(k, bytes) else k) for k in keys]
            bodies = self._call(lambda: [self._client.hget(n, "body") for n in names])  # noqa: B023 - called at once
            for raw in bodies:
                if raw:
                    entry = LedgerEntry.from_json(raw)
                    if state is None or entry.state == state:
                        out.append(entry)
            start += page
        return out[:limit]

    def replace(self, old: LedgerEntry, new: LedgerEntry) -> bool:
        args = [str(old.version), new.state, str(new.version), new.to_json()]
        done = self._call(lambda: self._cas(keys=[self._key(old.key)], args=args))
        return int(done) == 1

    def delete(self, old: LedgerEntry) -> bool:
        done = self._call(
            lambda: self._delete(keys=[self._key(old.key), self._index()], args=[str(old.version), old.key])
        )
        return int(done) == 1

    def close(self) -> None:
        self._client.close()


def open_ledger(url: str, *, timeout: float | None = None) -> LedgerStore:
    """The ledger store at a store URL (the same URLs, and the same database, as
    :func:`~execauth_core.stores.urls.open_stores`).

    Raises:
        ConfigurationError: unknown scheme or malformed URL.
    """
    from types import SimpleNamespace

    from .stores.urls import open_beside

    kinds = SimpleNamespace(
        memory=MemoryLedgerStore,
        sqlite=SQLiteLedgerStore,
        redis=RedisLedgerStore,
        postgres=PostgresLedgerStore,
    )
    store: LedgerStore = open_beside(url, kinds, timeout=timeout)
    return store


# -- the ledger -------------------------------------------------------------------


_REFUSALS = {
    "reserved": (R.LEDGER_IN_FLIGHT, "another attempt with this idempotency key is running"),
    "started": (R.LEDGER_IN_FLIGHT, "another attempt with this idempotency key is running"),
    "failed": (R.LEDGER_ALREADY_FAILED, "this idempotency key already ran and failed; it is not run again"),
    "unknown": (
        R.LEDGER_OUTCOME_UNKNOWN,
        "an attempt with this idempotency key started and its outcome is unknown: "
        "reconcile it (execauth ledger resolve KEY --succeeded|--failed); it is never re-run",
    ),
    "succeeded": (R.LEDGER_ALREADY_SUCCEEDED, "this idempotency key already ran and succeeded; not run again"),
}


class Ledger:
    """The effect ledger over one :class:`LedgerStore`.

    Args:
        store: where the entries live.
        lease: seconds a started call may run before a missing outcome reads as
            ``unknown`` (give the slowest tool's time, with margin).
        retry_failed: let a new attempt (new decision, new token) take over a key whose
            last attempt failed. Off by default: a tool that raised may have done part
            of its effect. Turn it on only for tools whose failure means nothing happened.
        clock: the time source.
        audit_log: receives one ``ledger`` entry per resolution by a person.
    """

    def __init__(
        self,
        store: LedgerStore,
        *,
        lease: int = DEFAULT_LEASE,
        retry_failed: bool = False,
        clock: Clock | None = None,
        audit_log: AuditLog | None = None,
    ) -> None:
        if not isinstance(lease, int) or isinstance(lease, bool) or not 1 <= lease <= MAX_LEASE:
            raise ConfigurationError(f"lease must be an integer number of seconds within 1..{MAX_LEASE}")
        if retry_failed not in (True, False):
            raise ConfigurationError("retry_failed is True or False")
        self.store = store
        self.lease = lease
        self.retry_failed = retry_failed
        self.clock: Clock = clock or SystemClock()
        self.audit_log = audit_log

    # -- the guard's steps ---------------------------------------------------

    def check(self, key: str, proposal_digest: str) -> None:
        """Before a decision: raise :class:`LedgerRefusal` if ``key`` may not run now.
        A read only; :meth:`begin` is what takes the key."""
        entry = self.store.get(key)
        if entry is not None:
            self._refusal(entry, proposal_digest)

    def begin(
        self, key: str, *, proposal_digest: str, token_id: str, tool: str | None, call_id: str | None
    ) -> LedgerEntry:
        """Take ``key`` for the attempt holding ``token_id``: reserved and started in one
        write (the guard calls the tool right after its admission). Returns the entry
        to pass to :meth:`finish` or :meth:`release`.

        Raises:
            LedgerRefusal: the key is held, done, failed or unknown (see the module).
            StoreUnavailable: the ledger did not answer; the caller must deny.
        """
        now = self.clock.now()
        fresh = LedgerEntry(
            key=key,
            state="started",
            proposal_digest=proposal_digest,
            token_id=token_id,
            tool=tool,
            call_id=call_id,
            reserved_at=now,
            started_at=now,
            lease_until=now + self.lease,
        )
        found = self.store.insert(fresh)
        if found is None:
            return fresh
        if found.token_id == token_id:
            raise LedgerRefusal(R.TOKEN_REPLAYED, "this token was already used", found)
        self._refusal(found, proposal_digest)  # raises unless a retry may take over
        taken = fresh.model_copy(update={"version": found.version + 1, "attempts": found.attempts + 1})
        if not self.store.replace(found, taken):
            raise LedgerRefusal(*_REFUSALS["started"], found)
        return taken

    def finish(self, entry: LedgerEntry, *, ok: bool, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome of the attempt that began ``entry``. Raises
        :class:`StoreUnavailable` when it cannot be written (the entry then stays
        started and reads as unknown after its lease: reconciled, never re-run)."""
        now = self.clock.now()
        digest, kept, has = result_record(result) if ok else (None, None, False)
        new = entry.model_copy(
            update={
                "state": "succeeded" if ok else "failed",
                "version": entry.version + 1,
                "finished_at": now,
                "status": "ok" if ok else "error",
                "error": type(error).__name__ if error is not None else None,
                "result_digest": digest,
                "result": kept,
                "has_result": has,
            }
        )
        if self.store.replace(entry, new):
            return
        # Someone wrote in between: a reader turned it unknown (the call outlived its
        # lease). The real outcome is still recorded, unless a person resolved it.
        cur = self.store.get(entry.key)
        if cur is not None and cur.token_id == entry.token_id and cur.state == "unknown" and cur.resolved_by is None:
            self.store.replace(cur, new.model_copy(update={"version": cur.version + 1}))

    def release(self, entry: LedgerEntry) -> None:
        """Give the key back: the attempt was refused before its tool was called.
        Never raises (an entry left behind reads as unknown after its lease)."""
        try:
            self.store.delete(entry)
        except Exception:  # noqa: BLE001, S110 - see the docstring
            pass

    def reopen(self, key: str, *, error: str) -> bool:
        """Free a key whose attempt ended in a framework's pause, not in a failure: the
        tool raised ``error`` (an exception type name, e.g. LangGraph's
        ``GraphInterrupt``) because it waits for a person, and the framework runs it
        again from the start on resume. Only an unresolved ``failed`` entry with that
        error is freed. Returns whether it was."""
        entry = self.store.get(key)
        if entry is None or entry.state != "failed" or entry.error != error or entry.resolved_by is not None:
            return False
        return self.store.delete(entry)

    def _refusal(self, entry: LedgerEntry, proposal_digest: str) -> None:
        if entry.proposal_digest != proposal_digest:
            raise LedgerRefusal(
                R.LEDGER_KEY_CONFLICT, "this idempotency key belongs to another proposal (other arguments)", entry
            )
        state = entry.effective_state(self.clock.now())
        if state == "failed" and self.retry_failed and entry.resolved_by is None:
            return
        if state == "unknown" and entry.state != "unknown":
            try:  # written down, so `execauth ledger list --unknown` shows it to everyone
                self._settle(entry)
            except Exception:  # noqa: BLE001, S110 - the refusal stands either way
                pass
        code, message = _REFUSALS[state]
        raise LedgerRefusal(code, message, entry)

    # -- reading and reconciling ---------------------------------------------

    def get(self, key: str) -> LedgerEntry | None:
        """The entry, with a started one past its lease written as ``unknown``."""
        entry = self.store.get(key)
        return None if entry is None else self._settle(entry)

    def list(self, state: str | None = None, *, limit: int = 100) -> list[LedgerEntry]:
        """Entries in ``state`` as reported (``unknown`` includes started entries past
        their lease), newest first."""
        if state is not None and state not in STATES:
            raise ConfigurationError(f"state is one of {', '.join(STATES)}")
        if state != "unknown":
            rows = [self._settle(e) for e in self.store.list(state, limit=limit)]
            return [e for e in rows if state is None or e.state == state][:limit]
        rows = [self._settle(e) for s in ("started", "reserved") for e in self.store.list(s, limit=10 * limit)]
        rows = [e for e in rows if e.state == "unknown"]
        seen = {e.key for e in rows}
        rows += [e for e in self.store.list("unknown", limit=limit) if e.key not in seen]
        rows.sort(key=lambda e: (e.reserved_at, e.key), reverse=True)
        return rows[:limit]

    def resolve(self, key: str, *, succeeded: bool, by: str, note: str | None = None) -> LedgerEntry:
        """A person's reconciliation of an ``unknown`` entry (or of a ``failed`` one:
        e.g. the effect did happen after all). Recorded in the audit log; the key is
        never run again either way.

        Raises:
            KeyError: no entry for ``key``.
            ConfigurationError: the entry is in flight or already succeeded.
        """
        entry = self.get(key)
        if entry is None:
            raise KeyError(key)
        if entry.state not in ("unknown", "failed"):
            raise ConfigurationError(
                f"only unknown or failed entries are resolved; this one is {entry.state}"
                + (" (wait for its lease to pass)" if entry.state in ("reserved", "started") else "")
            )
        if not isinstance(by, str) or not by:
            raise ConfigurationError("a resolution names who made it")
        now = self.clock.now()
        new = entry.model_copy(
            update={
                "state": "succeeded" if succeeded else "failed",
                "version": entry.version + 1,
                "status": "resolved",
                "finished_at": entry.finished_at or now,
                "resolved_by": by,
                "resolved_at": now,
                "note": (note or None) and note[:500],
            }
        )
        if not self.store.replace(entry, new):
            raise ConfigurationError("the entry changed while it was being resolved; look again")
        self._audit(entry, new, by)
        return new

    def _settle(self, entry: LedgerEntry) -> LedgerEntry:
        if entry.state not in ("reserved", "started") or entry.effective_state(self.clock.now()) != "unknown":
            return entry
        new = entry.model_copy(update={"state": "unknown", "version": entry.version + 1})
        if self.store.replace(entry, new):
            return new
        fresh = self.store.get(entry.key)
        return fresh if fresh is not None else new

    def _audit(self, old: LedgerEntry, new: LedgerEntry, by: str) -> None:
        if self.audit_log is None:
            return
        event: Mapping[str, Any] = {
            "event": "ledger",
            "time": self.clock.now(),
            "executed": False,
            "tool": new.tool,
            "principal": None,
            "agent": None,
            "call_id": new.call_id,
            "proposal_digest": new.proposal_digest,
            "outcome": "RESOLVED",
            "reason_codes": [R.LEDGER_RESOLVED.value],
            "record_digest": None,
            "policy_digest": None,
            "token_id": new.token_id,
            "detail": {
                "idempotency_key": new.key,
                "from": old.state,
                "to": new.state,
                "by": by,
                "note": new.note,
            },
        }
        # An unrecorded resolution is not made silently: the caller sees StoreUnavailable.
        self.audit_log.append(event)
