"""execauth-openai-agents through the real Agents SDK ``Runner`` and a scripted model."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, FunctionTool, RunContextWrapper, Runner, function_tool, handoff
from agents.run_state import RunState

import execauth_openai_agents
from execauth_core import (
    AllowListPolicy,
    ApprovalGrant,
    AuthorizationRequest,
    ConfigurationError,
    ExecutionDenied,
    FixedClock,
    Guard,
    LocalSigner,
    StoreUnavailable,
    denial_message,
)
from execauth_openai_agents import ExecAuth, ToolCallDenied, UngatedToolError

from .harness import ScriptedModel, call, make_tool, say

T0 = 1_767_607_200


class Spy:
    """The real tool body: records every call it gets."""

    def __init__(self, name: str = "tool") -> None:
        self.name = name
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> str:
        self.calls.append(kw)
        return f"{self.name} ran with {sorted(kw.items())}"


def make_guard(allow: tuple[str, ...] = ("search", "transfer"), approval: tuple[str, ...] = ()) -> Guard:
    return Guard.local(
        AllowListPolicy(allow, require_approval=approval),
        clock=FixedClock(T0),
        signer=LocalSigner(bytes(range(32))),
        approvals=True,
    )


def audit(guard: Guard) -> list[tuple[str, bool, list[str]]]:
    return [
        (e.event, e.executed, list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event != "approval"
    ]


def decisive(guard: Guard) -> list[tuple[str, str | None, list[str]]]:
    """(event, call_id, reason codes) of every execution and denial record."""
    return [
        (e.event, e.body.get("call_id"), list(e.body.get("reason_codes") or []))
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    ]


def agent_with(model: ScriptedModel, *tools: FunctionTool, name: str = "bank", **kw: Any) -> Agent[Any]:
    return Agent(name=name, instructions="test", model=model, tools=list(tools), **kw)


# -- allow / deny --------------------------------------------------------------


@pytest.mark.asyncio
async def test_allowed_call_runs_once_and_the_model_sees_its_result() -> None:
    guard, spy = make_guard(), Spy("search")
    model = ScriptedModel([call("search", {"q": "refunds"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, make_tool("search", spy, ["q"])))
    result = await Runner.run(agent, "go")
    assert spy.calls == [{"q": "refunds"}]
    assert "search ran" in model.seen_outputs()["c1"]
    assert result.final_output == "ok"
    assert audit(guard) == [("execution", True, ["TOOL_ALLOWED"]), ("result", True, [])]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert (execution.body["principal"], execution.body["agent"], execution.body["call_id"]) == ("alice", "bank", "c1")


@pytest.mark.asyncio
async def test_denied_call_never_runs_and_the_model_reads_the_reason() -> None:
    guard, spy = make_guard(allow=("search",)), Spy("transfer")
    model = ScriptedModel([call("transfer", {"amount": "50.00", "to": "mallory"}, "c1")], [say("sorry")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, make_tool("transfer", spy, ["amount", "to"])))
    result = await Runner.run(agent, "go")
    assert spy.calls == []
    seen = model.seen_outputs()["c1"]
    assert "TOOL_NOT_ALLOWED" in seen and seen.startswith("execauth denied 'transfer'")
    assert result.final_output == "sorry"
    assert audit(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"])]


@pytest.mark.asyncio
async def test_replayed_token_is_refused_the_second_time() -> None:
    guard, spy = make_guard(), Spy("search")
    request = AuthorizationRequest(tool="search", args={"q": "x"}, principal="alice", agent="bank", call_id="c1")
    token = guard.authorize(request).token
    assert token is not None
    model = ScriptedModel(
        [call("search", {"q": "x"}, "c1")], [say("1")], [call("search", {"q": "x"}, "c1")], [say("2")]
    )
    gate = ExecAuth(guard, principal="alice", token_provider=lambda r: token)
    agent = gate.protect(agent_with(model, make_tool("search", spy, ["q"])))
    await Runner.run(agent, "first")
    await Runner.run(agent, "second")
    assert spy.calls == [{"q": "x"}]
    assert "TOKEN_REPLAYED" in model.seen_outputs()["c1"]
    assert audit(guard)[-1] == ("denial", False, ["TOKEN_REPLAYED"])


@pytest.mark.asyncio
async def test_async_token_provider_is_awaited() -> None:
    guard, spy = make_guard(), Spy("search")

    async def provider(request: AuthorizationRequest) -> str | None:
        return guard.authorize(request).token

    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice", token_provider=provider).protect(
        agent_with(model, make_tool("search", spy, ["q"]))
    )
    await Runner.run(agent, "go")
    assert spy.calls == [{"q": "x"}]
    assert [e for e, _, _ in audit(guard)] == ["decision", "execution", "result"]


@pytest.mark.asyncio
async def test_parallel_calls_are_decided_one_by_one() -> None:
    guard = make_guard(allow=("search",))
    search, transfer = Spy("search"), Spy("transfer")
    model = ScriptedModel(
        [
            call("search", {"q": "a"}, "c1"),
            call("transfer", {"amount": "9", "to": "eve"}, "c2"),
            call("search", {"q": "b"}, "c3"),
        ],
        [say("done")],
    )
    agent = ExecAuth(guard, principal="alice").protect(
        agent_with(model, make_tool("search", search, ["q"]), make_tool("transfer", transfer, ["amount", "to"]))
    )
    await Runner.run(agent, "go")
    assert sorted(c["q"] for c in search.calls) == ["a", "b"] and transfer.calls == []
    seen = model.seen_outputs()
    assert "search ran" in seen["c1"] and "search ran" in seen["c3"] and "TOOL_NOT_ALLOWED" in seen["c2"]
    assert sorted(decisive(guard)) == [
        ("denial", "c2", ["TOOL_NOT_ALLOWED"]),
        ("execution", "c1", ["TOOL_ALLOWED"]),
        ("execution", "c3", ["TOOL_ALLOWED"]),
    ]


@pytest.mark.asyncio
async def test_the_tool_gets_the_authorized_arguments_with_its_defaults() -> None:
    seen_requests: list[AuthorizationRequest] = []
    guard = make_guard(allow=("lookup",))
    got: list[tuple[str, int, list[str] | None]] = []

    @function_tool
    def lookup(q: str, limit: int = 5, tags: list[str] | None = None) -> str:
        """Look something up."""
        got.append((q, limit, tags))
        return "found"

    def provider(request: AuthorizationRequest) -> str | None:
        seen_requests.append(request)
        return guard.authorize(request).token

    # Duplicate keys would be "last wins" for json.loads; strict parsing refuses them.
    model = ScriptedModel([call("lookup", {"q": "x"}, "c1"), call("lookup", '{"q": "a", "q": "b"}', "c2")], [say("ok")])
    agent = ExecAuth(guard, principal="alice", token_provider=provider).protect(agent_with(model, lookup))
    await Runner.run(agent, "go")
    assert got == [("x", 5, None)]
    assert [r.args for r in seen_requests] == [{"q": "x", "limit": 5, "tags": None}]
    assert "REQUEST_INVALID" in model.seen_outputs()["c2"]
    assert ("denial", None, ["REQUEST_INVALID"]) in decisive(guard)


@pytest.mark.asyncio
async def test_malformed_arguments_deny_without_running() -> None:
    guard, spy = make_guard(), Spy("search")
    model = ScriptedModel([call("search", "not json", "c1"), call("search", "[1, 2]", "c2")], [say("ok")])
    agent = ExecAuth(guard, principal="alice", approvals=False).protect(
        agent_with(model, make_tool("search", spy, ["q"]))
    )
    await Runner.run(agent, "go")
    assert spy.calls == []
    seen = model.seen_outputs()
    assert "REQUEST_INVALID" in seen["c1"] and "REQUEST_INVALID" in seen["c2"]
    assert [codes for _, _, codes in decisive(guard)] == [["REQUEST_INVALID"], ["REQUEST_INVALID"]]


@pytest.mark.asyncio
async def test_malformed_arguments_pause_first_when_approvals_are_on() -> None:
    """The SDK asks for approval itself when a callable needs_approval cannot parse the
    arguments; such a pause has no proposal and can only be rejected."""
    guard, spy = make_guard(), Spy("search")
    model = ScriptedModel([call("search", "not json", "c1")], [say("ok")])
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(agent_with(model, make_tool("search", spy, ["q"])))
    first = await Runner.run(agent, "go")
    [request] = gate.pending(first)
    assert request.pending is None and request.denial is not None
    assert request.denial.reason_codes == ("REQUEST_INVALID",)
    state = first.to_state()
    assert request.request_id is None  # nothing a person could approve
    state.reject(request.item, rejection_message=denial_message(request.denial))
    await Runner.run(agent, state)
    assert spy.calls == []
    assert "REQUEST_INVALID" in model.seen_outputs()["c1"]
    assert [codes for _, _, codes in decisive(guard)] == [["REQUEST_INVALID"]]


# -- graphs: handoffs, agents as tools -------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", ["agent", "handoff_object"])
async def test_handoff_target_tools_are_gated(kind: str) -> None:
    guard = make_guard(allow=("search",))
    search, transfer = Spy("search"), Spy("transfer")
    model = ScriptedModel(
        [call("transfer_to_payments", {}, "h1")],
        [call("transfer", {"amount": "5", "to": "bob"}, "c1"), call("search", {"q": "fx"}, "c2")],
        [say("done")],
    )
    payments = agent_with(
        model, make_tool("transfer", transfer, ["amount", "to"]), make_tool("search", search, ["q"]), name="payments"
    )
    target: Any = payments if kind == "agent" else handoff(payments)
    triage = agent_with(model, name="triage", handoffs=[target])
    ExecAuth(guard, principal="alice").protect(triage)
    result = await Runner.run(triage, "go")
    assert result.last_agent is payments
    assert transfer.calls == [] and search.calls == [{"q": "fx"}]
    assert "TOOL_NOT_ALLOWED" in model.seen_outputs()["c1"]
    records = [e.body for e in guard.audit_log.entries() if e.event in ("execution", "denial")]
    assert {(b["call_id"], b["agent"], b["event"]) for b in records} == {
        ("c1", "payments", "denial"),
        ("c2", "payments", "execution"),
    }


@pytest.mark.asyncio
async def test_hooks_gate_a_handoff_target_protect_could_not_see() -> None:
    guard, transfer = make_guard(allow=()), Spy("transfer")
    model = ScriptedModel(
        [call("transfer_to_payments", {}, "h1")], [call("transfer", {"amount": "5", "to": "bob"}, "c1")], [say("done")]
    )
    payments = agent_with(model, make_tool("transfer", transfer, ["amount", "to"]), name="payments")
    triage = agent_with(model, name="triage", handoffs=[payments])
    gate = ExecAuth(guard, principal="alice")
    gate.protect(agent_with(model, name="unrelated"))  # triage never passed to protect()
    await Runner.run(triage, "go", hooks=gate.hooks())
    assert transfer.calls == []
    assert "POLICY_EMPTY" in model.seen_outputs()["c1"]


@pytest.mark.asyncio
async def test_agent_as_tool_delegation_and_nested_tools_are_gated() -> None:
    guard = make_guard(allow=("research", "search"))
    search, transfer = Spy("search"), Spy("transfer")
    model = ScriptedModel(
        [call("research", {"input": "find fx rates"}, "o1")],
        [call("search", {"q": "fx"}, "n1"), call("transfer", {"amount": "1", "to": "eve"}, "n2")],
        [say("nested answer")],
        [say("final")],
    )
    researcher = agent_with(
        model, make_tool("search", search, ["q"]), make_tool("transfer", transfer, ["amount", "to"]), name="researcher"
    )
    orchestrator = agent_with(model, researcher.as_tool("research", "Research a question"), name="orchestrator")
    ExecAuth(guard, principal="alice").protect(orchestrator)
    result = await Runner.run(orchestrator, "go")
    assert result.final_output == "final"
    assert search.calls == [{"q": "fx"}] and transfer.calls == []
    assert "TOOL_NOT_ALLOWED" in model.seen_outputs()["n2"]
    records = {(e.body["call_id"], e.body["agent"], e.event) for e in guard.audit_log.entries() if e.event != "result"}
    assert records == {
        ("o1", "orchestrator", "execution"),
        ("n1", "researcher", "execution"),
        ("n2", "researcher", "denial"),
    }


@pytest.mark.asyncio
async def test_approval_inside_an_agent_used_as_a_tool() -> None:
    guard = make_guard(allow=("research",), approval=("transfer",))
    transfer = Spy("transfer")
    model = ScriptedModel(
        [call("research", {"input": "pay bob"}, "o1")],
        [call("transfer", {"amount": "5", "to": "bob"}, "n1")],
        [say("nested done")],
        [say("final")],
    )
    payer = agent_with(model, make_tool("transfer", transfer, ["amount", "to"]), name="payer")
    orchestrator = agent_with(model, payer.as_tool("research", "Pay someone"), name="orchestrator")
    gate = ExecAuth(guard, principal="alice")
    gate.protect(orchestrator)
    first = await Runner.run(orchestrator, "go")
    assert transfer.calls == []
    [request] = gate.pending(first)
    assert request.pending is not None
    assert (request.pending.request.agent, request.pending.request.call_id) == ("payer", "n1")
    state = first.to_state()
    gate.approve(request.request_id, approver="carol")
    state.approve(request.item)
    result = await Runner.run(orchestrator, state)
    assert transfer.calls == [{"amount": "5", "to": "bob"}]
    assert result.final_output == "final"
    executions = [(e.body["agent"], e.body["call_id"]) for e in guard.audit_log.entries() if e.event == "execution"]
    # The resumed delegation is invoked (and so decided) again; the nested call once.
    assert executions.count(("payer", "n1")) == 1
    assert executions.count(("orchestrator", "o1")) == 2


# -- streaming -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_streamed_run_denies_without_the_side_effect() -> None:
    guard = make_guard(allow=("search",))
    search, transfer = Spy("search"), Spy("transfer")
    model = ScriptedModel(
        [call("transfer", {"amount": "5", "to": "eve"}, "c1"), call("search", {"q": "a"}, "c2")], [say("done")]
    )
    agent = ExecAuth(guard, principal="alice").protect(
        agent_with(model, make_tool("search", search, ["q"]), make_tool("transfer", transfer, ["amount", "to"]))
    )
    streamed = Runner.run_streamed(agent, "go")
    outputs: dict[str, str] = {}
    async for event in streamed.stream_events():
        item = getattr(event, "item", None)
        if getattr(event, "name", None) == "tool_output" and item is not None:
            outputs[item.raw_item["call_id"]] = str(item.output)
        # Each time control comes back to us the denied tool must still not have run.
        assert transfer.calls == []
    assert transfer.calls == [] and search.calls == [{"q": "a"}]
    assert "TOOL_NOT_ALLOWED" in outputs["c1"] and "search ran" in outputs["c2"]
    assert streamed.final_output == "done"


@pytest.mark.asyncio
async def test_streamed_run_stops_at_a_denial_in_raise_mode() -> None:
    guard = make_guard(allow=("search",))
    search, transfer = Spy("search"), Spy("transfer")
    model = ScriptedModel(
        [call("transfer", {"amount": "5", "to": "eve"}, "c1")], [call("search", {"q": "later"}, "c2")], [say("done")]
    )
    agent = ExecAuth(guard, principal="alice", on_denial="raise").protect(
        agent_with(model, make_tool("search", search, ["q"]), make_tool("transfer", transfer, ["amount", "to"]))
    )
    streamed = Runner.run_streamed(agent, "go")
    with pytest.raises(ToolCallDenied) as caught:
        async for _ in streamed.stream_events():
            pass
    assert caught.value.denial.reason_codes == ("TOOL_NOT_ALLOWED",)
    assert transfer.calls == [] and search.calls == []
    assert len(model.inputs) == 1, "the run must not reach another model turn"
    assert audit(guard) == [("denial", False, ["TOOL_NOT_ALLOWED"])]


# -- approvals -------------------------------------------------------------------


def approval_setup(*turns: Any) -> tuple[Guard, Spy, ScriptedModel, Agent[Any], ExecAuth]:
    guard, spy = make_guard(allow=("search",), approval=("transfer",)), Spy("transfer")
    model = ScriptedModel(*turns)
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(agent_with(model, make_tool("transfer", spy, ["amount", "to"])))
    return guard, spy, model, agent, gate


@pytest.mark.asyncio
async def test_approval_pauses_then_approve_runs_exactly_the_approved_call() -> None:
    guard, spy, _, agent, gate = approval_setup(
        [call("transfer", {"amount": "50.00", "to": "bob"}, "c1")], [say("sent")]
    )
    first = await Runner.run(agent, "pay bob")
    assert spy.calls == [] and len(first.interruptions) == 1
    [request] = gate.pending(first)
    assert request.pending is not None
    assert request.pending.request.args == {"amount": "50.00", "to": "bob"}
    assert request.proposal_digest == request.pending.request.content_digest()
    assert audit(guard) == [("denial", False, ["APPROVAL_REQUIRED"])]
    state = first.to_state()
    assert gate.approve(request.request_id, approver="carol").proposal_digest == request.proposal_digest
    state.approve(request.item)
    second = await Runner.run(agent, state)
    assert spy.calls == [{"amount": "50.00", "to": "bob"}]
    assert second.final_output == "sent"
    assert audit(guard)[1] == ("execution", True, ["TOOL_ALLOWED", "APPROVAL_GRANTED"])


@pytest.mark.asyncio
async def test_a_sibling_call_runs_once_across_the_pause_and_resume() -> None:
    guard, transfer = make_guard(allow=("search",), approval=("transfer",)), Spy("transfer")
    search = Spy("search")
    model = ScriptedModel(
        [call("search", {"q": "fx"}, "c1"), call("transfer", {"amount": "5", "to": "bob"}, "c2")], [say("ok")]
    )
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(
        agent_with(model, make_tool("search", search, ["q"]), make_tool("transfer", transfer, ["amount", "to"]))
    )
    first = await Runner.run(agent, "go")
    assert search.calls == [{"q": "fx"}] and transfer.calls == []
    state = first.to_state()
    [request] = gate.pending(first)
    gate.approve(request.request_id, approver="carol")
    state.approve(request.item)
    await Runner.run(agent, state)
    assert search.calls == [{"q": "fx"}] and transfer.calls == [{"amount": "5", "to": "bob"}]
    executions = [e.body["call_id"] for e in guard.audit_log.entries() if e.event == "execution"]
    assert executions == ["c1", "c2"]
    assert "search ran" in model.seen_outputs()["c1"] and "transfer ran" in model.seen_outputs()["c2"]


@pytest.mark.asyncio
async def test_approval_rejected_is_recorded_and_the_model_is_told() -> None:
    guard, spy, model, agent, gate = approval_setup(
        [call("transfer", {"amount": "50.00", "to": "bob"}, "c1")], [say("ok, not sent")]
    )
    first = await Runner.run(agent, "pay bob")
    [request] = gate.pending(first)
    state = first.to_state()
    assert gate.reject(request.request_id, approver="carol", comment="not today").state == "rejected"
    state.approve(request.item)  # even the SDK's yes runs nothing: the request was rejected
    second = await Runner.run(agent, state)
    assert spy.calls == []
    assert "APPROVAL_REJECTED" in model.seen_outputs()["c1"]
    assert second.final_output == "ok, not sent"
    assert audit(guard) == [("denial", False, ["APPROVAL_REQUIRED"]), ("denial", False, ["APPROVAL_REJECTED"])]


@pytest.mark.asyncio
async def test_sdk_approval_alone_does_not_run_the_call() -> None:
    """RunState.approve without an execauth grant: the guard still wants a person."""
    guard, spy, model, agent, _ = approval_setup(
        [call("transfer", {"amount": "50.00", "to": "bob"}, "c1")], [say("ok")]
    )
    first = await Runner.run(agent, "pay bob")
    state = first.to_state()
    state.approve(first.interruptions[0], always_approve=True)
    await Runner.run(agent, state)
    assert spy.calls == []
    assert "APPROVAL_REQUIRED" in model.seen_outputs()["c1"]
    assert audit(guard)[-1] == ("denial", False, ["APPROVAL_REQUIRED"])


@pytest.mark.asyncio
async def test_a_grant_covers_only_its_own_proposal() -> None:
    _, spy, model, agent, gate = approval_setup(
        [call("transfer", {"amount": "5", "to": "bob"}, "c1"), call("transfer", {"amount": "5000", "to": "bob"}, "c2")],
        [say("ok")],
    )
    first = await Runner.run(agent, "pay")
    requests = {r.item.call_id: r for r in gate.pending(first)}
    assert set(requests) == {"c1", "c2"}
    state = first.to_state()
    gate.approve(requests["c1"].request_id, approver="carol")
    state.approve(requests["c1"].item)
    state.approve(requests["c2"].item)  # the SDK says yes; execauth was never asked
    await Runner.run(agent, state)
    assert spy.calls == [{"amount": "5", "to": "bob"}]
    assert "APPROVAL_REQUIRED" in model.seen_outputs()["c2"]


@pytest.mark.asyncio
async def test_resume_in_another_process_with_a_serialized_grant() -> None:
    guard, spy, model, agent, gate = approval_setup(
        [call("transfer", {"amount": "50.00", "to": "bob"}, "c1")], [say("sent")]
    )
    first = await Runner.run(agent, "pay bob")
    [request] = gate.pending(first)
    state = first.to_state()
    gate.approve(request.request_id, approver="carol")
    state.approve(request.item)
    grant_json = guard.approval_for(request.request_id).model_dump_json()
    state_text = state.to_string()

    # "Another process": a fresh gate over the same guard (its stores), the state and
    # the grant from their serialized forms.
    fresh = ExecAuth(guard, principal="alice")
    fresh_agent = fresh.protect(agent_with(model, make_tool("transfer", spy, ["amount", "to"])))
    fresh.add_grant(ApprovalGrant.model_validate_json(grant_json))
    restored = await RunState.from_string(fresh_agent, state_text)
    await Runner.run(fresh_agent, restored)
    assert spy.calls == [{"amount": "50.00", "to": "bob"}]


@pytest.mark.asyncio
async def test_approvals_off_makes_require_approval_a_denial() -> None:
    guard, spy = make_guard(approval=("transfer",)), Spy("transfer")
    model = ScriptedModel([call("transfer", {"amount": "1", "to": "bob"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice", approvals=False).protect(
        agent_with(model, make_tool("transfer", spy, ["amount", "to"]))
    )
    result = await Runner.run(agent, "go")
    assert result.interruptions == [] and spy.calls == []
    assert "APPROVAL_REQUIRED" in model.seen_outputs()["c1"]


@pytest.mark.asyncio
async def test_the_tools_own_needs_approval_still_applies() -> None:
    guard = make_guard(allow=("search",))
    spy = Spy("search")
    tool = make_tool("search", spy, ["q"])
    tool.needs_approval = True
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(agent_with(model, tool))
    first = await Runner.run(agent, "go")
    assert len(first.interruptions) == 1 and spy.calls == []
    state = first.to_state()
    state.approve(first.interruptions[0])
    await Runner.run(agent, state)
    assert spy.calls == [{"q": "x"}]  # the app's approval; execauth allows search anyway


# -- fail closed -------------------------------------------------------------------


class DownStore:
    def consume(self, token_id: str, *, expires_at: int, now: int) -> bool:
        raise StoreUnavailable("replay store unreachable")


@pytest.mark.asyncio
async def test_store_outage_denies_and_is_recorded() -> None:
    guard, spy = make_guard(), Spy("search")
    guard.replay_store = DownStore()  # type: ignore[assignment]
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, make_tool("search", spy, ["q"])))
    await Runner.run(agent, "go")
    assert spy.calls == []
    assert "STORE_UNAVAILABLE" in model.seen_outputs()["c1"]
    assert audit(guard) == [("denial", False, ["STORE_UNAVAILABLE"])]


@pytest.mark.asyncio
async def test_policy_bug_denies_with_guard_error() -> None:
    class Broken:
        policy_ref = None

        def evaluate(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("bug in a policy engine")

    guard, spy = make_guard(), Spy("search")
    assert guard.authority is not None
    guard.authority.decision_point = Broken()  # type: ignore[assignment]
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, make_tool("search", spy, ["q"])))
    result = await Runner.run(agent, "go")  # the approval preview fails too: no pause, no crash
    assert result.interruptions == [] and spy.calls == []
    assert "GUARD_ERROR" in model.seen_outputs()["c1"]
    assert audit(guard) == [("denial", False, ["GUARD_ERROR"])]


@pytest.mark.parametrize("broken", ["principal", "token_provider"])
@pytest.mark.asyncio
async def test_errors_in_adapter_callbacks_deny(broken: str) -> None:
    guard, spy = make_guard(), Spy("search")

    def boom(_: Any) -> str:
        raise RuntimeError("callback failed")

    kwargs: dict[str, Any] = (
        {"principal": boom} if broken == "principal" else {"principal": "alice", "token_provider": boom}
    )
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, **kwargs).protect(agent_with(model, make_tool("search", spy, ["q"])))
    result = await Runner.run(agent, "go")
    assert result.interruptions == [] and spy.calls == []
    assert "GUARD_ERROR" in model.seen_outputs()["c1"]
    assert audit(guard)[-1] == ("denial", False, ["GUARD_ERROR"])


@pytest.mark.asyncio
async def test_raise_mode_stops_the_run_with_the_recorded_denial() -> None:
    guard, spy = make_guard(allow=()), Spy("transfer")
    model = ScriptedModel([call("transfer", {"amount": "1", "to": "eve"}, "c1")], [say("never")])
    agent = ExecAuth(guard, principal="alice", on_denial="raise").protect(
        agent_with(model, make_tool("transfer", spy, ["amount", "to"]))
    )
    with pytest.raises(ToolCallDenied) as caught:
        await Runner.run(agent, "go")
    assert isinstance(caught.value.denial, ExecutionDenied)
    assert caught.value.denial.reason_codes == ("POLICY_EMPTY",) and spy.calls == []
    assert audit(guard) == [("denial", False, ["POLICY_EMPTY"])]


@pytest.mark.asyncio
async def test_the_tools_own_exception_is_the_sdks_business_after_a_recorded_execution() -> None:
    guard = make_guard()

    def failing(**kw: Any) -> str:
        raise ValueError("tool broke")

    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, make_tool("search", failing, ["q"])))
    with pytest.raises(Exception, match="tool broke"):
        await Runner.run(agent, "go")
    assert [(e.event, e.executed) for e in guard.audit_log.entries()] == [("execution", True), ("result", True)]
    assert list(guard.audit_log.entries())[-1].body["detail"]["status"] == "error"


# -- coverage: hooks, wrapping, configuration ----------------------------------------


@pytest.mark.asyncio
async def test_a_tool_added_during_the_run_is_gated_before_it_runs() -> None:
    guard, late = make_guard(), Spy("late")
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [call("late", {"x": 1}, "c2")], [say("ok")])
    gate = ExecAuth(guard, principal="alice")
    agent: Agent[Any] = agent_with(model)

    def search(**kw: Any) -> str:
        # A tool list that changes mid-run (as MCP tool lists do): the new tool was never
        # gated, and on_agent_start has already fired for this agent.
        agent.tools.append(make_tool("late", late, ["x"]))
        return "found"

    agent.tools.append(make_tool("search", search, ["q"]))
    # The hooks protect the agent as it starts; from then on each turn's tools are
    # gated as the SDK lists them, so the late tool meets the guard (not allowed).
    await Runner.run(agent, "go", hooks=gate.hooks())
    assert late.calls == [] and "TOOL_NOT_ALLOWED" in model.seen_outputs()["c2"]
    assert [e for e, _, _ in audit(guard)] == ["execution", "result", "denial"]


@pytest.mark.asyncio
async def test_hooks_gate_tools_present_when_the_agent_starts() -> None:
    guard, late = make_guard(allow=()), Spy("late")
    model = ScriptedModel([call("late", {"x": 1}, "c1")], [say("ok")])
    gate = ExecAuth(guard, principal="alice")
    agent = gate.protect(agent_with(model))
    agent.tools.append(make_tool("late", late, ["x"]))
    await Runner.run(agent, "go", hooks=gate.hooks())
    assert late.calls == [] and "POLICY_EMPTY" in model.seen_outputs()["c1"]


@pytest.mark.asyncio
async def test_wrap_as_a_decorator_gates_one_tool() -> None:
    guard = make_guard(allow=("search",))
    gate = ExecAuth(guard, principal="alice")
    ran: list[str] = []

    @gate.wrap(agent="search-bot")
    @function_tool
    def search(q: str) -> str:
        """Search."""
        ran.append(q)
        return "hit"

    @gate.wrap
    @function_tool
    def transfer(amount: str, to: str) -> str:
        """Transfer."""
        ran.append(to)
        return "sent"

    assert gate.is_gated(search) and gate.is_gated(transfer)
    model = ScriptedModel(
        [call("search", {"q": "x"}, "c1"), call("transfer", {"amount": "1", "to": "eve"}, "c2")], [say("ok")]
    )
    await Runner.run(agent_with(model, search, transfer), "go")
    assert ran == ["x"]
    agents = {e.body["call_id"]: e.body["agent"] for e in guard.audit_log.entries() if e.event != "result"}
    assert agents == {"c1": "search-bot", "c2": "bank"}


def test_protect_is_idempotent_and_refuses_a_second_gate() -> None:
    guard = make_guard()
    tool = make_tool("search", Spy(), ["q"])
    agent = agent_with(ScriptedModel(), tool)
    gate = ExecAuth(guard, principal="alice")
    gate.protect(agent)
    invoker = tool.on_invoke_tool
    gate.protect(agent)
    assert tool.on_invoke_tool is invoker
    with pytest.raises(ConfigurationError):
        ExecAuth(guard, principal="bob").protect(agent)


def test_configuration_is_checked() -> None:
    guard = make_guard()
    with pytest.raises(ConfigurationError):
        ExecAuth(object(), principal="alice")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ExecAuth(guard, principal="")
    with pytest.raises(ConfigurationError):
        ExecAuth(guard, principal="alice", on_denial="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        ExecAuth(guard, principal="alice").wrap(object())  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="ExecAuth: token_provider must be None or a callable"):
        ExecAuth(guard, principal="alice", token_provider="tok")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="ExecAuth: approvals must be one of True, False"):
        ExecAuth(guard, principal="alice", approvals="no")  # type: ignore[arg-type]


def test_minimum_version_is_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    from execauth_openai_agents import _compat

    monkeypatch.setattr(_compat.importlib.metadata, "version", lambda name: "0.19.4")
    with pytest.raises(ConfigurationError, match=r"openai-agents>=0\.20"):
        _compat.check_minimum_version()


def test_public_api_is_pinned() -> None:
    assert execauth_openai_agents.__all__ == [
        "ApprovalRequest",
        "ExecAuth",
        "ExecAuthRunHooks",
        "ToolCallDenied",
        "UngatedToolError",
        "AUTO",
        "__version__",
    ]
    assert execauth_openai_agents.__version__ == "0.1.0"


@pytest.mark.asyncio
async def test_principal_can_come_from_the_run_context() -> None:
    guard, spy = make_guard(), Spy("search")
    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])

    def principal(ctx: RunContextWrapper[Any]) -> str:
        return str(ctx.context["user"])

    agent = ExecAuth(guard, principal=principal).protect(agent_with(model, make_tool("search", spy, ["q"])))
    await Runner.run(agent, "go", context={"user": "user-42"})
    assert spy.calls == [{"q": "x"}]
    execution = next(e for e in guard.audit_log.entries() if e.event == "execution")
    assert execution.body["principal"] == "user-42"


# -- a tool failure the SDK turns into text is still recorded as a failure (issue 15, item 9)


@pytest.mark.asyncio
@pytest.mark.parametrize("decorated", ["default", "custom"])
async def test_a_failure_the_sdk_swallows_is_recorded_as_an_error(decorated: str) -> None:
    guard = make_guard()
    attempts: list[str] = []

    def explain(ctx: Any, error: Exception) -> str:
        return f"custom: {error}"

    kwargs: dict[str, Any] = {} if decorated == "default" else {"failure_error_function": explain}

    @function_tool(**kwargs)
    def search(q: str) -> str:
        """Search."""
        attempts.append(q)
        raise ValueError("index offline")

    model = ScriptedModel([call("search", {"q": "x"}, "c1")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, search))
    result = await Runner.run(agent, "go")
    assert result.final_output == "ok" and attempts == ["x"]
    seen = model.seen_outputs()["c1"]
    # The model reads what the SDK made of the exception, as without execauth.
    assert seen == "custom: index offline" if decorated == "custom" else "error" in seen.lower()
    entries = list(guard.audit_log.entries())
    assert [(e.event, e.executed) for e in entries] == [("execution", True), ("result", True)]
    assert entries[-1].body["detail"]["status"] == "error"
    assert entries[-1].body["detail"]["error"] == "ValueError"


@pytest.mark.asyncio
async def test_a_decorated_tool_that_succeeds_is_still_recorded_ok() -> None:
    guard = make_guard()

    @function_tool
    def search(q: str) -> str:
        """Search."""
        return f"hit {q}"

    model = ScriptedModel([call("search", {"q": "x"}, "c1"), call("search", {"q": "y"}, "c2")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model, search))
    await Runner.run(agent, "go")
    assert model.seen_outputs() == {"c1": "hit x", "c2": "hit y"}
    statuses = [e.body["detail"]["status"] for e in guard.audit_log.entries() if e.event == "result"]
    assert statuses == ["ok", "ok"]


# -- tools added after protect() are gated without hooks= (issue 15, item 11) ------------


@pytest.mark.asyncio
async def test_a_tool_added_after_protect_is_gated_without_hooks() -> None:
    guard, late, later = make_guard(allow=("search",)), Spy("late"), Spy("later")
    model = ScriptedModel([call("late", {"x": 1}, "c1")], [call("later", {"x": 2}, "c2")], [say("ok")])
    agent = ExecAuth(guard, principal="alice").protect(agent_with(model))
    agent.tools.append(make_tool("late", late, ["x"]))  # appended after protect()
    agent.tools = [*agent.tools, make_tool("later", later, ["x"])]  # or a new list
    await Runner.run(agent, "go")  # no hooks=
    assert late.calls == [] and later.calls == []
    assert "TOOL_NOT_ALLOWED" in model.seen_outputs()["c1"] and "TOOL_NOT_ALLOWED" in model.seen_outputs()["c2"]
    assert [(e, c) for e, _, c in audit(guard)] == [("denial", ["TOOL_NOT_ALLOWED"])] * 2


def test_an_agent_protected_by_another_gate_is_refused() -> None:
    agent = agent_with(ScriptedModel())
    ExecAuth(make_guard(), principal="alice").protect(agent)
    with pytest.raises(ConfigurationError, match="already protected"):
        ExecAuth(make_guard(), principal="bob").protect(agent)


@pytest.mark.asyncio
async def test_strict_hooks_still_stop_a_tool_kind_the_gate_cannot_cover() -> None:
    class LocalShell:  # stands in for a non-function tool (shell, computer, apply-patch)
        name = "shell"

    hooks = ExecAuth(make_guard(), principal="alice").hooks()
    with pytest.raises(UngatedToolError, match="shell"):
        await hooks.on_tool_start(None, None, LocalShell())
