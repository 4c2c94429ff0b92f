"""Gate LangGraph / LangChain tool calls through ``ToolNode(wrap_tool_call=...)``.

For every tool call the wrapper builds a proposal from the model's tool call, asks
the execauth guard, and only on ALLOW calls ``execute`` with exactly the authorized
arguments. Every other outcome becomes a ``ToolMessage(status="error")`` that tells
the model the reason code; REQUIRE_APPROVAL pauses the graph with LangGraph's
``interrupt()``. Any error inside the wrapper denies: it never runs the tool.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from langchain_core.messages import ToolMessage
from langgraph.errors import GraphBubbleUp
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.types import Command, interrupt

from execauth_core import (
    ApprovalGrant,
    ApprovalRequired,
    AuthorizationRequest,
    ExecutionDenied,
    Guard,
    PendingApproval,
    denial_message,
)

log = logging.getLogger("execauth.langgraph")

ToolResult = ToolMessage | Command[Any]
Execute = Callable[[ToolCallRequest], ToolResult]
AExecute = Callable[[ToolCallRequest], Awaitable[ToolResult]]
Resolver = str | Callable[[ToolCallRequest], str | None] | None
TokenProvider = Callable[[AuthorizationRequest], str | None]

APPROVAL_REQUEST = "execauth.approval_request"
_DONE_LIMIT = 10_000


def _resolve(value: Resolver, request: ToolCallRequest) -> str | None:
    return value(request) if callable(value) else value


def _deny(call: dict[str, Any], text: str) -> ToolMessage:
    return ToolMessage(content=text, tool_call_id=call.get("id") or "", name=call.get("name"), status="error")


class ExecAuthToolWrapper:
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
        self.guard = guard
        self.principal = principal
        self.agent = agent
        self.token_provider = token_provider
        self.approvals = approvals
        # proposal digest -> the pending approval already recorded, so that the
        # re-run of this wrapper on resume does not record the same denial twice.
        self._pending: dict[str, Any] = {}
        # On resume LangGraph re-runs the whole ToolNode, calls that already finished
        # included. Finished calls of a node run are remembered (bounded, in process) and
        # answered from here, so a side effect does not happen twice.
        self._done: OrderedDict[tuple[str, str, str], ToolResult] = OrderedDict()

    # -- the two entry points ToolNode calls ---------------------------------

    def __call__(self, request: ToolCallRequest, execute: Execute) -> ToolResult:
        call = dict(request.tool_call)
        key = None
        try:
            proposal, authorized = self._propose(request, call)
            key = self._key(request, proposal)
            if key is not None and key in self._done:
                return self._done[key]  # resumed node: this call already ran (or was denied)
            result: ToolResult
            if self.token_provider is not None:
                result = self.guard.execute(proposal, self.token_provider(proposal), lambda: execute(authorized))
            else:
                grant = self._resumed_grant(proposal)
                if grant is None:
                    try:
                        result = self.guard.run(proposal, lambda: execute(authorized))
                        return self._remember(key, result)
                    except ApprovalRequired as exc:
                        grant = self._ask(exc.pending, exc)
                result = self.guard.run(proposal, lambda: execute(authorized), approval=grant)
            return self._remember(key, result)
        except GraphBubbleUp:
            raise  # interrupts must reach LangGraph
        except ExecutionDenied as exc:
            return self._remember(key, _deny(call, denial_message(exc)))
        except Exception as exc:
            log.exception("execauth: error in the LangGraph wrapper; the tool did not run")
            return _deny(call, f"execauth denied '{call.get('name')}' (DENY): GUARD_ERROR: {type(exc).__name__}")

    async def acall(self, request: ToolCallRequest, execute: AExecute) -> ToolResult:
        call = dict(request.tool_call)
        key = None
        try:
            proposal, authorized = self._propose(request, call)
            key = self._key(request, proposal)
            if key is not None and key in self._done:
                return self._done[key]
            result: ToolResult
            if self.token_provider is not None:
                result = await self.guard.aexecute(proposal, self.token_provider(proposal), lambda: execute(authorized))
            else:
                grant = self._resumed_grant(proposal)
                if grant is None:
                    try:
                        result = await self.guard.arun(proposal, lambda: execute(authorized))
                        return self._remember(key, result)
                    except ApprovalRequired as exc:
                        grant = self._ask(exc.pending, exc)
                result = await self.guard.arun(proposal, lambda: execute(authorized), approval=grant)
            return self._remember(key, result)
        except GraphBubbleUp:
            raise
        except ExecutionDenied as exc:
            return self._remember(key, _deny(call, denial_message(exc)))
        except Exception as exc:
            log.exception("execauth: error in the LangGraph wrapper; the tool did not run")
            return _deny(call, f"execauth denied '{call.get('name')}' (DENY): GUARD_ERROR: {type(exc).__name__}")

    # -- internals ------------------------------------------------------------

    @staticmethod
    def _key(request: ToolCallRequest, proposal: AuthorizationRequest) -> tuple[str, str, str] | None:
        """Identity of one tool call inside one node run. LangGraph keeps the task's
        checkpoint namespace across an interrupt and its resume, and changes it on the
        next step, so a re-run of the same node finds the same key."""
        runtime = getattr(request, "runtime", None)
        config = getattr(runtime, "config", None) or {}
        configurable = config.get("configurable", {}) if isinstance(config, dict) else {}
        ns, thread = configurable.get("checkpoint_ns"), configurable.get("thread_id")
        if not ns or thread is None:
            return None
        return (str(thread), str(ns), proposal.content_digest())

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
        proposal = self.guard.proposal(
            str(call.get("name")),
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

    def _resumed_grant(self, proposal: AuthorizationRequest) -> ApprovalGrant | None:
        """On resume LangGraph re-runs this wrapper from the start. If this exact
        proposal is already waiting for a person, go straight back to the interrupt
        instead of deciding (and recording) the same REQUIRE_APPROVAL again."""
        if not self.approvals:
            return None
        pending = self._pending.get(proposal.content_digest())
        return None if pending is None else self._ask(pending, None)

    def _ask(self, pending: PendingApproval, exc: ApprovalRequired | None) -> ApprovalGrant:
        """Pause for a person; returns a grant bound to the proposal digest, or raises
        the (recorded) denial."""
        if not self.approvals:
            assert exc is not None
            raise exc
        self._pending[pending.proposal_digest] = pending
        # What the person approves is rendered from the canonical proposal, never
        # from model text; the answer must name the digest it approves.
        answer = interrupt(
            {
                "type": APPROVAL_REQUEST,
                "proposal_digest": pending.proposal_digest,
                "proposal": json.loads(pending.request.canonical_bytes()),
                "reason_codes": list(pending.reason_codes),
                "resume_with": {"approved": True, "approver": "<who>", "proposal_digest": pending.proposal_digest},
            }
        )
        self._pending.pop(pending.proposal_digest, None)
        request = pending.request
        if not isinstance(answer, dict):
            raise self.guard.deny(
                request, ["APPROVAL_INVALID"], "the approval answer is not an object", outcome="REQUIRE_APPROVAL"
            )
        if answer.get("approved") is not True:
            raise self.guard.deny(
                request,
                ["APPROVAL_REJECTED"],
                f"rejected by {answer.get('approver') or 'the approver'}",
                outcome="REQUIRE_APPROVAL",
            )
        if answer.get("proposal_digest") != pending.proposal_digest:
            raise self.guard.deny(
                request,
                ["APPROVAL_MISMATCH"],
                "the approval names another proposal (the arguments changed after it was shown)",
                outcome="REQUIRE_APPROVAL",
            )
        approver = answer.get("approver")
        if not isinstance(approver, str) or not approver:
            raise self.guard.deny(
                request, ["APPROVAL_INVALID"], "the approval names no approver", outcome="REQUIRE_APPROVAL"
            )
        return self.guard.approve(pending, approver=approver)
