"""Delegation v1: chains that only narrow, verified by the child's guard.

Adversarial: widen each field, omit each field, extend expiry, re-use a consumed
delegation, splice links from two chains, an untrusted signer, depth over the limit,
a revoked parent. Every refusal is a recorded denial with its reason code.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from execauth_core import ExecutionDenied, KeySet, LocalSigner, TrustedKey
from execauth_core._b64 import b64url_decode, b64url_encode
from execauth_core.canonical import canonicalize
from execauth_core.delegation import (
    DelegationClaims,
    DelegationError,
    DelegationGate,
    DelegationLedger,
    DelegationScope,
    DelegationVerifier,
    Narrowing,
    delegate,
    issue_root,
    narrows,
    widenings,
)
from execauth_core.stores.memory import MemoryStateStore

from .court_fixtures import MONDAY_10, make, policy

AUTHORITY = LocalSigner(bytes(range(32)))
PARENT_AGENT = LocalSigner(bytes(range(1, 33)))
STRANGER = LocalSigner(bytes(range(2, 34)))
TRUSTED = KeySet(
    [TrustedKey.from_public_key(AUTHORITY.public_key), TrustedKey.from_public_key(PARENT_AGENT.public_key)]
)

ROOT_SCOPE: dict[str, Any] = {
    "tools": ["search_docs", "refund", "transfer"],
    "effects": ["data.read", "payment.refund", "payment.transfer"],
    "amount_ceilings": {"USD": "300.00", "EUR": "100.00"},
    "constraints": [],
    "rate": {"count": 10, "window": 60},
    "max_uses": 5,
}


def root(**kw: Any) -> Any:
    args: dict[str, Any] = {
        "jti": "deleg-root-0000001",
        "issuer": "execauth-local",
        "principal": "user-42",
        "agent": "billing-bot",
        "audience": ["execauth-guard"],
        "scope": ROOT_SCOPE,
        "now": MONDAY_10,
        "ttl": 3600,
        "max_depth": 2,
    }
    args.update(kw)
    return issue_root(AUTHORITY, **args)


def child(parent: Any, narrowing: Narrowing | None = None, **kw: Any) -> Any:
    signer = kw.pop("signer", PARENT_AGENT)
    args: dict[str, Any] = {"jti": "deleg-child-000001", "agent": "child-agent", "now": MONDAY_10 + 1}
    args.update(kw)
    return delegate(parent, signer, narrowing=narrowing, **args)


def verifier(**kw: Any) -> DelegationVerifier:
    args: dict[str, Any] = {"keys": TRUSTED, "issuers": ["execauth-local"], "audience": "execauth-guard"}
    args.update(kw)
    return DelegationVerifier(**args)


def forge(link: Any, signer: LocalSigner = PARENT_AGENT, **changes: Any) -> str:
    """Re-sign ``link`` with some claims changed (what a dishonest holder can do)."""
    claims = json.loads(b64url_decode(link.token.split(".")[1]))
    for path, value in changes.items():
        target = claims
        *head, last = path.split("__")
        for part in head:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    header = b64url_encode(canonicalize({"alg": "EdDSA", "kid": signer.kid, "typ": "execauth-delegation+jwt"}))
    body = header + "." + b64url_encode(canonicalize(claims))
    return body + "." + b64url_encode(signer.sign(body.encode("ascii")))


def code_of(chain: list[str], now: int = MONDAY_10 + 2, **kw: Any) -> str:
    with pytest.raises(DelegationError) as err:
        verifier(**kw).verify(chain, now=now)
    return err.value.reason_code


# -- building a child ---------------------------------------------------------


def test_an_omitted_field_inherits_the_parents_limit() -> None:
    r = root()
    c = child(r, Narrowing(tools=["refund"], amount_ceilings={"USD": "50.00"}))
    s = c.claims.scope
    assert s.tools == ("refund",)
    assert s.amount_ceilings == {"USD": "50.00", "EUR": "100.00"}  # EUR inherited, not unlimited
    assert s.effects == r.claims.scope.effects
    assert s.rate == r.claims.scope.rate and s.max_uses == 5
    assert c.claims.exp == r.claims.exp and c.claims.aud == r.claims.aud
    assert c.claims.max_depth == 1 and c.claims.depth == 1 and c.claims.parent == r.digest
    assert narrows(c.claims, r.claims)


@pytest.mark.parametrize(
    "ask",
    [
        Narrowing(tools=["refund", "send_email"]),
        Narrowing(effects=["data.read", "message.email"]),
        Narrowing(amount_ceilings={"USD": "300.01"}),
        Narrowing(amount_ceilings={"GBP": "1.00"}),
        Narrowing(rate={"count": 11, "window": 60}),
        Narrowing(rate={"count": 10, "window": 30}),
        Narrowing(rate={"count": 10, "window": 90}),
        Narrowing(max_uses=6),
        Narrowing(audience=["execauth-guard", "elsewhere"]),
        Narrowing(ttl=3600),
        Narrowing(max_depth=2),
    ],
)
def test_building_a_wider_child_is_refused(ask: Narrowing) -> None:
    with pytest.raises(DelegationError) as err:
        child(root(), ask)
    assert err.value.reason_code == "DELEGATION_WIDENS"


def test_constraints_are_kept_and_added() -> None:
    c = child(root(), Narrowing(constraints=[{"tool": "refund", "arg": "order", "op": "prefix", "values": ["A-"]}]))
    g = child(
        c,
        Narrowing(constraints=[{"tool": "refund", "arg": "currency", "op": "in", "values": ["USD"]}]),
        jti="deleg-grand-000001",
        agent="grandchild",
        signer=PARENT_AGENT,
    )
    assert len(g.claims.scope.constraints) == 2 and narrows(g.claims, c.claims)


def test_a_leaf_cannot_delegate_further() -> None:
    leaf = child(root(max_depth=1))
    with pytest.raises(DelegationError) as err:
        child(leaf, jti="deleg-grand-000001", agent="grandchild")
    assert err.value.reason_code == "DELEGATION_DEPTH_EXCEEDED"


def test_every_scope_field_is_required_on_the_wire() -> None:
    for field in ROOT_SCOPE:
        partial = {k: v for k, v in ROOT_SCOPE.items() if k != field}
        with pytest.raises(ValueError):
            DelegationScope.model_validate(partial)


# -- verifying a chain ----------------------------------------------------------


def test_a_two_hop_chain_verifies() -> None:
    r = root()
    c = child(r, Narrowing(tools=["refund"]))
    g = child(c, Narrowing(amount_ceilings={"USD": "10.00"}), jti="deleg-grand-000001", agent="grandchild")
    vc = verifier().verify([r.token, c.token, g.token], now=MONDAY_10 + 2)
    assert vc.agent == "grandchild" and vc.principal == "user-42"
    assert vc.scope.tools == ("refund",) and vc.scope.amount_ceilings["USD"] == "10.00"
    assert vc.refs == (
        "delegation:deleg-root-0000001",
        "delegation:deleg-child-000001",
        "delegation:deleg-grand-000001",
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scope__tools", ["refund", "search_docs", "send_email", "transfer"]),
        ("scope__effects", ["data.read", "message.email", "payment.refund", "payment.transfer"]),
        ("scope__amount_ceilings", {"USD": "300.01", "EUR": "100.00"}),
        ("scope__amount_ceilings", {"USD": "300.00", "EUR": "100.00", "GBP": "1.00"}),
        ("scope__rate", {"count": 11, "window": 60}),
        ("scope__max_uses", 6),
        ("aud", ["elsewhere", "execauth-guard"]),
        ("exp", MONDAY_10 + 3601),
    ],
)
def test_a_forged_child_that_widens_any_field_is_refused(field: str, value: Any) -> None:
    r = root()
    forged = forge(child(r), **{field: value})
    assert code_of([r.token, forged]) == "DELEGATION_WIDENS"


def test_a_forged_child_valid_before_its_parent_is_refused() -> None:
    r = root(now=MONDAY_10)
    assert code_of([r.token, forge(child(r), iat=MONDAY_10 - 5, nbf=MONDAY_10 - 5)]) == "DELEGATION_WIDENS"


def test_a_forged_child_that_drops_a_parents_constraint_is_refused() -> None:
    r = root(
        scope={**ROOT_SCOPE, "constraints": [{"tool": "refund", "arg": "order", "op": "prefix", "values": ["A-"]}]}
    )
    assert code_of([r.token, forge(child(r), scope__constraints=[])]) == "DELEGATION_WIDENS"


@pytest.mark.parametrize("field", ["tools", "effects", "amount_ceilings", "constraints", "rate", "max_uses"])
def test_a_child_that_omits_a_scope_field_is_refused_not_unlimited(field: str) -> None:
    r = root()
    assert code_of([r.token, forge(child(r), **{f"scope__{field}": ...})]) == "DELEGATION_INVALID"


@pytest.mark.parametrize("field", ["aud", "exp", "max_depth", "parent", "holder_kid", "sub"])
def test_a_child_that_omits_a_link_field_is_refused(field: str) -> None:
    r = root()
    assert code_of([r.token, forge(child(r), **{field: ...})]) == "DELEGATION_INVALID"


def test_a_missing_currency_means_no_spending_in_it() -> None:
    r = root()
    c = verifier().verify([r.token, forge(child(r), scope__amount_ceilings={"USD": "1.00"})], now=MONDAY_10 + 2)
    assert "EUR" not in c.scope.amount_ceilings


def test_extended_expiry_is_refused_and_expiry_is_enforced() -> None:
    r = root()
    assert code_of([r.token, forge(child(r), exp=MONDAY_10 + 7200)]) == "DELEGATION_WIDENS"
    c = child(r, Narrowing(ttl=60))
    assert code_of([r.token, c.token], now=MONDAY_10 + 200) == "DELEGATION_EXPIRED"


def test_spliced_links_from_two_chains_are_refused() -> None:
    r1, r2 = root(), root(jti="deleg-root-0000002")
    c2 = child(r2)
    assert code_of([r1.token, c2.token]) == "DELEGATION_CHAIN_BROKEN"


def test_a_chain_without_its_root_is_refused() -> None:
    c = child(root())
    assert code_of([c.token]) == "DELEGATION_CHAIN_BROKEN"


def test_a_link_granted_by_someone_else_is_refused() -> None:
    r = root()
    assert code_of([r.token, forge(child(r), iss="intruder")]) == "DELEGATION_CHAIN_BROKEN"
    assert code_of([r.token, forge(child(r), sub="intern")]) == "DELEGATION_CHAIN_BROKEN"


def test_a_link_signed_by_an_untrusted_key_is_refused() -> None:
    r = root()
    assert code_of([r.token, forge(child(r), signer=STRANGER)]) == "DELEGATION_KEY_UNTRUSTED"
    rogue_root = issue_root(
        STRANGER,
        jti="deleg-rogue-000001",
        issuer="execauth-local",
        principal="user-42",
        agent="billing-bot",
        audience=["execauth-guard"],
        scope=ROOT_SCOPE,
        now=MONDAY_10,
        ttl=60,
    )
    assert code_of([rogue_root.token]) == "DELEGATION_KEY_UNTRUSTED"


def test_a_tampered_signature_and_a_foreign_header_are_refused() -> None:
    r = root()
    h, p, s = r.token.split(".")
    flipped = s[:-2] + ("A" if s[-2] != "A" else "B") + s[-1]
    assert code_of([f"{h}.{p}.{flipped}"]) in ("DELEGATION_SIGNATURE_INVALID", "DELEGATION_INVALID")
    none_header = b64url_encode(canonicalize({"alg": "none", "kid": AUTHORITY.kid, "typ": "execauth-delegation+jwt"}))
    assert code_of([f"{none_header}.{p}.{s}"]) == "DELEGATION_INVALID"
    token_typ = b64url_encode(canonicalize({"alg": "EdDSA", "kid": AUTHORITY.kid, "typ": "execauth+jwt"}))
    assert code_of([f"{token_typ}.{p}.{s}"]) == "DELEGATION_INVALID"


def test_a_root_from_an_untrusted_issuer_is_refused() -> None:
    assert code_of([root(issuer="someone-else").token]) == "DELEGATION_ISSUER_UNTRUSTED"


def test_depth_over_the_limit_is_refused() -> None:
    r = root(max_depth=1)
    c = child(r)
    # a forged grandchild claiming depth is still allowed
    g = forge(child(r, jti="deleg-grand-000001"), parent=c.digest, depth=2, iss="child-agent", max_depth=0)
    assert code_of([r.token, c.token, g]) == "DELEGATION_DEPTH_EXCEEDED"
    deep = root(max_depth=3)
    c1 = child(deep)
    c2 = child(c1, jti="deleg-grand-000001", agent="grandchild")
    assert code_of([deep.token, c1.token, c2.token], max_chain=2) == "DELEGATION_DEPTH_EXCEEDED"


def test_a_holder_kid_binds_who_may_sign_the_next_link() -> None:
    r = root(holder_kid=AUTHORITY.kid)
    with pytest.raises(DelegationError):
        child(r)  # PARENT_AGENT is not the holder
    assert code_of([r.token, forge(child(root()), parent=r.digest)]) == "DELEGATION_KEY_UNTRUSTED"


def test_another_audience_is_refused() -> None:
    assert code_of([root().token], audience="other-guard") == "DELEGATION_AUDIENCE_MISMATCH"


def test_no_keys_verifies_nothing() -> None:
    assert code_of([root().token], keys=KeySet()) == "KEYSET_MISSING"


def test_revoking_a_parent_stops_everything_below() -> None:
    ledger = DelegationLedger(MemoryStateStore())
    r = root()
    c = child(r)
    g = child(c, jti="deleg-grand-000001", agent="grandchild")
    chain = [r.token, c.token, g.token]
    verifier().verify(chain, now=MONDAY_10 + 2, revoked=lambda j: ledger.is_revoked(j, now=MONDAY_10 + 2))
    ledger.revoke(c.claims.jti, now=MONDAY_10 + 2)
    with pytest.raises(DelegationError) as err:
        verifier().verify(chain, now=MONDAY_10 + 3, revoked=lambda j: ledger.is_revoked(j, now=MONDAY_10 + 3))
    assert err.value.reason_code == "DELEGATION_REVOKED"
    # the sibling above the revoked link still works
    verifier().verify([r.token], now=MONDAY_10 + 3, revoked=lambda j: ledger.is_revoked(j, now=MONDAY_10 + 3))


def test_widenings_names_each_field() -> None:
    r = root()
    c = DelegationClaims.model_validate(
        {**child(r).claims.model_dump(), "scope": {**ROOT_SCOPE, "max_uses": 9, "tools": ["drop_table"]}}
    )
    assert widenings(c, r.claims) == ["tools", "max_uses"]


# -- through the guard ------------------------------------------------------------


def gate(max_uses: int = 5, **scope: Any) -> tuple[DelegationGate, Any, list[str]]:
    doc = policy()
    doc["principals"][0]["agents"] = ["billing-bot", "child-agent", "grandchild"]
    guard, court, _ = make(doc)
    ledger = DelegationLedger(court.state)
    g = DelegationGate(guard, verifier=verifier(), ledger=ledger, registry=court.registry)
    r = root(scope={**ROOT_SCOPE, "max_uses": max_uses, **scope})
    c = child(
        r,
        Narrowing(
            tools=["refund"],
            amount_ceilings={"USD": "50.00"},
            constraints=[{"tool": "refund", "arg": "order", "op": "prefix", "values": ["A-"]}],
        ),
    )
    return g, ledger, [r.token, c.token]


def records(g: DelegationGate) -> list[dict[str, Any]]:
    return [dict(e.body) for e in g.guard.audit_log.entries()]  # type: ignore[attr-defined]


def test_a_child_within_its_scope_runs_and_the_record_names_the_chain() -> None:
    g, _, chain = gate()
    request = g.proposal(chain, "refund", {"order": "A-1", "amount": "20.00", "currency": "USD"})
    assert g.run(chain, request, lambda: "refunded") == "refunded"
    decision = [e for e in records(g) if e["event"] == "decision" or e["event"] == "execution"]
    assert decision and decision[-1]["executed"] is True
    assert request.context_refs == ("delegation:deleg-root-0000001", "delegation:deleg-child-000001")


@pytest.mark.parametrize(
    ("tool", "args"),
    [
        ("transfer", {"to": "bob", "amount": "1.00"}),  # tool not delegated to the child
        ("refund", {"order": "A-1", "amount": "50.01", "currency": "USD"}),  # over the child's ceiling
        ("refund", {"order": "B-1", "amount": "1.00", "currency": "USD"}),  # outside the resource constraint
        ("refund", {"order": "A-1", "amount": "1.00", "currency": "GBP"}),  # no ceiling in that currency
    ],
)
def test_a_child_exceeding_its_scope_is_denied_and_recorded(tool: str, args: dict[str, Any]) -> None:
    g, _, chain = gate()
    request = g.proposal(chain, tool, args)
    ran: list[int] = []
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, request, lambda: ran.append(1))
    assert err.value.reason_codes[0] == "DELEGATION_SCOPE_EXCEEDED" and not ran
    last = records(g)[-1]
    assert last["executed"] is False and last["reason_codes"][0] == "DELEGATION_SCOPE_EXCEEDED"


def test_a_consumed_delegation_cannot_be_reused() -> None:
    g, _, chain = gate(max_uses=1)
    args = {"order": "A-1", "amount": "1.00", "currency": "USD"}
    g.run(chain, g.proposal(chain, "refund", args), lambda: None)
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, g.proposal(chain, "refund", args, call_id="second"), lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_USES_EXHAUSTED"


def test_a_parents_use_count_bounds_all_its_children() -> None:
    g, _, chain = gate(max_uses=2)
    r_token = chain[0]
    parent = verifier().verify([r_token], now=MONDAY_10 + 1).links[0]
    sibling = child(parent, jti="deleg-child-000002")
    args = {"order": "A-1", "amount": "1.00", "currency": "USD"}
    g.run(chain, g.proposal(chain, "refund", args), lambda: None)
    g.run([r_token, sibling.token], g.proposal([r_token, sibling.token], "refund", args), lambda: None)
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, g.proposal(chain, "refund", args, call_id="third"), lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_USES_EXHAUSTED"


def test_a_call_the_court_denies_gives_its_use_back() -> None:
    g, _, chain = gate(max_uses=1)
    # The Court denies: the proposal pins a wrong manifest digest.
    bad = g.proposal(
        chain, "refund", {"order": "A-1", "amount": "1.00", "currency": "USD"}, manifest_digest="sha256:" + "0" * 64
    )
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, bad, lambda: None)
    assert err.value.reason_codes[0] == "MANIFEST_PIN_MISMATCH"
    assert (
        g.run(chain, g.proposal(chain, "refund", {"order": "A-1", "amount": "1.00", "currency": "USD"}), lambda: "ok")
        == "ok"
    )


def test_a_revoked_parent_stops_the_child_at_the_guard() -> None:
    g, ledger, chain = gate()
    request = g.proposal(chain, "refund", {"order": "A-1", "amount": "1.00", "currency": "USD"})
    ledger.revoke("deleg-root-0000001", now=MONDAY_10)
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, request, lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_REVOKED"


def test_a_request_that_does_not_name_the_chain_or_is_for_another_agent_is_denied() -> None:
    g, _, chain = gate()
    plain = g.guard.proposal(
        "refund", {"order": "A-1", "amount": "1.00", "currency": "USD"}, principal="user-42", agent="child-agent"
    )
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, plain, lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_CHAIN_BROKEN"
    other = g.guard.proposal(
        "refund",
        {"order": "A-1", "amount": "1.00", "currency": "USD"},
        principal="user-42",
        agent="billing-bot",
        context_refs=plain.context_refs,
    )
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, other, lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_AGENT_MISMATCH"


def test_the_rate_of_a_link_is_enforced() -> None:
    g, _, chain = gate(rate={"count": 1, "window": 60})
    args = {"order": "A-1", "amount": "1.00", "currency": "USD"}
    g.run(chain, g.proposal(chain, "refund", args), lambda: None)
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, g.proposal(chain, "refund", args, call_id="2"), lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_RATE_LIMITED"


def test_a_state_store_outage_denies() -> None:
    g, ledger, chain = gate()
    request = g.proposal(chain, "refund", {"order": "A-1", "amount": "1.00", "currency": "USD"})

    class Down(MemoryStateStore):
        def usage(self, key: str, window: int, *, now: int) -> int:
            from execauth_core.errors import StoreUnavailable

            raise StoreUnavailable("down")

    ledger.state = Down()
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, request, lambda: None)
    assert err.value.reason_codes[0] == "STORE_UNAVAILABLE"


def test_arun_denies_outside_the_scope_and_runs_inside() -> None:
    g, _, chain = gate()

    async def go() -> str:
        return "async ok"

    async def main() -> None:
        ok = g.proposal(chain, "refund", {"order": "A-2", "amount": "2.00", "currency": "USD"})
        assert await g.arun(chain, ok, go) == "async ok"
        with pytest.raises(ExecutionDenied):
            await g.arun(chain, g.proposal(chain, "search_docs", {"q": "x"}), go)

    asyncio.run(main())


def test_uses_are_counted_even_with_a_fixed_id_factory() -> None:
    g, _, chain = gate(max_uses=1)
    g.guard.id_factory = lambda: "fixed-token-id-00001"  # repeats: the hold id must not
    args = {"order": "A-1", "amount": "1.00", "currency": "USD"}
    g.run(chain, g.proposal(chain, "refund", args), lambda: None)
    with pytest.raises(ExecutionDenied) as err:
        g.run(chain, g.proposal(chain, "refund", args, call_id="2"), lambda: None)
    assert err.value.reason_codes[0] == "DELEGATION_USES_EXHAUSTED"
