"""The Authority Court: every stage, every outcome, through a real guard."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from execauth_core import (
    ApprovalRequired,
    ConfigurationError,
    EvidenceGrade,
    ExecutionDenied,
    Guard,
    PreflightResult,
    ToolRegistry,
    parse_policy,
)
from execauth_core.court import Court
from execauth_core.stores import MemoryStateStore

from .conftest import Tool
from .court_fixtures import MONDAY_10, REFUND, SEARCH, make, policy


def run(
    guard: Guard,
    tool: str,
    args: dict[str, Any],
    *,
    principal: str = "user-42",
    agent: str | None = "billing-bot",
    approval: Any = None,
    manifest_digest: str | None = None,
) -> tuple[str, tuple[str, ...], Tool]:
    t = Tool()
    req = guard.proposal(tool, args, principal=principal, agent=agent, manifest_digest=manifest_digest)
    try:
        guard.run(req, lambda: t(**req.args), approval=approval)
    except ExecutionDenied as exc:
        assert t.calls == [], "denied call must not run"
        return exc.outcome, exc.reason_codes, t
    assert len(t.calls) == 1
    return "ALLOW", ("TOOL_ALLOWED",), t


REFUND_OK = {"order": "A-1", "amount": "150.00", "currency": "USD"}


@pytest.mark.parametrize(
    ("tool", "args", "kw", "outcome", "codes"),
    [
        # contract pinning
        ("search_docs", {"q": "refunds"}, {}, "ALLOW", ("TOOL_ALLOWED",)),
        ("rm_rf", {}, {}, "DENY", ("UNKNOWN_TOOL",)),
        ("search_docs", {"q": 5}, {}, "DENY", ("ARGS_SCHEMA_VIOLATION",)),
        ("search_docs", {"q": "x", "extra": 1}, {}, "DENY", ("ARGS_SCHEMA_VIOLATION",)),
        ("search_docs", {}, {}, "DENY", ("ARGS_SCHEMA_VIOLATION",)),
        ("search_docs", {"q": "x"}, {"manifest_digest": "sha256:" + "0" * 64}, "DENY", ("MANIFEST_PIN_MISMATCH",)),
        ("refund", {**REFUND_OK, "amount": 150.0}, {}, "DENY", ("ARGS_SCHEMA_VIOLATION", "AMOUNT_NOT_DECIMAL_STRING")),
        ("refund", {**REFUND_OK, "amount": "-5.00"}, {}, "DENY", ("AMOUNT_INVALID",)),
        ("refund", {**REFUND_OK, "amount": "1.005"}, {}, "DENY", ("AMOUNT_INVALID",)),
        ("refund", {**REFUND_OK, "amount": "1e3"}, {}, "DENY", ("AMOUNT_INVALID",)),
        ("refund", {**REFUND_OK, "amount": "9" * 40}, {}, "DENY", ("AMOUNT_INVALID",)),
        ("refund", {**REFUND_OK, "currency": "XYZ"}, {}, "DENY", ("CURRENCY_NOT_ALLOWED",)),
        # ceilings
        ("search_docs", {"q": "x"}, {"principal": "stranger"}, "DENY", ("PRINCIPAL_UNKNOWN",)),
        ("search_docs", {"q": "x"}, {"agent": "rogue-bot"}, "DENY", ("AGENT_NOT_ALLOWED",)),
        ("search_docs", {"q": "x"}, {"agent": None}, "DENY", ("AGENT_NOT_ALLOWED",)),
        (
            "refund",
            REFUND_OK,
            {"principal": "intern", "agent": None},
            "DENY",
            ("RISK_TIER_EXCEEDED", "CURRENCY_NOT_ALLOWED"),
        ),
        ("refund", {**REFUND_OK, "amount": "600.00"}, {}, "DENY", ("AMOUNT_CEILING_EXCEEDED", "APPROVAL_REQUIRED")),
        ("refund", {**REFUND_OK, "currency": "GBP"}, {}, "DENY", ("CURRENCY_NOT_ALLOWED",)),
        # invariants
        ("refund", {**REFUND_OK, "amount": "300.00"}, {}, "REQUIRE_APPROVAL", ("APPROVAL_REQUIRED",)),
        ("transfer", {"to": "bob", "amount": "10.00"}, {}, "REQUIRE_APPROVAL", ("APPROVAL_REQUIRED",)),
        # preflight runs: ok
        ("refund", REFUND_OK, {}, "ALLOW", ("TOOL_ALLOWED",)),
        ("refund", {**REFUND_OK, "currency": "EUR", "amount": "20.00"}, {}, "ALLOW", ("TOOL_ALLOWED",)),
    ],
)
def test_stage_outcomes(
    tool: str, args: dict[str, Any], kw: dict[str, Any], outcome: str, codes: tuple[str, ...]
) -> None:
    guard, _, _ = make()
    got = run(guard, tool, args, **kw)
    assert got[:2] == (outcome, codes)


def test_matching_manifest_pin_is_accepted_and_required_when_configured() -> None:
    guard, court, _ = make()
    digest = court.registry.get("search_docs").manifest.content_digest()  # type: ignore[union-attr]
    assert run(guard, "search_docs", {"q": "x"}, manifest_digest=digest)[0] == "ALLOW"
    guard2, _, _ = make(policy(invariants={"require_manifest_pin": True}))
    assert run(guard2, "search_docs", {"q": "x"})[:2] == ("DENY", ("MANIFEST_PIN_MISSING",))


def test_time_window_defers() -> None:
    sunday = MONDAY_10 - 86400
    guard, _, _ = make(now=sunday)
    assert run(guard, "search_docs", {"q": "x"})[:2] == ("DEFER", ("OUTSIDE_TIME_WINDOW",))
    guard, _, _ = make(now=MONDAY_10 + 8 * 3600)  # 18:00 is outside (end exclusive)
    assert run(guard, "search_docs", {"q": "x"})[:2] == ("DEFER", ("OUTSIDE_TIME_WINDOW",))


def test_budget_is_spent_and_then_denied() -> None:
    guard, court, _ = make()
    for _ in range(6):
        assert run(guard, "refund", REFUND_OK)[0] == "ALLOW"  # 6 x 150 = 900
    assert run(guard, "refund", {**REFUND_OK, "amount": "100.01"})[:2] == ("DENY", ("BUDGET_EXCEEDED",))
    assert run(guard, "refund", {**REFUND_OK, "amount": "100.00"})[0] == "ALLOW"  # exactly 1000.00
    assert court.state.usage("budget/user-42/USD/86400", 86400, now=MONDAY_10) == 100000


def test_budget_window_rolls_over() -> None:
    guard, _, clock = make()
    for _ in range(6):
        run(guard, "refund", REFUND_OK)
    assert run(guard, "refund", REFUND_OK)[1] == ("BUDGET_EXCEEDED",)
    clock.advance(86400)  # Tuesday, new window
    assert run(guard, "refund", REFUND_OK)[0] == "ALLOW"


def test_rate_limit_defers() -> None:
    guard, _, _ = make()
    email = {"to": "a@example.com", "body": "hi"}
    assert run(guard, "send_email", email)[0] == "ALLOW"
    assert run(guard, "send_email", email)[0] == "ALLOW"
    assert run(guard, "send_email", email)[:2] == ("DEFER", ("RATE_LIMITED",))


def test_kill_switch_denies_everything_even_in_shadow_mode() -> None:
    for mode in ("enforce", "shadow"):
        guard, _, _ = make(policy(kill_switch=True, mode=mode))
        assert run(guard, "search_docs", {"q": "x"})[:2] == ("DENY", ("KILL_SWITCH",))


def test_forbidden_effect() -> None:
    guard, _, _ = make(policy(invariants={"forbidden_effects": ["data.delete"]}))
    assert run(guard, "drop_table", {"table": "users"})[:2] == ("DENY", ("EFFECT_FORBIDDEN",))


def test_allow_effects_restricts() -> None:
    doc = policy()
    doc["principals"][0]["allow_effects"] = ["data.read"]
    guard, _, _ = make(doc)
    assert run(guard, "search_docs", {"q": "x"})[0] == "ALLOW"
    assert run(guard, "send_email", {"to": "a", "body": "b"})[:2] == ("DENY", ("EFFECT_NOT_ALLOWED",))


def test_preflight_failure_missing_and_weak_evidence() -> None:
    failing = {"refund": lambda a: PreflightResult(ok=False, detail="order already refunded")}
    guard, _, _ = make(preflights=failing)
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("PREFLIGHT_FAILED",))

    def boom(a: Any) -> PreflightResult:
        raise RuntimeError("simulator down")

    guard, _, _ = make(preflights={"refund": boom})
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("PREFLIGHT_FAILED",))
    guard, _, _ = make(preflights={"refund": lambda a: "yes"})
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("PREFLIGHT_FAILED",))
    guard, _, _ = make(preflights={"refund": None})
    assert run(guard, "refund", REFUND_OK)[:2] == ("REQUIRE_EVIDENCE", ("PREFLIGHT_MISSING",))
    # transfer needs `simulated`; a self-reported preflight is not enough
    weak = {"transfer": lambda a: PreflightResult(ok=True, grade=EvidenceGrade.SELF_REPORTED)}
    guard, _, _ = make(preflights=weak)
    outcome, codes, _ = run(guard, "transfer", {"to": "bob", "amount": "10.00"})
    assert (outcome, codes) == ("REQUIRE_EVIDENCE", ("EVIDENCE_INSUFFICIENT", "APPROVAL_REQUIRED"))


def test_preflight_is_not_run_for_refused_calls() -> None:
    ran: list[Any] = []

    def spy(a: Any) -> PreflightResult:
        ran.append(a)
        return PreflightResult(ok=True, grade=EvidenceGrade.SIMULATED)

    guard, _, _ = make(preflights={"refund": spy})
    run(guard, "refund", {**REFUND_OK, "amount": "600.00"})
    assert ran == []


def test_require_evidence_effects_raise_the_bar() -> None:
    doc = policy()
    doc["principals"][0]["require_evidence_effects"] = ["payment.refund"]
    selfrep = {"refund": lambda a: PreflightResult(ok=True, grade=EvidenceGrade.SELF_REPORTED)}
    guard, _, _ = make(doc, preflights=selfrep)
    assert run(guard, "refund", REFUND_OK)[:2] == ("REQUIRE_EVIDENCE", ("EVIDENCE_INSUFFICIENT",))


def test_approval_flow_binds_to_the_exact_proposal() -> None:
    guard, _, _ = make()
    args = {**REFUND_OK, "amount": "300.00"}
    req = guard.proposal("refund", args, principal="user-42", agent="billing-bot")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(req, lambda: None)
    grant = guard.approve(info.value.pending, approver="alice")
    assert run(guard, "refund", {**args, "amount": "310.00"}, approval=grant)[:2] == (
        "REQUIRE_APPROVAL",
        ("APPROVAL_REQUIRED", "APPROVAL_MISMATCH"),
    )
    tool = Tool()
    guard.run(req, lambda: tool(**req.args), approval=grant)
    assert tool.calls == [args]
    decision_entry = [e for e in guard.audit_log.entries() if e.event == "execution"][-1]
    assert decision_entry.body["reason_codes"] == ["TOOL_ALLOWED", "APPROVAL_GRANTED"]


def test_approval_does_not_lift_a_denial() -> None:
    guard, _, _ = make()
    args = {**REFUND_OK, "amount": "600.00"}
    req = guard.proposal("refund", args, principal="user-42", agent="billing-bot")
    from execauth_core import PendingApproval

    grant = guard.approve(
        PendingApproval(
            proposal_digest=req.content_digest(),
            request=req,
            reason_codes=("APPROVAL_REQUIRED",),
            requested_at=MONDAY_10,
        ),
        approver="alice",
    )
    assert run(guard, "refund", args, approval=grant)[:2] == ("DENY", ("AMOUNT_CEILING_EXCEEDED",))


def test_shadow_mode_records_but_does_not_block() -> None:
    guard, _, _ = make(policy(mode="shadow"))
    outcome, _, tool = run(guard, "refund", {**REFUND_OK, "amount": "600.00"})
    assert outcome == "ALLOW" and len(tool.calls) == 1
    entry = [e for e in guard.audit_log.entries() if e.event == "execution"][-1]
    assert entry.body["reason_codes"][0] == "SHADOW_MODE"
    assert "AMOUNT_CEILING_EXCEEDED" in entry.body["reason_codes"]
    decision = guard.authorize(
        guard.proposal("refund", {**REFUND_OK, "amount": "600.00"}, principal="user-42", agent="billing-bot")
    )
    assert decision.record.shadow is True and decision.record.shadow_outcome is not None
    assert decision.record.shadow_outcome.value == "DENY"


def test_shadow_is_never_the_default() -> None:
    assert parse_policy({"id": "p", "epoch": 1}).mode == "enforce"


def test_empty_or_missing_policy_denies_all() -> None:
    reg = ToolRegistry([SEARCH])
    for pol in (None, parse_policy({"id": "empty", "epoch": 1})):
        guard = Guard.local(Court(pol, reg))
        assert run(guard, "search_docs", {"q": "x"})[:2] == ("DENY", ("POLICY_EMPTY",))


def test_calls_that_never_start_consume_nothing_but_started_ones_stay_charged() -> None:
    guard, court, _ = make()
    key = "budget/user-42/USD/86400"
    run(guard, "refund", {**REFUND_OK, "amount": "600.00"})  # denied by the Court
    assert court.state.usage(key, 86400, now=MONDAY_10) == 0
    req = guard.proposal("refund", REFUND_OK, principal="user-42", agent="billing-bot")

    class DeadAudit:
        def append(self, event: Any) -> Any:
            from execauth_core import StoreUnavailable

            raise StoreUnavailable("audit down")

        def entries(self, start: int = 1) -> Any:
            return iter(())

        def head(self) -> Any:
            return (0, "")

    live = guard.audit_log
    guard.audit_log = DeadAudit()
    with pytest.raises(ExecutionDenied):  # allowed, but could not be recorded: never started
        guard.run(req, lambda: None)
    assert court.state.usage(key, 86400, now=MONDAY_10) == 0

    # A tool that started and then failed may have moved the money: it stays charged,
    # or a tool that pays and then raises could overspend any budget.
    guard.audit_log = live

    def pays_then_fails() -> None:
        raise ConnectionError("timeout after the payment went out")

    with pytest.raises(ConnectionError):
        guard.run(req, pays_then_fails)
    assert court.state.usage(key, 86400, now=MONDAY_10) == 15000


def test_state_store_outage_denies() -> None:
    from execauth_core import StoreUnavailable

    class Down(MemoryStateStore):
        def usage(self, key: str, window: int, *, now: int) -> int:
            raise StoreUnavailable("state store down")

    guard, _, _ = make(state=Down())
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("STORE_UNAVAILABLE",))


def test_threads_racing_never_overspend() -> None:
    guard, court, _ = make()
    wins: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        for _ in range(5):
            wins.append(run(guard, "refund", {**REFUND_OK, "amount": "100.00"})[0] == "ALLOW")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wins.count(True) == 10  # 10 x 100.00 = the 1000.00 budget, never more
    assert court.state.usage("budget/user-42/USD/86400", 86400, now=MONDAY_10) == 100000


def test_concurrent_debit_race_is_reported() -> None:
    """Another replica spends the headroom between the read and the debit."""
    from execauth_core.stores import Debit

    class Racy(MemoryStateStore):
        def usage(self, key: str, window: int, *, now: int) -> int:
            value = super().usage(key, window, now=now)
            if key.startswith("budget/"):
                super().debit("other-replica", [Debit(key, 99000, 100000, window)], now=now)
            return value

    guard, _, _ = make(state=Racy())
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("BUDGET_EXCEEDED",))


def test_decisions_are_deterministic_and_explained() -> None:
    a, _, _ = make()
    b, _, _ = make()
    req = a.proposal("refund", REFUND_OK, principal="user-42", agent="billing-bot")
    da, db = a.authorize(req), b.authorize(req)
    assert da.canonical_bytes() == db.canonical_bytes()
    assert [s.stage for s in da.record.stages] == [
        "contract",
        "ceilings",
        "counterfactuals",
        "invariants",
        "preflight",
        "emit",
    ]
    assert any("150.00 USD" in n for s in da.record.stages for n in s.notes)
    assert da.record.state_snapshot == {"budget/user-42/USD/86400": 0, "rate/user-42/*/60": 0}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"principals": [{"id": "u", "allow_tools": ["not_registered"]}]}, "unregistered tools"),
        (
            {"principals": [{"id": "u", "rate_limits": [{"tool": "ghost", "limit": 1, "window": 60}]}]},
            "unregistered tool",
        ),
    ],
)
def test_policy_naming_unknown_tools_fails_to_load(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        Court(parse_policy(policy(**change)), ToolRegistry([SEARCH]))


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"principals": [{"id": "u", "alow_tools": []}]}, "Extra inputs"),
        ({"principals": [{"id": "u", "max_risk_tier": "E7"}]}, "RiskTier"),
        ({"principals": [{"id": "u", "amount_ceilings": {"USD": 500}}]}, "valid string"),
        ({"principals": [{"id": "u", "amount_ceilings": {"USD": "5.001"}}]}, "fraction digits"),
        ({"principals": [{"id": "u", "amount_ceilings": {"ZZZ": "5"}}]}, "not declared"),
        ({"principals": [{"id": "u", "allow_effects": ["payment.transfr"]}]}, "unknown effect"),
        ({"principals": [{"id": "u"}, {"id": "u"}]}, "twice"),
        ({"principals": [{"id": "u", "time_windows": [{"start": "18:00", "end": "08:00"}]}]}, "start < end"),
        (
            {"principals": [{"id": "u", "budgets": [{"currency": "USD", "limit": "1", "window": 5}]}]},
            "greater than or equal",
        ),
        ({"epoch": "7"}, "valid integer"),
        ({"kill_switch": "off"}, "valid boolean"),
        ({"mode": "audit"}, "enforce"),
        ({"invariants": {"forbidden_effects": ["nope"]}}, "unknown effect"),
    ],
)
def test_bad_policies_are_rejected_at_load(change: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        parse_policy(policy(**change))


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ({**SEARCH, "effects": []}, "at least 1"),
        ({**SEARCH, "effects": ["data.reed"]}, "unknown effect"),
        ({**SEARCH, "args_schema": {"type": "object", "properties": {"q": {"type": "strng"}}}}, "invalid args_schema"),
        ({**SEARCH, "args_schema": {"type": "array"}}, "object"),
        ({**REFUND, "amount_arg": "amt"}, "not in args_schema"),
        ({**REFUND, "currency_arg": None}, "needs currency"),
        ({**SEARCH, "surprise": 1}, "Extra inputs"),
    ],
)
def test_bad_manifests_are_rejected(manifest: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        ToolRegistry([manifest])


def test_tool_registered_twice() -> None:
    with pytest.raises(ConfigurationError, match="twice"):
        ToolRegistry([SEARCH, SEARCH])


def test_one_approval_authorizes_one_execution() -> None:
    guard, _, _ = make()
    args = {**REFUND_OK, "amount": "300.00"}
    req = guard.proposal("refund", args, principal="user-42", agent="billing-bot")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(req, lambda: None)
    grant = guard.approve(info.value.pending, approver="alice")
    tool = Tool()
    guard.run(req, lambda: tool(**req.args), approval=grant)
    with pytest.raises(ExecutionDenied) as again:
        guard.run(req, lambda: tool(**req.args), approval=grant)
    assert again.value.reason_codes == ("APPROVAL_USED",) and len(tool.calls) == 1


def test_a_forged_pending_approval_is_refused() -> None:
    from execauth_core import PendingApproval

    guard, _, _ = make()
    benign = guard.proposal("refund", {**REFUND_OK, "amount": "250.00"}, principal="user-42", agent="billing-bot")
    evil = guard.proposal("refund", {**REFUND_OK, "amount": "499.00"}, principal="user-42", agent="billing-bot")
    forged = PendingApproval(
        proposal_digest=evil.content_digest(),
        request=benign,
        reason_codes=("APPROVAL_REQUIRED",),
        requested_at=MONDAY_10,
    )
    with pytest.raises(ConfigurationError, match="does not match"):
        guard.approve(forged, approver="alice")


def test_preflight_cannot_change_what_runs() -> None:
    def meddling(args: Any) -> PreflightResult:
        args["order"] = "ATTACKER-ORDER"
        return PreflightResult(ok=True, grade=EvidenceGrade.SIMULATED)

    guard, _, _ = make(preflights={"refund": meddling})
    req = guard.proposal("refund", REFUND_OK, principal="user-42", agent="billing-bot")
    tool = Tool()
    guard.run(req, lambda: tool(**req.args))
    assert tool.calls == [REFUND_OK]


def test_a_watchdog_baseexception_in_preflight_is_a_failed_preflight() -> None:
    class WatchdogTimeout(BaseException):
        pass

    def slow(args: Any) -> PreflightResult:
        raise WatchdogTimeout()

    guard, _, _ = make(preflights={"refund": slow})
    assert run(guard, "refund", REFUND_OK)[:2] == ("DENY", ("PREFLIGHT_FAILED",))


def test_keyboard_interrupt_inside_the_guard_records_refunds_and_propagates() -> None:
    guard, court, _ = make()

    class Interrupting:
        def consume(self, *a: Any, **k: Any) -> bool:
            raise KeyboardInterrupt

    guard.replay_store = Interrupting()
    tool = Tool()
    req = guard.proposal("refund", REFUND_OK, principal="user-42", agent="billing-bot")
    with pytest.raises(KeyboardInterrupt):
        guard.run(req, lambda: tool())
    assert tool.calls == []
    assert court.state.usage("budget/user-42/USD/86400", 86400, now=MONDAY_10) == 0
    last = list(guard.audit_log.entries())[-1]
    assert (last.event, last.executed, last.body["reason_codes"]) == ("denial", False, ["GUARD_ERROR"])


def test_shadow_mode_does_not_run_forbidden_effects() -> None:
    guard, _, _ = make(policy(mode="shadow", invariants={"forbidden_effects": ["data.delete"]}))
    assert run(guard, "drop_table", {"table": "users"})[:2] == ("DENY", ("EFFECT_FORBIDDEN",))


def test_manifest_with_both_currency_sources_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="not both"):
        ToolRegistry([{**REFUND, "currency": "USD"}])


def test_amount_with_a_trailing_newline_is_invalid() -> None:
    guard, _, _ = make()
    assert run(guard, "refund", {**REFUND_OK, "amount": "100.00\n"})[:2] == ("DENY", ("AMOUNT_INVALID",))


def test_court_policy_cannot_be_swapped_in_place() -> None:
    _, court, _ = make()
    with pytest.raises(AttributeError):
        court.policy = None  # type: ignore[misc]


@pytest.mark.parametrize("args", [REFUND_OK, {**REFUND_OK, "amount": "600.00"}])
def test_a_decision_made_from_the_request_bytes_is_the_same_decision(args: dict[str, Any]) -> None:
    # The guard hands the Court the request's canonical bytes (computed once for the
    # digest); the record, its signature and the token must not differ by a byte.
    guard, court, clock = make()
    assert guard.authority is not None
    req = guard.proposal("refund", args, principal="user-42", agent="billing-bot")
    raw = req.canonical_bytes()
    plain = guard.authority.decide(req, now=clock.now(), token_id="court-token-same-0001")
    court.release("court-token-same-0001")  # give back the hold, so the second decision sees the same state
    spliced = guard.authority.decide(req, now=clock.now(), token_id="court-token-same-0001", request_bytes=raw)
    assert spliced.canonical_bytes() == plain.canonical_bytes()
    assert spliced.record.canonical_bytes() == plain.record.canonical_bytes()
    assert raw in spliced.record.canonical_bytes()
    assert spliced.record.stages  # the Court's record is not a trivial one


def test_request_bytes_that_do_not_match_the_digest_are_refused() -> None:
    guard, _, clock = make()
    assert guard.authority is not None
    req = guard.proposal("search_docs", {"query": "a"}, principal="user-42")
    with pytest.raises(ConfigurationError, match="not the digest"):
        guard.authority.decide(
            req,
            now=clock.now(),
            token_id="court-token-odd-00001",
            proposal_digest="sha256:" + "0" * 64,
            request_bytes=req.canonical_bytes(),
        )
