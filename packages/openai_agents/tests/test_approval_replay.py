"""One approval funds exactly one execution, through the real Agents SDK ``Runner``
(the field test's replay, issue 16): an old grant presented again when the model
re-proposes the identical call with the same call id is refused (APPROVAL_USED),
recorded with executed: false, and the tool does not run again."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner

from execauth_core import AllowListPolicy, ExecutionDenied, FixedClock, Guard, LocalSigner
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
        approvals=True,
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


async def first_turn(agent: Agent[Any], gate: ExecAuth) -> tuple[Any, Any, str]:
    paused = await Runner.run(agent, "pay bob")
    [request] = gate.pending(paused)
    assert request.request_id is not None and gate.approval_status(request.request_id) == "pending"
    [listed] = gate.pending_approvals()
    assert (listed.request_id, listed.tool, listed.arguments) == (request.request_id, "transfer", TRANSFER)
    state = paused.to_state()
    gate.approve(request.request_id, approver="carol")
    assert gate.wait_for_approval(request.request_id, timeout=1, poll_interval=0.01) == "approved"
    state.approve(request.item)
    done = await Runner.run(agent, state)
    return done, state, request.request_id


@pytest.mark.asyncio
async def test_approve_then_resume_runs_once_and_the_old_answer_is_refused() -> None:
    guard, spy, _, agent, gate = setup()
    _, state, rid = await first_turn(agent, gate)
    assert spy.calls == [TRANSFER] and gate.approval_status(rid) == "consumed"
    # The old answer re-sent: the approved run state resumed once more.
    await Runner.run(agent, state)
    assert spy.calls == [TRANSFER]  # not a second time
    assert [e.event for e in guard.audit_log.entries()].count("execution") == 1
    # The answer (the request id) presented again at the authority: refused, recorded.
    with pytest.raises(ExecutionDenied) as again:
        gate._approval_flow.grant_for(rid, guard.approvals.get(rid).proposal)  # type: ignore[union-attr]
    assert again.value.reason_codes == ("APPROVAL_USED",)


@pytest.mark.asyncio
async def test_a_later_turn_is_a_new_request() -> None:
    _, spy, model, agent, gate = setup()
    done, _, first = await first_turn(agent, gate)
    later = await Runner.run(agent, [*done.to_input_list(), {"role": "user", "content": "once more"}])
    [request] = gate.pending(later)
    assert request.request_id not in (None, first)
    state = later.to_state()
    state.approve(request.item)  # the SDK's yes, without a person's approval at the authority
    await Runner.run(agent, state)
    assert spy.calls == [TRANSFER]
    assert "APPROVAL_REQUIRED" in model.seen_outputs()["c1"]


@pytest.mark.asyncio
async def test_rejected_and_expired_requests_never_run() -> None:
    guard, spy, _, agent, gate = setup()
    paused = await Runner.run(agent, "pay bob")
    [request] = gate.pending(paused)
    gate.reject(request.request_id, approver="carol", comment="no")
    state = paused.to_state()
    state.approve(request.item)
    await Runner.run(agent, state)
    assert spy.calls == [] and last(guard) == ("denial", False, ["APPROVAL_REJECTED"])

    guard, spy, _, agent, gate = setup()
    paused = await Runner.run(agent, "pay bob")
    [request] = gate.pending(paused)
    guard.clock.advance(3601)  # type: ignore[attr-defined]
    assert await gate.await_approval(request.request_id, timeout=1, poll_interval=0.01) == "expired"
    state = paused.to_state()
    state.approve(request.item)
    await Runner.run(agent, state)
    assert spy.calls == [] and last(guard) == ("denial", False, ["APPROVAL_EXPIRED"])


def test_the_shared_approval_methods() -> None:
    import inspect

    from execauth_core.approval_flow import GATE_METHODS, ApprovalGate

    for name in GATE_METHODS:
        assert inspect.signature(getattr(ExecAuth, name)) == inspect.signature(getattr(ApprovalGate, name))
