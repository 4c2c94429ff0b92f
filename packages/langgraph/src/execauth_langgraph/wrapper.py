"""Gate LangGraph / LangChain tool calls through ``ToolNode(wrap_tool_call=...)``.

For every tool call the wrapper builds a proposal from the model's tool call, asks
the execauth guard, and only on ALLOW calls ``execute`` with exactly the authorized
arguments. Every other outcome becomes a ``ToolMessage(status="error")`` that tells
the model the reason code; REQUIRE_APPROVAL pauses the graph with LangGraph's
``interrupt()``. Any error inside the wrapper denies: it never runs the tool.
"""

from __future__ import annotations

import inspect
import json
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
from langchain_core.messages import ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from execauth_core import (
    AlreadyExecuted,
    ApprovalGrant,
    ApprovalRequired,
    AuthorizationRequest,
    ExecutionDenied,
    Guard,
    PendingApproval,
    denial_message,
    idempotency_key,
)
from execauth_core._validation import name_or_callable, one_of, optional_callable
from execauth_core.approval_flow import ApprovalFlow, ApprovalGate

from .mcp import proposal_tool_name

log = logging.getLogger("execauth.langgraph")

ToolResult = ToolMessage | Command[Any]
Execute = Callable[[ToolCallRequest], ToolResult]
AExecute = Callable[[ToolCallRequest], Awaitable[ToolResult]]

Resolver = str | Callable[[ToolCallRequest], str | None] | None
TokenProvider = Callable[[AuthorizationRequest], str | None]

APPROVAL_REQUEST = "execauth.approval_request"
_DONE_LIMIT = 10_000
_APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_.-]{1,120}")


def _with_defaults(request: ToolCallRequest, args: dict[str, Any]) -> dict[str, Any]:
    """The complete arguments the tool will run with: the model's, plus the tool's
    schema defaults, so a default can never slip past a rule. Injected arguments
    (state, runtime) are not in ``tool_call_schema`` and stay out of the proposal."""
    schema = getattr(request.tool, "tool_call_schema", None) if request.tool is not None else None
    if not (isinstance(schema, type) and issubclass(schema, pydantic.BaseModel)):
        return args
    try:
        full = schema.model_validate(args).model_dump(mode="json")
    except (pydantic.ValidationError, TypeError, ValueError):
        return args  # propose what the model sent: the policy or the tool refuses it
    return {**args, **full} if isinstance(full, dict) else args


def _resolve(value: Resolver, request: ToolCallRequest) -> str | None:
    return value(request) if callable(value) else value


def _deny(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=call.get("id") or "", name=call.get("name"), status="error")


class ExecAuthToolWrapper(ApprovalGate):
    """A ``wrap_tool_call`` / ``awrap_tool_call`` pair for ``ToolNode`` (and the
    implementation behind :class:`~execauth_langgraph.ExecAuthMiddleware`).

    Args:
        guard: the execauth guard.
        principal: on whose behalf calls are made: a string, or a callable that reads it
            from the ``ToolCallRequest`` (e.g. ``request.runtime.context``).
        agent: the agent name recorded in proposals (string or callable).
        token_provider: verify tokens issued elsewhere instead of deciding here; a
            provider returning ``None`` denies (NO_TOKEN).
        approvals: pause with ``interrupt()`` on REQUIRE_APPROVAL (needs a
            checkpointer). When False, REQUIRE_APPROVAL is a denial message.

    Approvals (the same methods on every execauth adapter's gate): the interrupt's
    value carries ``request_id``, the id of the approval request at the authority.
    A person decides it (:meth:`approve` / :meth:`reject` for the guard's own queue;
    the console or ``execauth approvals`` for a remote guard); resume the graph with
    ``Command(resume=request_id)``. The wrapper then takes that request's grant from
    the authority, bound to the proposal and consumed once: a pending, rejected or
    expired request does not run, and an answer sent again later is refused
    (``APPROVAL_USED``).
    """

    def __init__(
        self,
        guard: Guard,
        *,
        principal: Resolver,
        agent: Resolver = None,
        token_provider: TokenProvider | None = None,
        approvals: bool = True,
    ) -> None:
        if not isinstance(guard, Guard):
            raise TypeError("ExecAuthToolWrapper needs an execauth_core.Guard")
        owner = "ExecAuthToolWrapper"
        self.guard = guard
        self.principal = name_or_callable(principal, "principal", owner, takes="the tool-call request")
        self.agent = name_or_callable(agent, "agent", owner, takes="the tool-call request", optional=True)
        self.token_provider = optional_callable(token_provider, "token_provider", owner, takes="the proposal")
        self.approvals = one_of(approvals, "approvals", owner, (True, False))
        # (thread, node run, proposal digest) -> the pending approval and its request
        # id, so that the re-run of this wrapper on resume does not decide (and open a
        # request for) the same proposal twice.
        self._pending: dict[tuple[str, ...], tuple[PendingApproval, str]] = {}
        self._approval_flow = ApprovalFlow(guard)
        # On resume LangGraph re-runs the whole ToolNode, calls that already finished
        # included. Finished calls of a node run are remembered (bounded, in process) and
        # answered from here, so a side effect does not happen twice.
        self._done: OrderedDict[tuple[str, str, str], ToolResult] = OrderedDict()

    # -- the two entry points ToolNode calls ---------------------------------

    def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolResult:
        call = dict(request.tool_call)
        proposal: AuthorizationRequest | None = None
        key = None
        ikey: str | None = None
        ran = False

        def run_tool(authorized: ToolCallRequest) -> ToolResult:
            nonlocal ran
            ran = True
            return execute(authorized)

        try:
            proposal, authorized = self._propose(request, call)
            key = self._key(request, proposal)
            if key is not None and key in self._done:
                return self._done[key]  # resumed node: this call already ran (or was denied)
            ikey = _idempotency_key(request, proposal)
            authorized = self._once(authorized, proposal, call)
            result: ToolResult
            if self.token_provider is not None:
                token = self._token(proposal)
                if inspect.isawaitable(token):
                    raise TypeError("an async token_provider needs the async graph path (ainvoke)")
                result = self.guard.execute(proposal, token, lambda: run_tool(authorized), idempotency_key=ikey)
            else:
                grant = self._resumed_grant(request, proposal)
                if grant is None:
                    try:
                        ran_once = self.guard.run(proposal, lambda: run_tool(authorized), idempotency_key=ikey)
                        return self._remember(key, ran_once)
                    except ApprovalRequired as exc:
                        grant = self._ask(request, exc.pending, exc)
                result = self.guard.run(proposal, lambda: run_tool(authorized), approval=grant, idempotency_key=ikey)
            return self._remember(key, result)
        except GraphBubbleUp as exc:
            if ran:
                self._paused(ikey, exc)
            raise  # interrupts must reach LangGraph
        except AlreadyExecuted as exc:
            return self._remember(key, _replayed(call, exc))  # ran before (another process, a retry)
        except ExecutionDenied as exc:
            return self._remember(key, _deny(call, denial_message(exc)))
        except Exception as exc:
            if ran:
                raise  # the tool itself failed after it was authorized: ToolNode's error handling applies
            return _deny(call, denial_message(self._failed(proposal, call, exc)))

    async def acall(self, request: ToolCallRequest, execute: AExecute) -> ToolResult:
        call = dict(request.tool_call)
        proposal: AuthorizationRequest | None = None
        key = None
        ikey: str | None = None
        ran = False

        def run_tool(authorized: ToolCallRequest) -> Awaitable[ToolResult]:
            nonlocal ran
            ran = True
            return execute(authorized)

        try:
            proposal, authorized = self._propose(request, call)
            key = self._key(request, proposal)
            if key is not None and key in self._done:
                return self._done[key]
            ikey = _idempotency_key(request, proposal)
            authorized = self._once(authorized, proposal, call)
            result: ToolResult
            if self.token_provider is not None:
                token = self._token(proposal)
                if inspect.isawaitable(token):
                    token = await token
                result = await self.guard.aexecute(proposal, token, lambda: run_tool(authorized), idempotency_key=ikey)
            else:
                grant = self._resumed_grant(request, proposal)
                if grant is None:
                    try:
                        ran_once = await self.guard.arun(proposal, lambda: run_tool(authorized), idempotency_key=ikey)
                        return self._remember(key, ran_once)
                    except ApprovalRequired as exc:
                        grant = self._ask(request, exc.pending, exc)
                result = await self.guard.arun(
                    proposal, lambda: run_tool(authorized), approval=grant, idempotency_key=ikey
                )
            return self._remember(key, result)
        except GraphBubbleUp as exc:
            if ran:
                self._paused(ikey, exc)
            raise
        except AlreadyExecuted as exc:
            return self._remember(key, _replayed(call, exc))
        except ExecutionDenied as exc:
            return self._remember(key, _deny(call, denial_message(exc)))
        except Exception as exc:
            if ran:
                raise
            return _deny(call, denial_message(self._failed(proposal, call, exc)))

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _key(request: ToolCallRequest, proposal: AuthorizationRequest | None) -> tuple[str, str, str] | None:
        """Identity of one tool call inside one node run. LangGraph keeps the task's
        checkpoint namespace across an interrupt and its resume, and changes it on the
        next step, so a re-run of the same node finds the same key."""
        runtime = getattr(request, "runtime", None)
        config = getattr(runtime, "config", None) or {}
        configurable = config.get("configurable", {}) if isinstance(config, dict) else {}
        ns, thread = configurable.get("checkpoint_ns"), configurable.get("thread_id")
        if not ns or thread is None:
            return None
        return (str(thread), str(ns), proposal.content_digest() if proposal is not None else "")

    def _once(
        self, authorized: ToolCallRequest, proposal: AuthorizationRequest, call: dict[str, Any]
    ) -> ToolCallRequest:
        """The request handed inward, whose tool runs at most once: a retry middleware
        placed inside this one gets a recorded refusal (``TOKEN_REPLAYED``), never a
        second run under the same token."""
        if authorized.tool is None:
            return authorized

        def refuse() -> ToolMessage:
            denied = self.guard.deny(
                proposal,
                ["TOKEN_REPLAYED"],
                "a second run of one authorized call (a retry inside the execauth middleware) was refused",
            )
            return _deny(call, denial_message(denied))

        return authorized.override(tool=_OnceTool(authorized.tool, refuse))

    def _paused(self, ikey: str | None, exc: BaseException) -> None:
        """The tool itself paused (``interrupt()`` inside it): LangGraph runs it again
        from the start on resume, so its ledger key is freed, not left ``failed``."""
        ledger = self.guard.ledger
        if ikey is None or ledger is None:
            return
        try:
            ledger.reopen(ikey, error=type(exc).__name__)
        except Exception:  # the resume is then refused (LEDGER_ALREADY_FAILED): closed
            log.exception("execauth: could not free the ledger key of a paused tool")

    def _token(self, proposal: AuthorizationRequest) -> Any:
        """Ask the token provider; a provider that fails means "no token" (NO_TOKEN, recorded)."""
        assert self.token_provider is not None
        try:
            return self.token_provider(proposal)
        except Exception:
            log.exception("execauth: token provider failed; denying with NO_TOKEN")
            return None

    def _failed(self, proposal: AuthorizationRequest | None, call: dict[str, Any], exc: Exception) -> ExecutionDenied:
        """An error in the adapter itself: record it as a denial (the tool did not run)."""
        log.error("execauth: error in the LangGraph wrapper; the tool did not run: %r", exc)
        return self.guard.deny(
            proposal, ["GUARD_ERROR"], f"adapter error ({type(exc).__name__}); denied", tool=str(call.get("name"))
        )

    def _remember(self, key: tuple[str, str, str] | None, result: ToolResult) -> ToolResult:
        if key is not None:
            self._done[key] = result
            while len(self._done) > _DONE_LIMIT:
                self._done.popitem(last=False)
        return result

    def _propose(self, request: ToolCallRequest, call: dict[str, Any]) -> tuple[AuthorizationRequest, ToolCallRequest]:
        args = call.get("args")
        if not isinstance(args, dict):
            args = {"__invalid_args__": repr(args)[:200]}  # the decision point will refuse it
        else:
            args = _with_defaults(request, args)
        proposal = self.guard.proposal(
            # An MCP server's tool is proposed as <server>.<tool> (execauth_langgraph.mcp).
            proposal_tool_name(request.tool, str(call.get("name"))),
            args,
            principal=_resolve(self.principal, request) or "",
            agent=_resolve(self.agent, request),
            call_id=call.get("id"),
        )
        # The tool receives the authorized arguments, decoded from the canonical
        # bytes the token is bound to: nothing mutated after the decision gets through.
        authorized_args = json.loads(proposal.canonical_bytes())["args"]
        authorized_call: Any = {**call, "args": authorized_args}
        return proposal, request.override(tool_call=authorized_call)

    def _resumed_grant(self, request: ToolCallRequest, proposal: AuthorizationRequest) -> ApprovalGrant | None:
        """On resume LangGraph re-runs this wrapper from the start. If this exact
        proposal is already waiting for a person, go straight back to the interrupt
        instead of deciding (and recording) the same REQUIRE_APPROVAL again."""
        if not self.approvals:
            return None
        opened = self._pending.get(self._pending_key(request, proposal.content_digest()))
        return None if opened is None else self._ask(request, opened[0], None)

    def _pending_key(self, request: ToolCallRequest, digest: str) -> tuple[str, ...]:
        # Scoped to this node run: an identical proposal in another thread is decided afresh.
        key = self._key(request, None)
        return (*key[:2], digest) if key is not None else ("", "", digest)

    def _ask(self, request: ToolCallRequest, pending: PendingApproval, exc: ApprovalRequired | None) -> ApprovalGrant:
        """Pause for a person; returns the grant of the approval request the resume
        value names (consumed once by the authority), or raises the (recorded) denial."""
        if not self.approvals:
            assert exc is not None
            raise exc
        slot = self._pending_key(request, pending.proposal_digest)
        opened = self._pending.get(slot)
        request_id = opened[1] if opened is not None else self._approval_flow.open(exc if exc is not None else pending)
        self._pending[slot] = (pending, request_id)
        # What the person approves is rendered from the canonical proposal, never
        # from model text. The decision is made at the authority (gate.approve, the
        # console, the CLI); the resume value only names the request decided.
        answer = interrupt(
            {
                "type": APPROVAL_REQUEST,
                "request_id": request_id,
                "proposal_digest": pending.proposal_digest,
                "proposal": json.loads(pending.request.canonical_bytes()),
                "reason_codes": list(pending.reason_codes),
                "resume_with": request_id,
            }
        )
        self._pending.pop(slot, None)
        named = answer.get("request_id") if isinstance(answer, dict) and set(answer) == {"request_id"} else answer
        if not isinstance(named, str) or not _APPROVAL_ID.fullmatch(named):
            raise self.guard.deny(
                pending.request,
                ["APPROVAL_INVALID"],
                "resume with the approval request id (Command(resume=request_id)) once it is approved",
                outcome="REQUIRE_APPROVAL",
            )
        # Whatever request the answer names, its grant is bound to that request's
        # proposal digest and handed out once: an answer for another call is
        # APPROVAL_MISMATCH, one sent again later APPROVAL_USED.
        return self._approval_flow.grant_for(named, pending.request)


class _OnceTool:
    """A tool as the handler behind the guard sees it: its first ``invoke`` runs the
    tool; every later one (a retry inside the guard) returns the refusal instead.
    Everything else (name, schema, injected arguments) is the tool's own."""

    def __init__(self, tool: Any, refuse: Callable[[], ToolMessage]) -> None:
        self._tool = tool
        self._refuse = refuse
        self._lock = threading.Lock()
        self._used = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tool, name)

    def _first(self) -> bool:
        with self._lock:
            first, self._used = not self._used, True
            return first

    def invoke(self, *args: Any, **kwargs: Any) -> Any:
        return self._tool.invoke(*args, **kwargs) if self._first() else self._refuse()

    async def ainvoke(self, *args: Any, **kwargs: Any) -> Any:
        return await self._tool.ainvoke(*args, **kwargs) if self._first() else self._refuse()


def _idempotency_key(request: ToolCallRequest, proposal: AuthorizationRequest) -> str | None:
    """The call's key in the effect ledger: this tool-call id in this thread, with
    these arguments. The same on a resume in another process (a durable checkpointer
    keeps the thread and the model's tool-call ids). Without a thread id, the guard's
    default (no run id); without a tool-call id, none."""
    runtime = getattr(request, "runtime", None)
    config = getattr(runtime, "config", None) or {}
    configurable = config.get("configurable", {}) if isinstance(config, dict) else {}
    thread = configurable.get("thread_id")
    if proposal.call_id is None:
        return None
    return idempotency_key(None if thread is None else str(thread), proposal.call_id, proposal.content_digest())


def _replayed(call: dict[str, Any], exc: AlreadyExecuted) -> ToolResult:
    """What a call that already ran answers: the recorded ToolMessage where the
    ledger kept it, else a clear "already done" error message."""
    recorded = exc.result if exc.has_result else None
    if isinstance(recorded, dict) and recorded.get("type") == "tool":
        try:
            message = ToolMessage.model_validate(recorded)
        except (pydantic.ValidationError, TypeError, ValueError):
            message = None
        if message is not None and message.tool_call_id == (call.get("id") or ""):
            return message
    return _deny(call, denial_message(exc))
