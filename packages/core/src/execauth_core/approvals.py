"""Approval requests: durable records of the authority.

A decision of REQUIRE_APPROVAL creates an :class:`ApprovalRequest` holding the
canonical proposal and its digest. A person approves or rejects it; an approval is
signed by the authority over the digest (:meth:`Authority.grant_approval
<execauth_core.authority.Authority.grant_approval>`) and kept with the record. The
grant funds exactly one execution: :meth:`Approvals.consume` hands it out once.

States: ``pending`` -> ``approved`` / ``rejected`` / ``expired``. A pending request
past its ``expires_at`` reads as ``expired`` (and is written so on that read):
expiry means deny. Every transition is one atomic compare-and-set in the backend,
so two approvers deciding at once give one decision and one
:class:`ApprovalError` (``APPROVAL_DECIDED``). Every transition is recorded in the
audit log (event ``approval``: who, when, which digest).

Backends (:func:`open_approvals`, from the same store URLs as
:func:`~execauth_core.stores.urls.open_stores`): ``memory://``, ``sqlite:...``,
``postgresql://...`` and ``redis://...``.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict

from .approver_keys import ApproverSignature
from .audit import AuditLog
from .clock import Clock, SystemClock
from .errors import ConfigurationError, ExecAuthError, StoreUnavailable
from .messages import ApprovalGrant, AuthorizationRequest, PendingApproval, PolicyRef
from .reasons import ReasonCode as R

if TYPE_CHECKING:
    from .authority import Authority

__all__ = [
    "DEFAULT_REQUEST_TTL",
    "STATES",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalStore",
    "Approvals",
    "MemoryApprovalStore",
    "PostgresApprovalStore",
    "RedisApprovalStore",
    "SQLiteApprovalStore",
    "open_approvals",
]

DEFAULT_REQUEST_TTL = 3600
"""Seconds a request waits for a person before it expires (and so denies)."""
MAX_REQUEST_TTL = 7 * 86_400
STATES = ("pending", "approved", "rejected", "expired")
State = Literal["pending", "approved", "rejected", "expired"]


class ApprovalError(ExecAuthError):
    """An approval request cannot be used or decided as asked.

    Attributes:
        reason_code: ``APPROVAL_UNKNOWN`` (no such id), ``APPROVAL_DECIDED`` (already
            decided; the later decision lost), ``APPROVAL_EXPIRED``,
            ``APPROVAL_REJECTED``, ``APPROVAL_USED`` (already consumed),
            ``APPROVAL_MISMATCH`` (for another proposal), ``APPROVAL_REQUIRED``
            (still pending).
    """

    def __init__(self, reason_code: R, message: str) -> None:
        self.reason_code = reason_code.value
        super().__init__(f"{self.reason_code}: {message}")


class ApprovalRequest(BaseModel):
    """One approval request, as stored."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    v: Literal["execauth.approval_request/1"] = "execauth.approval_request/1"
    id: str
    proposal: AuthorizationRequest
    proposal_digest: str
    policy: PolicyRef | None = None
    principal: str
    agent: str | None = None
    tool: str
    reason_codes: tuple[str, ...] = ()
    created_at: int
    expires_at: int
    state: State = "pending"
    decided_by: str | None = None
    decided_at: int | None = None
    comment: str | None = None
    grant: ApprovalGrant | None = None
    consumed: bool = False
    consumed_at: int | None = None
    approver_signature: ApproverSignature | None = None
    """The approver's own signed decision, where the approver has a key."""

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, raw: str | bytes) -> ApprovalRequest:
        return cls.model_validate_json(raw)

    def pending(self) -> PendingApproval:
        """The :class:`PendingApproval` this request stands for."""
        return PendingApproval(
            proposal_digest=self.proposal_digest,
            request=self.proposal,
            reason_codes=self.reason_codes,
            requested_at=self.created_at,
        )

    def summary(self) -> dict[str, Any]:
        """JSON form for listings and the API (the full proposal included)."""
        return self.model_dump(mode="json")


class ApprovalStore(Protocol):
    """Where approval requests live. Every method is atomic; failures raise
    :class:`~execauth_core.errors.StoreUnavailable`."""

    def insert(self, record: ApprovalRequest) -> None:
        """Store a new request (its id is fresh)."""
        ...

    def get(self, request_id: str) -> ApprovalRequest | None:
        """The stored request, or ``None``."""
        ...

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """Stored requests (by stored state), newest first."""
        ...

    def replace(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        """Compare-and-set: write ``new`` only if the stored record still has
        ``old``'s state and consumed flag. True if this call wrote it."""
        ...

    def close(self) -> None: ...


# -- backends -------------------------------------------------------------------


class MemoryApprovalStore:
    """In-process; gone with the process."""

    def __init__(self) -> None:
        self._rows: dict[str, ApprovalRequest] = {}
        self._lock = threading.Lock()

    def insert(self, record: ApprovalRequest) -> None:
        with self._lock:
            if record.id in self._rows:
                raise StoreUnavailable(f"approval request id {record.id!r} already exists")
            self._rows[record.id] = record

    def get(self, request_id: str) -> ApprovalRequest | None:
        with self._lock:
            return self._rows.get(request_id)

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        with self._lock:
            rows = [r for r in self._rows.values() if state is None or r.state == state]
        rows.sort(key=lambda r: (r.created_at, r.id), reverse=True)
        return rows[:limit]

    def replace(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        with self._lock:
            cur = self._rows.get(old.id)
            if cur is None or cur.state != old.state or cur.consumed != old.consumed:
                return False
            self._rows[old.id] = new
            return True

    def close(self) -> None:
        pass


class SQLiteApprovalStore:
    """A table ``approval_requests`` in the SQLite file (the embedded default)."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 5.0) -> None:
        from .stores.sqlite import _connect

        self.path = os.fspath(path)
        self._conn = _connect(path, timeout)
        self._lock = threading.Lock()
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS approval_requests (id TEXT PRIMARY KEY, state TEXT NOT NULL, "
                "consumed INTEGER NOT NULL, created_at INTEGER NOT NULL, body TEXT NOT NULL)"
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot initialise the approval store: {exc}") from exc

    def _run(self, sql: str, params: tuple[Any, ...]) -> tuple[list[Any], int]:
        # Rows are read to the end under the lock: a half-read SELECT would keep a read
        # transaction open on the shared connection, and another thread's UPDATE in it
        # would fail at once ("database is locked") after any other writer committed.
        with self._lock:
            try:
                cur = self._conn.execute(sql, params)
                return cur.fetchall(), cur.rowcount
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"approval store: {exc}") from exc

    def insert(self, record: ApprovalRequest) -> None:
        self._run(
            "INSERT INTO approval_requests (id, state, consumed, created_at, body) VALUES (?, ?, ?, ?, ?)",
            (record.id, record.state, int(record.consumed), record.created_at, record.to_json()),
        )

    def get(self, request_id: str) -> ApprovalRequest | None:
        rows, _ = self._run("SELECT body FROM approval_requests WHERE id = ?", (request_id,))
        return ApprovalRequest.from_json(rows[0][0]) if rows else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        if state is None:
            rows, _ = self._run(
                "SELECT body FROM approval_requests ORDER BY created_at DESC, id DESC LIMIT ?", (limit,)
            )
        else:
            rows, _ = self._run(
                "SELECT body FROM approval_requests WHERE state = ? ORDER BY created_at DESC, id DESC LIMIT ?",
                (state, limit),
            )
        return [ApprovalRequest.from_json(r[0]) for r in rows]

    def replace(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        _, count = self._run(
            "UPDATE approval_requests SET state = ?, consumed = ?, body = ? "
            "WHERE id = ? AND state = ? AND consumed = ?",
            (new.state, int(new.consumed), new.to_json(), old.id, old.state, int(old.consumed)),
        )
        return count == 1

    def close(self) -> None:
        self._conn.close()


class PostgresApprovalStore:
    """A table ``approval_requests`` in the stores' PostgreSQL schema."""

    def __init__(self, target: Any, *, schema: str | None = None, timeout: float | None = None) -> None:
        from .stores import postgres as pg

        self._pg = pg
        self._owned = isinstance(target, str)  # a pool passed in is its owner's to close
        if isinstance(target, str):
            kw: dict[str, Any] = {"schema": schema or pg.DEFAULT_SCHEMA}
            if timeout is not None:
                kw["timeout"] = timeout
            target = pg.PostgresConnections(target, **kw)
        self._db = target
        t = self._db.table("approval_requests")
        self._t = t
        self._tables = pg._Tables(
            "approvals",
            ("approval_requests",),
            (
                f"CREATE TABLE IF NOT EXISTS {t} (id text PRIMARY KEY, state text NOT NULL, "
                "consumed boolean NOT NULL, created_at bigint NOT NULL, body text NOT NULL)",
            ),
        )

    def _run(self, what: str, op: Any) -> Any:
        return self._db.run(what, op, tables=self._tables)

    def insert(self, record: ApprovalRequest) -> None:
        sql = f"INSERT INTO {self._t} (id, state, consumed, created_at, body) VALUES (%s, %s, %s, %s, %s)"  # noqa: S608
        self._run(
            "approval store",
            lambda c: c.execute(sql, (record.id, record.state, record.consumed, record.created_at, record.to_json())),
        )

    def get(self, request_id: str) -> ApprovalRequest | None:
        sql = f"SELECT body FROM {self._t} WHERE id = %s"  # noqa: S608
        row = self._run("approval store", lambda c: c.execute(sql, (request_id,)).fetchone())
        return ApprovalRequest.from_json(row[0]) if row else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        where = "WHERE state = %s " if state is not None else ""
        sql = f"SELECT body FROM {self._t} {where}ORDER BY created_at DESC, id DESC LIMIT %s"  # noqa: S608
        params = (state, limit) if state is not None else (limit,)
        rows = self._run("approval store", lambda c: c.execute(sql, params).fetchall())
        return [ApprovalRequest.from_json(r[0]) for r in rows]

    def replace(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        sql = (
            f"UPDATE {self._t} SET state = %s, consumed = %s, body = %s "  # noqa: S608
            "WHERE id = %s AND state = %s AND consumed = %s"
        )
        params = (new.state, new.consumed, new.to_json(), old.id, old.state, old.consumed)
        # A retried update whose first attempt landed finds the state moved on: it
        # reads as lost (the caller refuses), never as two decisions.
        count: int = self._run("approval store", lambda c: c.execute(sql, params).rowcount)
        return count == 1

    def close(self) -> None:
        if self._owned:
            self._db.close()


_REDIS_CAS = """
local cur = redis.call('HMGET', KEYS[1], 'state', 'consumed')
if cur[1] == false or cur[1] ~= ARGV[1] or cur[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'consumed', ARGV[4], 'body', ARGV[5])
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
return 1
"""


_REDIS_INSERT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'consumed', ARGV[2], 'body', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
return 1
"""


class RedisApprovalStore:
    """A hash per request (``<prefix>approval:<id>``) and an index sorted by creation
    time; the compare-and-set is one Lua script. Requests are kept until deleted."""

    def __init__(self, client: Any, *, prefix: str) -> None:
        self._client = client
        self._prefix = prefix
        self._cas = client.register_script(_REDIS_CAS)
        self._insert = client.register_script(_REDIS_INSERT)

    def _key(self, request_id: str) -> str:
        return f"{self._prefix}approval:{request_id}"

    def _index(self) -> str:
        return f"{self._prefix}approvals"

    def _call(self, op: Any) -> Any:
        import redis

        try:
            return op()
        except redis.RedisError as exc:
            raise StoreUnavailable(f"approval store: {type(exc).__name__}: {exc}") from exc

    def insert(self, record: ApprovalRequest) -> None:
        args = [record.state, str(int(record.consumed)), record.to_json(), str(record.created_at), record.id]
        done = self._call(lambda: self._insert(keys=[self._key(record.id), self._index()], args=args))
        if int(done) != 1:
            raise StoreUnavailable(f"approval request id {record.id!r} already exists")

    def get(self, request_id: str) -> ApprovalRequest | None:
        raw = self._call(lambda: self._client.hget(self._key(request_id), "body"))
        return ApprovalRequest.from_json(raw) if raw else None

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        ids = self._call(lambda: self._client.zrevrange(self._index(), 0, -1))
        out: list[ApprovalRequest] = []
        for rid in ids:
            rec = self.get(rid.decode() if isinstance(rid, bytes) else rid)
            if rec is not None and (state is None or rec.state == state):
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def replace(self, old: ApprovalRequest, new: ApprovalRequest) -> bool:
        args = [old.state, str(int(old.consumed)), new.state, str(int(new.consumed)), new.to_json()]
        args += [str(new.created_at), new.id]
        done = self._call(lambda: self._cas(keys=[self._key(old.id), self._index()], args=args))
        return int(done) == 1

    def close(self) -> None:
        self._client.close()


def open_approvals(url: str, *, timeout: float | None = None) -> ApprovalStore:
    """The approval store at a store URL (the same URLs, and the same database, as
    :func:`~execauth_core.stores.urls.open_stores`).

    Raises:
        ConfigurationError: unknown scheme or malformed URL.
    """
    from types import SimpleNamespace

    from .stores.urls import open_beside

    kinds = SimpleNamespace(
        memory=MemoryApprovalStore,
        sqlite=SQLiteApprovalStore,
        redis=RedisApprovalStore,
        postgres=PostgresApprovalStore,
    )
    store: ApprovalStore = open_beside(url, kinds, timeout=timeout)
    return store


# -- the queue --------------------------------------------------------------------


class Approvals:
    """The approval queue: creates, decides, expires and consumes requests, signs
    approvals, and records every transition in the audit log.

    Args:
        store: where the requests live.
        audit_log: receives one ``approval`` entry per transition.
        authority: signs approvals (``None``: this queue can list and reject, not approve).
        clock: the time source.
        request_ttl: seconds a request waits for a decision.
        grant_ttl: seconds an approval stays usable after it is given.
        audited: the transitions that get an ``approval`` entry (default: all). An
            adapter's in-memory queue for a guard without one leaves out ``created`` and
            ``consumed``: the guard's own REQUIRE_APPROVAL and execution entries already
            record those, so every adapter's log is the same for the same inputs.
    """

    def __init__(
        self,
        store: ApprovalStore,
        audit_log: AuditLog,
        *,
        authority: Authority | None = None,
        clock: Clock | None = None,
        request_ttl: int = DEFAULT_REQUEST_TTL,
        grant_ttl: int = 900,
        id_factory: Any = None,
        audited: frozenset[str] | None = None,
    ) -> None:
        if not 1 <= request_ttl <= MAX_REQUEST_TTL:
            raise ConfigurationError(f"request_ttl must be within 1..{MAX_REQUEST_TTL} seconds")
        from .guard import new_id

        self.store = store
        self.audit_log = audit_log
        self.audited = audited
        self.authority = authority
        self.clock: Clock = clock or SystemClock()
        self.request_ttl = request_ttl
        self.grant_ttl = grant_ttl
        self.id_factory = id_factory or new_id
        self.listeners: list[Callable[[ApprovalRequest, str], None]] = []
        """Called with ``(record, transition)`` after each recorded transition
        (``created``, ``approved``, ``rejected``, ``expired``, ``consumed``), e.g. to
        send notifications. A listener's failure is logged, never raised."""

    # transitions -------------------------------------------------------------

    def create(
        self,
        proposal: AuthorizationRequest,
        *,
        reason_codes: tuple[str, ...] = (),
        policy: PolicyRef | None = None,
        proposal_digest: str | None = None,
        ttl: int | None = None,
    ) -> ApprovalRequest:
        """Store a pending request for ``proposal`` and record its creation."""
        now = self.clock.now()
        digest = proposal.content_digest()
        if proposal_digest is not None and proposal_digest != digest:
            raise ConfigurationError("proposal_digest is not the digest of the proposal")
        record = ApprovalRequest(
            id="apr_" + self.id_factory(),
            proposal=proposal,
            proposal_digest=digest,
            policy=policy,
            principal=proposal.principal,
            agent=proposal.agent,
            tool=proposal.tool,
            reason_codes=tuple(reason_codes),
            created_at=now,
            expires_at=now + (ttl or self.request_ttl),
        )
        self.store.insert(record)
        self._audit(record, "created", by=None)
        return record

    def get(self, request_id: str) -> ApprovalRequest:
        """The request, with a pending one past its expiry turned ``expired``.

        Raises:
            ApprovalError: ``APPROVAL_UNKNOWN``.
        """
        record = self.store.get(request_id) if isinstance(request_id, str) else None
        if record is None:
            raise ApprovalError(R.APPROVAL_UNKNOWN, f"no approval request {str(request_id)[:80]!r}")
        return self._expire(record)

    def list(self, state: str | None = None, *, limit: int = 100) -> list[ApprovalRequest]:
        """Requests in ``state`` (effective state: expiry applied), newest first."""
        if state is not None and state not in STATES:
            raise ConfigurationError(f"state is one of {', '.join(STATES)}")
        stored = "pending" if state == "expired" else state
        rows = [self._expire(r) for r in self.store.list(stored, limit=limit)]
        if state == "expired":
            rows += [r for r in self.store.list("expired", limit=limit) if r.id not in {x.id for x in rows}]
        return [r for r in rows if state is None or r.state == state][:limit]

    def approve(
        self,
        request_id: str,
        *,
        approver: str,
        comment: str | None = None,
        approver_signature: ApproverSignature | None = None,
    ) -> ApprovalRequest:
        """Approve: the authority signs a grant over the digest, stored with the record.

        ``approver_signature``: the approver's own signed statement (checked against
        the record here; its signature is checked by whoever holds the approver's
        key, e.g. the server, before calling), stored with the record.

        Raises:
            ApprovalError: unknown, expired, or already decided (``APPROVAL_DECIDED``:
                another decision won).
        """
        if self.authority is None:
            raise ConfigurationError("this approval queue has no authority to sign approvals")
        record = self._decidable(request_id)
        _matches(record, approver_signature, "approve", approver)
        now = self.clock.now()
        grant = self.authority.grant_approval(
            record.pending(),
            approver=approver,
            now=now,
            # The grant names its request: a grant presented later finds its record.
            grant_id=f"{record.id}.{self.id_factory()}",
            ttl=self.grant_ttl,
        )
        new = record.model_copy(
            update={
                "state": "approved",
                "decided_by": approver,
                "decided_at": now,
                "comment": comment,
                "grant": grant,
                "approver_signature": approver_signature,
            }
        )
        return self._transition(record, new, "approved", approver)

    def reject(
        self,
        request_id: str,
        *,
        approver: str,
        comment: str | None = None,
        approver_signature: ApproverSignature | None = None,
    ) -> ApprovalRequest:
        """Reject: the proposal will not run under this request."""
        record = self._decidable(request_id)
        _matches(record, approver_signature, "reject", approver)
        new = record.model_copy(
            update={
                "state": "rejected",
                "decided_by": approver,
                "decided_at": self.clock.now(),
                "comment": comment,
                "approver_signature": approver_signature,
            }
        )
        return self._transition(record, new, "rejected", approver)

    def consume(self, request_id: str, *, proposal_digest: str | None = None) -> ApprovalGrant:
        """Hand out the request's grant exactly once (atomic compare-and-set).

        Raises:
            ApprovalError: unknown, still pending (``APPROVAL_REQUIRED``), rejected,
                expired (the request or its grant), already consumed
                (``APPROVAL_USED``), or for another proposal (``APPROVAL_MISMATCH``).
        """
        record = self.get(request_id)
        now = self.clock.now()
        if proposal_digest is not None and proposal_digest != record.proposal_digest:
            raise ApprovalError(R.APPROVAL_MISMATCH, "the approval request is for another proposal")
        if record.state == "pending":
            raise ApprovalError(R.APPROVAL_REQUIRED, "the approval request is still waiting for a person")
        if record.state == "rejected":
            raise ApprovalError(R.APPROVAL_REJECTED, f"rejected by {record.decided_by}")
        if record.state == "expired":
            raise ApprovalError(R.APPROVAL_EXPIRED, "the approval request expired before anyone decided")
        if record.consumed:
            raise ApprovalError(R.APPROVAL_USED, "this approval was already used")
        grant = record.grant
        if grant is None or not grant.granted_at <= now <= grant.expires_at:
            raise ApprovalError(R.APPROVAL_EXPIRED, "the approval is no longer valid (its grant expired)")
        new = record.model_copy(update={"consumed": True, "consumed_at": now})
        if not self.store.replace(record, new):
            raise ApprovalError(R.APPROVAL_USED, "this approval was already used")
        self._audit(new, "consumed", by=None)
        return grant

    def consume_grant(self, grant: ApprovalGrant, *, proposal_digest: str | None = None) -> bool | None:
        """Consume the request a presented grant belongs to, if this queue issued it.

        Returns ``None`` when the grant's id is not known here (an approval made
        elsewhere), True when this call consumed it.

        Raises:
            ApprovalError: the grant is known but does not match what was stored,
                or was already used.
        """
        request_id, dot, _ = grant.grant_id.partition(".")
        record = self.store.get(request_id) if dot and request_id.startswith("apr_") else None
        if record is None or record.grant is None or record.grant.grant_id != grant.grant_id:
            return None
        if record.grant != grant:
            raise ApprovalError(R.APPROVAL_INVALID, "the grant presented is not the one stored")
        self.consume(record.id, proposal_digest=proposal_digest or grant.proposal_digest)
        return True

    # internals ---------------------------------------------------------------

    def _decidable(self, request_id: str) -> ApprovalRequest:
        record = self.get(request_id)
        if record.state == "expired":
            raise ApprovalError(R.APPROVAL_EXPIRED, "the approval request expired before anyone decided")
        if record.state != "pending":
            raise ApprovalError(R.APPROVAL_DECIDED, f"already {record.state} by {record.decided_by}")
        return record

    def _transition(self, old: ApprovalRequest, new: ApprovalRequest, what: str, by: str) -> ApprovalRequest:
        if not self.store.replace(old, new):
            now = self.store.get(old.id)
            state = now.state if now else "gone"
            raise ApprovalError(R.APPROVAL_DECIDED, f"another decision came first: the request is {state}")
        self._audit(new, what, by=by)
        return new

    def _expire(self, record: ApprovalRequest) -> ApprovalRequest:
        if record.state != "pending" or self.clock.now() <= record.expires_at:
            return record
        new = record.model_copy(update={"state": "expired", "decided_at": self.clock.now()})
        if self.store.replace(record, new):
            self._audit(new, "expired", by=None)
            return new
        fresh = self.store.get(record.id)
        return fresh if fresh is not None else new

    def _audit(self, record: ApprovalRequest, transition: str, *, by: str | None) -> None:
        if self.audited is None or transition in self.audited:
            self._append(record, transition, by=by)
        for listener in list(self.listeners):
            try:
                listener(record, transition)
            except Exception as exc:  # noqa: BLE001 - a notification never fails a transition
                _log.error("execauth: approval listener failed (%s)", type(exc).__name__)

    def _append(self, record: ApprovalRequest, transition: str, *, by: str | None) -> None:
        outcome = {
            "created": "REQUIRE_APPROVAL",
            "approved": "ALLOW",
            "rejected": "DENY",
            "expired": "DENY",
            "consumed": "ALLOW",
        }[transition]
        codes = {
            "created": R.APPROVAL_REQUIRED,
            "approved": R.APPROVAL_GRANTED,
            "rejected": R.APPROVAL_REJECTED,
            "expired": R.APPROVAL_EXPIRED,
            "consumed": R.APPROVAL_GRANTED,
        }[transition]
        detail: dict[str, Any] = {"approval_request": record.id, "transition": transition, "by": by}
        if record.comment and transition in ("approved", "rejected"):
            detail["comment"] = record.comment[:500]
        if record.grant is not None and transition in ("approved", "consumed"):
            detail["grant_id"] = record.grant.grant_id
        if transition in ("approved", "rejected"):
            # Both signatures in the log: the authority's over the digest, and the
            # approver's own statement where the approver has a key.
            if record.grant is not None:
                detail["grant"] = record.grant.model_dump(mode="json")
            if record.approver_signature is not None:
                detail["approver_signature"] = record.approver_signature.model_dump(mode="json")
        event: Mapping[str, Any] = {
            "event": "approval",
            "time": self.clock.now(),
            "executed": False,
            "tool": record.tool,
            "principal": record.principal,
            "agent": record.agent,
            "call_id": record.proposal.call_id,
            "proposal_digest": record.proposal_digest,
            "outcome": outcome,
            "reason_codes": [codes.value],
            "record_digest": None,
            "policy_digest": record.policy.digest if record.policy else None,
            "token_id": None,
            "detail": detail,
        }
        # An unrecorded transition is not made silently: the store changed, the log
        # could not say so; the caller sees StoreUnavailable.
        self.audit_log.append(event)


_log = logging.getLogger("execauth.approvals")


def _matches(record: ApprovalRequest, signed: ApproverSignature | None, decision: str, approver: str) -> None:
    """An approver's statement must name this request, digest, decision and approver."""
    if signed is None:
        return
    st = signed.statement
    if (st.request_id, st.proposal_digest, st.decision, st.approver) != (
        record.id,
        record.proposal_digest,
        decision,
        approver,
    ):
        raise ApprovalError(R.APPROVER_SIGNATURE_INVALID, "the signed statement is not for this request and decision")
