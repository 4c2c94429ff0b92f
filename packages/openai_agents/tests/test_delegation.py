"""OpenAI Agents handoffs and agents-as-tools under a delegated scope, through the real
``Runner`` and a scripted model: the child agent's tools are gated by an ``ExecAuth``
over ``delegated_guard(gate, chain)``; the child tries to exceed the chain's scope and is
denied (the model reads the reason), inside the scope it runs."""

from __future__ import annotations

from typing import Any

import pytest
from agents import Agent, Runner

from execauth_core import (
    Court,
    EvidenceGrade,
    FixedClock,
    Guard,
    KeySet,
    LocalSigner,
    PreflightResult,
    ToolRegistry,
    TrustedKey,
    parse_policy,
)
from execauth_core.delegation import (
    DelegationGate,
    DelegationLedger,
    DelegationVerifier,
    Narrowing,
    delegate,
    delegated_guard,
    issue_root,
)
from execauth_openai_agents import ExecAuth

from .harness import ScriptedModel, call, make_tool, say

T0 = 1_767_607_200
AUTHORITY = LocalSigner(bytes(range(32)))
PARENT_KEY = LocalSigner(bytes(range(1, 33)))


class Spy:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kw: Any) -> str:
        self.calls.append(kw)
        return "refunded"


def setup(parent: str, child: str) -> tuple[Guard, Guard]:
    """The parent's guard, and the child's delegated guard (chain parent -> child)."""
    registry = ToolRegistry()
    registry.register(
        {
            "name": "refund",
            "version": "1",
            "effects": ["payment.refund"],
            "amount_arg": "amount",
            "currency_arg": "currency",
            "args_schema": {"type": "object", "properties": {"order": {}, "amount": {}, "currency": {}}},
        },
        preflight=lambda args: PreflightResult(ok=True, grade=EvidenceGrade.SIMULATED, detail="ok"),
    )
    registry.register({"name": "refunds", "version": "1", "effects": ["data.read"], "args_schema": {"type": "object"}})
    policy = {
        "id": "shop",
        "epoch": 1,
        "principals": [
            {
                "id": "user-42",
                "agents": [parent, child],
                "allow_tools": ["refund", "refunds"],
                "max_risk_tier": "E4",
                "amount_ceilings": {"USD": "500.00"},
            }
        ],
    }
    court = Court(parse_policy(policy), registry)
    guard = Guard.local(court, clock=FixedClock(T0 + 5), signer=AUTHORITY)
    keys = KeySet([TrustedKey.from_public_key(AUTHORITY.public_key), TrustedKey.from_public_key(PARENT_KEY.public_key)])
    gate = DelegationGate(
        guard,
        verifier=DelegationVerifier(keys=keys, issuers=["execauth-local"], audience="execauth-guard"),
        ledger=DelegationLedger(court.state),
        registry=registry,
    )
    root = issue_root(
        AUTHORITY,
        jti="oa-root-0000000001",
        issuer="execauth-local",
        principal="user-42",
        agent=parent,
        audience=["execauth-guard"],
        scope={
            "tools": ["refund"],
            "effects": ["payment.refund"],
            "amount_ceilings": {"USD": "300.00"},
            "constraints": [],
            "rate": {"count": 10, "window": 60},
            "max_uses": 5,
        },
        now=T0,
        ttl=3600,
        max_depth=1,
    )
    leaf = delegate(
        root,
        PARENT_KEY,
        jti="oa-child-000000001",
        agent=child,
        now=T0 + 1,
        narrowing=Narrowing(amount_ceilings={"USD": "50.00"}),
    )
    return guard, delegated_guard(gate, [root.token, leaf.token])


def outcomes(guard: Guard) -> dict[str, tuple[str, list[str]]]:
    return {
        e.body["call_id"]: (e.event, list(e.body.get("reason_codes") or [])[:1])
        for e in guard.audit_log.entries()
        if e.event in ("execution", "denial")
    }


@pytest.mark.asyncio
async def test_a_handoff_target_runs_under_its_delegation() -> None:
    guard, child_guard = setup("triage", "payments")
    refund = Spy()
    model = ScriptedModel(
        [call("transfer_to_payments", {}, "h1")],
        [
            call("refund", {"order": "A-1", "amount": "80.00", "currency": "USD"}, "c1"),
            call("refund", {"order": "A-1", "amount": "20.00", "currency": "USD"}, "c2"),
        ],
        [say("done")],
    )
    payments = Agent(
        name="payments",
        instructions="t",
        model=model,
        tools=[make_tool("refund", refund, ["order", "amount", "currency"])],
    )
    triage = Agent(name="triage", instructions="t", model=model, handoffs=[payments])
    ExecAuth(child_guard, principal="user-42").protect(payments)  # the child: its delegated guard
    result = await Runner.run(triage, "refund order A-1")
    assert result.last_agent is payments
    assert refund.calls == [{"order": "A-1", "amount": "20.00", "currency": "USD"}]
    assert "DELEGATION_SCOPE_EXCEEDED" in model.seen_outputs()["c1"]
    assert outcomes(guard) == {"c1": ("denial", ["DELEGATION_SCOPE_EXCEEDED"]), "c2": ("execution", ["TOOL_ALLOWED"])}


@pytest.mark.asyncio
async def test_an_agent_used_as_a_tool_runs_under_its_delegation() -> None:
    guard, child_guard = setup("orchestrator", "refunder")
    refund = Spy()
    model = ScriptedModel(
        [call("refunds", {"input": "refund A-1"}, "o1")],
        [call("refund", {"order": "A-1", "amount": "51.00", "currency": "USD"}, "n1")],
        [say("could not")],
        [say("final")],
    )
    refunder = Agent(
        name="refunder",
        instructions="t",
        model=model,
        tools=[make_tool("refund", refund, ["order", "amount", "currency"])],
    )
    ExecAuth(child_guard, principal="user-42").protect(refunder)
    # The orchestrator's own tool (the sub-agent) is gated by the parent's guard.
    as_tool = ExecAuth(guard, principal="user-42", agent="orchestrator").wrap(refunder.as_tool("refunds", "Refunds"))
    orchestrator = Agent(name="orchestrator", instructions="t", model=model, tools=[as_tool])
    result = await Runner.run(orchestrator, "go")
    assert result.final_output == "final"
    assert refund.calls == []
    assert "DELEGATION_SCOPE_EXCEEDED" in model.seen_outputs()["n1"]
    assert outcomes(guard) == {"o1": ("execution", ["TOOL_ALLOWED"]), "n1": ("denial", ["DELEGATION_SCOPE_EXCEEDED"])}


def test_the_delegated_guard_refuses_the_methods_that_would_skip_its_chain() -> None:
    """Only run/arun/execute/aexecute check the chain: authorize, preflight and commit
    on the child's guard refuse before anything is decided or run."""
    import asyncio

    import pytest

    from execauth_core import ConfigurationError

    guard, child = setup("parent-bot", "child-bot")
    req = child.proposal("refund", {"order": "A-1", "amount": "10.00", "currency": "USD"}, principal="user-42")
    ran: list[int] = []
    for attempt in (
        lambda: child.authorize(req),
        lambda: child.preflight(req),
        lambda: child.commit(None, lambda: ran.append(1)),  # type: ignore[arg-type]
        lambda: asyncio.run(child.apreflight(req)),
        lambda: asyncio.run(child.acommit(None, lambda: ran.append(1))),  # type: ignore[arg-type]
    ):
        with pytest.raises(ConfigurationError, match="skip the chain"):
            attempt()
    assert ran == [] and not [e for e in guard.audit_log.entries() if e.body["event"] == "execution"]
