"""A LangGraph subgraph run under a delegated scope: the parent graph hands work to a
child agent's subgraph whose tool node holds a narrowed delegation chain; the child
tries to exceed it and is denied (the model sees the reason), inside it runs."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.prebuilt import tools_condition

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
from execauth_langgraph import guarded_tool_node

from .harness import make_tool, scripted, tool_call

T0 = 1_767_607_200
AUTHORITY = LocalSigner(bytes(range(32)))
PARENT_KEY = LocalSigner(bytes(range(1, 33)))


def setup() -> tuple[Guard, DelegationGate, list[str]]:
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
    policy = {
        "id": "shop",
        "epoch": 1,
        "principals": [
            {
                "id": "user-42",
                "agents": ["parent-bot", "child-bot"],
                "allow_tools": ["refund"],
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
        jti="lg-root-0000000001",
        issuer="execauth-local",
        principal="user-42",
        agent="parent-bot",
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
    child = delegate(
        root,
        PARENT_KEY,
        jti="lg-child-000000001",
        agent="child-bot",
        now=T0 + 1,
        narrowing=Narrowing(amount_ceilings={"USD": "50.00"}, max_uses=2),
    )
    return guard, gate, [root.token, child.token]


def test_a_child_subgraph_cannot_exceed_its_delegation() -> None:
    guard, gate, chain = setup()
    refunds: list[dict[str, Any]] = []
    tools = [make_tool("refund", lambda **kw: refunds.append(kw) or "refunded", ["order", "amount", "currency"])]
    model = scripted(
        AIMessage("", tool_calls=[tool_call("refund", {"order": "A-1", "amount": "80.00", "currency": "USD"}, "c1")]),
        AIMessage("", tool_calls=[tool_call("refund", {"order": "A-1", "amount": "20.00", "currency": "USD"}, "c2")]),
        AIMessage("done"),
    )
    bound = model.bind_tools(tools)

    def child_agent(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [bound.invoke(state["messages"])]}

    sub = StateGraph(MessagesState)
    sub.add_node("agent", child_agent)
    sub.add_node(
        "tools", guarded_tool_node(tools, delegated_guard(gate, chain), principal="user-42", agent="child-bot")
    )
    sub.add_edge(START, "agent")
    sub.add_conditional_edges("agent", tools_condition)
    sub.add_edge("tools", "agent")

    parent = StateGraph(MessagesState)
    parent.add_node("refund_helper", sub.compile())  # the subgraph is the parent's node
    parent.add_edge(START, "refund_helper")
    parent.add_edge("refund_helper", END)
    out = parent.compile().invoke({"messages": [HumanMessage("refund order A-1")]})

    assert refunds == [{"order": "A-1", "amount": "20.00", "currency": "USD"}]
    denied, ran = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert denied.status == "error" and "DELEGATION_SCOPE_EXCEEDED" in str(denied.content)
    assert ran.status == "success"
    events = [(e.event, e.executed, list(e.body.get("reason_codes", []))[:1]) for e in guard.audit_log.entries()]
    assert ("denial", False, ["DELEGATION_SCOPE_EXCEEDED"]) in events
    assert any(ev == "execution" and executed for ev, executed, _ in events)
