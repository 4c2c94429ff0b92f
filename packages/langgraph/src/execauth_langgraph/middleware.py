"""``langchain.agents.create_agent`` middleware that gates every tool call.

``create_agent(model, tools, middleware=[ExecAuthMiddleware(guard, principal=...)])``.
Hook: ``AgentMiddleware.wrap_tool_call`` / ``awrap_tool_call``, which ``create_agent``
composes into its ``ToolNode``; the gating is :class:`ExecAuthToolWrapper`'s.

Put it *last* in ``middleware=[...]``: the first middleware is the outermost, so a
middleware listed after this one could still rewrite a call's arguments after the
guard approved them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from langchain.agents.middleware import AgentMiddleware
from langgraph.prebuilt.tool_node import ToolCallRequest

from execauth_core.approval_flow import ApprovalGate

from .wrapper import ExecAuthToolWrapper, ToolResult


class ExecAuthMiddleware(AgentMiddleware, ApprovalGate):  # generic arity differs across langchain 1.x
    """Agent middleware: every tool call the agent proposes goes through the guard.

    Arguments as for :class:`~execauth_langgraph.ExecAuthToolWrapper`; so are the
    approval methods (``pending_approvals()``, ``approve(request_id, ...)``, ...).
    """

    def __init__(self, guard: Any, **options: Any) -> None:
        super().__init__()
        self.wrapper = ExecAuthToolWrapper(guard, **options)
        self._approval_flow = self.wrapper._approval_flow

    def wrap_tool_call(self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], ToolResult]) -> ToolResult:
        """Sync path (``agent.invoke``)."""
        return self.wrapper(request, handler)

    async def awrap_tool_call(
        self, request: ToolCallRequest, handler: Callable[[ToolCallRequest], Awaitable[ToolResult]]
    ) -> ToolResult:
        """Async path (``agent.ainvoke``)."""
        return await self.wrapper.acall(request, handler)
