"""Gate OpenAI Agents SDK function tools with execauth.

The gate sits *in* ``FunctionTool.on_invoke_tool``: the SDK calls it at the moment
the tool would run (after ``needs_approval``, the tool input guardrails and the
``on_tool_start`` hooks), and it hands ``Guard.arun`` a callable that performs the
real invocation. So each call is decided once, its token verified and consumed once,
and only then does the tool body run; a call that any earlier SDK stage skipped or
aborted never consumed a token. Denials become the tool's output, which the model
reads (or, with ``on_denial="raise"``, stop the run).

REQUIRE_APPROVAL is mapped onto the SDK's own approval flow: a ``needs_approval``
check asks the guard's policy (a preview: no token, no debit, no record) whether the
proposal needs a person; if so the run pauses with ``result.interruptions``.
and the gate opens an approval request at the authority. :meth:`ExecAuth.pending`
gives each interruption with its request id; a person decides the request
(:meth:`ExecAuth.approve` for the guard's own queue, the console for a remote
authority); ``state.approve(item)`` and a new ``Runner.run`` resume, and the gate
fetches that request's grant from the authority, bound to the proposal and consumed
once. The SDK's own approval alone never lets a call through.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

from agents import Agent, FunctionTool, Handoff
from agents.items import ToolApprovalItem
from agents.run_context import RunContextWrapper
from agents.tool_context import ToolContext

from execauth_core import (
    ApprovalGrant,
    ApprovalRequired,
    AuthorizationRequest,
    ConfigurationError,
    ExecutionDenied,
    Guard,
    Outcome,
    PendingApproval,
    canonicalize,
    denial_message,
    loads_strict,
)
from execauth_core._validation import one_of, optional_callable
from execauth_core.approval_flow import ApprovalFlow, ApprovalGate

from .errors import ToolCallDenied
from .mcp import proposal_tool_name

log = logging.getLogger("execauth.openai_agents")

T = TypeVar("T")

PrincipalResolver = str | Callable[[RunContextWrapper[Any]], str]
TokenProvider = Callable[[AuthorizationRequest], "str | Awaitable[str | None] | None"]
NeedsApproval = bool | Callable[[RunContextWrapper[Any], dict[str, Any], str], Awaitable[bool]]

_MEMORY_LIMIT = 4096


class _Auto:
    """Sentinel: record the name of the agent that runs the call."""

    def __repr__(self) -> str:
        return "AUTO"


AUTO: Any = _Auto()
"""``agent=AUTO`` (the default): proposals carry the name of the agent running the call."""


class _BadArguments(Exception):
    """The model's arguments are not a strict JSON object."""


@dataclass(frozen=True)
class ApprovalRequest:
    """One paused call, as execauth sees it.

    Attributes:
        item: the SDK's ``ToolApprovalItem`` (pass it on to ``RunState`` if you need to).
        pending: the exact proposal waiting for a person, with the digest an approval
            binds to (``pending.proposal_digest``); ``pending.request.canonical_bytes()``
            is what to show. ``None`` when no proposal could be built (see ``denial``).
        denial: the recorded denial when the proposal could not be built (malformed
            arguments, a tool this gate does not own): such a call can only be rejected.
    """

    item: ToolApprovalItem
    pending: PendingApproval | None
    denial: ExecutionDenied | None = None
    request_id: str | None = None
    """The authority's approval request for this call: approve it
    (``gate.approve(request_id, approver=...)``, or in the console), then
    ``state.approve(item)`` and run the state again."""

    @property
    def proposal_digest(self) -> str | None:
        """The digest an approval must name, or ``None`` if there is no proposal."""
        return self.pending.proposal_digest if self.pending is not None else None


class _GatedInvoker:
    """The ``on_invoke_tool`` of a gated ``FunctionTool``: guard, then the real invoker."""

    def __init__(
        self,
        gate: ExecAuth,
        tool_name: str,
        inner: Callable[[ToolContext[Any], str], Awaitable[Any]],
        agent: Any,
        owner: str | None,
        defaults: dict[str, Any],
    ) -> None:
        self.gate = gate
        self.tool_name = tool_name
        self.inner = inner
        self.agent = agent  # AUTO, None or a fixed name
        self.owner = owner  # the agent the tool was protected under (for the approval preview)
        self.defaults = defaults
        self.ledger_key: Literal[False] | None = None

    # The SDK inspects this signature: a first parameter annotated ToolContext gets the
    # full ToolContext (call id, agent), which the proposal needs.
    async def __call__(self, ctx: ToolContext[Any], input: str) -> Any:
        return await self.gate._invoke(self, ctx, input)

    def agent_name(self, running: Any) -> str | None:
        """The ``agent`` of the proposal, given the agent running the call (or None)."""
        if isinstance(self.agent, _Auto):
            name = getattr(running, "name", None)
            return name if isinstance(name, str) else None
        return self.agent  # type: ignore[no-any-return]

    def arguments(self, raw: str | None) -> dict[str, Any]:
        """The complete arguments: the model's (strict JSON object) over the tool's defaults."""
        text = raw if isinstance(raw, str) else ""
        if not text.strip():
            parsed: Any = {}
        else:
            try:
                parsed = loads_strict(text)
            except Exception as exc:  # noqa: BLE001 - any parse failure is a malformed proposal
                raise _BadArguments(f"tool arguments are not strict JSON: {exc}") from None
        if not isinstance(parsed, dict):
            raise _BadArguments("tool arguments must be a JSON object")
        return {**self.defaults, **parsed}


_FAILED_ATTR = "_execauth_tool_failure"


class _FailureWatch:
    """Stands in for the raw invoker inside the SDK's failure handler.

    ``@function_tool`` wraps the tool body in a handler that, with the default
    ``failure_error_function``, turns an exception into an error string for the
    model: the gate would only ever see a successful return. Sitting between that
    handler and the body, this notes the exception on the call's ``ToolContext``
    (one per call) and lets it go on to the SDK unchanged; the gate then records the
    call as failed while the model still gets the SDK's own error text.
    """

    def __init__(self, impl: Callable[[ToolContext[Any], str], Awaitable[Any]]) -> None:
        self._impl = impl

    async def __call__(self, ctx: ToolContext[Any], input: str) -> Any:
        try:
            return await self._impl(ctx, input)
        except BaseException as exc:
            try:
                setattr(ctx, _FAILED_ATTR, exc)
            except Exception:  # noqa: BLE001, S110 - a context that takes no attribute: nothing to note
                pass
            raise

    def __getattr__(self, name: str) -> Any:
        # The SDK reads markers off the raw invoker (argument preparation, the wrapped
        # function): they are the wrapped invoker's.
        return getattr(self._impl, name)


def _watch_failures(inner: object) -> None:
    """Put a :class:`_FailureWatch` under the SDK's failure handler of a
    ``@function_tool`` (openai-agents 0.20 to 0.24 keep the raw invoker in
    ``_invoke_tool_impl``). A tool with its own ``on_invoke_tool`` has no such
    handler: what it raises reaches the gate directly."""
    impl = getattr(inner, "_invoke_tool_impl", None)
    if impl is None or isinstance(impl, _FailureWatch) or not callable(impl):
        return
    try:
        inner._invoke_tool_impl = _FailureWatch(impl)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - the SDK's layout changed: record as before
        log.warning("execauth: cannot watch this SDK's tool failures; a swallowed error is recorded as ok")


class _ApprovalCheck:
    """The ``needs_approval`` of a gated tool: the tool's own setting, or the guard's
    policy saying REQUIRE_APPROVAL for this proposal (a preview that records nothing)."""

    def __init__(self, invoker: _GatedInvoker, original: NeedsApproval) -> None:
        self.invoker = invoker
        self.original = original

    async def __call__(self, run_context: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        if await self._original(run_context, params, call_id):
            return True
        return self.invoker.gate._needs_approval(self.invoker, run_context, params, call_id)

    async def _original(self, run_context: RunContextWrapper[Any], params: dict[str, Any], call_id: str) -> bool:
        if isinstance(self.original, bool):
            return self.original
        try:
            answer: Any = self.original(run_context, params, call_id)
            if inspect.isawaitable(answer):
                answer = await answer
            return bool(answer)
        except Exception:
            log.exception("execauth: the tool's own needs_approval failed; asking for approval")
            return True


class ExecAuth(ApprovalGate):
    """Gate the function tools of an Agents SDK agent graph with an execauth guard.

    Args:
        guard: the execauth guard.
        principal: on whose behalf calls are made: a string, or a callable reading it
            from the run context (``lambda ctx: ctx.context.user_id``).
        agent: the ``agent`` recorded in proposals: :data:`AUTO` (the name of the agent
            running the call), ``None``, or a fixed name.
        token_provider: verify tokens issued elsewhere instead of deciding here; it gets
            the proposal and returns a compact JWS or ``None`` (denies, NO_TOKEN). May be
            async.
        approvals: map REQUIRE_APPROVAL onto the SDK's ``needs_approval`` interruptions.
            When False (or with a ``token_provider``, or a verify-only guard),
            REQUIRE_APPROVAL is a denial the model reads.
        on_denial: ``"message"`` (default): the model reads the denial as the tool's
            output and the run goes on. ``"raise"``: the run stops with
            :class:`~execauth_openai_agents.ToolCallDenied`.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        principal: PrincipalResolver,
        agent: str | _Auto | None = AUTO,
        token_provider: TokenProvider | None = None,
        approvals: bool = True,
        on_denial: Literal["message", "raise"] = "message",
    ) -> None:
        if not isinstance(guard, Guard):
            raise ConfigurationError("ExecAuth needs an execauth_core.Guard")
        if not (isinstance(principal, str) and principal) and not callable(principal):
            raise ConfigurationError("principal must be a non-empty string or a callable of the run context")
        if on_denial not in ("message", "raise"):
            raise ConfigurationError("on_denial must be 'message' or 'raise'")
        if agent is not None and not isinstance(agent, (str, _Auto)):
            raise ConfigurationError("agent must be AUTO, None or a string")
        optional_callable(token_provider, "token_provider", "ExecAuth", takes="the proposal")
        one_of(approvals, "approvals", "ExecAuth", (True, False))
        self.guard = guard
        self.principal = principal
        self.agent = agent
        self.token_provider = token_provider
        self.approvals = approvals
        self.on_denial = on_denial
        # proposal digest -> grant held by add_grant() until the resumed call presents it.
        # Bounded: an approval that is never resumed must not grow memory forever.
        self._grants: OrderedDict[str, ApprovalGrant] = OrderedDict()
        # proposal digest -> the newest approval request opened for it. Kept after the
        # call ran: a run state resumed again presents the same, spent, request
        # (APPROVAL_USED); a new pause of the same call opens a new request.
        self._paused: OrderedDict[str, str] = OrderedDict()
        self._approval_flow = ApprovalFlow(guard)

    # -- attaching ---------------------------------------------------------------

    def protect(self, *agents: Agent[Any]) -> Agent[Any]:
        """Gate every function tool of these agents and of every agent they reach.

        Follows handoffs (agents, and ``Handoff`` objects that still reference their
        agent) and agents used as tools (``Agent.as_tool``), so one call guards the
        whole graph. Idempotent. Tools are changed in place (their ``on_invoke_tool``
        and ``needs_approval``), so every holder of the same tool object is covered.

        Returns:
            The first agent, for chaining.

        Raises:
            ConfigurationError: a tool is already gated by a different ``ExecAuth``.
        """
        if not agents:
            raise ConfigurationError("protect() needs at least one agent")
        queue: list[Any] = list(agents)
        seen: set[int] = set()
        while queue:
            agent = queue.pop()
            if not isinstance(agent, Agent) or id(agent) in seen:
                continue
            seen.add(id(agent))
            self._install(agent)
            for tool in agent.tools:
                if isinstance(tool, FunctionTool):
                    self._attach(tool, owner=agent.name, agent=AUTO)
                    # Agent.as_tool() keeps the agent it runs here; its tools run in a
                    # nested Runner.run that our hooks may never see, so gate them now.
                    queue.append(getattr(tool, "_agent_instance", None))
            for handoff in agent.handoffs:
                if isinstance(handoff, Agent):
                    queue.append(handoff)
                elif isinstance(handoff, Handoff):
                    ref = getattr(handoff, "_agent_ref", None)
                    queue.append(ref() if callable(ref) else None)
        return agents[0]

    def _install(self, agent: Agent[Any]) -> None:
        """Gate, each turn, the function tools the SDK is about to offer ``agent``.

        The SDK asks ``agent.get_all_tools()`` for the tools of every turn (its own list
        and its MCP servers' tools, built afresh each turn); ``protect()`` puts itself
        in front of that call on the agent instance, so a function tool appended after
        ``protect()``, or a new MCP tool, is gated before the model can call it, with
        or without ``hooks=``."""
        current = agent.__dict__.get("get_all_tools")
        if isinstance(current, _GatingToolList):
            if current.gate is not self:
                raise ConfigurationError(f"agent '{agent.name}' is already protected by another ExecAuth")
            return
        object.__setattr__(agent, "get_all_tools", _GatingToolList(self, agent, agent.get_all_tools))

    @overload
    def wrap(self, tool: FunctionTool, *, agent: str | _Auto | None = AUTO) -> FunctionTool: ...

    @overload
    def wrap(
        self, tool: None = None, *, agent: str | _Auto | None = AUTO
    ) -> Callable[[FunctionTool], FunctionTool]: ...

    def wrap(
        self, tool: FunctionTool | None = None, *, agent: str | _Auto | None = AUTO
    ) -> FunctionTool | Callable[[FunctionTool], FunctionTool]:
        """Gate one ``FunctionTool`` (in place). Usable as a decorator above
        ``@function_tool``, bare or with arguments.

        Args:
            agent: the proposal's ``agent`` for this tool when the gate itself was
                configured with ``agent=AUTO``: a fixed name, ``None``, or AUTO (the
                agent running the call).
        """

        def attach(t: FunctionTool) -> FunctionTool:
            if not isinstance(t, FunctionTool):
                raise ConfigurationError(f"wrap() gates FunctionTool objects, got {type(t).__name__}")
            return self._attach(t, owner=None, agent=agent)

        return attach(tool) if tool is not None else attach

    def is_gated(self, tool: object) -> bool:
        """Whether ``tool`` is a function tool gated by this ``ExecAuth``."""
        invoker = getattr(tool, "on_invoke_tool", None) if isinstance(tool, FunctionTool) else None
        return isinstance(invoker, _GatedInvoker) and invoker.gate is self

    def hooks(self, *, strict: bool = True) -> Any:
        """Run hooks for ``Runner.run(..., hooks=...)``: gate every agent as it starts,
        and (``strict``) stop the run before any tool this gate does not cover runs.
        See :class:`~execauth_openai_agents.ExecAuthRunHooks`."""
        from .hooks import ExecAuthRunHooks

        return ExecAuthRunHooks(self, strict=strict)

    def _attach(self, tool: FunctionTool, *, owner: str | None, agent: Any) -> FunctionTool:
        current = tool.on_invoke_tool
        if isinstance(current, _GatedInvoker):
            if current.gate is not self:
                raise ConfigurationError(f"tool '{tool.name}' is already gated by another ExecAuth")
            if current.owner is None and owner is not None:
                current.owner = owner
            return tool
        label = self.agent if not isinstance(self.agent, _Auto) else agent
        # An MCP server's tool is proposed as <server>.<tool> (execauth_openai_agents.mcp).
        invoker = _GatedInvoker(self, proposal_tool_name(tool), current, label, owner, _defaults(tool))
        # An agent used as a tool is a delegation: it pauses and is invoked again on
        # resume, and its own tool calls carry their keys in the effect ledger.
        invoker.ledger_key = False if getattr(tool, "_is_agent_tool", False) else None
        _watch_failures(current)
        if self._previews_approvals():
            tool.needs_approval = _ApprovalCheck(invoker, tool.needs_approval)
        # Last, so a failure above leaves the tool as it was rather than half-gated.
        tool.on_invoke_tool = invoker
        return tool

    def _previews_approvals(self) -> bool:
        return self.approvals and self.token_provider is None and self.guard.authority is not None

    # -- the gate ----------------------------------------------------------------

    def _principal(self, context: Any) -> str:
        value = self.principal(context) if callable(self.principal) else self.principal
        if not isinstance(value, str) or not value:
            raise ValueError("the principal resolver did not return a non-empty string")
        return value

    async def _invoke(self, invoker: _GatedInvoker, ctx: ToolContext[Any], raw: str) -> Any:
        request: AuthorizationRequest | None = None
        ran = False
        # What the SDK made of an exception it swallowed, for the model.
        swallowed: list[Any] = []

        try:
            args = invoker.arguments(raw)
            request = self.guard.proposal(
                invoker.tool_name,
                args,
                principal=self._principal(ctx),
                agent=invoker.agent_name(getattr(ctx, "agent", None)),
                call_id=getattr(ctx, "tool_call_id", None),
            )
            # The tool gets the arguments the guard decided on, re-serialized from the
            # proposal, never the model's original text (duplicate keys, defaults).
            authorized = canonicalize(request.args).decode("utf-8")

            async def call() -> Any:
                nonlocal ran
                ran = True
                _forget_failure(ctx)
                output = await invoker.inner(ctx, authorized)
                failure = _forget_failure(ctx)
                if failure is not None:
                    # The SDK swallowed the tool's exception: raised again here so the
                    # guard records the call as failed; the model still gets the SDK's
                    # message (below).
                    swallowed.append(output)
                    raise failure
                return output

            if self.token_provider is not None:
                token = self.token_provider(request)
                if inspect.isawaitable(token):
                    token = await token
                return await self.guard.aexecute(request, token, call, idempotency_key=invoker.ledger_key)
            digest = request.content_digest()
            grant = self._grants.pop(digest, None)
            request_id = self._paused.get(digest)
            if grant is None and request_id is not None:
                # A paused call resumed: it runs on its approval request's grant,
                # fetched from the authority and consumed once, or not at all.
                grant = self._approval_flow.grant_for(request_id, request)
            return await self.guard.arun(request, call, approval=grant, idempotency_key=invoker.ledger_key)
        except ExecutionDenied as exc:
            if swallowed:  # the tool's own (nested) denial, which the SDK turned into text
                return swallowed[0]
            return self._denied(exc)
        except _BadArguments as exc:
            return self._denied(self.guard.deny(None, ("REQUEST_INVALID",), str(exc), tool=invoker.tool_name))
        except Exception as exc:
            if swallowed:
                return swallowed[0]  # recorded as an error; the model reads the SDK's text
            if ran:
                raise  # the tool itself failed, after a recorded execution: the SDK's business
            log.exception("execauth: error in the OpenAI Agents gate; denying")
            denial = self.guard.deny(
                request,
                ("GUARD_ERROR",),
                f"internal error in the adapter ({type(exc).__name__}); denied",
                tool=invoker.tool_name,
            )
            return self._denied(denial)

    def _denied(self, denial: ExecutionDenied) -> str:
        if self.on_denial == "raise":
            raise ToolCallDenied(denial)
        return denial_message(denial)

    def _needs_approval(
        self, invoker: _GatedInvoker, run_context: RunContextWrapper[Any], params: dict[str, Any], call_id: str
    ) -> bool:
        """Preview: does the guard's policy want a person for this proposal?

        Records nothing and debits nothing (``hold_id=None``); the decision that counts
        is made by the gate when the call runs. Any error answers False, so the gate
        decides (and records) it.
        """
        authority = self.guard.authority
        if authority is None:
            return False
        try:
            request = AuthorizationRequest(
                tool=invoker.tool_name,
                args={**invoker.defaults, **params},
                principal=self._principal(run_context),
                # The running agent is not passed to needs_approval: use the agent the
                # tool was protected under. Only the pause depends on this guess.
                agent=invoker.agent_name(_Named(invoker.owner)),
                call_id=call_id,
            )
            evaluation = authority.decision_point.evaluate(
                request, now=self.guard.clock.now(), approved=False, hold_id=None
            )
            if Outcome(evaluation.outcome) is not Outcome.REQUIRE_APPROVAL:
                return False
            self._open(request, tuple(evaluation.reason_codes) or ("APPROVAL_REQUIRED",))
            return True
        except Exception:
            log.exception("execauth: approval preview failed; the gate will decide at call time")
            return False

    # -- approvals ---------------------------------------------------------------
    # pending_approvals(), approval_status(), approve(), reject(), wait_for_approval()
    # and await_approval() come from ApprovalGate: the same on every execauth adapter.

    def _open(self, request: AuthorizationRequest, codes: tuple[str, ...]) -> str:
        """Record the pause (``REQUIRE_APPROVAL``, ``executed: false``) and open its
        approval request, once per pause of this proposal."""
        digest = request.content_digest()
        current = self._paused.get(digest)
        if current is not None:
            try:
                if self._approval_flow.status(current) == "pending":
                    return current  # the SDK asked again for the same pause
            except Exception:  # noqa: BLE001 - unreadable: open a new request
                log.debug("execauth: approval request %s unreadable; opening a new one", current)
        denial = self.guard.deny(
            request, codes, "paused: waiting for a person to approve this exact proposal", outcome="REQUIRE_APPROVAL"
        )
        if not isinstance(denial, ApprovalRequired):
            raise denial
        request_id = self._approval_flow.open(denial)
        _remember(self._paused, digest, request_id)
        return request_id

    def pending(self, result: Any) -> list[ApprovalRequest]:
        """The paused calls of an interrupted run, each with its approval request id.

        Approve one with ``gate.approve(request.request_id, approver=...)`` (or in the
        console for a remote authority), then ``state.approve(request.item)`` and
        ``Runner.run(agent, state)``: the gate fetches the grant from the authority
        and runs the call once. The SDK's approval alone runs nothing.

        Args:
            result: the ``RunResult`` / ``RunResultStreaming`` whose ``interruptions``
                are to be decided (its ``context_wrapper`` resolves the principal).
        """
        context = getattr(result, "context_wrapper", None)
        out: list[ApprovalRequest] = []
        for item in getattr(result, "interruptions", None) or []:
            if isinstance(item, ToolApprovalItem):
                out.append(self._approval_request(item, context))
        return out

    def _approval_request(self, item: ToolApprovalItem, context: Any) -> ApprovalRequest:
        name = item.tool_name or item.name or "?"
        invoker = _find_invoker(self, item)
        if invoker is None:
            denial = self.guard.deny(
                None, ("TOOL_NOT_ALLOWED",), "this paused call is not a tool gated by this ExecAuth", tool=name
            )
            return ApprovalRequest(item, None, denial)
        try:
            args = invoker.arguments(item.arguments)
            request = self.guard.proposal(
                invoker.tool_name,
                args,
                principal=self._principal(context),
                agent=invoker.agent_name(item.agent),
                call_id=item.call_id,
            )
            request_id = self._open(request, ("APPROVAL_REQUIRED",))
        except ExecutionDenied as exc:
            return ApprovalRequest(item, None, exc)
        except _BadArguments as exc:
            return ApprovalRequest(item, None, self.guard.deny(None, ("REQUEST_INVALID",), str(exc), tool=name))
        except Exception as exc:
            log.exception("execauth: could not build the paused proposal")
            denial = self.guard.deny(None, ("GUARD_ERROR",), f"internal error ({type(exc).__name__})", tool=name)
            return ApprovalRequest(item, None, denial)
        pending = PendingApproval(
            proposal_digest=request.content_digest(),
            request=request,
            reason_codes=("APPROVAL_REQUIRED",),
            requested_at=self.guard.clock.now(),
            request_id=request_id,
        )
        return ApprovalRequest(item, pending, request_id=request_id)

    def add_grant(self, grant: ApprovalGrant) -> None:
        """Hold a grant for the resumed call it covers (e.g. one approved in another process)."""
        if not isinstance(grant, ApprovalGrant):
            raise ConfigurationError("add_grant() takes an execauth_core.ApprovalGrant")
        _remember(self._grants, grant.proposal_digest, grant)


class _GatingToolList:
    """``agent.get_all_tools`` of a protected agent: the SDK's own, then every function
    tool in the answer is gated (idempotent for tools already gated)."""

    def __init__(self, gate: ExecAuth, agent: Agent[Any], original: Callable[..., Awaitable[list[Any]]]) -> None:
        self.gate = gate
        self.owner = agent.name
        self.original = original

    async def __call__(self, *args: Any, **kwargs: Any) -> list[Any]:
        tools = await self.original(*args, **kwargs)
        for tool in tools:
            if isinstance(tool, FunctionTool):
                self.gate._attach(tool, owner=self.owner, agent=AUTO)
        return tools


class _Named:
    """Stands in for an agent when only its name is known."""

    def __init__(self, name: str | None) -> None:
        self.name = name


def _remember(memory: OrderedDict[str, T], key: str, value: T) -> None:
    memory[key] = value
    memory.move_to_end(key)
    while len(memory) > _MEMORY_LIMIT:
        memory.popitem(last=False)


def _forget_failure(ctx: object) -> BaseException | None:
    failure = getattr(ctx, _FAILED_ATTR, None)
    if failure is not None:
        try:
            delattr(ctx, _FAILED_ATTR)
        except Exception:  # noqa: BLE001, S110 - nothing to forget
            pass
    return failure if isinstance(failure, BaseException) else None


def _find_invoker(gate: ExecAuth, item: ToolApprovalItem) -> _GatedInvoker | None:
    """The gated invoker of the tool a paused call belongs to (on the paused agent)."""
    agent = item.agent
    tools: Iterable[Any] = getattr(agent, "tools", None) or []
    for tool in tools:
        if isinstance(tool, FunctionTool) and tool.name == item.tool_name:
            invoker = tool.on_invoke_tool
            if isinstance(invoker, _GatedInvoker) and invoker.gate is gate:
                return invoker
    return None


def _defaults(tool: FunctionTool) -> dict[str, Any]:
    """Defaults of the tool's model-facing parameters (JSON values only), so an
    argument the model leaves out is still in the proposal with the value the tool
    will use: a default can never slip past a rule."""
    schema = tool.params_json_schema if isinstance(tool.params_json_schema, dict) else {}
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    found: dict[str, Any] = {}
    for name, spec in properties.items():
        if isinstance(spec, dict) and "default" in spec:
            found[name] = spec["default"]
    # The schema drops some defaults (e.g. ``None`` in strict mode); the function's
    # own signature has them all. ``__wrapped__`` is the SDK's public handle on it.
    try:
        fn = tool.__wrapped__
        parameters = inspect.signature(fn).parameters.values()
    except (AttributeError, TypeError, ValueError):
        parameters = ()  # type: ignore[assignment]
    for p in parameters:
        if p.name in properties and p.name not in found and p.default is not inspect.Parameter.empty:
            found[p.name] = p.default
    usable: dict[str, Any] = {}
    for name, value in found.items():
        try:
            canonicalize(value)
        except Exception:  # noqa: BLE001, S112 - not JSON: the proposal cannot carry it
            continue
        usable[name] = value
    return usable
