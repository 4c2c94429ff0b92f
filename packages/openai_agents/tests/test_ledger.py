"""The same function-call id proposed again follows the effect ledger: the tool runs
once, the model reads the ledger's answer, and the repeat is recorded."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner
from execauth_openai_agents import ExecAuth

from .harness import ScriptedModel, call, make_tool, say

T0 = 1_767_225_600


@pytest.mark.asyncio
async def test_the_same_call_id_proposed_again_does_not_run_again() -> None:
    guard = Guard.local(AllowListPolicy(("transfer",)), clock=FixedClock(T0), signer=LocalSigner(bytes(range(32))))
    runs: list[dict[str, Any]] = []

    def transfer(**kw: Any) -> str:
        runs.append(kw)
        return "transferred t-1"

    args = {"amount": "5.00", "to": "bob"}
    model = ScriptedModel([call("transfer", args, "c1")], [say("1")], [call("transfer", args, "c1")], [say("2")])
    agent = ExecAuth(guard, principal="alice").protect(
        Agent(name="bank", instructions="test", model=model, tools=[make_tool("transfer", transfer, list(args))])
    )
    await Runner.run(agent, "first")
    await Runner.run(agent, "second (a replayed turn)")
    assert runs == [args]
    assert "LEDGER_ALREADY_SUCCEEDED" in model.seen_outputs()["c1"]
    last = [e for e in guard.audit_log.entries() if e.event == "denial"][-1]
    assert (last.executed, last.body["reason_codes"], last.body["call_id"]) == (
        False,
        ["LEDGER_ALREADY_SUCCEEDED"],
        "c1",
    )
    # A new call id is a new call: decided, and it runs.
    other = ScriptedModel([call("transfer", args, "c2")], [say("3")])
    agent2 = ExecAuth(guard, principal="alice").protect(
        Agent(name="bank", instructions="test", model=other, tools=[make_tool("transfer", transfer, list(args))])
    )
    await Runner.run(agent2, "third")
    assert runs == [args, args]
