"""Gate an MCP server's tools in AutoGen AgentChat: ``ExecAuthMcpWorkbench``.

``AssistantAgent(workbench=ExecAuthMcpWorkbench(server_params, guard, server="files",
principal=...))``: an ``McpWorkbench`` (autogen-ext[mcp]) whose every ``call_tool`` is
decided first. The proposal's tool is ``<server>.<tool>`` (``server`` is the identity
you give the server; the naming ``execauth mcp-proxy`` uses, so one policy covers
both, :mod:`execauth_core.mcp_names`), its arguments the MCP call's arguments, its
call id the model's. Only ALLOW reaches the server, once, with exactly the authorized
arguments; every other outcome is a ``ToolResult(is_error=True)`` naming the reason
code, and nothing was sent to the server.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

try:
    from autogen_core import CancellationToken
    from autogen_core.tools import ToolResult
    from autogen_ext.tools.mcp import McpWorkbench
except ImportError as exc:  # pragma: no cover - exercised where autogen-ext[mcp] is missing
    raise ImportError("execauth_autogen.mcp needs AutoGen's McpWorkbench: pip install 'execauth-autogen[mcp]'") from exc

from execauth_core import AuthorizationRequest, ExecutionDenied, Guard
from execauth_core.approval_flow import ApprovalGate
from execauth_core.mcp_names import check_server_name, mcp_arguments, mcp_tool_name

from ._common import Approver, Gate, Resolver, TokenProvider, authorized_args, model_text
from .agentchat import _error, _ToolFailed

log = logging.getLogger("execauth.autogen")

__all__ = ["ExecAuthMcpWorkbench"]


class ExecAuthMcpWorkbench(McpWorkbench, ApprovalGate):
    """An ``McpWorkbench`` whose every ``call_tool`` goes through the execauth guard.

    Args:
        server_params: as for ``McpWorkbench`` (``StdioServerParams``,
            ``StreamableHttpServerParams``, ...).
        guard: the execauth guard.
        server: the server's identity in proposals (``<server>.<tool>``): letters,
            digits, ``_`` or ``-``.
        principal, agent, token_provider, approver: as for ``ExecAuthWorkbench``.
        tool_overrides: as for ``McpWorkbench`` (autogen-ext >= 0.6.4). Proposals name
            the server's *original* tool, so a renamed tool cannot slip past a rule.
    """

    component_provider_override = "execauth_autogen.mcp.ExecAuthMcpWorkbench"

    def __init__(
        self,
        server_params: Any,
        guard: Guard,
        *,
        server: str,
        principal: Resolver,
        agent: Resolver = None,
        token_provider: TokenProvider | None = None,
        approver: Approver | None = None,
        tool_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        # McpWorkbench first (it connects nothing yet): its __del__ expects its attributes.
        if tool_overrides:
            super().__init__(server_params, tool_overrides=dict(tool_overrides))  # type: ignore[call-arg, unused-ignore]
        else:
            super().__init__(server_params)
        self._server = check_server_name(server)
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

    @property
    def server(self) -> str:
        """The server's identity in proposals."""
        return self._server

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        cancellation_token: CancellationToken | None = None,
        call_id: str | None = None,
    ) -> ToolResult:
        """Decide, then (only on ALLOW) send the call to the MCP server with the
        authorized arguments. A refused call is a ``ToolResult(is_error=True)``."""
        proposal: AuthorizationRequest | None = None
        tool = mcp_tool_name(self._server, self._original_names.get(name, name))
        ran = False

        async def run_tool(args: dict[str, Any]) -> ToolResult:
            nonlocal ran
            ran = True
            result = await McpWorkbench.call_tool(self, name, args, cancellation_token, call_id)
            if result.is_error:
                raise _ToolFailed(result)  # recorded as an error result, then returned below
            return result

        try:
            proposal = self._gate.propose(tool, mcp_arguments(arguments), call_id=call_id)
            authorized = authorized_args(proposal)
            result: ToolResult = await self._gate.arun(proposal, lambda: run_tool(authorized))
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(name, model_text(exc))
        except Exception as exc:  # noqa: BLE001 - fail closed: any error before the call was sent denies
            if ran:
                log.error("execauth: error after MCP tool %r was called: %r", tool, exc)
                return _error(name, f"{type(exc).__name__}: {exc}")
            return _error(name, model_text(self._gate.failed(proposal, tool, exc)))

    # -- approvals: pending_approvals(), approval_status(), approve(), reject(),
    # wait_for_approval() and await_approval() come from ApprovalGate, as on
    # ExecAuthWorkbench.

    async def resume(self, request_id: str) -> ToolResult:
        """Run the paused MCP call of ``request_id`` once its approval request is
        approved at the authority; a pending, rejected, expired or used request runs
        nothing (the result is the recorded denial)."""
        try:
            result: ToolResult = await self._gate.aresume(request_id)
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(exc.tool or "tool", model_text(exc))

    async def approve_and_run(self, proposal_digest: str, *, approver: str) -> ToolResult:
        """A person approved the pending call: send exactly that call and return its result."""
        try:
            result: ToolResult = await self._gate.aapprove_and_run(proposal_digest, approver=approver)
            return result
        except _ToolFailed as failed:
            return failed.result
        except ExecutionDenied as exc:
            return _error(exc.tool or "tool", model_text(exc))

    def _to_config(self) -> Any:
        raise NotImplementedError(
            "ExecAuthMcpWorkbench cannot be serialized: it holds a live execauth Guard. "
            "Rebuild it in code after loading the agent's other components."
        )
