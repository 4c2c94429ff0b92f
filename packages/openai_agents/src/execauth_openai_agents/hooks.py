"""Run hooks: defence in depth around the per-tool gate.

The gate lives on each ``FunctionTool``; ``protect()`` also gates, each turn, the
function tools the SDK lists for a protected agent (tools added later, an MCP server's
tools). A tool still not gated (a local computer/shell/apply-patch tool, the tools of
an agent ``protect()`` never reached) would run unchecked. These hooks close that gap for
the run they are passed to: every agent is protected as it starts (so agents reached
through handoffs are gated even if ``protect()`` could not see them), and with
``strict=True`` a tool this gate does not cover stops the run in ``on_tool_start``,
before it is invoked. ``on_tool_start`` can only abort the run, not deny one call, so
it is the backstop, never the gate.

Nested runs of ``Agent.as_tool()`` take their own ``hooks=`` argument: pass these
hooks there too, or rely on ``protect()`` having reached the nested agent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from agents import Agent, FunctionTool, RunHooks

from .errors import UngatedToolError

if TYPE_CHECKING:
    from .gate import ExecAuth


class ExecAuthRunHooks(RunHooks[Any]):
    """``Runner.run(agent, input, hooks=ExecAuthRunHooks(gate))``.

    Subclass it (calling ``super()``) to add hooks of your own.

    Args:
        gate: the :class:`~execauth_openai_agents.ExecAuth` whose tools are trusted.
        strict: stop the run before any tool this gate does not cover runs.
    """

    def __init__(self, gate: ExecAuth, *, strict: bool = True) -> None:
        super().__init__()
        self.gate = gate
        self.strict = strict

    async def on_agent_start(self, context: Any, agent: Any) -> None:
        if isinstance(agent, Agent):
            self.gate.protect(agent)

    async def on_tool_start(self, context: Any, agent: Any, tool: Any) -> None:
        if not self.strict or self.gate.is_gated(tool):
            return
        kind = "function tool" if isinstance(tool, FunctionTool) else type(tool).__name__
        raise UngatedToolError(str(getattr(tool, "name", "?")), kind)
