"""Property-based tests: whatever the agent proposes, the Court never allows
anything outside the policy's ceilings, and never lets an exception escape."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from execauth_core import ExecutionDenied
from execauth_core.money import parse_amount

from .court_fixtures import MONDAY_10, make

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53) + 1, 2**53 - 1)
    | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False)
)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12
)

amounts = st.one_of(
    st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False).map(lambda d: f"{d:.2f}"),
    st.text(max_size=12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(),
)
tools = st.sampled_from(["search_docs", "refund", "transfer", "send_email", "drop_table", "unknown", "refund "])
principals = st.sampled_from(["user-42", "intern", "stranger", ""])
agents = st.sampled_from(["billing-bot", "billing-bot", "billing-bot", "rogue-bot", None])


WELL_FORMED = {
    "search_docs": ["q"],
    "refund": ["order", "amount", "currency"],
    "transfer": ["to", "amount"],
    "send_email": ["to", "body"],
    "drop_table": ["table"],
}


@st.composite
def proposals(draw: st.DrawFn) -> tuple[str, dict[str, Any], str, str | None]:
    tool = draw(tools)
    args: dict[str, Any]
    if tool in WELL_FORMED and draw(st.integers(0, 9)) < 8:
        # Mostly well-formed, so that many proposals reach the later stages and some are allowed.
        args = {k: draw(st.text(min_size=1, max_size=10)) for k in WELL_FORMED[tool]}
        if "amount" in args:
            args["amount"] = draw(amounts)
        if "currency" in args:
            args["currency"] = draw(st.sampled_from(["USD", "USD", "EUR", "GBP", "usd"]))
    else:
        args = draw(
            st.dictionaries(st.sampled_from(["q", "to", "body", "table", "order", "x"]), json_values, max_size=3)
        )
        if draw(st.booleans()):
            args["amount"] = draw(amounts)
            args["currency"] = draw(st.sampled_from(["USD", "EUR", "GBP", "usd", 5]))
    principal = draw(st.sampled_from(["user-42", "user-42", "user-42", "intern", "stranger", ""]))
    return tool, args, principal, draw(agents)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(proposals(), st.integers(0, 8 * 3600 - 1) | st.integers(0, 7 * 86400))
def test_random_proposals_never_allow_outside_the_ceilings(
    p: tuple[str, dict[str, Any], str, str | None], dt: int
) -> None:
    tool, args, principal, agent = p
    guard, court, clock = make(now=MONDAY_10 + dt)
    ran: list[dict[str, Any]] = []
    try:
        req = guard.proposal(tool, args, principal=principal, agent=agent)
    except Exception:
        return
    try:
        guard.run(req, lambda: ran.append(req.args))
    except ExecutionDenied as exc:
        assert ran == [] and exc.reason_codes
        event(f"denied {exc.reason_codes[0]}")
        return
    event("allowed")
    # It ran: prove it was inside every ceiling of the policy.
    assert len(ran) == 1
    pol = court.policy
    assert pol is not None
    prin = pol.principal(principal)
    assert prin is not None and tool in prin.allow_tools
    assert not prin.agents or agent in prin.agents
    assert not prin.time_windows or any(w.contains(clock.now()) for w in prin.time_windows)
    manifest = court.registry.get(tool)
    assert manifest is not None
    if manifest.manifest.amount_arg:
        currency = args.get("currency") if manifest.manifest.currency_arg else manifest.manifest.currency
        assert isinstance(args["amount"], str) and currency in prin.amount_ceilings
        exp = pol.currencies[currency]
        amount = parse_amount(args["amount"], exp)
        assert amount <= parse_amount(prin.amount_ceilings[currency], exp)
        assert amount <= parse_amount(prin.require_approval_above.get(currency, "999999999"), exp)
        spent = court.state.usage(f"budget/{principal}/{currency}/86400", 86400, now=clock.now())
        assert spent <= 100000


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["100.00", "250.00", "0.01", "199.99"]), st.booleans()), min_size=1, max_size=25)
)
def test_budget_is_never_overspent_whatever_the_sequence(steps: list[tuple[str, bool]]) -> None:
    guard, court, _ = make()
    for amount, fail in steps:
        req = guard.proposal(
            "refund", {"order": "A", "amount": amount, "currency": "USD"}, principal="user-42", agent="billing-bot"
        )

        def call(fail: bool = fail) -> None:
            if fail:
                raise RuntimeError("tool failed")

        try:
            guard.run(req, call)
        except (ExecutionDenied, RuntimeError):
            pass
        assert court.state.usage("budget/user-42/USD/86400", 86400, now=MONDAY_10) <= 100000
