"""One approval flow for every framework adapter.

Each adapter's gate object (LangGraph's ``ExecAuthToolWrapper``, CrewAI's
``CrewGuard``, AutoGen's guards, the OpenAI Agents ``ExecAuth``) inherits
:class:`ApprovalGate`, so the same names mean the same thing everywhere:

- ``pending_approvals()``: the requests waiting for a person, as
  :class:`PendingRequest` (``request_id``, ``tool``, ``arguments``,
  ``proposal_digest``, ``reason_codes``, ``expires_at``);
- ``approval_status(request_id)``: ``pending`` / ``approved`` / ``rejected`` /
  ``expired`` / ``consumed``, as the authority reports it;
- ``approve(request_id, *, approver, comment=None)`` / ``reject(...)``: a person's
  decision through the guard's own queue (in-process approvals only: on a remote
  guard an approver decides in the console or with the CLI; an agent never approves);
- ``wait_for_approval(request_id, ...)`` / ``await_approval(...)``: poll the
  authority until the request is decided.

The framework's own pause then resumes with the request id, and the adapter calls
:meth:`ApprovalFlow.grant_for`, which asks the authority for the grant of exactly that
request and that proposal and consumes it: a pending, rejected or expired request
never runs, and an answer sent again later is refused with ``APPROVAL_USED``.

Where the requests live: the guard's durable queue (``Guard.local(...,
approvals=True)``), the service's queue (``Guard.remote``), or, for a guard made
without a queue, an in-memory queue of this gate (gone with the process).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .approvals import ApprovalError, ApprovalRequest, Approvals, MemoryApprovalStore
from .errors import ApprovalRequired, AuthorityUnavailable, ConfigurationError, ExecutionDenied, StoreUnavailable
from .messages import ApprovalGrant, AuthorizationRequest, PendingApproval
from .reasons import ReasonCode as R

if TYPE_CHECKING:
    from .guard import Guard

__all__ = [
    "DEFAULT_POLL_INTERVAL",
    "FINAL_STATES",
    "GATE_METHODS",
    "ApprovalFlow",
    "ApprovalGate",
    "ApprovalTimeout",
    "PendingRequest",
]

_log = logging.getLogger("execauth.approvals")

DEFAULT_POLL_INTERVAL = 0.5
"""Seconds between two looks at the authority while waiting for a decision."""
FINAL_STATES = ("approved", "rejected", "expired", "consumed")
GATE_METHODS = (
    "pending_approvals",
    "approval_status",
    "approve",
    "reject",
    "wait_for_approval",
    "await_approval",
)
"""The approval methods every adapter's gate object has, with :class:`ApprovalGate`'s signatures."""
_REMEMBERED = 4096


_MEMORY_QUEUES: weakref.WeakKeyDictionary[Any, Approvals] = weakref.WeakKeyDictionary()
_MEMORY_LOCK = threading.Lock()


class _BoundedMemoryStore(MemoryApprovalStore):
    """The in-memory queue of a guard made without one: bounded, the oldest request
    dropped first (a dropped request is unknown, so it can only deny)."""

    def __init__(self, capacity: int) -> None:
        super().__init__()
        self._capacity = capacity

    def insert(self, record: ApprovalRequest) -> None:
        super().insert(record)
        with self._lock:
            while len(self._rows) > self._capacity:
                del self._rows[next(iter(self._rows))]


class ApprovalTimeout(ApprovalError):
    """``wait_for_approval`` / ``await_approval`` gave up: the request is still
    pending (``reason_code`` ``APPROVAL_REQUIRED``). Nothing ran; the request stays
    open until a person decides or it expires."""

    def __init__(self, request_id: str, waited: float, last_error: str | None = None) -> None:
        why = f" (last error: {last_error})" if last_error else ""
        super().__init__(
            R.APPROVAL_REQUIRED, f"approval request {request_id} is still pending after {waited:.1f} s{why}"
        )
        self.request_id = request_id


@dataclass(frozen=True)
class PendingRequest:
    """An approval request waiting for a person, as a gate lists it.

    Attributes:
        request_id: the authority's id of the request (``apr_...``).
        tool: the tool the proposal calls.
        arguments: the arguments exactly as they will run (from the canonical proposal).
        proposal_digest: what an approval binds to.
        reason_codes: why the policy wants a person.
        expires_at: Unix seconds; an undecided request denies after this.
        proposal: the whole proposal (principal, agent, call id).
    """

    request_id: str
    tool: str
    arguments: dict[str, Any]
    proposal_digest: str
    reason_codes: tuple[str, ...]
    expires_at: int
    proposal: AuthorizationRequest = field(repr=False)

    @property
    def call_id(self) -> str | None:
        """The framework's id of the paused tool call, if it had one."""
        return self.proposal.call_id

    @classmethod
    def of(cls, record: ApprovalRequest) -> PendingRequest:
        return cls(
            request_id=record.id,
            tool=record.tool,
            arguments=dict(record.proposal.args),
            proposal_digest=record.proposal_digest,
            reason_codes=tuple(record.reason_codes),
            expires_at=record.expires_at,
            proposal=record.proposal,
        )


def state_of(record: ApprovalRequest) -> str:
    """The state a gate reports: an approved request whose grant was used is ``consumed``."""
    return "consumed" if record.state == "approved" and record.consumed else record.state


class ApprovalFlow:
    """The approval bookkeeping a gate needs, over its guard's authority.

    Args:
        guard: the gate's guard.
        capacity: most request ids remembered in memory (the requests themselves live
            with the authority).
    """

    def __init__(self, guard: Guard, *, capacity: int = _REMEMBERED) -> None:
        self.guard = guard
        self._capacity = capacity
        self._lock = threading.Lock()
        # request id -> proposal digest, for the requests this gate opened (newest last).
        self._opened: OrderedDict[str, str] = OrderedDict()
        # proposal digest -> the newest request opened for it (one lookup per call).
        self._newest: OrderedDict[str, str] = OrderedDict()

    # -- where the requests live ----------------------------------------------

    @property
    def remote(self) -> bool:
        """Whether the requests live with a remote authority service."""
        return self.guard.approvals is None and callable(getattr(self.guard.authority, "approval_record", None))

    def _queue(self) -> Approvals:
        """The in-process queue: the guard's, or this gate's in-memory one."""
        if self.guard.approvals is not None:
            queue: Approvals = self.guard.approvals
            return queue
        if self.remote:
            raise ConfigurationError(
                "this guard talks to a remote authority: approvals are made by an approver in the "
                "execauth console or with `execauth approvals approve/reject --url ...`, never by an agent's credential"
            )
        if self.guard.authority is None:
            raise ConfigurationError("a verify-only guard has no approvals: it cannot sign a grant")
        with _MEMORY_LOCK:
            # One in-memory queue per guard, shared by every gate on it.
            memory = _MEMORY_QUEUES.get(self.guard)
            if memory is None:
                memory = Approvals(
                    _BoundedMemoryStore(self._capacity),
                    self.guard.audit_log,
                    authority=self.guard.authority,
                    clock=self.guard.clock,
                    # A person's decisions are recorded; created and consumed are the
                    # guard's own REQUIRE_APPROVAL and execution entries already.
                    audited=frozenset({"approved", "rejected", "expired"}),
                )
                _MEMORY_QUEUES[self.guard] = memory
            return memory

    # -- requests ---------------------------------------------------------------

    def open(self, exc: ApprovalRequired | PendingApproval) -> str:
        """The request id of a REQUIRE_APPROVAL: the one the authority made, or (for
        a guard without a queue) a new one in this gate's in-memory queue.

        Raises:
            ExecutionDenied: no request could be made (recorded; nothing runs).
        """
        pending = exc.pending if isinstance(exc, ApprovalRequired) else exc
        request_id = pending.request_id
        if request_id is None:
            if self.remote or self.guard.approvals is not None:
                # The authority keeps the queue but made no request (its store failed):
                # there is nothing a person could approve, so the call stays refused.
                raise self.guard.deny(
                    pending.request,
                    (R.APPROVAL_REQUIRED.value, R.STORE_UNAVAILABLE.value),
                    "no approval request could be made; the call stays refused",
                    outcome="REQUIRE_APPROVAL",
                )
            try:
                record = self._queue().create(
                    pending.request, reason_codes=tuple(pending.reason_codes), proposal_digest=pending.proposal_digest
                )
            except Exception as exc2:  # noqa: BLE001 - without a request nothing can be approved
                raise self.guard.deny(
                    pending.request,
                    (R.APPROVAL_REQUIRED.value, R.STORE_UNAVAILABLE.value),
                    f"no approval request could be made ({type(exc2).__name__})",
                    outcome="REQUIRE_APPROVAL",
                ) from None
            request_id = record.id
        with self._lock:
            self._opened[request_id] = pending.proposal_digest
            self._opened.move_to_end(request_id)
            self._newest[pending.proposal_digest] = request_id
            self._newest.move_to_end(pending.proposal_digest)
            while len(self._opened) > self._capacity:
                self._opened.popitem(last=False)
            while len(self._newest) > self._capacity:
                self._newest.popitem(last=False)
        return request_id

    def record(self, request_id: str) -> ApprovalRequest:
        """The request as the authority keeps it (expiry applied).

        Raises:
            ApprovalError: ``APPROVAL_UNKNOWN``.
            StoreUnavailable / AuthorityUnavailable: no answer.
        """
        if not isinstance(request_id, str) or not request_id:
            raise ApprovalError(R.APPROVAL_UNKNOWN, "a request id is a non-empty string (apr_...)")
        if self.remote:
            found: ApprovalRequest = self.guard.authority.approval_record(request_id)  # type: ignore[union-attr]
            return found
        return self._queue().get(request_id)

    def status(self, request_id: str) -> str:
        """``pending``, ``approved``, ``rejected``, ``expired`` or ``consumed``."""
        return state_of(self.record(request_id))

    def pending(self) -> list[PendingRequest]:
        """Pending requests: every pending request of the guard's durable queue, or,
        for a remote guard (whose credential cannot list the service's queue) and an
        in-memory queue, the requests this gate opened that are still pending."""
        if self.guard.approvals is not None:
            return [PendingRequest.of(r) for r in self.guard.approvals.list("pending")]
        with self._lock:
            ids = list(reversed(self._opened))
        out: list[PendingRequest] = []
        for request_id in ids:
            try:
                record = self.record(request_id)
            except ApprovalError:
                self._forget(request_id)
                continue
            if record.state == "pending":
                out.append(PendingRequest.of(record))
            else:
                self._forget(request_id)
        return out

    def _forget(self, request_id: str) -> None:
        with self._lock:
            self._opened.pop(request_id, None)

    # -- decisions (in-process only) --------------------------------------------

    def approve(self, request_id: str, *, approver: str, comment: str | None = None) -> ApprovalRequest:
        _check_approver(approver)
        return self._queue().approve(request_id, approver=approver, comment=comment)

    def reject(self, request_id: str, *, approver: str, comment: str | None = None) -> ApprovalRequest:
        _check_approver(approver)
        return self._queue().reject(request_id, approver=approver, comment=comment)

    # -- waiting ------------------------------------------------------------------

    def wait(
        self, request_id: str, *, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> str:
        """Poll until the request is no longer pending; returns its state.

        An authority that does not answer for a moment (a restart) is asked again.

        Raises:
            ApprovalTimeout: still pending after ``timeout`` seconds (``None``: until
                the authority reports it expired).
            ApprovalError: ``APPROVAL_UNKNOWN``.
        """
        _check_wait(timeout, poll_interval)
        started = time.monotonic()
        last: str | None = None
        while True:
            try:
                state = self.status(request_id)
                last = None
                if state != "pending":
                    return state
            except (StoreUnavailable, AuthorityUnavailable) as exc:
                last = str(exc)[:200]
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise ApprovalTimeout(request_id, waited, last)
            time.sleep(poll_interval if timeout is None else max(0.0, min(poll_interval, timeout - waited)))

    async def await_(
        self, request_id: str, *, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> str:
        """:meth:`wait` for async code (the event loop keeps running)."""
        _check_wait(timeout, poll_interval)
        started = time.monotonic()
        last: str | None = None
        while True:
            try:
                state = await asyncio.to_thread(self.status, request_id)
                last = None
                if state != "pending":
                    return state
            except (StoreUnavailable, AuthorityUnavailable) as exc:
                last = str(exc)[:200]
            waited = time.monotonic() - started
            if timeout is not None and waited >= timeout:
                raise ApprovalTimeout(request_id, waited, last)
            await asyncio.sleep(poll_interval if timeout is None else max(0.0, min(poll_interval, timeout - waited)))

    # -- the grant -------------------------------------------------------------------

    def approved_grant(self, proposal: AuthorizationRequest) -> ApprovalGrant | None:
        """For a framework that re-proposes a paused call (a new kickoff) instead of
        resuming it: the grant of a request this gate opened for exactly this proposal
        that a person has approved since, consumed once; ``None`` if there is none."""
        digest = proposal.content_digest()
        with self._lock:
            request_id = self._newest.get(digest)
        if request_id is None:
            return None
        try:
            if self.status(request_id) != "approved":
                return None
        except Exception as exc:  # noqa: BLE001 - no answer: decide afresh (fail closed)
            _log.debug("execauth: approval request %s unreadable (%s); deciding afresh", request_id, exc)
            return None
        return self.grant_for(request_id, proposal)

    def grant_for(self, request_id: object, proposal: AuthorizationRequest) -> ApprovalGrant:
        """The grant of ``request_id`` for exactly ``proposal``, consumed once.

        Raises:
            ExecutionDenied: not approved (pending, rejected, expired), already used,
                unknown, for another proposal, or the authority did not answer; the
                denial is recorded with the reason code. Nothing runs.
        """
        if not isinstance(request_id, str) or not request_id:
            raise self.guard.deny(
                proposal,
                (R.APPROVAL_INVALID.value,),
                "resume with the approval request id (apr_...), nothing else",
                outcome="REQUIRE_APPROVAL",
            )
        try:
            if self.guard.approvals is None and not self.remote:
                grant = self._queue().consume(request_id, proposal_digest=proposal.content_digest())
            else:
                grant = self.guard.approval_for(request_id, proposal)
        except ApprovalError as exc:
            outcome = "REQUIRE_APPROVAL" if exc.reason_code == R.APPROVAL_REQUIRED.value else "DENY"
            raise self.guard.deny(proposal, (exc.reason_code,), str(exc), outcome=outcome) from None
        except (StoreUnavailable, AuthorityUnavailable) as exc:
            code = getattr(exc, "reason_code", R.STORE_UNAVAILABLE.value)
            raise self.guard.deny(proposal, (str(code),), f"the approval could not be fetched: {exc}") from None
        except ExecutionDenied:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure here denies
            raise self.guard.deny(
                proposal, (R.GUARD_ERROR.value,), f"the approval could not be fetched ({type(exc).__name__})"
            ) from None
        self._forget(request_id)
        return grant


class ApprovalGate:
    """The approval methods every adapter's gate object has (same names, same
    signatures). A gate sets ``self._approval_flow`` to its :class:`ApprovalFlow`."""

    _approval_flow: ApprovalFlow

    def pending_approvals(self) -> list[PendingRequest]:
        """The approval requests waiting for a person (see :meth:`ApprovalFlow.pending`)."""
        return self._approval_flow.pending()

    def approval_status(self, request_id: str) -> str:
        """The request's state at the authority: ``pending``, ``approved``,
        ``rejected``, ``expired`` or ``consumed``.

        Raises:
            ApprovalError: ``APPROVAL_UNKNOWN``.
        """
        return self._approval_flow.status(request_id)

    def approve(self, request_id: str, *, approver: str, comment: str | None = None) -> ApprovalRequest:
        """Approve a request in the guard's own (in-process) queue: the authority signs
        a grant over its proposal digest. Resume the paused call afterwards.

        Raises:
            ConfigurationError: a remote guard (approvers decide in the console or with
                ``execauth approvals``; an agent's credential never approves).
            ApprovalError: unknown, expired or already decided.
        """
        return self._approval_flow.approve(request_id, approver=approver, comment=comment)

    def reject(self, request_id: str, *, approver: str, comment: str | None = None) -> ApprovalRequest:
        """Reject a request in the guard's own queue: it never runs.

        Raises:
            ConfigurationError: a remote guard (see :meth:`approve`).
            ApprovalError: unknown, expired or already decided.
        """
        return self._approval_flow.reject(request_id, approver=approver, comment=comment)

    def wait_for_approval(
        self, request_id: str, *, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> str:
        """Block until the request is decided; returns its final state (``approved``,
        ``rejected``, ``expired``, ``consumed``). Expiry means deny.

        Raises:
            ApprovalTimeout: still pending after ``timeout`` seconds.
        """
        return self._approval_flow.wait(request_id, timeout=timeout, poll_interval=poll_interval)

    async def await_approval(
        self, request_id: str, *, timeout: float | None = None, poll_interval: float = DEFAULT_POLL_INTERVAL
    ) -> str:
        """:meth:`wait_for_approval` for async code."""
        return await self._approval_flow.await_(request_id, timeout=timeout, poll_interval=poll_interval)


def _check_approver(approver: object) -> None:
    if not isinstance(approver, str) or not approver.strip():
        raise ConfigurationError("approver must name the person who decides (a non-empty string)")


def _check_wait(timeout: object, poll_interval: object) -> None:
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0):
        raise ConfigurationError("timeout is None or a number of seconds >= 0")
    if not isinstance(poll_interval, (int, float)) or isinstance(poll_interval, bool) or not 0 < poll_interval <= 60:
        raise ConfigurationError("poll_interval is a number of seconds within (0, 60]")
