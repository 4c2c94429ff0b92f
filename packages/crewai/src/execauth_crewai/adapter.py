"""CrewGuard: gate every CrewAI tool call through the execauth guard.

Two layers, one decision:

* The **before-tool-call hook** (registered context-scoped, only inside
  :meth:`CrewGuard.guarding`) knows who is calling. For a tool wrapped by this
  CrewGuard it builds the proposal (tool, the exact arguments the tool will
  receive, principal, agent, tool-call id) and leaves an *admission* for it; it
  blocks a tool that is not wrapped, and it blocks whenever anything in it fails,
  because CrewAI swallows any hook exception other than ``HookAborted`` and runs
  the tool anyway.
* The **GuardedTool wrapper** is the only way to reach the real tool. It takes
  the admission for its exact arguments and makes the one call to
  ``Guard.run`` (or ``Guard.execute`` with a ``token_provider``): decide, verify,
  consume the token once, record, then run. Without an admission (the hook layer
  was bypassed) it refuses, and the refusal is recorded.

So the guard decides and consumes exactly once per tool execution, in the
wrapper; the hook never decides. A denial reaches the model as a CrewAI
``ToolFailure`` whose text carries the reason code (CrewAI itself would only say
"Tool execution blocked by hook"; the after-call hook rewrites that text for the
calls our hook blocked).
"""

from __future__ import annotations

import json
import logging
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol, TypeVar

from crewai.hooks.dispatch import (
    HookAborted,
    InterceptionPoint,
    get_scoped_hooks,
    scoped_hooks,
)
from crewai.hooks.tool_hooks import ToolCallHookContext
from crewai.tools import BaseTool
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from crewai.utilities.string_utils import sanitize_tool_name

from execauth_core import (
    ApprovalGrant,
    ApprovalRequired,
    AuthorizationRequest,
    ConfigurationError,
    ExecutionDenied,
    Guard,
    PendingApproval,
    denial_message,
    digest,
)
from execauth_core._validation import (
    callable_or_fixed,
    guard_option,
    name_or_callable,
    number_option,
    optional_callable,
)
from execauth_core.approval_flow import ApprovalFlow, ApprovalGate

from ._admissions import Admissions, CallNote
from .tools import GuardedTool

log = logging.getLogger("execauth.crewai")

T = TypeVar("T")

#: What CrewAI shows the model for a call a before-hook blocked (1.15.30, both the
#: ReAct and the native tool-calling paths).
CREWAI_BLOCKED_PREFIX = "Tool execution blocked by hook"

#: The ``source`` of every ``HookAborted`` this adapter raises.
HOOK_SOURCE = "execauth"

BYPASSED = (
    "this call did not pass the execauth hook (the crew ran outside CrewGuard.guarding(), "
    "or a CrewAI path skipped the tool hooks), so it was not authorized"
)

TokenProvider = Callable[[AuthorizationRequest], "str | None"]
PrincipalSource = Callable[["ToolCallHookContext | None"], str]
ContextField = Callable[[ToolCallHookContext], "str | None"]


class Approver(Protocol):
    """Asked when the policy requires a person's approval of one exact proposal.

    Return the approver's name to approve exactly ``pending`` (the adapter then
    obtains a grant bound to ``pending.proposal_digest`` and runs the call), or
    ``None`` to refuse. ``context`` is the CrewAI hook context of the call, so an
    approver can use CrewAI's own ``request_human_input``.
    """

    def __call__(self, pending: PendingApproval, context: ToolCallHookContext | None) -> str | None: ...


def agent_role(context: ToolCallHookContext) -> str | None:
    """The default agent identity in a proposal: the CrewAI agent's role."""
    role = getattr(context.agent, "role", None)
    return role if isinstance(role, str) and role else None


def native_call_id(context: ToolCallHookContext) -> str | None:
    """The model's tool-call id, when CrewAI's hook context lets us find it.

    ``ToolCallHookContext`` carries no call id (1.15.30). With native function
    calling the executor has just appended the assistant message that lists the
    calls; the id is taken from there when exactly one call in it matches this
    tool and these arguments. ReAct text calls have no id: ``None``.
    """
    executor = getattr(context.agent, "agent_executor", None)
    messages = getattr(getattr(executor, "state", None), "messages", None)
    if not isinstance(messages, list):
        return None
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "assistant"), None)
    calls = last.get("tool_calls") if last is not None else None
    if not isinstance(calls, list):
        return None
    found: list[str] = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or sanitize_tool_name(str(function.get("name"))) != context.tool_name:
            continue
        raw = function.get("arguments")
        try:
            arguments = json.loads(raw) if isinstance(raw, str) and raw else (raw or {})
        except ValueError:
            continue
        if arguments == context.tool_input and isinstance(call.get("id"), str):
            found.append(call["id"])
    return found[0] if len(found) == 1 else None


class CrewGuard(ApprovalGate):
    """Authorize every tool call of a CrewAI crew with an execauth :class:`Guard`.

    Args:
        guard: the enforcement point (``Guard.local(policy)`` or a configured one).
        principal: on whose behalf the crew acts: a name, or a callable given the
            hook context (``None`` when a call bypassed the hook).
        agent_id: the agent identity put in each proposal: a callable given the hook
            context, or a fixed name; default: the agent's role.
        call_id: the tool-call id put in each proposal: a callable given the hook
            context (or a fixed string); default :func:`native_call_id`.
        token_provider: when set, tokens come from it (a remote authority) and the
            guard only verifies and consumes them (``Guard.execute``); ``None`` from
            it denies with ``NO_TOKEN``.
        approver: asked on ``REQUIRE_APPROVAL`` (see :class:`Approver` and
            :func:`~execauth_crewai.console_approver`); its answer decides the
            approval request in the guard's own queue. Without one the call is
            refused with ``APPROVAL_REQUIRED`` and the approval request waits:
            :meth:`pending_approvals`, :meth:`approve` / :meth:`reject` (or the
            console), :meth:`wait_for_approval`, then :meth:`resume`.
        admission_ttl: seconds between the hook admitting a call and its tool
            starting; CrewAI takes milliseconds.
        max_pending: most admissions, pending approvals and unused grants kept.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        principal: str | PrincipalSource,
        agent_id: ContextField = agent_role,
        call_id: ContextField = native_call_id,
        token_provider: TokenProvider | None = None,
        approver: Approver | None = None,
        admission_ttl: float = 30.0,
        max_pending: int = 1024,
    ) -> None:
        owner = "CrewGuard"
        self.guard = guard_option(guard, owner)
        self._principal = name_or_callable(principal, "principal", owner, takes="the hook context")
        # A fixed name is taken as it is; anything else must be a callable of the context.
        self._agent_id = callable_or_fixed(agent_id, "agent_id", owner, takes="the hook context")
        self._call_id = callable_or_fixed(call_id, "call_id", owner, takes="the hook context")
        self._token_provider = optional_callable(token_provider, "token_provider", owner, takes="the proposal")
        self._approver = optional_callable(approver, "approver", owner, takes="the pending approval")
        number_option(admission_ttl, "admission_ttl", owner, minimum=0.001)
        number_option(max_pending, "max_pending", owner, minimum=1, integer=True)
        self._admissions = Admissions(ttl=admission_ttl, capacity=max_pending)
        self._max_pending = max_pending
        self._lock = threading.Lock()
        self._approval_flow = ApprovalFlow(self.guard, capacity=max_pending)
        self._tools: dict[str, GuardedTool | None] = {}

    # -- wiring ----------------------------------------------------------------

    def tool(self, tool: BaseTool | Callable[..., Any], *, proposal_name: str | None = None) -> GuardedTool:
        """Wrap a CrewAI tool (or a plain function, via ``crewai.tools.tool``) so it
        only runs when this CrewGuard authorizes the call. ``proposal_name``: the
        tool name in proposals, if not the tool's own (see ``execauth_crewai.mcp``)."""
        if not isinstance(tool, BaseTool):
            if not callable(tool):
                raise TypeError("CrewGuard.tool() takes a crewai BaseTool or a function")
            from crewai.tools import tool as make_tool

            tool = make_tool(tool)
        guarded = GuardedTool.wrap(tool, self, proposal_name=proposal_name)
        with self._lock:
            # Two different tools under one name make resume() ambiguous: remember that.
            known = self._tools.get(guarded.proposal_name, guarded)
            same = known is not None and known.inner is tool
            self._tools[guarded.proposal_name] = guarded if same else None
        return guarded

    def tools(self, *tools: BaseTool | Callable[..., Any]) -> list[GuardedTool]:
        """:meth:`tool` for several tools."""
        return [self.tool(t) for t in tools]

    @contextmanager
    def guarding(self) -> Iterator[CrewGuard]:
        """Activate this CrewGuard's hooks for the code inside the ``with`` block.

        The hooks live in CrewAI's context-scoped registry (a ContextVar), never in
        the process-global one: two crews guarded by two CrewGuards in one process
        (or in two threads, or two asyncio tasks) don't see each other's hooks, and
        nothing is left registered after the block. Scoped hooks already active
        (an enclosing ``guarding()``) stay active inside.
        """
        scope: dict[InterceptionPoint, list[Any]] = {}
        for point in InterceptionPoint:
            active = get_scoped_hooks(point)
            if active:
                scope[point] = list(active)
        scope.setdefault(InterceptionPoint.PRE_TOOL_CALL, []).append(self._before_tool_call)
        scope.setdefault(InterceptionPoint.POST_TOOL_CALL, []).append(self._after_tool_call)
        with scoped_hooks(scope):
            yield self

    def kickoff(self, crew: Any, **kwargs: Any) -> Any:
        """``crew.kickoff(**kwargs)`` inside :meth:`guarding` (warns first about tools
        not wrapped with :meth:`tool`: see :meth:`unwrapped_tools`)."""
        self._warn_unwrapped(crew)
        with self.guarding():
            return crew.kickoff(**kwargs)

    async def akickoff(self, crew: Any, **kwargs: Any) -> Any:
        """``await crew.akickoff(**kwargs)`` inside :meth:`guarding` (warns first about
        unwrapped tools)."""
        self._warn_unwrapped(crew)
        with self.guarding():
            return await crew.akickoff(**kwargs)

    def unwrapped_tools(self, crew: Any) -> list[str]:
        """Names of the tools of ``crew`` (its agents' and its tasks') not wrapped with
        :meth:`tool` by this CrewGuard.

        Inside :meth:`guarding` the admission hook refuses such a tool; but the same
        crew kicked off without ``guarding()`` runs it with no check at all, because
        only a wrapped tool refuses to run unadmitted."""
        holders = [*(getattr(crew, "agents", None) or []), *(getattr(crew, "tasks", None) or [])]
        names: list[str] = []
        for holder in holders:
            for tool in getattr(holder, "tools", None) or []:
                guarded = tool if isinstance(tool, GuardedTool) else getattr(tool, "_original_tool", None)
                if not (isinstance(guarded, GuardedTool) and guarded.owner is self):
                    name = str(getattr(tool, "name", type(tool).__name__))
                    if name not in names:
                        names.append(name)
        return names

    def _warn_unwrapped(self, crew: Any) -> None:
        try:
            names = self.unwrapped_tools(crew)
        except Exception:  # noqa: BLE001 - a warning must never stop a guarded run
            return
        if names:
            warnings.warn(
                f"execauth: tool(s) {', '.join(names)} not wrapped with CrewGuard.tool(): refused inside "
                "guarding(), and run unchecked if this crew is ever kicked off without it",
                UserWarning,
                stacklevel=3,
            )

    # -- approvals -------------------------------------------------------------
    # pending_approvals(), approval_status(), approve(), reject(), wait_for_approval()
    # and await_approval() come from ApprovalGate: the same on every execauth adapter.

    def resume(self, request_id: str) -> Any:
        """Run a paused call now, exactly as proposed, once its approval request is
        approved at the authority (:meth:`approve` for the guard's own queue, the
        console or ``execauth approvals`` for a remote guard). Returns the tool's result.

        The grant is taken from the authority bound to the request's proposal and
        consumed once: a pending, rejected or expired request, or one already used,
        runs nothing.

        Raises:
            ExecutionDenied: not approved, already used, or the guard refused (recorded).
            ApprovalError: ``APPROVAL_UNKNOWN``.
            ConfigurationError: no tool of that name was wrapped by this CrewGuard.
        """
        record = self._approval_flow.record(request_id)
        proposal = record.proposal
        with self._lock:
            tool = self._tools.get(proposal.tool)
        if tool is None:
            raise ConfigurationError(f"no single tool named {proposal.tool!r} is wrapped by this CrewGuard")
        grant = self._approval_flow.grant_for(request_id, proposal)
        args = dict(proposal.args)
        return self.guard.run(proposal, lambda: tool._call_inner((), args), approval=grant)

    # -- the hooks -------------------------------------------------------------

    def _before_tool_call(self, context: ToolCallHookContext) -> None:
        """Admit the call or block it. Every path that does not admit raises HookAborted."""
        try:
            block = self._admit(context)
        except ExecutionDenied as exc:
            block = _text(exc)
        except Exception as exc:
            log.exception("execauth: the admission hook failed; blocking the call")
            block = _text(self._refuse(context, f"the admission hook failed ({type(exc).__name__})"))
        if block is None:
            return None
        try:
            self._admissions.note(context.tool_input, CallNote(block_message=block))
        except Exception:
            log.exception("execauth: could not note a blocked call")
        raise HookAborted(block, source=HOOK_SOURCE)

    def _admit(self, context: ToolCallHookContext) -> str | None:
        tool = _guarded_tool_of(context)
        if tool is None:
            return _text(
                self._refuse(
                    context, f"tool {context.tool_name!r} is not guarded by execauth (wrap it: CrewGuard.tool)"
                )
            )
        if tool.owner is not self:
            if tool.owner is None:
                return _text(self._refuse(context, f"guarded tool {tool.name!r} is not bound to a guard"))
            # Another CrewGuard's tool: its own hook admits it, its own wrapper decides.
            return None
        try:
            args = tool._expected_args(dict(context.tool_input))
        except Exception as exc:  # noqa: BLE001 - CrewAI would refuse these arguments too
            return _text(self._refuse(context, f"the arguments do not match the tool's schema: {_first_line(exc)}"))
        request = self.guard.proposal(
            tool.proposal_name,
            args,
            principal=self._principal_for(context),
            agent=self._agent_id(context),
            call_id=self._call_id(context),
        )
        admission = self._admissions.admit(tool._uid, digest(args), request, context)
        self._admissions.note(context.tool_input, CallNote(admission=admission))
        return None

    def _after_tool_call(self, context: ToolCallHookContext) -> str | None:
        """Tell the model why our hook blocked a call; withdraw an admission never used.

        Whatever happens here cannot make a tool run: it runs after the tool.
        """
        try:
            note = self._admissions.pop_note(context.tool_input)
            if note is None:
                return None
            if note.admission is not None:
                self._admissions.discard(note.admission)
            result = context.tool_result
            if note.block_message is not None and isinstance(result, str) and result.startswith(CREWAI_BLOCKED_PREFIX):
                return note.block_message
        except Exception:
            log.exception("execauth: after-tool-call hook failed")
        return None

    # -- the wrapper's side ----------------------------------------------------

    def _execute(self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Called by ``GuardedTool._run``: authorize, then run the real tool (or not)."""
        ran = False

        def call() -> Any:
            nonlocal ran
            ran = True
            return tool._call_inner(args, kwargs)

        try:
            request, context = self._claim(tool, args, kwargs)
            return self._authorize(request, context, call)
        except ExecutionDenied as exc:
            return self._failure(exc)
        except Exception as exc:  # noqa: BLE001 - fail closed; a tool error becomes a ToolFailure
            return _tool_error(exc) if ran else self._internal_error(tool, exc)

    async def _aexecute(self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Called by ``GuardedTool._arun``."""
        ran = False

        def call() -> Awaitable[Any]:
            nonlocal ran
            ran = True
            return tool._acall_inner(args, kwargs)

        try:
            request, context = self._claim(tool, args, kwargs)
            return await self._aauthorize(request, context, call)
        except ExecutionDenied as exc:
            return self._failure(exc)
        except Exception as exc:  # noqa: BLE001 - fail closed; a tool error becomes a ToolFailure
            return _tool_error(exc) if ran else self._internal_error(tool, exc)

    def _claim(
        self, tool: GuardedTool, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[AuthorizationRequest, ToolCallHookContext | None]:
        """The admission for exactly these arguments, or a recorded refusal."""
        try:
            bound = tool._bind(args, kwargs)
        except Exception as exc:  # noqa: BLE001 - the call cannot be proposed as made
            raw = {**kwargs, "*args": list(args)} if args else dict(kwargs)
            raise self._refuse(
                None, f"the arguments do not fit the tool ({_first_line(exc)})", tool.proposal_name, raw
            ) from None
        try:
            key = digest(bound)
        except Exception:  # noqa: BLE001 - not JSON: the proposal is refused as REQUEST_INVALID
            raise self._refuse(None, "the arguments are not JSON values", tool.proposal_name, bound) from None
        admission = self._admissions.take(tool._uid, key)
        if admission is None:
            raise self._refuse(None, BYPASSED, tool.proposal_name, bound)
        return admission.request, admission.context

    def _authorize(
        self, request: AuthorizationRequest, context: ToolCallHookContext | None, call: Callable[[], T]
    ) -> T:
        if self._token_provider is not None:
            return self.guard.execute(request, self._token_for(request), call)
        grant = self._approval_flow.approved_grant(request)
        try:
            return self.guard.run(request, call, approval=grant)
        except ApprovalRequired as exc:
            if grant is not None:
                raise
            grant = self._ask(exc, context)
            if grant is None:
                raise
            return self.guard.run(request, call, approval=grant)

    async def _aauthorize(
        self,
        request: AuthorizationRequest,
        context: ToolCallHookContext | None,
        call: Callable[[], Awaitable[T]],
    ) -> T:
        if self._token_provider is not None:
            return await self.guard.aexecute(request, self._token_for(request), call)
        grant = self._approval_flow.approved_grant(request)
        try:
            return await self.guard.arun(request, call, approval=grant)
        except ApprovalRequired as exc:
            if grant is not None:
                raise
            grant = self._ask(exc, context)
            if grant is None:
                raise
            return await self.guard.arun(request, call, approval=grant)

    def _token_for(self, request: AuthorizationRequest) -> str | None:
        try:
            return self._token_provider(request) if self._token_provider is not None else None
        except Exception:
            log.exception("execauth: token_provider failed")
            return None

    def _ask(self, exc: ApprovalRequired, context: ToolCallHookContext | None) -> ApprovalGrant | None:
        """Open the approval request (its id goes on ``exc``), then ask the approver,
        if there is one, and decide the request with its answer."""
        request_id = self._approval_flow.open(exc)
        exc.request_id = request_id
        exc.pending = exc.pending.model_copy(update={"request_id": request_id})
        if self._approver is None:
            return None
        try:
            name = self._approver(exc.pending, context)
            if not name:
                return None
            self._approval_flow.approve(request_id, approver=name)
        except Exception:
            log.exception("execauth: the approver failed; treating it as a refusal")
            return None
        return self._approval_flow.grant_for(request_id, exc.pending.request)

    # -- refusals and what the model sees --------------------------------------

    def _principal_for(self, context: ToolCallHookContext | None) -> str:
        if isinstance(self._principal, str):
            return self._principal
        return self._principal(context)

    def _refuse(
        self,
        context: ToolCallHookContext | None,
        why: str,
        tool: str | None = None,
        args: Any = None,
    ) -> ExecutionDenied:
        """Record a refusal of a call that never got a decision, and return it.

        The guard records it: a malformed call as ``REQUEST_INVALID``, any other as
        ``NO_TOKEN`` (nothing authorized it). Never raises.
        """
        name = tool or (context.tool_name if context is not None else None) or "unknown"
        if args is None and context is not None:
            args = dict(context.tool_input) if isinstance(context.tool_input, dict) else {"input": context.tool_input}
        try:
            principal = self._principal_for(context)
        except Exception:  # noqa: BLE001 - the refusal must still be recorded
            principal = "unknown"
        agent = call_id = None
        if context is not None:
            try:
                agent, call_id = self._agent_id(context), self._call_id(context)
            except Exception:  # noqa: BLE001 - best effort attribution
                agent = call_id = None
        try:
            request = self.guard.proposal(name, args or {}, principal=principal, agent=agent, call_id=call_id)
            self.guard.execute(request, None, _never)
        except ExecutionDenied as exc:
            return ExecutionDenied(
                outcome=exc.outcome,
                reason_codes=exc.reason_codes,
                message=why if exc.reason_codes[0] == "NO_TOKEN" else f"{why}; {exc}",
                tool=name,
                proposal_digest=exc.proposal_digest,
                audit_seq=exc.audit_seq,
            )
        except Exception as exc:  # noqa: BLE001 - a broken guard still refuses
            log.error("execauth: could not record a refusal of %r: %s", name, exc)
        return ExecutionDenied(
            outcome="DENY", reason_codes=("GUARD_ERROR",), message=why, tool=name, proposal_digest=None
        )

    def _internal_error(self, tool: GuardedTool, exc: Exception) -> ToolFailure:
        log.error("execauth: internal error while guarding %r: %s", tool.name, exc, exc_info=exc)
        return self._failure(
            ExecutionDenied(
                outcome="DENY",
                reason_codes=("GUARD_ERROR",),
                message=f"internal error in the execauth adapter ({type(exc).__name__})",
                tool=tool.name,
                proposal_digest=None,
            )
        )

    def _failure(self, exc: ExecutionDenied) -> ToolFailure:
        """The denial as CrewAI's structured tool failure: the model sees the reason code."""
        details: dict[str, Any] = {
            "outcome": exc.outcome,
            "reason_codes": list(exc.reason_codes),
            "proposal_digest": exc.proposal_digest,
            "audit_seq": exc.audit_seq,
        }
        message = denial_message(exc)
        if isinstance(exc, ApprovalRequired):
            details["pending_approval"] = exc.pending.model_dump(mode="json")
            details["request_id"] = exc.request_id
            message += f" (approval request {exc.request_id} pending for proposal {exc.pending.proposal_digest})"
        return ToolFailure(
            message=message,
            reason=ToolFailureReason.TOOL_REPORTED,
            code=exc.reason_codes[0] if exc.reason_codes else "GUARD_ERROR",
            retryable=False,
            details=details,
        )


def _guarded_tool_of(context: ToolCallHookContext) -> GuardedTool | None:
    """The GuardedTool behind the hook context's tool, if it is one."""
    tool = context.tool
    if isinstance(tool, GuardedTool):
        return tool
    original = getattr(tool, "_original_tool", None)
    if isinstance(original, GuardedTool):
        return original
    if tool is None:
        # Some native paths pass no structured tool: find it on the agent by name.
        for candidate in getattr(context.agent, "tools", None) or []:
            if isinstance(candidate, GuardedTool) and sanitize_tool_name(candidate.name) == context.tool_name:
                return candidate
    return None


def _text(exc: ExecutionDenied) -> str:
    code = exc.reason_codes[0] if exc.reason_codes else "GUARD_ERROR"
    return f"{denial_message(exc)} (code: {code})"


def _tool_error(exc: Exception) -> ToolFailure:
    """The real tool raised: report it the way CrewAI reports a raised tool error.

    Returned rather than re-raised so CrewAI's ReAct path does not retry the call:
    a retry would be a second execution that nobody admitted.
    """
    return ToolFailure(
        message=_first_line(exc) or type(exc).__name__,
        reason=ToolFailureReason.EXCEPTION,
        code=type(exc).__name__,
    )


def _never() -> Any:
    raise RuntimeError("unreachable: called without a token")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else ""
