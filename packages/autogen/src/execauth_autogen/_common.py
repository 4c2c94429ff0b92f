"""What both AutoGen APIs share: building the proposal, calling the guard (with a
token provider or an approver), and the calls waiting for a person.

This module imports no AutoGen code, so ``import execauth_autogen`` works whichever
AutoGen (or none) is installed.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from execauth_core import (
    ApprovalGrant,
    ApprovalRequired,
    AuthorizationRequest,
    ExecutionDenied,
    Guard,
    PendingApproval,
    denial_message,
)
from execauth_core._validation import name_or_callable, optional_callable
from execauth_core.approval_flow import ApprovalFlow

log = logging.getLogger("execauth.autogen")


T = TypeVar("T")

Resolver = str | Callable[[], "str | None"] | None
"""A fixed value, or a zero-argument callable read at each call (e.g. from a contextvar)."""
TokenProvider = Callable[[AuthorizationRequest], "str | Awaitable[str | None] | None"]
"""Returns a compact-JWS token issued elsewhere for this proposal, or ``None`` (denies)."""
Approver = Callable[[PendingApproval], "str | Awaitable[str | None] | None"]
"""Shown a pending proposal; returns who approved it, or ``None`` to reject it."""

APPROVE_WORDS = frozenset({"approve", "approved", "yes", "y"})
_PENDING_LIMIT = 1_000


def authorized_args(proposal: AuthorizationRequest) -> dict[str, Any]:
    """The arguments exactly as authorized, decoded from the canonical bytes the
    token is bound to: whatever happens to the original objects after the decision
    cannot reach the tool."""
    args = json.loads(proposal.canonical_bytes())["args"]
    if not isinstance(args, dict):  # pragma: no cover - AuthorizationRequest guarantees an object
        raise TypeError("authorized arguments are not an object")
    return args


def approval_prompt(pending: PendingApproval) -> str:
    """What a person is asked: rendered from the canonical proposal, never from model text."""
    request = pending.request
    args = json.loads(request.canonical_bytes())["args"]
    lines = [
        f"execauth: approval needed for tool {request.tool!r} on behalf of {request.principal!r}",
        f"  arguments: {_display(args)}",
        f"  proposal:  {pending.proposal_digest}",
        f"  reasons:   {', '.join(pending.reason_codes)}",
        "Type 'approve' to run exactly this call; anything else rejects it: ",
    ]
    return "\n".join(lines)


def input_approver(input_func: Callable[[str], Any], *, approver: str) -> Approver:
    """An :data:`Approver` that asks a person through ``input_func`` (``input``, or the
    same ``input_func`` you give AgentChat's ``UserProxyAgent``; sync or async).

    The answer ``approve`` / ``yes`` grants in the name of ``approver``; anything else
    rejects.
    """

    def ask(pending: PendingApproval) -> str | Awaitable[str | None] | None:
        answer = input_func(approval_prompt(pending))
        if inspect.isawaitable(answer):

            async def wait() -> str | None:
                return approver if _approves(await answer) else None

            return wait()
        return approver if _approves(answer) else None

    return ask


def _approves(answer: object) -> bool:
    return isinstance(answer, str) and answer.strip().lower() in APPROVE_WORDS


def _display(value: Any) -> str:
    # For people only; nothing signed or digested goes through here.
    return json.dumps(value, ensure_ascii=False, sort_keys=True)  # noqa: TID251


def _resolve(value: Resolver) -> str | None:
    return value() if callable(value) else value


@dataclass
class _Pending:
    """A call that waits for a person: the exact proposal and how to run it."""

    pending: PendingApproval
    call: Callable[[], Any]
    is_async: bool
    # The id of this approval request, the grant id of its approval: the guard
    # consumes ``approval:<id>`` once, so the request funds one execution.
    approval_id: str


class Gate:
    """The guard call both adapters share. Framework code builds the arguments and the
    zero-argument ``call``; this class decides, runs, and keeps pending approvals.

    Args:
        guard: the execauth guard.
        principal: on whose behalf calls are made (string, or zero-arg callable).
        agent: the agent name recorded in proposals (string, zero-arg callable, or None).
        token_provider: verify tokens issued elsewhere instead of deciding here.
        approver: asked on REQUIRE_APPROVAL (its answer decides the approval request
            in the guard's own queue); without one the call is refused with a
            pending-approval message naming the request, and kept for :meth:`resume`.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        principal: Resolver,
        agent: Resolver = None,
        token_provider: TokenProvider | None = None,
        approver: Approver | None = None,
    ) -> None:
        if not isinstance(guard, Guard):
            raise TypeError("execauth-autogen needs an execauth_core.Guard")
        owner = "execauth-autogen"
        self.guard = guard
        self.principal = name_or_callable(principal, "principal", owner, takes="no arguments")
        self.agent = name_or_callable(agent, "agent", owner, takes="no arguments", optional=True)
        self.token_provider = optional_callable(token_provider, "token_provider", owner, takes="the proposal")
        self.approver = optional_callable(approver, "approver", owner, takes="the pending approval")
        # approval request id -> the paused call (kept after it ran, bounded: an answer
        # re-sent for it reaches the authority, which refuses it with APPROVAL_USED).
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self.flow = ApprovalFlow(guard)
        # Sync AutoGen paths may run tools from helper threads.
        self._lock = threading.Lock()

    # -- proposals -------------------------------------------------------------

    def propose(self, tool: str, args: dict[str, Any], *, call_id: str | None) -> AuthorizationRequest:
        """Build the proposal (malformed input raises a recorded ``ExecutionDenied``)."""
        principal = _resolve(self.principal)
        return self.guard.proposal(
            tool,
            args,
            principal=principal if principal is not None else "",
            agent=_resolve(self.agent),
            call_id=call_id,
        )

    def failed(self, proposal: AuthorizationRequest | None, tool: str, exc: BaseException) -> ExecutionDenied:
        """An error in the adapter itself: record it as a denial (the tool did not run)."""
        log.error("execauth: error in the AutoGen adapter; %r did not run: %r", tool, exc)
        return self.guard.deny(proposal, ["GUARD_ERROR"], f"adapter error ({type(exc).__name__}); denied", tool=tool)

    # -- running ---------------------------------------------------------------

    def run(self, proposal: AuthorizationRequest, call: Callable[[], T]) -> T:
        """Decide (or verify the provided token), then call. Raises ``ExecutionDenied``."""
        if self.token_provider is not None:
            token = self._token(proposal)
            if inspect.isawaitable(token):
                _close(token)
                raise self.guard.deny(proposal, ["NO_TOKEN"], "an async token_provider needs the async AutoGen path")
            return self.guard.execute(proposal, token, call)
        try:
            return self.guard.run(proposal, call)
        except ApprovalRequired as exc:
            grant = self._ask(exc, call, is_async=False)
        return self.guard.run(proposal, call, approval=grant)

    async def arun(self, proposal: AuthorizationRequest, call: Callable[[], Awaitable[T] | T]) -> T:
        """Async :meth:`run`."""
        if self.token_provider is not None:
            token = self._token(proposal)
            if inspect.isawaitable(token):
                try:
                    token = await token
                except Exception:
                    log.exception("execauth: token provider failed; denying with NO_TOKEN")
                    token = None
            return await self.guard.aexecute(proposal, token, call)
        try:
            return await self.guard.arun(proposal, call)
        except ApprovalRequired as exc:
            grant = self._ask(exc, call, is_async=True)
            if inspect.isawaitable(grant):
                grant = await grant
        return await self.guard.arun(proposal, call, approval=grant)

    def _token(self, proposal: AuthorizationRequest) -> Any:
        assert self.token_provider is not None
        try:
            return self.token_provider(proposal)
        except Exception:
            # A provider that fails means "no token": NO_TOKEN, recorded by the guard.
            log.exception("execauth: token provider failed; denying with NO_TOKEN")
            return None

    # -- approvals -------------------------------------------------------------

    def _ask(self, exc: ApprovalRequired, call: Callable[[], Any], *, is_async: bool) -> Any:
        """Open the approval request (its id goes on ``exc``), then ask the approver.
        Returns a grant (or, on the async path, an awaitable of one), or raises the
        recorded denial."""
        request_id = self.flow.open(exc)
        exc.request_id = request_id
        exc.pending = exc.pending.model_copy(update={"request_id": request_id})
        pending = exc.pending
        if self.approver is None:
            self._remember(request_id, pending, call, is_async)
            raise exc
        try:
            answer = self.approver(pending)
        except Exception as err:  # noqa: BLE001 - a failing approver denies, whatever it raised
            raise self._approver_failed(pending, err) from None
        if inspect.isawaitable(answer):
            if not is_async:
                _close(answer)
                raise self._approver_failed(pending, TypeError("an async approver needs the async AutoGen path"))

            async def settle() -> ApprovalGrant:
                try:
                    who = await answer
                except Exception as err:  # noqa: BLE001 - a failing approver denies, whatever it raised
                    raise self._approver_failed(pending, err) from None
                return self._grant(request_id, pending, who)

            return settle()
        return self._grant(request_id, pending, answer)

    def _grant(self, request_id: str, pending: PendingApproval, who: object) -> ApprovalGrant:
        try:
            if not isinstance(who, str) or not who:
                self.flow.reject(request_id, approver="approver", comment="rejected when asked")
                raise self.guard.deny(
                    pending.request,
                    ["APPROVAL_REJECTED"],
                    "a person rejected this proposal",
                    outcome="REQUIRE_APPROVAL",
                )
            self.flow.approve(request_id, approver=who)
        except ExecutionDenied:
            raise
        except Exception as err:  # noqa: BLE001 - a decision that cannot be made denies
            raise self._approver_failed(pending, err) from None
        return self.flow.grant_for(request_id, pending.request)

    def _approver_failed(self, pending: PendingApproval, err: BaseException) -> ExecutionDenied:
        log.error("execauth: the approval step failed; the tool did not run: %r", err)
        return self.guard.deny(
            pending.request,
            ["GUARD_ERROR"],
            f"approval step failed ({type(err).__name__}); denied",
            outcome="REQUIRE_APPROVAL",
        )

    def _remember(self, request_id: str, pending: PendingApproval, call: Callable[[], Any], is_async: bool) -> None:
        with self._lock:
            self._pending[request_id] = _Pending(pending, call, is_async, request_id)
            while len(self._pending) > _PENDING_LIMIT:
                self._pending.popitem(last=False)  # bounded: the oldest can no longer be resumed here

    def _entry(self, request_id: str, *, is_async: bool | None) -> _Pending:
        with self._lock:
            entry = self._pending.get(request_id) if isinstance(request_id, str) else None
        if entry is None:
            raise KeyError(f"no paused call of this gate under approval request {str(request_id)[:80]!r}")
        if is_async is False and entry.is_async:
            raise TypeError("this call runs an async function: use aresume (or aapprove_and_run)")
        return entry

    def resume(self, request_id: str) -> Any:
        """Run the paused call of ``request_id`` once the authority reports it
        approved: its grant is bound to the proposal and consumed once.

        Raises:
            KeyError: no call of this gate paused under that request.
            ExecutionDenied: not approved (pending, rejected, expired), already used,
                or the guard refused (recorded; nothing runs).
        """
        entry = self._entry(request_id, is_async=False)
        grant = self.flow.grant_for(request_id, entry.pending.request)
        return self.guard.run(entry.pending.request, entry.call, approval=grant)

    async def aresume(self, request_id: str) -> Any:
        """Async :meth:`resume` (works for sync and async calls)."""
        entry = self._entry(request_id, is_async=None)
        grant = self.flow.grant_for(request_id, entry.pending.request)
        return await self.guard.arun(entry.pending.request, entry.call, approval=grant)

    def request_for_digest(self, proposal_digest: str) -> str:
        """The newest paused request of this gate for a proposal digest."""
        with self._lock:
            for request_id, entry in reversed(self._pending.items()):
                if entry.pending.proposal_digest == proposal_digest:
                    return request_id
        raise KeyError(f"no call is waiting for approval under {proposal_digest!r}")

    def approve_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """Approve the newest paused request for ``proposal_digest`` in the guard's own
        queue and run it (:meth:`resume`). An approval re-sent is refused with
        ``APPROVAL_USED`` (recorded; nothing runs).

        Raises:
            KeyError: nothing waits under that digest.
        """
        request_id = self.request_for_digest(proposal_digest)
        self._entry(request_id, is_async=False)
        self._approve_if_pending(request_id, approver)
        return self.resume(request_id)

    async def aapprove_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """Async :meth:`approve_and_run` (works for sync and async calls)."""
        request_id = self.request_for_digest(proposal_digest)
        self._approve_if_pending(request_id, approver)
        return await self.aresume(request_id)

    def _approve_if_pending(self, request_id: str, approver: str) -> None:
        # Already decided (or used): the grant step below refuses with the reason.
        if self.flow.status(request_id) == "pending":
            self.flow.approve(request_id, approver=approver)


def model_text(exc: ExecutionDenied) -> str:
    """What the model sees for a refused call: the reason codes, and for a pending
    approval the request id and the digest a person has to approve."""
    text = denial_message(exc)
    if isinstance(exc, ApprovalRequired):
        text += (
            f" Nothing ran; waiting for a person to approve request {exc.request_id}"
            f" (proposal {exc.pending.proposal_digest})."
        )
    return text


def _close(awaitable: object) -> None:
    """Close a coroutine we will not await (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
