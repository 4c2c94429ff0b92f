"""ExecAuthMcpWorkbench against a real MCP server subprocess (stdio), through a real
``AssistantAgent`` run with a scripted model."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("autogen_ext.tools.mcp")

from autogen_ext.tools.mcp import StdioServerParams

from execauth_autogen.agentchat import check_agent
from execauth_autogen.mcp import ExecAuthMcpWorkbench
from execauth_conformance import mcp_server as srv
from execauth_core import AuthorizationRequest, ConfigurationError

from .harness import call, make_agent, tool_results, turn


def decided(guard: Any) -> list[tuple[str, str, bool, list[str]]]:
    return [
        (e.event, e.body.get("tool"), e.executed, list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    ]


def test_mcp_workbench_calls_are_gated(tmp_path: Path) -> None:
    log = tmp_path / "effects.log"
    command = srv.stdio_command(log)
    guard = srv.guard()

    async def main() -> Any:
        # Generous: a loaded CI machine starts the server subprocess slowly.
        params = StdioServerParams(command=command[0], args=command[1:], read_timeout_seconds=120)
        async with ExecAuthMcpWorkbench(params, guard, server="files", principal="alice") as bench:
            agent = check_agent(
                make_agent(
                    bench,  # type: ignore[arg-type]
                    turn(
                        call("c1", "write_note", {"text": "hello"}),
                        call("c2", "delete_all", {}),
                        call("c3", "undeclared", {}),
                    ),
                    "done",
                )
            )
            return await agent.run(task="go")

    seen = tool_results(asyncio.run(main()))
    assert srv.effects(log) == ["write_note hello"]
    assert seen["c1"].is_error is False and "wrote hello" in seen["c1"].content
    assert seen["c2"].is_error is True and "TOOL_NOT_ALLOWED" in seen["c2"].content
    assert seen["c3"].is_error is True and "UNKNOWN_TOOL" in seen["c3"].content
    assert decided(guard) == [
        ("execution", "files.write_note", True, ["TOOL_ALLOWED"]),
        ("denial", "files.delete_all", False, ["TOOL_NOT_ALLOWED"]),
        ("denial", "files.undeclared", False, ["UNKNOWN_TOOL"]),
    ]
    # The proposal was exactly files.write_note with the MCP call's arguments.
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    expected = AuthorizationRequest(
        tool="files.write_note", args={"text": "hello"}, principal="alice", agent=execution.body["agent"], call_id="c1"
    )
    assert execution.body["proposal_digest"] == expected.content_digest()


def test_server_identity_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="identity"):
        ExecAuthMcpWorkbench(StdioServerParams(command="true"), srv.guard(), server="a.b", principal="alice")


def test_mcp_workbench_has_the_shared_approval_methods() -> None:
    """The MCP workbench is an ApprovalGate like ExecAuthWorkbench: the same methods,
    working on its gate's queue (pending_approvals() used to raise AttributeError)."""
    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate

    bench = ExecAuthMcpWorkbench(StdioServerParams(command="true"), srv.guard(), server="files", principal="alice")
    assert isinstance(bench, ApprovalGate)
    assert all(callable(getattr(bench, name)) for name in GATE_METHODS)
    assert bench.pending_approvals() == []
    with pytest.raises(KeyError):
        asyncio.run(bench.resume("apr_nothing-waits-here"))
