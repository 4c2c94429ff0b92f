"""Shared building blocks for the Court tests: tools, a policy, a guard."""

from __future__ import annotations

import copy
from typing import Any

from execauth_core import (
    Court,
    EvidenceGrade,
    FixedClock,
    Guard,
    LocalSigner,
    PreflightResult,
    ToolRegistry,
    parse_policy,
)

# Monday 2026-01-05 10:00 UTC
MONDAY_10 = 1_767_607_200

SEARCH = {
    "name": "search_docs",
    "version": "1.0",
    "args_schema": {
        "type": "object",
        "properties": {"q": {"type": "string", "maxLength": 200}},
        "required": ["q"],
        "additionalProperties": False,
    },
    "effects": ["data.read"],
}
REFUND = {
    "name": "refund",
    "version": "2.1",
    "args_schema": {
        "type": "object",
        "properties": {"order": {"type": "string"}, "amount": {"type": "string"}, "currency": {"type": "string"}},
        "required": ["order", "amount", "currency"],
        "additionalProperties": False,
    },
    "effects": ["payment.refund"],
    "amount_arg": "amount",
    "currency_arg": "currency",
    "target_arg": "order",
}
TRANSFER = {
    "name": "transfer",
    "version": "1.0",
    "args_schema": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "amount": {"type": "string"}},
        "required": ["to", "amount"],
        "additionalProperties": False,
    },
    "effects": ["payment.transfer"],
    "amount_arg": "amount",
    "currency": "USD",
    "target_arg": "to",
}
EMAIL = {
    "name": "send_email",
    "version": "1.0",
    "args_schema": {
        "type": "object",
        "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
        "required": ["to", "body"],
    },
    "effects": ["message.email"],
}
DROP = {
    "name": "drop_table",
    "version": "1.0",
    "args_schema": {"type": "object", "properties": {"table": {"type": "string"}}, "required": ["table"]},
    "effects": ["data.delete"],
}

POLICY: dict[str, Any] = {
    "id": "payments-prod",
    "epoch": 7,
    "invariants": {"approval_at_or_above_tier": "E4", "forbidden_effects": ["permission.change"]},
    "principals": [
        {
            "id": "user-42",
            "agents": ["billing-bot"],
            "allow_tools": ["search_docs", "refund", "transfer", "send_email", "drop_table"],
            "max_risk_tier": "E4",
            "amount_ceilings": {"USD": "500.00", "EUR": "400.00"},
            "budgets": [{"currency": "USD", "limit": "1000.00", "window": 86400}],
            "rate_limits": [
                {"tool": "*", "limit": 20, "window": 60},
                {"tool": "send_email", "limit": 2, "window": 3600},
            ],
            "time_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}],
            "require_approval_above": {"USD": "200.00"},
        },
        {"id": "intern", "allow_tools": ["search_docs", "refund"], "max_risk_tier": "E0"},
    ],
}


def policy(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(POLICY)
    doc.update(changes)
    return doc


def ok_preflight(args: Any) -> PreflightResult:
    return PreflightResult(ok=True, grade=EvidenceGrade.SIMULATED, detail="dry run ok")


def registry(preflights: dict[str, Any] | None = None) -> ToolRegistry:
    pf = {"refund": ok_preflight, "transfer": ok_preflight, "drop_table": ok_preflight}
    pf.update(preflights or {})
    reg = ToolRegistry()
    for m in (SEARCH, REFUND, TRANSFER, EMAIL, DROP):
        reg.register(m, preflight=pf.get(m["name"]))
    return reg


def make(
    doc: dict[str, Any] | None = None,
    *,
    now: int = MONDAY_10,
    preflights: dict[str, Any] | None = None,
    state: Any = None,
) -> tuple[Guard, Court, FixedClock]:
    court = Court(parse_policy(doc or POLICY), registry(preflights), state=state)
    clock = FixedClock(now)
    counter = iter(range(10**9))
    guard = Guard.local(
        court, clock=clock, signer=LocalSigner(bytes(range(32))), id_factory=lambda: f"court-token-{next(counter):08d}"
    )
    return guard, court, clock
