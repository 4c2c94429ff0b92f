"""Gate AutoGen AgentChat (0.6.2+) tool calls through a guarded ``Workbench``.

``AssistantAgent(workbench=ExecAuthWorkbench(tools, guard, principal=...))``: the
agent hands every tool call of the model to ``Workbench.call_tool`` (concurrently
when the model makes parallel calls). ``ExecAuthWorkbench.call_tool`` builds the
proposal from the tool name, the complete arguments and the model's call id, and
runs the tool only on ALLOW, with exactly the authorized arguments. Every other
outcome is a ``ToolResult(is_error=True)`` whose text names the reason code; the
agent turns it into a ``FunctionExecutionResult(is_error=True)`` the model sees.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import Any

try:
    from autogen_core import CancellationToken
    from autogen_core.tools import BaseTool, StaticWorkbench, TextResultContent, ToolResult
except ImportError as exc:  # pragma: no cover - exercised in the classic env
    raise ImportError(
        "execauth_autogen.agentchat needs AutoGen AgentChat: pip install 'execauth-autogen[agentchat]'"
    ) from exc

from execauth_core import AuthorizationRequest, ConfigurationError, ExecutionDenied, Guard
from execauth_core.approval_flow import ApprovalGate

from ._common import Approver, Gate, Resolver, TokenProvider, authorized_args, model_text

log = logging.getLogger("execauth.autogen")

__all__ = ["ExecAuthWorkbench"]


def _check_framework() -> None:
    # call_id reached Workbench.call_tool in autogen-core 0.6.2; without it proposals
    # could not name the model's tool call.
    if "call_id" not in inspect.signature(StaticWorkbench.call_tool).parameters:
        raise ConfigurationError(
            "execauth-autogen needs autogen-core >= 0.6.2 (Workbench.call_tool with call_id): "
            "pip install 'execauth-autogen[agentchat]'"
        )


_check_framework()


class _ToolFailed(Exception):
    """The tool ran and reported an error: lets the guard record an error result."""

    def __init__(self, result: ToolResult) -> None:
        super().__init__("the tool reported an error")
        self.result = result


def _error(name: str, text: str) -> ToolResult:
    return ToolResult(name=name, result=[TextResultContent(content=text)], is_error=True)


class ExecAuthWorkbench(StaticWorkbench, ApprovalGate):
    """A ``StaticWorkbench`` whose every ``call_tool`` goes through the execauth guard.

    Pass it as ``AssistantAgent(workbench=...)`` (not ``tools=``, which builds an
    unguarded workbench).

    Args:
        tools: the tools, as for ``StaticWorkbench``.
        guard: the execauth guard.
        principal: on whose behalf calls are made (string, or a zero-argument callable
            read at each call, e.g. from a contextvar).
        agent: the agent name recorded in proposals (string, callable, or None).
        token_provider: verify tokens issued elsewhere instead of deciding here
            (sync or async); ``None`` from it denies with NO_TOKEN.
        approver: asked on REQUIRE_APPROVAL (e.g.
            ``input_approver(input, approver="alice")``); returns who approved, or None to
            reject. Without one, the model is told the call awaits approval, and
            :meth:`approve_and_run` runs it once a person approves.
        tool_overrides: as for ``StaticWorkbench`` (autogen-core >= 0.6.4). Proposals
            name the *original* tool, so a renamed tool cannot slip past a rule.
    """

    component_provider_override = "execauth_autogen.agentchat.ExecAuthWorkbench"

    def __init__(
        self,
        tools: Sequence[BaseTool[Any, Any]],
        guard: Guard,
        *,
        principal: Resolver,
        agent: Resolver = None,
        token_provider: TokenProvider | None = None,
        approver: Approver | None = None,
        tool_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self._guarded_tools = list(tools)
        if tool_overrides:
            super().__init__(self._guarded_tools, tool_overrides=dict(tool_overrides))
        else:
            super().__init__(self._guarded_tools)
        self._gate = Gate(guard, principal=principal, agent=agent, token_provider=token_provider, approver=approver)
        self._approval_flow = self._gate.flow
        self._original_names = {
            getattr(override, "name", None) or original: original
            for original, override in (tool_overrides or {}).items()
        }

    @property
    def guard(self) -> Guard:
        """The guard every call goes through."""
        return self._gate.guard

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Decide, then (only on ALLOW) run the tool with the authorized arguments.

        Never raises for a refused call: the refusal is a ``ToolResult(is_error=True)``
        naming the reason code, and nothing ran.
        """
        proposal: AuthorizationRequest | None = None
        ran = False

        async def run_tool(args: dict[str, Any]) -> ToolResult:
            nonlocal ran
            ran = True
            result = await StaticWorkbench.call_tool(self, name, args, cancellation_token, call_id)
            if result.is_error:
                raise _ToolFailed(result)  # recorded as an error result, then returned below
            return result

        try:
            tool_name = self._original_names.get(name, name)
            args = self._complete_args(tool_name, arguments)
            proposal = self._gate.propose(tool_name, args, call_id=call_id)
            authorized = authorized_args(proposal)
            result: ToolResult = await self._gate.arun(proposal, lambda: run_tool(authorized))
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(name, model_text(exc))
        except Exception as exc:  # noqa: BLE001 - fail closed: any error before the tool ran denies
            if ran:
                # The tool ran; StaticWorkbench already turns tool exceptions into
                # results, so this is rare. Report it without crashing the agent.
                log.error("execauth: error after %r ran: %r", name, exc)
                return _error(name, f"{type(exc).__name__}: {exc}")
            return _error(name, model_text(self._gate.failed(proposal, name, exc)))

    def _complete_args(self, tool_name: str, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Every argument the tool will run with: the model's, coerced and completed
        with defaults by the tool's own argument model, so a default or a coercion can
        never differ from what was authorized. Arguments the tool does not know stay
        in, so the policy sees everything the model sent."""
        args = dict(arguments or {})
        tool = next((t for t in self._guarded_tools if t.name == tool_name), None)
        if tool is None:
            return args  # StaticWorkbench answers "not found"; the guard still decides first
        try:
            full = tool.args_type().model_validate(args).model_dump(mode="json")
        except Exception:  # noqa: BLE001 - the tool will refuse these arguments itself
            return args
        return {**args, **full} if isinstance(full, dict) else args

    # -- approvals ------------------------------------------------------------
    # pending_approvals(), approval_status(), approve(), reject(), wait_for_approval()
    # and await_approval() come from ApprovalGate: the same on every execauth adapter.

    async def resume(self, request_id: str) -> ToolResult:
        """Run the paused call of ``request_id`` (same arguments, same call id) once
        its approval request is approved at the authority, and return its result, to
        hand back to the agent. A pending, rejected, expired or used request runs
        nothing: the result is the (recorded) denial.

        Raises:
            KeyError: no call of this workbench paused under that request.
        """
        try:
            result: ToolResult = await self._gate.aresume(request_id)
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(exc.tool or "tool", model_text(exc))

    async def approve_and_run(self, proposal_digest: str, *, approver: str) -> ToolResult:
        """Approve (in the guard's own queue) the newest paused request for
        ``proposal_digest`` and run it: :meth:`approve` then :meth:`resume`.

        Raises:
            KeyError: nothing waits under that digest.
        """
        try:
            result: ToolResult = await self._gate.aapprove_and_run(proposal_digest, approver=approver)
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(exc.tool or "tool", model_text(exc))

    # -- serialization ----------------------------------------------------------

    def _to_config(self) -> Any:
        # Dumped as a plain StaticWorkbench, a reloaded agent would run its tools
        # unguarded. A live Guard (keys, stores) has no safe config form.
        raise NotImplementedError(
            "ExecAuthWorkbench cannot be serialized: it holds a live execauth Guard. "
            "Rebuild it in code after loading the agent's other components."
        )


def check_agent(agent: Any) -> Any:
    """Refuse an agent whose tools are not all behind an :class:`ExecAuthWorkbench`.

    ``AssistantAgent(workbench=[ExecAuthWorkbench(...), StaticWorkbench([...])])`` is
    accepted by AutoGen, and the second workbench's tools would run ungated; so would
    ``tools=`` (AutoGen builds a plain workbench for them). Call this once the agent is
    built (it reads AutoGen's ``_workbench`` list, where ``AssistantAgent`` keeps every
    workbench it will call).

    Returns:
        The agent, for chaining.

    Raises:
        ConfigurationError: a workbench of the agent is not an ``ExecAuthWorkbench``
            (named in the message), or the agent shows no workbench list at all.
    """
    from execauth_core import ConfigurationError

    name = getattr(agent, "name", type(agent).__name__)
    benches = getattr(agent, "_workbench", None)
    if benches is None:
        raise ConfigurationError(f"agent {name!r} shows no workbench list: cannot check that its tools are gated")
    if not isinstance(benches, (list, tuple)):
        benches = [benches]
    ungated = [type(bench).__name__ for bench in benches if not _is_gated(bench)]
    if ungated:
        raise ConfigurationError(
            f"agent {name!r} has workbench(es) not gated by execauth: {', '.join(ungated)}; "
            "put every tool in an ExecAuthWorkbench (and pass no tools=)"
        )
    return agent


def _is_gated(bench: Any) -> bool:
    if isinstance(bench, ExecAuthWorkbench):
        return True
    # ExecAuthMcpWorkbench (execauth_autogen.mcp) needs autogen-ext[mcp]: look it up only if loaded.
    import sys

    mcp = sys.modules.get("execauth_autogen.mcp")
    return mcp is not None and isinstance(bench, mcp.ExecAuthMcpWorkbench)
