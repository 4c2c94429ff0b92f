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
        approver: asked on REQUIRE_APPROVAL; without one the call is refused with a
            pending-approval message and kept for :meth:`approve_and_run`.
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
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        # Requests already approved, by digest: an approval re-sent for one of them is
        # presented to the guard under the request's id, and refused there (APPROVAL_USED).
        self._answered: OrderedDict[str, _Pending] = OrderedDict()
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
        """Ask the approver. Returns a grant (or, on the async path, an awaitable of
        one), or raises the recorded denial."""
        pending = exc.pending
        if self.approver is None:
            self._remember(pending, call, is_async)
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
                return self._grant(pending, who)

            return settle()
        return self._grant(pending, answer)

    def _grant(self, pending: PendingApproval, who: object) -> ApprovalGrant:
        if not isinstance(who, str) or not who:
            raise self.guard.deny(
                pending.request, ["APPROVAL_REJECTED"], "a person rejected this proposal", outcome="REQUIRE_APPROVAL"
            )
        try:
            return self.guard.approve(pending, approver=who)
        except Exception as err:  # noqa: BLE001 - a grant that cannot be made denies
            raise self._approver_failed(pending, err) from None

    def _approver_failed(self, pending: PendingApproval, err: BaseException) -> ExecutionDenied:
        log.error("execauth: the approval step failed; the tool did not run: %r", err)
        return self.guard.deny(
            pending.request,
            ["GUARD_ERROR"],
            f"approval step failed ({type(err).__name__}); denied",
            outcome="REQUIRE_APPROVAL",
        )

    def _remember(self, pending: PendingApproval, call: Callable[[], Any], is_async: bool) -> None:
        with self._lock:
            self._pending[pending.proposal_digest] = _Pending(pending, call, is_async, self.guard.id_factory())
            while len(self._pending) > _PENDING_LIMIT:
                self._pending.popitem(last=False)  # bounded: the oldest can no longer be approved here

    def pending_approvals(self) -> list[PendingApproval]:
        """Calls refused with REQUIRE_APPROVAL that a person can still approve, oldest first."""
        with self._lock:
            return [p.pending for p in self._pending.values()]

    def _take(self, proposal_digest: str, *, is_async: bool | None, answered: bool = False) -> _Pending:
        with self._lock:
            entry = self._pending.get(proposal_digest)
            if entry is None and answered:
                entry = self._answered.get(proposal_digest)
            if entry is None:
                raise KeyError(f"no call is waiting for approval under {proposal_digest!r}")
            if is_async is False and entry.is_async:
                raise TypeError("this call runs an async function: use aapprove_and_run")
            if self._pending.pop(proposal_digest, None) is not None and answered:
                self._answered[proposal_digest] = entry
                while len(self._answered) > _PENDING_LIMIT:
                    self._answered.popitem(last=False)
            return entry

    def approve_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """A person approved the pending call ``proposal_digest``: run exactly it.

        Raises:
            KeyError: nothing waits under that digest (never asked, evicted).
            ExecutionDenied: the guard still refused (e.g. the policy changed), or the
                call was already approved and run: an approval re-sent is refused
                with ``APPROVAL_USED`` (recorded; nothing runs).
        """
        entry = self._take(proposal_digest, is_async=False, answered=True)
        grant = self.guard.approve(entry.pending, approver=approver, approval_id=entry.approval_id)
        return self.guard.run(entry.pending.request, entry.call, approval=grant)

    async def aapprove_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """Async :meth:`approve_and_run` (works for sync and async calls)."""
        entry = self._take(proposal_digest, is_async=None, answered=True)
        grant = self.guard.approve(entry.pending, approver=approver, approval_id=entry.approval_id)
        return await self.guard.arun(entry.pending.request, entry.call, approval=grant)

    def reject(self, proposal_digest: str, *, approver: str, reason: str = "") -> ExecutionDenied:
        """A person rejected the pending call: drop it and record ``APPROVAL_REJECTED``."""
        entry = self._take(proposal_digest, is_async=None)
        return self.guard.deny(
            entry.pending.request,
            ["APPROVAL_REJECTED"],
            f"rejected by {approver}" + (f": {reason}" if reason else ""),
            outcome="REQUIRE_APPROVAL",
        )


def model_text(exc: ExecutionDenied) -> str:
    """What the model sees for a refused call: the reason codes, and for a pending
    approval the digest a person has to approve."""
    text = denial_message(exc)
    if isinstance(exc, ApprovalRequired):
        text += f" Nothing ran; waiting for a person to approve proposal {exc.pending.proposal_digest}."
    return text


def _close(awaitable: object) -> None:
    """Close a coroutine we will not await (no "never awaited" warning)."""
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()
