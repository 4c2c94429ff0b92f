"""AgentChat: the same tool-call id proposed again follows the effect ledger."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from autogen_core.tools import FunctionTool

from execauth_autogen import ExecAuthWorkbench
from execauth_core import Guard

from .harness import call, make_agent, tool_results, turn


def test_the_same_call_id_proposed_again_does_not_run_again(make_guard: Callable[..., Guard]) -> None:
    guard, ran = make_guard(allow=["transfer"]), []

    def transfer(amount: str, to: str) -> str:
        ran.append((amount, to))
        return f"sent {amount} to {to}"

    wb = ExecAuthWorkbench([FunctionTool(transfer, description="transfer money")], guard, principal="user-42")
    same = call("c1", "transfer", {"amount": "50.00", "to": "bob"})
    first = tool_results(asyncio.run(make_agent(wb, turn(same), "done").run(task="go")))["c1"]
    again = tool_results(asyncio.run(make_agent(wb, turn(same), "done").run(task="a replayed turn")))["c1"]
    assert ran == [("50.00", "bob")]
    assert not first.is_error and again.is_error and "LEDGER_ALREADY_SUCCEEDED" in again.content
    last: Any = [e for e in guard.audit_log.entries() if e.event == "denial"][-1]
    assert (last.executed, last.body["reason_codes"], last.body["call_id"]) == (
        False,
        ["LEDGER_ALREADY_SUCCEEDED"],
        "c1",
    )
    other = call("c2", "transfer", {"amount": "50.00", "to": "bob"})
    asyncio.run(make_agent(wb, turn(other), "done").run(task="a new call"))
    assert ran == [("50.00", "bob")] * 2
