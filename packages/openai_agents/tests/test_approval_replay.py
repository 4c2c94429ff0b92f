"""One approval funds exactly one execution, through the real Agents SDK ``Runner``
(the field test's replay, issue 16): an old grant presented again when the model
re-proposes the identical call with the same call id is refused (APPROVAL_USED),
recorded with executed: false, and the tool does not run again."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner

from execauth_core import AllowListPolicy, ApprovalGrant, FixedClock, Guard, LocalSigner
from execauth_openai_agents import ExecAuth

from .harness import ScriptedModel, call, make_tool, say

T0 = 1_767_607_200
TRANSFER = {"amount": "50.00", "to": "bob"}


class Spy:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> str:
        self.calls.append(kw)
        return "sent"


def setup() -> tuple[Guard, Spy, ScriptedModel, Agent[Any], ExecAuth]:
    # The approval layer alone: with the effect ledger (the default) the identical call
    # with the same id in the later turn is answered from the ledger first (test_ledger.py).
    guard = Guard.local(
        AllowListPolicy(("transfer",), require_approval=("transfer",)),
        clock=FixedClock(T0),
        signer=LocalSigner(bytes(range(32))),
        ledger=False,
    )
    spy = Spy()
    # Two turns of the conversation, each proposing the identical call with the same id.
    model = ScriptedModel(
        [call("transfer", TRANSFER, "c1")], [say("sent")], [call("transfer", TRANSFER, "c1")], [say("again")]
    )
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(
        Agent(name="bank", instructions="test", model=model, tools=[make_tool("transfer", spy, ["amount", "to"])])
    )
    return guard, spy, model, agent, gate


def last(guard: Guard) -> tuple[str, bool, list[str]]:
    e = [e for e in guard.audit_log.entries() if e.event in ("execution", "denial")][-1]
    return (e.event, e.executed, list(e.body.get("reason_codes") or []))


async def first_turn(agent: Agent[Any], gate: ExecAuth) -> tuple[Any, ApprovalGrant]:
    paused = await Runner.run(agent, "pay bob")
    [request] = gate.pending(paused)
    state = paused.to_state()
    grant = gate.approve(state, request, approver="carol")
    done = await Runner.run(agent, state)
    return done, grant


@pytest.mark.asyncio
async def test_an_old_grant_sent_again_in_a_later_turn_is_refused() -> None:
    guard, spy, model, agent, gate = setup()
    done, old_grant = await first_turn(agent, gate)
    assert spy.calls == [TRANSFER]

    later = await Runner.run(agent, [*done.to_input_list(), {"role": "user", "content": "once more"}])
    [request] = gate.pending(later)
    assert request.proposal_digest == old_grant.proposal_digest  # the identical proposal
    state = later.to_state()
    gate.add_grant(ApprovalGrant.model_validate_json(old_grant.model_dump_json()))  # the old approval, re-sent
    state.approve(request.item)
    await Runner.run(agent, state)
    assert spy.calls == [TRANSFER]  # not a second time
    assert "APPROVAL_USED" in model.seen_outputs()["c1"]
    assert last(guard) == ("denial", False, ["APPROVAL_USED"])


@pytest.mark.asyncio
async def test_a_fresh_approval_in_a_later_turn_runs_once_more() -> None:
    guard, spy, _, agent, gate = setup()
    done, _ = await first_turn(agent, gate)
    later = await Runner.run(agent, [*done.to_input_list(), {"role": "user", "content": "once more"}])
    [request] = gate.pending(later)
    state = later.to_state()
    gate.approve(state, request, approver="dave")
    await Runner.run(agent, state)
    assert spy.calls == [TRANSFER, TRANSFER]
    assert last(guard) == ("execution", True, ["TOOL_ALLOWED", "APPROVAL_GRANTED"])


@pytest.mark.asyncio
async def test_one_paused_call_approved_twice_funds_one_run() -> None:
    """Two grants for one paused call (approve() called twice) answer one request:
    they carry its id, so the one not used is spent too."""
    guard, spy, model, agent, gate = setup()
    paused = await Runner.run(agent, "pay bob")
    [request] = gate.pending(paused)
    state = paused.to_state()
    spare = gate.approve(state, request, approver="carol")
    used = gate.approve(state, request, approver="carol")
    assert spare.grant_id == used.grant_id
    done = await Runner.run(agent, state)
    assert spy.calls == [TRANSFER]

    later = await Runner.run(agent, [*done.to_input_list(), {"role": "user", "content": "once more"}])
    [again] = gate.pending(later)
    state = later.to_state()
    gate.add_grant(spare)
    state.approve(again.item)
    await Runner.run(agent, state)
    assert spy.calls == [TRANSFER]
    assert "APPROVAL_USED" in model.seen_outputs()["c1"]
    assert last(guard) == ("denial", False, ["APPROVAL_USED"])
    # the later pause is a request of its own, recorded as such
    pauses = [e for e in guard.audit_log.entries() if e.body.get("reason_codes") == ["APPROVAL_REQUIRED"]]
    assert len(pauses) == 2
