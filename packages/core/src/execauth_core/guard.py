"""The guard: the enforcement point between an agent and its tools.

``Guard.run(request, call)``: decide -> token (ALLOW only) -> verify -> consume the
token id once -> record -> ``call()``. Any failure before ``call()`` raises
:class:`~execauth_core.errors.ExecutionDenied` after a denial record
(``executed: false``) is written. The tool is reached only through a
:class:`Capability`, which only :meth:`Guard._admit` constructs, after verification
and consumption succeeded.
"""

from __future__ import annotations

import inspect
import os
import secrets
import sqlite3
from collections.abc import Awaitable, Callable, Generator, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from ._log import log
from .audit import AuditEntry
from .authority import Authority
from .canonical import digest_bytes
from .clock import Clock, SystemClock
from .current import _CURRENT, CurrentCall
from .errors import (
    ApprovalRequired,
    AuthorityUnavailable,
    ConfigurationError,
    ExecutionDenied,
    StoreUnavailable,
    TokenError,
)
from .keys import KeySet, LocalSigner, Signer
from .ledger import AlreadyExecuted, Ledger, LedgerEntry, LedgerRefusal, check_key, idempotency_key
from .messages import (
    ApprovalGrant,
    AuthorizationDecision,
    AuthorizationRequest,
    Outcome,
    PendingApproval,
    PolicyRef,
)
from .policy import DecisionPoint
from .reasons import ReasonCode as R
from .spool import Spool
from .stores.base import AuditLog, JointAdmission, JointCache, ReplayStore, joint_admission_of
from .stores.memory import MemoryAuditLog, MemoryReplayStore
from .stores.sqlite import SQLiteAuditLog, SQLiteReplayStore
from .stores.urls import Stores, open_stores
from .tlog_checkpoint import Checkpointer
from .tokens import TokenVerifier

if TYPE_CHECKING:
    from .receipts import ExecutionReceipt
    from .twophase import PreflightDecision

T = TypeVar("T")

_CAPABILITY_KEY = object()


def new_id() -> str:
    """A fresh, unguessable identifier (token ids, grant ids)."""
    return secrets.token_urlsafe(18)


class Capability:
    """Permission to make exactly one verified call. Only the guard creates one."""

    __slots__ = ("_used", "audit_seq", "decision", "idempotency_key", "ledger_entry", "request", "token", "token_id")

    def __init__(
        self,
        key: object,
        request: AuthorizationRequest,
        token_id: str,
        audit_seq: int,
        decision: AuthorizationDecision | None = None,
        token: str | None = None,
    ) -> None:
        if key is not _CAPABILITY_KEY:
            raise TypeError("a Capability is created by the guard after verification, never directly")
        self._used = False
        self.request = request
        self.token_id = token_id
        self.audit_seq = audit_seq
        self.decision = decision
        self.token = token
        """The compact token that was verified (``current_call()`` hands it to the tool)."""
        self.idempotency_key: str | None = None
        """The call's idempotency key (``current_call()`` hands it to the tool), if it has one."""
        self.ledger_entry: LedgerEntry | None = None

    def _spend(self) -> None:
        if self._used:
            raise RuntimeError("capability already used")
        self._used = True


class _Denial(Exception):
    """Internal: carries a denial from the checks to the recorder."""

    def __init__(
        self,
        outcome: str,
        codes: tuple[str, ...],
        message: str,
        decision: AuthorizationDecision | None = None,
    ) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.codes = codes
        self.message = message
        self.decision = decision
        self.ledger_entry: LedgerEntry | None = None


class Guard:
    """The enforcement point.

    Args:
        authority: issues decisions and tokens. ``None`` for a verify-only guard
            (tokens come from elsewhere; ``run`` then needs ``token=``).
        verifier: checks tokens against the configured trusted keys.
        replay_store: consumes each token id once.
        audit_log: receives every denial and execution.
        spool: where records go that the audit log refuses (it is down, its disk is
            full): replayed into the log when it is back (see
            :class:`~execauth_core.spool.Spool`). A spooled denial carries
            ``AUDIT_SPOOLED``; without a spool, or when the spool cannot be written
            either, ``AUDIT_UNAVAILABLE``. Spooling never lets a call run: an
            execution whose record the log refuses is denied.
        clock: the time source.
        id_factory: makes token and grant ids (fixed in conformance runs).
        expected_policy: for a verify-only guard, the policy its tokens must have
            been issued under (id, epoch and digest); a token issued under any
            other is refused with ``TOKEN_POLICY_STALE``. A
            :class:`~execauth_core.messages.PolicyRef`, an object with a
            ``policy_ref`` (a Court or decision point, followed as it reloads), or
            a function returning the current ``PolicyRef``. A guard with an
            authority always checks against the authority's policy.
        checkpointer: signs checkpoints of the audit log at its cadence, driven
            after each successful append (so the joint one-step admission is kept).
            A checkpoint that cannot be signed or stored is left for the next append:
            it never fails, denies or delays a decision beyond the signing itself.
        receipts: see :attr:`receipts`; needs an in-process :class:`Authority` (its key signs).
        ledger: the effect ledger (:class:`~execauth_core.ledger.Ledger`): a call
            whose idempotency key already ran, is running or has an unknown outcome
            is refused instead of run again (docs/ledger.md). ``None`` here (the
            default of the constructor); :meth:`local` turns it on.
    """

    def __init__(
        self,
        *,
        authority: Authority | None,
        verifier: TokenVerifier,
        replay_store: ReplayStore,
        audit_log: AuditLog,
        spool: Spool | None = None,
        clock: Clock | None = None,
        id_factory: Callable[[], str] = new_id,
        expected_policy: PolicyRef | Callable[[], PolicyRef] | Any | None = None,
        approvals: Any | None = None,
        checkpointer: Checkpointer | None = None,
        receipts: bool = False,
        ledger: Ledger | None = None,
    ) -> None:
        if ledger is not None and not isinstance(ledger, Ledger):
            raise ConfigurationError("ledger is an execauth_core.ledger.Ledger or None")
        self.ledger = ledger
        """The effect ledger (:mod:`execauth_core.ledger`): each idempotency key runs at
        most once. ``None``: calls are not deduplicated."""
        self._expected_policy = _policy_source(expected_policy)
        self.receipts = bool(receipts)
        """Sign an :class:`~execauth_core.receipts.ExecutionReceipt` for every call and
        keep it in the call's ``result`` audit entry (``run(..., receipt=True)`` asks
        for one call's receipt either way)."""
        self.approvals = approvals
        """The durable approval queue (:class:`~execauth_core.approvals.Approvals`), or
        ``None``: then REQUIRE_APPROVAL carries no request id."""
        if checkpointer is not None and not isinstance(checkpointer, Checkpointer):
            raise ConfigurationError("checkpointer is an execauth_core.tlog_checkpoint.Checkpointer or None")
        self.checkpointer = checkpointer
        self.authority = authority
        self.verifier = verifier
        self.replay_store = replay_store
        self.audit_log = audit_log
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.id_factory = id_factory
        self._joint: JointCache | None = None
        if spool is not None and not isinstance(spool, Spool):
            raise ConfigurationError("spool is an execauth_core.Spool or None")
        self.spool = spool

    @classmethod
    def local(
        cls,
        policy: DecisionPoint,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        stores: str | Stores | None = None,
        issuer: str = "execauth-local",
        audience: str = "execauth-guard",
        token_ttl: int = 60,
        clock: Clock | None = None,
        signer: Signer | None = None,
        id_factory: Callable[[], str] = new_id,
        spool: bool | str | os.PathLike[str] | Spool | None = None,
        approvals: bool | str | Any = False,
        checkpoint_every: int | None = None,
        checkpoint_interval: int | None = None,
        checkpoint_origin: str = "execauth.local/audit",
        receipts: bool = False,
        ledger: bool | str | Ledger | None = None,
    ) -> Guard:
        """A guard with its own authority on the embedded defaults.

        With ``data_dir``: the signing key in ``data_dir/authority.key`` (created
        with mode 0600 if missing), its JWKS in ``data_dir/jwks.json``, and the
        replay store and audit log in the SQLite file ``data_dir/execauth.db``.
        Without: a fresh in-memory key and memory stores.

        Args:
            stores: the replay store and audit log to use instead, as a store URL
                (``redis://...``, ``postgresql://...``: see
                :func:`~execauth_core.stores.urls.open_stores`) or opened
                :class:`~execauth_core.stores.urls.Stores`; replicas given the same
                URL share one truth. A Court's budgets and rate limits live in its own
                state store: give it ``open_stores(url).state``.
            spool: the audit spool (see :class:`Guard`): a path or
                :class:`~execauth_core.spool.Spool`; ``True`` or ``None`` (the default)
                for ``data_dir/audit.spool`` when there is a ``data_dir`` (``True``
                without one is an error); ``False`` for none. The file is created only
                when a record is first spooled.
            approvals: a durable approval queue (see :mod:`execauth_core.approvals`):
                ``True`` for one beside the other stores (the ``stores`` URL, the
                SQLite file in ``data_dir``, or memory), a store URL, or an
                :class:`~execauth_core.approvals.Approvals`. Then REQUIRE_APPROVAL
                creates a request whose id is on the ``ApprovalRequired``.
            checkpoint_every, checkpoint_interval: sign a C2SP checkpoint of the audit
                log's Merkle tree with the authority's key, into the audit store, once
                this many entries were appended / this many seconds passed since the
                last one (checked after each append: a log nobody writes to is not
                re-signed). Either, both, or neither (the default: sign on demand
                with ``execauth audit checkpoint``).
            checkpoint_origin: the log's name in its checkpoints (the CLI's default).
            receipts: sign an execution receipt for every call (see :class:`Guard`).
            ledger: the effect ledger (docs/ledger.md). ``None`` (the default) or
                ``True``: beside the other stores (the ``stores`` URL, the SQLite file
                in ``data_dir``, or memory; with opened ``Stores`` ``None`` means none
                and ``True`` is an error); a store URL; a
                :class:`~execauth_core.ledger.Ledger`; ``False`` for none.
        """
        _local_spool(spool, data_dir, check_only=True)  # refused before anything is opened
        _check_cadence(checkpoint_every, checkpoint_interval, checkpoint_origin)
        replay: ReplayStore
        audit: AuditLog
        if stores is not None:
            replay, audit = _given_stores(stores)
        if data_dir is None:
            signer = signer or LocalSigner.generate()
            if stores is None:
                replay, audit = MemoryReplayStore(), MemoryAuditLog()
        else:
            folder = Path(data_dir)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                if signer is None:
                    key_path = folder / "authority.key"
                    if key_path.exists():
                        signer = LocalSigner.load(key_path)
                    else:
                        local = LocalSigner.generate()
                        local.save(key_path)
                        signer = local
                (folder / "jwks.json").write_text(_json_text(KeySet.of_signer(signer).to_jwks()), encoding="utf-8")
                if stores is None:
                    db = folder / "execauth.db"
                    replay, audit = SQLiteReplayStore(db), SQLiteAuditLog(db)
            except (OSError, sqlite3.Error, StoreUnavailable) as exc:
                raise ConfigurationError(f"data_dir {str(folder)!r} cannot be used: {_os_reason(exc)}") from None
        keys = KeySet.of_signer(signer)
        authority = Authority(policy, signer, issuer=issuer, audience=audience, token_ttl=token_ttl)
        verifier = TokenVerifier(keys=keys, issuer=issuer, audience=audience, max_ttl=max(token_ttl, 1))
        checkpointer = None
        if checkpoint_every is not None or checkpoint_interval is not None:
            checkpointer = Checkpointer(
                audit,  # type: ignore[arg-type]  # every execauth backend keeps a Merkle tree
                signer,
                origin=checkpoint_origin,
                every=checkpoint_every,
                interval=checkpoint_interval,
                clock=clock,
                shared=stores is not None,  # replicas given one store URL checkpoint one log
            )
        return cls(
            authority=authority,
            verifier=verifier,
            replay_store=replay,
            audit_log=audit,
            clock=clock,
            id_factory=id_factory,
            spool=_local_spool(spool, data_dir),
            approvals=_local_approvals(approvals, stores, data_dir, audit, authority, clock, id_factory),
            checkpointer=checkpointer,
            receipts=receipts,
            ledger=_local_ledger(ledger, stores, data_dir, audit, clock),
        )

    @classmethod
    def remote(
        cls,
        url: str,
        *,
        credential: str,
        audience: str = "execauth-guard",
        issuer: str = "execauth-server",
        data_dir: str | os.PathLike[str] | None = None,
        stores: str | Stores | None = None,
        jwks_url: str | None = None,
        timeout: float = 5.0,
        max_ttl: int = 3600,
        clock: Clock | None = None,
        id_factory: Callable[[], str] = new_id,
        ledger: bool | str | Ledger | None = None,
    ) -> Guard:
        """A guard whose authority is the ``execauth serve`` at ``url``: this process
        holds no signing key. Needs the ``remote`` extra (httpx).

        Decisions come from the service (:class:`~execauth_core.remote.RemoteAuthority`,
        authenticated with ``credential``); tokens are verified against the service's
        JWKS (``jwks_url``, default ``url/.well-known/jwks.json``), pinned by kid. The
        token ids are consumed and the executions recorded here: in ``stores``, or the
        SQLite file ``data_dir/execauth.db``, or in memory. An unreachable, slow or
        misbehaving service is a recorded denial (``AUTHORITY_UNAVAILABLE``,
        ``AUTHORITY_ANSWER_INVALID``), never an execution.

        Args:
            audience: the ``aud`` this guard accepts (the service's ``audience``, or
                the ``tool_audiences`` entry of the tools it guards).
            issuer: the service's ``issuer``.
            ledger: the effect ledger, kept here beside the replay store (as for
                :meth:`local`).
        """
        from typing import cast

        from .remote import JWKSKeys, RemoteAuthority

        keys = JWKSKeys(jwks_url or url.rstrip("/") + "/.well-known/jwks.json", timeout=timeout)
        remote = RemoteAuthority(url, credential=credential, keys=keys, timeout=timeout)
        replay: ReplayStore
        audit: AuditLog
        if stores is not None:
            replay, audit = _given_stores(stores)
        elif data_dir is not None:
            folder = Path(data_dir)
            try:
                folder.mkdir(parents=True, exist_ok=True)
                replay, audit = SQLiteReplayStore(folder / "execauth.db"), SQLiteAuditLog(folder / "execauth.db")
            except (OSError, sqlite3.Error, StoreUnavailable) as exc:
                raise ConfigurationError(f"data_dir {str(folder)!r} cannot be used: {_os_reason(exc)}") from None
        else:
            replay, audit = MemoryReplayStore(), MemoryAuditLog()
        verifier = TokenVerifier(keys=keys, issuer=issuer, audience=audience, max_ttl=max_ttl)
        return cls(
            # Duck-typed: decide() and decision_point.policy_ref are what the guard uses.
            authority=cast(Authority, remote),
            verifier=verifier,
            replay_store=replay,
            audit_log=audit,
            clock=clock,
            id_factory=id_factory,
            ledger=_local_ledger(ledger, stores, data_dir, audit, clock),
        )

    def close(self) -> None:
        """Close what the replay store and audit log hold open (connections, files).

        Nothing runs through a closed store by mistake: a later call is denied
        (``STORE_UNAVAILABLE`` on SQLite) or, on Redis and PostgreSQL, whose clients
        reconnect on demand, opens new connections that need closing again."""
        for store in (self.replay_store, self.audit_log, self.authority, getattr(self.ledger, "store", None)):
            close = getattr(store, "close", None)
            if close is not None:
                close()

    # -- proposals -----------------------------------------------------------

    def proposal(
        self,
        tool: str,
        args: dict[str, Any],
        *,
        principal: str,
        agent: str | None = None,
        call_id: str | None = None,
        manifest_digest: str | None = None,
        context_refs: Iterable[str] = (),
    ) -> AuthorizationRequest:
        """Build an :class:`AuthorizationRequest`.

        Raises:
            ExecutionDenied: ``REQUEST_INVALID`` when the fields are malformed (arguments
                that are not JSON, NaN, integers beyond 2^53, nesting too deep, an empty
                tool name...). The denial is recorded like any other.
        """
        try:
            return AuthorizationRequest(
                tool=tool,
                args=args,
                principal=principal,
                agent=agent,
                call_id=call_id,
                manifest_digest=manifest_digest,
                context_refs=tuple(context_refs),
            )
        except Exception as exc:  # noqa: BLE001 - any malformed proposal is a recorded denial
            message = _proposal_problem(exc)
            denial = _Denial("DENY", (R.REQUEST_INVALID.value,), f"malformed proposal: {message}")
            raise self._deny(_Unbuilt(tool, principal, agent, call_id), None, denial) from None

    # -- decisions -----------------------------------------------------------

    def _decide(
        self,
        request: AuthorizationRequest,
        approval: ApprovalGrant | None,
        pd: str,
        raw: bytes,
        preflight: Any = None,
    ) -> AuthorizationDecision:
        if self.authority is None:
            raise _Denial(Outcome.DENY.value, (R.NO_TOKEN.value,), "verify-only guard: no token presented")
        if preflight is not None:  # (evidence,) of guard.preflight(): its first phase
            return self.authority.decide(
                request,
                now=self.clock.now(),
                token_id=self.id_factory(),
                approval=approval,
                proposal_digest=pd,
                request_bytes=raw,
                phase="preflight",
                evidence=preflight[0],
            )
        return self.authority.decide(
            request,
            now=self.clock.now(),
            token_id=self.id_factory(),
            approval=approval,
            proposal_digest=pd,
            request_bytes=raw,
        )

    def authorize(
        self, request: AuthorizationRequest, *, approval: ApprovalGrant | None = None
    ) -> AuthorizationDecision:
        """Decide a proposal and record the decision. The token is set only on ALLOW.

        Raises:
            ExecutionDenied: the decision itself could not be made (fail closed).
        """
        return self._authorize(request, approval, None)

    def _authorize(
        self, request: AuthorizationRequest, approval: ApprovalGrant | None, preflight: Any
    ) -> AuthorizationDecision:
        """:meth:`authorize`, or with ``preflight=(evidence,)`` the first phase of a
        two-phase call (its ``decision`` entry says ``detail.phase: "preflight"``)."""
        pd = None
        try:
            if not isinstance(request, AuthorizationRequest):
                raise _Denial("DENY", (R.REQUEST_INVALID.value,), "the proposal is not an AuthorizationRequest")
            raw = request.canonical_bytes()
            pd = digest_bytes(raw)
            decision = self._decide(request, approval, pd, raw, preflight)
            if preflight is not None and decision.outcome is not Outcome.ALLOW:
                raise _Denial(decision.outcome.value, decision.reason_codes, " ".join(decision.explanation), decision)
            funded = decision.token is not None or preflight is not None
            if decision.record.approval_id is not None and approval is not None and funded:
                # The token this approval buys is its one execution: a second
                # authorize() with the same grant gets no second token.
                try:
                    spent = self.replay_store.consume(
                        f"approval:{decision.record.approval_id}", expires_at=approval.expires_at, now=self.clock.now()
                    )
                except BaseException:
                    self._release(decision)  # no token: give back what the ALLOW debited
                    raise
                if spent is not True:
                    self._release(decision)
                    raise _Denial("DENY", (R.APPROVAL_USED.value,), "this approval was already used")
        except _Denial as d:
            raise self._deny(request, pd, d) from None
        except StoreUnavailable as exc:
            raise self._deny(request, pd, _Denial("DENY", (R.STORE_UNAVAILABLE.value,), str(exc))) from None
        except AuthorityUnavailable as exc:
            raise self._deny(request, pd, _Denial("DENY", (exc.reason_code,), str(exc))) from None
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            raise self._deny(request, pd, _guard_error(exc)) from None
        try:
            entry = self.audit_log.append(
                self._event(
                    "decision",
                    request,
                    pd,
                    outcome=decision.outcome.value,
                    codes=decision.reason_codes,
                    decision=decision,
                    detail={"phase": "preflight", "preflight_id": decision.record.token_id} if preflight else None,
                )
            )
        except Exception as exc:  # noqa: BLE001 - an unrecorded decision issues no token
            self._release(decision)
            # The denial names the decision it replaces (record digest, policy).
            denial = _Denial("DENY", (R.AUDIT_UNAVAILABLE.value,), str(exc), decision)
            raise self._deny(request, pd, denial) from None
        self._drain_spool()
        self._checkpoint(entry.seq)
        return decision

    def approve(
        self, pending: PendingApproval, *, approver: str, ttl: int = 900, approval_id: str | None = None
    ) -> ApprovalGrant:
        """Record that ``approver`` approved exactly this pending proposal.

        The grant funds exactly one execution: admitting it consumes
        ``approval:<grant id>`` in the replay store (durable where the store is), and a
        second use is denied with ``APPROVAL_USED``.

        Args:
            approval_id: the id of the approval request this answers (an adapter's
                interrupt id, an approval record's id). It becomes the grant id, so an
                answer re-sent later — even re-signed into a new grant — is the same,
                already spent, approval. Default: a fresh id.

        Raises:
            ConfigurationError: ``approval_id`` is not a string of 16..128 characters.
        """
        if self.authority is None:
            raise RuntimeError("a verify-only guard cannot grant approvals")
        if approval_id is not None and not (isinstance(approval_id, str) and 16 <= len(approval_id) <= 128):
            raise ConfigurationError("approval_id must be a string of 16..128 characters")
        grant_id = self.id_factory() if approval_id is None else approval_id
        return self.authority.grant_approval(
            pending, approver=approver, now=self.clock.now(), grant_id=grant_id, ttl=ttl
        )

    def approval_for(self, request_id: str, request: AuthorizationRequest | None = None) -> ApprovalGrant:
        """The signed grant of an approved request, handed out once: the request is
        marked consumed atomically here, so one person's approval funds exactly one
        run (``guard.run(request, call, approval=grant)``); the guard refuses the same
        grant a second time with ``APPROVAL_USED``.

        On a remote guard (:meth:`remote`) the grant comes from the service's queue,
        which consumes it when it is presented with the proposal, once.

        Args:
            request: the proposal about to run; if given, it must be the approved one.

        Raises:
            ApprovalError: unknown, pending, rejected, expired, already used, or for
                another proposal (``reason_code`` says which).
            ConfigurationError: this guard has no approval queue.
        """
        digest = request.content_digest() if isinstance(request, AuthorizationRequest) else None
        if self.approvals is None:
            # A remote guard: the service keeps the queue and consumes the grant when
            # it is presented with the proposal.
            fetch = getattr(self.authority, "approval_grant", None)
            if not callable(fetch):
                raise ConfigurationError("this guard has no approval queue: Guard.local(..., approvals=True)")
            remote_grant: ApprovalGrant = fetch(request_id, digest)
            return remote_grant
        grant: ApprovalGrant = self.approvals.consume(request_id, proposal_digest=digest)
        return grant

    def _approval_request(
        self,
        request: AuthorizationRequest,
        pd: str,
        codes: tuple[str, ...],
        decision: AuthorizationDecision | None,
    ) -> str | None:
        if self.approvals is None:
            named = getattr(self.authority, "approval_request_id", None)  # a remote authority's queue
            try:
                return named(pd) if callable(named) else None
            except Exception:  # noqa: BLE001 - no id, still denied
                return None
        try:
            policy = decision.record.policy if decision is not None else None
            record = self.approvals.create(request, reason_codes=codes, policy=policy, proposal_digest=pd)
            return str(record.id)
        except Exception as exc:  # noqa: BLE001 - without a request the call stays denied
            log.error("execauth: could not create the approval request: %s", exc)
            return None

    def deny(
        self,
        request: AuthorizationRequest | None,
        reason_codes: Iterable[str],
        message: str,
        *,
        outcome: str = "DENY",
        tool: str | None = None,
    ) -> ExecutionDenied:
        """Record a denial decided outside the guard (a person rejected an approval,
        an adapter failed before it could build the proposal) and return the
        exception to raise or render.

        Args:
            request: the proposal, or ``None`` if it could not be built (then
                ``tool`` names what was attempted).

        Never raises: the denial is returned even if it could not be recorded
        (then ``AUDIT_SPOOLED`` or ``AUDIT_UNAVAILABLE`` is among its reason codes).
        """
        pd: str | None = None
        subject: Any = request
        try:
            if isinstance(request, AuthorizationRequest):
                pd = request.content_digest()
            else:
                subject = _Unbuilt(tool, None, None, None)
        except Exception:  # noqa: BLE001 - a denial needs no digest to stand
            pd = None
        try:
            codes = tuple(str(c) for c in reason_codes) or (R.GUARD_ERROR.value,)
        except Exception:  # noqa: BLE001 - documented never to raise
            codes = (R.GUARD_ERROR.value,)
        return self._deny(subject, pd, _Denial(str(outcome), codes, _printable(message, 500)))

    # -- enforcement ---------------------------------------------------------

    def _admit(
        self,
        request: AuthorizationRequest,
        token: str | None,
        *,
        decide: bool,
        approval: ApprovalGrant | None,
        commit: Any = None,
        key: str | Literal[False] | None = None,
    ) -> Capability:
        """Every check before a call. Returns a capability or raises ExecutionDenied
        (after recording the denial). Never lets an exception other than
        ExecutionDenied out. With ``commit`` (a preflight), the decision asked for
        is that preflight's commit. ``key``: the call's idempotency key (see
        :meth:`run`)."""
        steps = self._admission(request, token, decide=decide, approval=approval, key=key)
        try:
            ask = next(steps)
            while True:  # the admission asks for (at most) one decision
                try:
                    answer = self._decide(*ask) if commit is None else self._commit_decision(commit)
                except BaseException as exc:  # noqa: BLE001 - handed to the admission, which records it
                    ask = steps.throw(exc)
                else:
                    ask = steps.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _aadmit(
        self,
        request: AuthorizationRequest,
        token: str | None,
        *,
        decide: bool,
        approval: ApprovalGrant | None,
        commit: Any = None,
        key: str | Literal[False] | None = None,
    ) -> Capability:
        """:meth:`_admit` whose decision is awaited (``authority.adecide`` where there
        is one), so a remote authority's round trip does not block the event loop."""
        steps = self._admission(request, token, decide=decide, approval=approval, key=key)
        try:
            ask = next(steps)
            while True:
                try:
                    answer = await self._adecide(*ask) if commit is None else self._commit_decision(commit)
                except BaseException as exc:  # noqa: BLE001 - cancellation too: recorded, then re-raised
                    ask = steps.throw(exc)
                else:
                    ask = steps.send(answer)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _adecide(
        self, request: AuthorizationRequest, approval: ApprovalGrant | None, pd: str, raw: bytes
    ) -> AuthorizationDecision:
        adecide = getattr(self.authority, "adecide", None)
        if not inspect.iscoroutinefunction(adecide):
            return self._decide(request, approval, pd, raw)
        decision = await adecide(
            request,
            now=self.clock.now(),
            token_id=self.id_factory(),
            approval=approval,
            proposal_digest=pd,
            request_bytes=raw,
        )
        return decision  # type: ignore[no-any-return]

    def _admission(
        self,
        request: AuthorizationRequest,
        token: str | None,
        *,
        decide: bool,
        approval: ApprovalGrant | None,
        key: str | Literal[False] | None = None,
    ) -> Generator[tuple[AuthorizationRequest, ApprovalGrant | None, str, bytes], AuthorizationDecision, Capability]:
        """The checks of :meth:`_admit`, shared by the sync and async paths: it yields
        ``(request, approval, digest, bytes)`` when it needs a decision, and the caller
        sends the decision back in (or throws what deciding raised)."""
        pd: str | None = None
        decision: AuthorizationDecision | None = None
        held: LedgerEntry | None = None
        try:
            if not isinstance(request, AuthorizationRequest):
                raise _Denial("DENY", (R.REQUEST_INVALID.value,), "the proposal is not an AuthorizationRequest")
            # Canonicalized once: the digest, and the decision record, are these bytes.
            raw = request.canonical_bytes()
            pd = digest_bytes(raw)
            key = _call_key(key, request, pd)  # str or None from here on
            if decide and key is not None and self.ledger is not None:
                self.ledger.check(key, pd)  # a repeat is answered before any decision or debit
            if decide:
                decision = yield (request, approval, pd, raw)
                if decision.outcome is not Outcome.ALLOW or decision.token is None:
                    raise _Denial(
                        decision.outcome.value,
                        decision.reason_codes,
                        " ".join(decision.explanation),
                        decision,
                    )
                token = decision.token
            if not token:
                raise _Denial("DENY", (R.NO_TOKEN.value,), "no authority token was presented")
            now = self.clock.now()
            claims = self.verifier.verify(token, request=request, now=now, proposal_digest=pd)
            if (self.authority is not None and claims.policy != self.authority.decision_point.policy_ref) or (
                self._expected_policy is not None and claims.policy != self._expected_policy()
            ):
                # A policy change (a kill switch, a lowered ceiling) also stops tokens
                # issued under the old policy and not yet used.
                raise _Denial(
                    "DENY", (R.TOKEN_POLICY_STALE.value,), "token was issued under a policy no longer in force"
                )
            # Keep the id until the token can no longer pass the exp check.
            spend = [(claims.jti, claims.exp + self.verifier.clock_skew)]
            if decision is not None and decision.record.approval_id is not None and approval is not None:
                # One person's approval authorizes one execution, not a stream of them.
                spend.append((f"approval:{decision.record.approval_id}", approval.expires_at))
            record: Any = decision.record if decision is not None else None
            if getattr(record, "preflight_id", None) is not None:
                # A CommitDecision: its preflight funds exactly one commit.
                spend.append((f"preflight:{record.preflight_id}", record.preflight_exp + self.verifier.clock_skew))
            event = self._event(
                "execution",
                request,
                pd,
                outcome="ALLOW",
                codes=(decision.reason_codes if decision else (R.TOOL_ALLOWED.value,)),
                decision=decision,
                token_id=claims.jti,
                executed=True,
                record_digest=claims.record_digest,
            )
            if key is not None and self.ledger is not None:
                # Taken before the token is consumed: the loser of a race on one key
                # is refused before anything is recorded as executed.
                held = self.ledger.begin(
                    key, proposal_digest=pd, token_id=claims.jti, tool=request.tool, call_id=request.call_id
                )
            entry = self._consume_and_record(spend, event, now)
            cap = Capability(_CAPABILITY_KEY, request, claims.jti, entry.seq, decision, token)
            cap.idempotency_key, cap.ledger_entry = key, held
            return cap
        except BaseException as exc:
            if held is not None and self.ledger is not None:
                self.ledger.release(held)  # refused before the call: the key is free again
            if not isinstance(exc, Exception):
                # KeyboardInterrupt, SystemExit, cancellation, a watchdog's BaseException:
                # the tool does not run, the debit is given back, the denial is recorded
                # where possible, and the interruption goes on to the host.
                self._release(decision)
                self._deny(request, pd, _Denial("DENY", (R.GUARD_ERROR.value,), f"interrupted ({type(exc).__name__})"))
                raise
            if isinstance(exc, _Denial):
                denial = exc
            elif isinstance(exc, LedgerRefusal):
                denial = _Denial("DENY", (exc.code.value,), exc.message)
                denial.ledger_entry = exc.entry
            elif isinstance(exc, TokenError):
                denial = _Denial("DENY", (exc.reason_code,), exc.message)
            elif isinstance(exc, StoreUnavailable):
                denial = _Denial("DENY", (R.STORE_UNAVAILABLE.value,), str(exc))
            elif isinstance(exc, AuthorityUnavailable):
                denial = _Denial("DENY", (exc.reason_code,), str(exc))
            else:
                denial = _guard_error(exc)
            # An ALLOW that will not run gives back the budget it debited.
            self._release(decision)
            raise self._deny(request, pd, denial) from None

    def _consume_and_record(self, spend: list[tuple[str, int]], event: dict[str, Any], now: int) -> AuditEntry:
        """Consume every id of ``spend`` (the token's, then an approval's), then record
        the execution; as one atomic store call when the replay store offers one for
        this audit log. Raises a denial naming the first id found already used."""
        joint = self._joint_admission()
        if joint is not None:
            outcome = joint.consume_and_append(spend, event, now=now)
            if not isinstance(outcome, AuditEntry):
                # Anything but an entry is a refusal: name the id if it is one of ours.
                raise _spent(spend, outcome)
            entry = outcome
        else:
            for token_id, expires_at in spend:
                if self.replay_store.consume(token_id, expires_at=expires_at, now=now) is not True:
                    raise _spent(spend, token_id)
            entry = self.audit_log.append(event)
        self._checkpoint(entry.seq)
        return entry

    def _joint_admission(self) -> JointAdmission | None:
        self._joint, joint = joint_admission_of(self._joint, self.replay_store, self.audit_log)
        return joint

    def _event(
        self,
        kind: str,
        request: AuthorizationRequest | Any,
        pd: str | None,
        *,
        outcome: str,
        codes: tuple[str, ...],
        decision: AuthorizationDecision | None = None,
        token_id: str | None = None,
        executed: bool = False,
        record_digest: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        known = isinstance(request, (AuthorizationRequest, _Unbuilt))
        return {
            "event": kind,
            "time": self.clock.now(),
            "executed": executed,
            "tool": request.tool if known else None,
            "principal": request.principal if known else None,
            "agent": request.agent if known else None,
            "call_id": request.call_id if known else None,
            "proposal_digest": pd,
            "outcome": outcome,
            "reason_codes": list(codes),
            "record_digest": decision.record_digest if decision else record_digest,
            "policy_digest": decision.record.policy.digest if decision else None,
            "token_id": token_id,
            "detail": detail or {},
        }

    def _deny(self, request: Any, pd: str | None, d: _Denial) -> ExecutionDenied:
        """Write the denial record, then build the exception to raise."""
        codes = d.codes or (R.GUARD_ERROR.value,)
        seq: int | None = None
        event: dict[str, Any] | None = None
        try:
            event = self._event(
                "denial",
                request,
                pd,
                outcome=d.outcome,
                codes=codes,
                decision=d.decision,
                detail={"message": _printable(d.message, 500)},
            )
            entry = self.audit_log.append(event)
            seq = entry.seq
        except Exception as exc:  # noqa: BLE001 - the denial stands even if unrecorded
            log.error("execauth: could not record a denial: %s", exc)
            codes = (*codes, self._spool_record(event))
        else:
            self._drain_spool()
            self._checkpoint(entry.seq)
        tool = request.tool if isinstance(request, (AuthorizationRequest, _Unbuilt)) else None
        kwargs: dict[str, Any] = dict(
            outcome=d.outcome,
            reason_codes=codes,
            message=d.message,
            tool=tool,
            proposal_digest=pd,
            audit_seq=seq,
        )
        if d.outcome == Outcome.REQUIRE_APPROVAL.value and isinstance(request, AuthorizationRequest) and pd:
            try:
                requested_at = d.decision.record.decided_at if d.decision else self.clock.now()
                pending = PendingApproval(
                    proposal_digest=pd,
                    request=request,
                    reason_codes=codes,
                    requested_at=requested_at,
                    request_id=self._approval_request(request, pd, codes, d.decision),
                )
                return ApprovalRequired(pending=pending, **kwargs)
            except Exception:
                log.exception("execauth: could not build the pending approval")
        if d.ledger_entry is not None and codes[0] == R.LEDGER_ALREADY_SUCCEEDED.value:
            return AlreadyExecuted(entry=d.ledger_entry, **kwargs)
        return ExecutionDenied(**kwargs)

    def _release(self, decision: AuthorizationDecision | None) -> None:
        """Refund state an ALLOW debited, when the call will not (successfully) run."""
        if decision is None or decision.outcome is not Outcome.ALLOW or decision.record.token_id is None:
            return
        release = getattr(self.authority.decision_point, "release", None) if self.authority else None
        if release is None:
            return
        try:
            release(decision.record.token_id)
        except Exception as exc:  # noqa: BLE001 - failing to refund over-counts; never executes
            log.error("execauth: could not release hold %s: %s", decision.record.token_id, exc)

    def _record_result(self, cap: Capability, status: str, error: BaseException | None, receipt: Any = None) -> None:
        event: dict[str, Any] | None = None
        try:
            detail: dict[str, Any] = {"status": status, "execution_seq": cap.audit_seq}
            if error is not None:
                detail["error"] = type(error).__name__
            if receipt is not None:
                detail["receipt"] = receipt.model_dump(mode="json")
            # Lean on purpose: the execution entry it points to carries the rest.
            event = {
                "event": "result",
                "time": self.clock.now(),
                "executed": True,
                "token_id": cap.token_id,
                "detail": detail,
            }
            entry = self.audit_log.append(event)
        except Exception as exc:  # noqa: BLE001 - the call already happened; don't mask its result
            log.error("execauth: could not record the result of token %s: %s", cap.token_id, exc)
            self._spool_record(event)
        else:
            self._drain_spool()
            self._checkpoint(entry.seq)

    def _spool_record(self, event: dict[str, Any] | None) -> str:
        """Keep a record the audit log refused in the spool. Returns the reason code
        that says where it went: ``AUDIT_SPOOLED`` or ``AUDIT_UNAVAILABLE``. Never raises."""
        if self.spool is None or event is None:
            return R.AUDIT_UNAVAILABLE.value
        try:
            self.spool.append(event)
        except Exception as exc:  # noqa: BLE001 - the spool failing too must not lift the denial
            log.error("execauth: could not spool an audit record either: %s", exc)
            return R.AUDIT_UNAVAILABLE.value
        return R.AUDIT_SPOOLED.value

    def _checkpoint(self, size: int) -> None:
        """After a successful append (``size`` = its seq): sign a checkpoint if the
        cadence says so. Never raises: a checkpoint left unsigned shows in the
        verifier's unsigned tail, and must not turn a recorded decision into an error."""
        if self.checkpointer is None:
            return
        try:
            self.checkpointer.maybe(size=size)
        except Exception as exc:  # noqa: BLE001 - see above; the next append tries again
            log.error("execauth: could not sign an audit checkpoint: %s", type(exc).__name__)

    def _drain_spool(self) -> None:
        """After a successful append: replay spooled records while the log answers."""
        if self.spool is not None:
            self.spool.maybe_flush(self.audit_log)  # never raises

    def _invoke(self, cap: Capability, call: Callable[[], T], receipt: bool = False) -> Any:
        cap._spend()
        signing = receipt or self.receipts
        started = self.clock.now() if signing else 0
        entered = _CURRENT.set(CurrentCall(cap.request, cap.token or "", cap.idempotency_key))
        try:
            result = call()
        except BaseException as exc:
            # The tool started: its side effect may have happened, so what it was
            # charged stays charged (a refund here would let a failing tool overspend).
            self._ledger_finish(cap, None, exc)
            signed = self._receipt(cap, started, None, exc) if signing else None
            self._record_result(cap, "error", exc, signed)
            if receipt and isinstance(exc, Exception):
                from .receipts import ExecutionFailed

                raise ExecutionFailed(signed, exc) from exc
            raise
        finally:
            _CURRENT.reset(entered)
        self._ledger_finish(cap, result, None)
        signed = self._receipt(cap, started, result, None) if signing else None
        self._record_result(cap, "ok", None, signed)
        return (result, signed) if receipt else result

    async def _ainvoke(self, cap: Capability, call: Callable[[], Awaitable[T] | T], receipt: bool = False) -> Any:
        cap._spend()
        signing = receipt or self.receipts
        started = self.clock.now() if signing else 0
        entered = _CURRENT.set(CurrentCall(cap.request, cap.token or "", cap.idempotency_key))
        try:
            result = call()
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            # The tool started: its side effect may have happened, so what it was
            # charged stays charged (a refund here would let a failing tool overspend).
            self._ledger_finish(cap, None, exc)
            signed = self._receipt(cap, started, None, exc) if signing else None
            self._record_result(cap, "error", exc, signed)
            if receipt and isinstance(exc, Exception):
                from .receipts import ExecutionFailed

                raise ExecutionFailed(signed, exc) from exc
            raise
        finally:
            _CURRENT.reset(entered)
        self._ledger_finish(cap, result, None)
        signed = self._receipt(cap, started, result, None) if signing else None
        self._record_result(cap, "ok", None, signed)
        return (result, signed) if receipt else result

    def _ledger_finish(self, cap: Capability, result: object, error: BaseException | None) -> None:
        """Record the call's outcome in the ledger. Never raises: the call happened; an
        outcome that cannot be written leaves the entry started, unknown after its lease."""
        if cap.ledger_entry is None or self.ledger is None:
            return
        try:
            self.ledger.finish(cap.ledger_entry, ok=error is None, result=result, error=error)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("execauth: could not record the outcome of %s in the ledger: %s", cap.idempotency_key, exc)

    def _receipt(self, cap: Capability, started: int, result: Any, error: BaseException | None) -> Any:
        """The signed receipt of a call that ran, or ``None`` if it could not be signed
        (logged; the call has happened, so nothing is raised over its result)."""
        try:
            from .receipts import issue_receipt

            authority = self.authority
            assert isinstance(authority, Authority)  # checked before the call (_receipt_check)
            return issue_receipt(
                authority.signer,
                issuer=authority.issuer,
                token_id=cap.token_id,
                proposal_digest=cap.request.content_digest(),
                tool=cap.request.tool,
                idempotency_key=getattr(cap, "idempotency_key", None),
                execution_seq=cap.audit_seq,
                started_at=started,
                ended_at=self.clock.now(),
                result=result,
                error=error,
            )
        except Exception as exc:  # noqa: BLE001 - see the docstring
            log.error("execauth: could not sign the receipt of token %s: %s", cap.token_id, type(exc).__name__)
            return None

    def _receipt_check(self, receipt: bool) -> None:
        """Refuse ``receipt=True`` before anything is decided when no key can sign it."""
        if (receipt or self.receipts) and not isinstance(self.authority, Authority):
            raise ConfigurationError("receipts are signed by an in-process Authority's key; this guard has none")

    def execute(
        self,
        request: AuthorizationRequest,
        token: str | None,
        call: Callable[[], T],
        *,
        idempotency_key: str | Literal[False] | None = None,
    ) -> T:
        """Verify ``token`` for ``request``, consume it, record, then ``call()``.
        ``idempotency_key`` as for :meth:`run`."""
        cap = self._admit(request, token, decide=False, approval=None, key=idempotency_key)
        result: T = self._invoke(cap, call)
        return result

    async def aexecute(
        self,
        request: AuthorizationRequest,
        token: str | None,
        call: Callable[[], Awaitable[T] | T],
        *,
        idempotency_key: str | Literal[False] | None = None,
    ) -> T:
        """Async :meth:`execute`."""
        cap = await self._aadmit(request, token, decide=False, approval=None, key=idempotency_key)
        result: T = await self._ainvoke(cap, call)
        return result

    @overload
    def run(
        self,
        request: AuthorizationRequest,
        call: Callable[[], T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: Literal[False] = False,
    ) -> T: ...
    @overload
    def run(
        self,
        request: AuthorizationRequest,
        call: Callable[[], T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: Literal[True],
    ) -> tuple[T, ExecutionReceipt | None]: ...
    def run(
        self,
        request: AuthorizationRequest,
        call: Callable[[], T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: bool = False,
    ) -> Any:
        """Decide, then (only on ALLOW) verify, consume, record and ``call()``.

        A tool with an irreversible effect runs in two phases here, preflight then
        commit (:meth:`preflight`, :meth:`commit`; see :mod:`execauth_core.twophase`).

        Args:
            receipt: return ``(result, receipt)``, the signed
                :class:`~execauth_core.receipts.ExecutionReceipt` (``None`` only if it
                could not be signed: logged). A tool that raises an ``Exception`` is
                re-raised as :class:`~execauth_core.receipts.ExecutionFailed` carrying
                the ``failed`` receipt, the tool's exception as its ``__cause__``.
            idempotency_key: this call's key in the effect ledger (docs/ledger.md).
                Default: :func:`~execauth_core.ledger.idempotency_key` of no run id,
                the proposal's ``call_id`` and its digest; none when the proposal
                has no ``call_id``. A key that already ran is refused
                (:class:`~execauth_core.ledger.AlreadyExecuted` when it succeeded)
                instead of run again. ``False``: this call has no key (a delegation
                to another agent, whose own tool calls carry theirs).
        """
        self._receipt_check(receipt)
        if self._two_phase(request):
            return self._commit(self.preflight(request, approval=approval), call, receipt, idempotency_key)
        cap = self._admit(request, None, decide=True, approval=approval, key=idempotency_key)
        return self._invoke(cap, call, receipt)

    @overload
    async def arun(
        self,
        request: AuthorizationRequest,
        call: Callable[[], Awaitable[T] | T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: Literal[False] = False,
    ) -> T: ...
    @overload
    async def arun(
        self,
        request: AuthorizationRequest,
        call: Callable[[], Awaitable[T] | T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: Literal[True],
    ) -> tuple[T, ExecutionReceipt | None]: ...
    async def arun(
        self,
        request: AuthorizationRequest,
        call: Callable[[], Awaitable[T] | T],
        *,
        approval: ApprovalGrant | None = None,
        idempotency_key: str | Literal[False] | None = None,
        receipt: bool = False,
    ) -> Any:
        """Async :meth:`run`. ``call`` may return an awaitable or a plain value. The
        decision is awaited (``authority.adecide``, e.g. :class:`RemoteAuthority`'s)."""
        self._receipt_check(receipt)
        if self._two_phase(request):
            preflight = await self.apreflight(request, approval=approval)
            return await self._acommit(preflight, call, receipt, idempotency_key)
        cap = await self._aadmit(request, None, decide=True, approval=approval, key=idempotency_key)
        return await self._ainvoke(cap, call, receipt)

    # -- two-phase commit (execauth_core.twophase) ---------------------------

    def _two_phase(self, request: object) -> bool:
        """Does ``run`` take two phases for this request? Only with an in-process
        Authority (a remote one decides in one phase) and a Court that registers the
        tool with an irreversible effect."""
        if not isinstance(self.authority, Authority) or not isinstance(request, AuthorizationRequest):
            return False
        from .twophase import needs_two_phase

        return needs_two_phase(self.authority.decision_point, request.tool)

    def preflight(
        self, request: AuthorizationRequest, *, evidence: Any = None, approval: ApprovalGrant | None = None
    ) -> PreflightDecision:
        """The first phase: decide ``request`` without debiting, and record it.

        Args:
            evidence: a :class:`~execauth_core.manifest.PreflightResult` gathered by the
                caller (a dry run, a person's check), used instead of the tool's own
                preflight and recorded in the signed decision as the caller's claim.
            approval: an approval of this proposal; it is spent here (one approval,
                one preflight).

        Returns:
            The signed preflight ALLOW; :meth:`commit` runs it once.

        Raises:
            ExecutionDenied: anything but ALLOW (``ApprovalRequired`` when a person
                must approve), recorded like every denial.
            ConfigurationError: this guard has no in-process Authority (a remote
                service decides in one phase).
        """
        from .twophase import PreflightDecision

        if not isinstance(self.authority, Authority):
            raise ConfigurationError("two-phase commit needs an in-process Authority (Guard.local)")
        return PreflightDecision(decision=self._authorize(request, approval, (evidence,)))

    async def apreflight(
        self, request: AuthorizationRequest, *, evidence: Any = None, approval: ApprovalGrant | None = None
    ) -> PreflightDecision:
        """Async :meth:`preflight` (the in-process Court is not awaited: same work)."""
        return self.preflight(request, evidence=evidence, approval=approval)

    @overload
    def commit(self, preflight: PreflightDecision, call: Callable[[], T], *, receipt: Literal[False] = False) -> T: ...
    @overload
    def commit(
        self, preflight: PreflightDecision, call: Callable[[], T], *, receipt: Literal[True]
    ) -> tuple[T, ExecutionReceipt | None]: ...
    def commit(self, preflight: PreflightDecision, call: Callable[[], T], *, receipt: bool = False) -> Any:
        """The second phase: commit ``preflight`` (refused when it expired, was used,
        or the policy or state changed since), verify the CommitToken, consume it and
        the preflight once, record, then ``call()``.

        Args:
            receipt: as in :meth:`run`.

        Raises:
            ExecutionDenied: the commit was refused (``PREFLIGHT_INVALID``,
                ``PREFLIGHT_EXPIRED``, ``PREFLIGHT_USED``, ``COMMIT_POLICY_CHANGED``,
                ``COMMIT_STATE_CHANGED``, or what the Court finds now); nothing ran.
        """
        return self._commit(preflight, call, receipt)

    def _commit(
        self,
        preflight: PreflightDecision,
        call: Callable[[], T],
        receipt: bool,
        key: str | Literal[False] | None = None,
    ) -> Any:
        self._receipt_check(receipt)
        self._check_preflight(preflight)
        cap = self._admit(_draft_of(preflight), None, decide=True, approval=None, commit=preflight, key=key)
        return self._invoke(cap, call, receipt)

    @overload
    async def acommit(
        self, preflight: PreflightDecision, call: Callable[[], Awaitable[T] | T], *, receipt: Literal[False] = False
    ) -> T: ...
    @overload
    async def acommit(
        self, preflight: PreflightDecision, call: Callable[[], Awaitable[T] | T], *, receipt: Literal[True]
    ) -> tuple[T, ExecutionReceipt | None]: ...
    async def acommit(
        self, preflight: PreflightDecision, call: Callable[[], Awaitable[T] | T], *, receipt: bool = False
    ) -> Any:
        """Async :meth:`commit`."""
        return await self._acommit(preflight, call, receipt)

    async def _acommit(
        self,
        preflight: PreflightDecision,
        call: Callable[[], Awaitable[T] | T],
        receipt: bool,
        key: str | Literal[False] | None = None,
    ) -> Any:
        self._receipt_check(receipt)
        self._check_preflight(preflight)
        cap = await self._aadmit(
            _draft_of(preflight), None, decide=True, approval=None, commit=preflight, key=key
        )
        return await self._ainvoke(cap, call, receipt)

    def _check_preflight(self, preflight: object) -> None:
        from .twophase import PreflightDecision

        if not isinstance(preflight, PreflightDecision):
            raise self.deny(None, (R.PREFLIGHT_INVALID.value,), "commit() takes the PreflightDecision of preflight()")

    def _commit_decision(self, preflight: Any) -> Any:
        if not isinstance(self.authority, Authority):
            raise _Denial("DENY", (R.PREFLIGHT_INVALID.value,), "two-phase commit needs an in-process Authority")
        return self.authority.commit(preflight, now=self.clock.now(), token_id=self.id_factory())


class _Unbuilt:
    """What is known of a proposal that could not be built, for its denial record."""

    def __init__(self, tool: object, principal: object, agent: object, call_id: object) -> None:
        self.tool = _printable(tool)
        self.principal = _printable(principal) if principal is not None else None
        self.agent = _printable(agent) if agent is not None else None
        self.call_id = _printable(call_id) if call_id is not None else None


def _draft_of(preflight: object) -> Any:
    """The proposal a preflight names, for the commit's admission (which verifies the
    preflight's signature before anything of it is trusted); ``None`` if there is none."""
    decision = getattr(preflight, "decision", None)
    return getattr(getattr(decision, "record", None), "request", None)


def _printable(value: object, limit: int = 200) -> str:
    """A bounded, valid-UTF-8 rendering of anything, for denial records. Never raises."""
    try:
        text = value if isinstance(value, str) else repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not block the denial
        text = f"<unprintable {type(value).__name__}>"
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]


def _proposal_problem(exc: Exception) -> str:
    """What is wrong with a proposal, naming each field (pydantic's first line
    only counts the errors)."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            parts = []
            for error in errors()[:3]:
                where = ".".join(str(p) for p in error.get("loc", ())) or "proposal"
                parts.append(f"{where}: {str(error.get('msg', '')).removeprefix('Value error, ')}")
            if parts:
                return _printable("; ".join(parts), 300)
        except Exception:  # noqa: BLE001, S110 - fall back to the first line
            pass
    return _first_line(exc)


def _spent(spend: list[tuple[str, int]], spent: object) -> _Denial:
    if isinstance(spent, str) and spent.startswith("preflight:"):
        return _Denial("DENY", (R.PREFLIGHT_USED.value,), "this preflight already funded a commit")
    if len(spend) > 1 and spent == spend[1][0]:
        return _Denial("DENY", (R.APPROVAL_USED.value,), "this approval was already used")
    return _Denial("DENY", (R.TOKEN_REPLAYED.value,), "this token was already used")


def _guard_error(exc: Exception) -> _Denial:
    log.exception("execauth: error inside the guard; denying")
    return _Denial("DENY", (R.GUARD_ERROR.value,), f"internal error ({type(exc).__name__}); denied")


def _policy_source(expected: object) -> Callable[[], PolicyRef] | None:
    """What ``Guard(expected_policy=...)`` accepts, as a function giving the pinned
    policy; anything else is refused when the guard is built."""
    if expected is None:
        return None
    if isinstance(expected, PolicyRef):
        return lambda: expected
    if isinstance(getattr(expected, "policy_ref", None), PolicyRef):
        return lambda: expected.policy_ref  # type: ignore[attr-defined]
    if callable(expected):
        return expected
    raise ConfigurationError(
        "expected_policy is a PolicyRef (id, epoch, digest), an object with a policy_ref "
        f"(a Court or decision point), or a function returning a PolicyRef; got {type(expected).__name__}"
    )


def _os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__


def _json_text(value: Any) -> str:
    import json

    return json.dumps(value, indent=2) + "\n"


def _check_cadence(every: object, interval: object, origin: object) -> None:
    """Refuse a bad checkpoint cadence before anything is opened."""
    for name, value in (("checkpoint_every", every), ("checkpoint_interval", interval)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigurationError(f"{name} must be a positive integer (or None), not {value!r}")
    if not isinstance(origin, str) or not origin or any(c.isspace() or c == "+" for c in origin):
        raise ConfigurationError(f"checkpoint_origin is a name without spaces or '+', not {origin!r}")


def _local_spool(
    spool: bool | str | os.PathLike[str] | Spool | None,
    data_dir: str | os.PathLike[str] | None,
    *,
    check_only: bool = False,
) -> Spool | None:
    """What ``Guard.local(spool=...)`` means (see there)."""
    if spool is None or spool is True:
        if data_dir is None:
            if spool is True:
                raise ConfigurationError("spool=True needs a data_dir (or give the spool's path)")
            return None
        return None if check_only else Spool(Path(data_dir) / "audit.spool")
    if spool is False:
        return None
    if isinstance(spool, Spool):
        return spool
    if isinstance(spool, (str, os.PathLike)):
        return None if check_only else Spool(spool)
    raise ConfigurationError("spool is True, False, a path or an execauth_core.Spool")


def _local_approvals(
    approvals: Any,
    stores: str | Stores | None,
    data_dir: str | os.PathLike[str] | None,
    audit: AuditLog,
    authority: Authority,
    clock: Clock | None,
    id_factory: Callable[[], str],
) -> Any:
    """The approval queue ``Guard.local(approvals=...)`` asks for, or ``None``."""
    if approvals is None or approvals is False:
        return None
    from .approvals import Approvals, MemoryApprovalStore, SQLiteApprovalStore, open_approvals

    if isinstance(approvals, Approvals):
        return approvals
    store: Any
    if isinstance(approvals, str):
        store = open_approvals(approvals)
    elif approvals is True:
        if isinstance(stores, str):
            store = open_approvals(stores)
        elif stores is not None:
            raise ConfigurationError("with opened Stores, give approvals= a store URL or an Approvals")
        elif data_dir is not None:
            store = SQLiteApprovalStore(Path(data_dir) / "execauth.db")
        else:
            store = MemoryApprovalStore()
    else:
        raise ConfigurationError("approvals is True, a store URL or an execauth_core.approvals.Approvals")
    return Approvals(store, audit, authority=authority, clock=clock, id_factory=id_factory)


def _given_stores(stores: str | Stores) -> tuple[ReplayStore, AuditLog]:
    """The replay store and audit log of a store URL or opened :class:`Stores`."""
    opened = open_stores(stores) if isinstance(stores, str) else stores
    if not isinstance(opened, Stores):
        raise ConfigurationError("stores is a store URL or execauth_core.stores.Stores")
    return opened.replay, opened.audit


def _call_key(given: str | Literal[False] | None, request: AuthorizationRequest, pd: str) -> str | None:
    """The call's idempotency key: the caller's, or derived from its call id; ``False``
    for none."""
    if given is False:
        return None
    if given is not None:
        try:
            return check_key(given)
        except ConfigurationError as exc:
            raise _Denial("DENY", (R.REQUEST_INVALID.value,), str(exc)) from None
    return idempotency_key(None, request.call_id, pd) if request.call_id is not None else None


def _local_ledger(
    ledger: bool | str | Ledger | None,
    stores: str | Stores | None,
    data_dir: str | os.PathLike[str] | None,
    audit: AuditLog,
    clock: Clock | None,
) -> Ledger | None:
    """The effect ledger ``Guard.local(ledger=...)`` asks for, or ``None``."""
    from .ledger import MemoryLedgerStore, SQLiteLedgerStore, open_ledger

    if ledger is False or (ledger is None and stores is not None and not isinstance(stores, str)):
        return None
    if isinstance(ledger, Ledger):
        return ledger
    store: Any
    if isinstance(ledger, str):
        store = open_ledger(ledger)
    elif ledger is None or ledger is True:
        if isinstance(stores, str):
            store = open_ledger(stores)
        elif stores is not None:
            raise ConfigurationError("with opened Stores, give ledger= a store URL or a Ledger")
        elif data_dir is not None:
            try:
                store = SQLiteLedgerStore(Path(data_dir) / "execauth.db")
            except StoreUnavailable as exc:
                raise ConfigurationError(f"data_dir {str(data_dir)!r} cannot be used: {exc}") from None
        else:
            store = MemoryLedgerStore()
    else:
        raise ConfigurationError("ledger is True, False, a store URL or an execauth_core.ledger.Ledger")
    return Ledger(store, clock=clock, audit_log=audit)
