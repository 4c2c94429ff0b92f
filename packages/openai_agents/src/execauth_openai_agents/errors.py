"""Exceptions the adapter raises into the Agents SDK run.

Both subclass ``agents.exceptions.AgentsException``: the SDK re-raises those from a
tool task unchanged, so the run stops with our exception (not a wrapped ``UserError``)
and the caller can tell an execauth stop from any other failure::

    AgentsException (agents)
    ├── ToolCallDenied      on_denial="raise": the guard refused a call; the run stops
    └── UngatedToolError    ExecAuthRunHooks(strict=True) met a tool execauth does not gate
"""

from __future__ import annotations

from agents.exceptions import AgentsException

from execauth_core import ExecutionDenied, denial_message


class ToolCallDenied(AgentsException):
    """The guard refused a tool call and the gate was configured to stop the run.

    Attributes:
        denial: the recorded :class:`~execauth_core.ExecutionDenied` (outcome, reason
            codes, proposal digest, audit sequence number).
    """

    def __init__(self, denial: ExecutionDenied) -> None:
        super().__init__(denial_message(denial))
        self.denial = denial


class UngatedToolError(AgentsException):
    """A tool that execauth does not gate was about to run; the run was stopped first.

    Raised from ``RunHooks.on_tool_start`` (the SDK's only way to stop a call there),
    before the tool is invoked.
    """

    def __init__(self, tool_name: str, kind: str) -> None:
        super().__init__(
            f"execauth: refusing to run {kind} '{tool_name}': it is not gated by this ExecAuth "
            "(protect the agent that owns it, or run without strict hooks)"
        )
        self.tool_name = tool_name
        self.kind = kind
