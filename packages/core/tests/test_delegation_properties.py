"""Properties of delegation narrowing (hypothesis).

1. ``narrows`` is sound: whatever a narrowing child admits, its parent admits.
2. No child that widens any limit is ever accepted by the verifier, however it was
   built (links are forged and signed directly, not through ``delegate``).
3. ``delegate`` either refuses or builds a child that narrows, and every limit the
   narrowing leaves out is the parent's own.
"""

from __future__ import annotations

import hashlib
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from execauth_core import AuthorizationRequest, KeySet, LocalSigner, ToolRegistry, TrustedKey
from execauth_core._b64 import b64url_encode
from execauth_core.canonical import canonicalize
from execauth_core.delegation import (
    ArgConstraint,
    DelegationClaims,
    DelegationError,
    DelegationVerifier,
    Narrowing,
    delegate,
    issue_root,
    narrows,
    outside_scope,
    widenings,
)

NOW = 1_767_607_200
SIGNER = LocalSigner(bytes(range(32)))
KEYS = KeySet([TrustedKey.from_public_key(SIGNER.public_key)])
VERIFIER = DelegationVerifier(keys=KEYS, issuers=["root-issuer"], audience="g1")
SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOOLS = ["a", "b", "c", "d"]
EFFECT_POOL = ["data.read", "data.write", "payment.refund", "message.email"]
REGISTRY = ToolRegistry(
    [
        {"name": "a", "version": "1", "args_schema": {"type": "object"}, "effects": ["data.read"]},
        {
            "name": "b",
            "version": "1",
            "args_schema": {
                "type": "object",
                "properties": {
                    "order": {"type": "string"},
                    "amount": {"type": "string"},
                    "currency": {"type": "string"},
                },
            },
            "effects": ["payment.refund"],
            "amount_arg": "amount",
            "currency_arg": "currency",
        },
        {"name": "c", "version": "1", "args_schema": {"type": "object"}, "effects": ["message.email"]},
        {"name": "d", "version": "1", "args_schema": {"type": "object"}, "effects": ["data.read", "data.write"]},
    ]
)
CONSTRAINTS = [
    ArgConstraint.model_validate(c)
    for c in (
        {"tool": "b", "arg": "order", "op": "prefix", "values": ["A"]},
        {"tool": "b", "arg": "order", "op": "in", "values": ["A1", "B1"]},
        {"tool": "a", "arg": "q", "op": "in", "values": ["x"]},
        {"tool": "b", "arg": "currency", "op": "in", "values": ["USD"]},
    )
]
CURRENCIES = ["USD", "EUR", "GBP"]


def cents(n: int) -> str:
    return f"{n // 100}.{n % 100:02d}"


def subset(pool: list[Any], min_size: int = 0) -> st.SearchStrategy[list[Any]]:
    return st.lists(st.sampled_from(pool), unique=True, min_size=min_size, max_size=len(pool))


scopes = st.fixed_dictionaries(
    {
        "tools": subset(TOOLS, 1),
        "effects": subset(EFFECT_POOL),
        "amount_ceilings": st.dictionaries(st.sampled_from(CURRENCIES), st.integers(0, 1000).map(cents)),
        "constraints": subset(CONSTRAINTS),
        "rate": st.fixed_dictionaries({"count": st.integers(1, 20), "window": st.sampled_from([30, 60, 120, 90])}),
        "max_uses": st.integers(1, 10),
    }
)
links = st.fixed_dictionaries(
    {
        "scope": scopes,
        "aud": subset(["g1", "g2", "g3"], 1),
        "exp_offset": st.integers(10, 5000),
        "start_offset": st.integers(-20, 20),
        "max_depth": st.integers(0, 3),
    }
)
requests = st.one_of(
    st.builds(
        lambda order, amount, currency: ("b", {"order": order, "amount": cents(amount), "currency": currency}),
        st.sampled_from(["A1", "A2", "B1", "C1"]),
        st.integers(0, 1200),
        st.sampled_from(CURRENCIES),
    ),
    st.builds(lambda q: ("a", {"q": q}), st.sampled_from(["x", "y"])),
    st.builds(lambda: ("c", {})),
    st.builds(lambda: ("d", {})),
)


def claims(
    link: dict[str, Any], *, depth: int = 0, parent: str | None = None, iss: str = "root-issuer"
) -> DelegationClaims:
    start = NOW + link["start_offset"]
    return DelegationClaims(
        jti=f"prop-delegation-{depth:04d}",
        iss=iss,
        sub="user",
        agent=f"agent-{depth}",
        aud=tuple(link["aud"]),
        iat=start,
        nbf=start,
        exp=start + link["exp_offset"],
        parent=parent,
        depth=depth,
        max_depth=link["max_depth"],
        holder_kid=None,
        scope=link["scope"],
    )


def sign(c: DelegationClaims) -> str:
    header = b64url_encode(canonicalize({"alg": "EdDSA", "kid": SIGNER.kid, "typ": "execauth-delegation+jwt"}))
    body = header + "." + b64url_encode(c.canonical_bytes())
    return body + "." + b64url_encode(SIGNER.sign(body.encode("ascii")))


FIELDS = ["tools", "effects", "amount_ceilings", "constraints", "rate", "max_uses", "aud", "times", "max_depth"]


def nudge(child: dict[str, Any], parent: dict[str, Any], field: str, data: st.DataObject) -> None:
    """Widen ``field`` of ``child`` by the least step past ``parent``'s limit."""
    cs, ps = child["scope"], parent["scope"]
    if field == "tools":
        extra = [t for t in TOOLS if t not in ps["tools"]]
        cs["tools"] = [*ps["tools"], *extra[:1]] if extra else cs["tools"]
    elif field == "effects":
        extra = [e for e in EFFECT_POOL if e not in ps["effects"]]
        cs["effects"] = [*ps["effects"], *extra[:1]] if extra else cs["effects"]
    elif field == "amount_ceilings":
        cur = data.draw(st.sampled_from(CURRENCIES))
        held = ps["amount_ceilings"].get(cur)
        cs["amount_ceilings"] = {
            **ps["amount_ceilings"],
            cur: cents(int(held.replace(".", "")) + 1) if held else "0.00",
        }
    elif field == "constraints":
        cs["constraints"] = list(ps["constraints"])[1:]
    elif field == "rate":
        r = ps["rate"]
        cs["rate"] = data.draw(
            st.sampled_from(
                [
                    {"count": r["count"] + 1, "window": r["window"]},
                    {"count": r["count"], "window": r["window"] // 2 or 1},
                ]
            )
        )
    elif field == "max_uses":
        cs["max_uses"] = ps["max_uses"] + 1
    elif field == "aud":
        child["aud"] = sorted({*parent["aud"], "g9"})
    elif field == "times":
        child["exp_offset"] = parent["exp_offset"] + 1 - (child["start_offset"] - parent["start_offset"])
    else:
        child["max_depth"] = parent["max_depth"]


def near_child(data: st.DataObject, parent: dict[str, Any]) -> dict[str, Any]:
    """A child drawn as a narrowing of ``parent`` in every field, except (usually)
    one field drawn at random: so a single widened limit is a common case."""
    ps = parent["scope"]
    scope = {
        "tools": data.draw(st.lists(st.sampled_from(ps["tools"]), unique=True, min_size=1)),
        "effects": data.draw(st.lists(st.sampled_from(ps["effects"]), unique=True)) if ps["effects"] else [],
        "amount_ceilings": {
            cur: cents(data.draw(st.integers(0, int(v.replace(".", "")))))
            for cur, v in ps["amount_ceilings"].items()
            if data.draw(st.booleans())
        },
        "constraints": [*ps["constraints"], *data.draw(subset(CONSTRAINTS))],
        "rate": {
            "count": data.draw(st.integers(1, ps["rate"]["count"])),
            "window": ps["rate"]["window"] * data.draw(st.sampled_from([1, 2])),
        },
        "max_uses": data.draw(st.integers(1, ps["max_uses"])),
    }
    child = {
        "scope": scope,
        "aud": data.draw(st.lists(st.sampled_from(parent["aud"]), unique=True, min_size=1)),
        "exp_offset": data.draw(st.integers(1, parent["exp_offset"])),
        "start_offset": parent["start_offset"],
        "max_depth": data.draw(st.integers(0, parent["max_depth"] - 1)),
    }
    wild = data.draw(st.sampled_from([None, *FIELDS]))
    if wild is not None and data.draw(st.booleans()):
        nudge(child, parent, wild, data)  # just over the parent's limit: the boundary
    elif wild is not None:
        other = data.draw(links)
        if wild in scope:
            scope[wild] = other["scope"][wild]
        elif wild == "times":
            child["exp_offset"], child["start_offset"] = other["exp_offset"], other["start_offset"]
        else:
            child[wild] = other[wild]
    return child


def wider_by_reference(c: DelegationClaims, p: DelegationClaims) -> bool:
    """An independent statement of "child grants more than parent", for the oracle."""
    cs, ps = c.scope, p.scope
    over_money = any(
        cur not in ps.amount_ceilings or float(v) > float(ps.amount_ceilings[cur])
        for cur, v in cs.amount_ceilings.items()
    )
    return (
        any(t not in ps.tools for t in cs.tools)
        or any(e not in ps.effects for e in cs.effects)
        or over_money
        or any(k not in cs.constraints for k in ps.constraints)
        or cs.rate.count > ps.rate.count
        or cs.rate.window < ps.rate.window
        or cs.rate.window % ps.rate.window != 0
        or cs.max_uses > ps.max_uses
        or any(a not in p.aud for a in c.aud)
        or c.exp > p.exp
        or c.nbf < p.nbf
        or c.iat < p.iat
        or c.max_depth >= p.max_depth
    )


@SETTINGS
@given(parent=links, data=st.data(), request=requests)
def test_whatever_a_narrowing_child_admits_its_parent_admits(
    parent: dict[str, Any], data: st.DataObject, request: tuple[str, dict[str, Any]]
) -> None:
    parent["max_depth"] = max(parent["max_depth"], 1)
    p, c = claims(parent), claims(near_child(data, parent), depth=1)
    r = AuthorizationRequest(tool=request[0], args=request[1], principal="user")
    if narrows(c, p) and outside_scope(c.scope, r, REGISTRY) is None:
        assert outside_scope(p.scope, r, REGISTRY) is None


@SETTINGS
@given(parent=links, data=st.data())
def test_the_verifier_accepts_a_child_only_if_it_narrows(parent: dict[str, Any], data: st.DataObject) -> None:
    parent["aud"] = sorted({*parent["aud"], "g1"})
    parent["max_depth"] = max(parent["max_depth"], 1)
    child = near_child(data, parent)
    child["aud"] = sorted({*child["aud"], "g1"})
    p = claims(parent)
    root = sign(p)
    c = claims(child, depth=1, parent="sha256:" + hashlib.sha256(root.encode()).hexdigest(), iss=p.agent)
    now = max(p.nbf, c.nbf)
    try:
        VERIFIER.verify([root, sign(c)], now=now)
    except DelegationError as exc:
        accepted, code = False, exc.reason_code
    else:
        accepted, code = True, None
    if wider_by_reference(c, p):
        assert not accepted, f"a widening child was accepted: {c.scope} under {p.scope}"
    elif now < min(p.exp, c.exp):
        assert accepted, code
    assert narrows(c, p) is not wider_by_reference(c, p)


narrowings = st.builds(
    Narrowing,
    tools=st.none() | subset(TOOLS, 1),
    effects=st.none() | subset(EFFECT_POOL),
    amount_ceilings=st.none() | st.dictionaries(st.sampled_from(CURRENCIES), st.integers(0, 1200).map(cents)),
    constraints=subset(CONSTRAINTS),
    rate=st.none() | st.fixed_dictionaries({"count": st.integers(1, 25), "window": st.sampled_from([30, 60, 120, 90])}),
    max_uses=st.none() | st.integers(1, 12),
    audience=st.none() | subset(["g1", "g2", "g3"], 1),
    max_depth=st.none() | st.integers(0, 3),
    ttl=st.none() | st.integers(1, 6000),
)


@SETTINGS
@given(parent=links, ask=narrowings)
def test_delegate_refuses_or_narrows_and_inherits_what_is_omitted(parent: dict[str, Any], ask: Narrowing) -> None:
    parent["max_depth"] = max(parent["max_depth"], 1)
    parent["start_offset"] = 0
    root = issue_root(
        SIGNER,
        jti="prop-delegation-root",
        issuer="root-issuer",
        principal="user",
        agent="agent-0",
        audience=parent["aud"],
        scope=parent["scope"],
        now=NOW,
        ttl=parent["exp_offset"],
        max_depth=parent["max_depth"],
    )
    try:
        child = delegate(root, SIGNER, jti="prop-delegation-kid1", agent="agent-1", now=NOW, narrowing=ask)
    except DelegationError as exc:
        assert exc.reason_code in ("DELEGATION_WIDENS", "DELEGATION_INVALID")
        return
    p, c = root.claims, child.claims
    assert narrows(c, p), widenings(c, p)
    if ask.tools is None:
        assert c.scope.tools == p.scope.tools
    if ask.effects is None:
        assert c.scope.effects == p.scope.effects
    for currency, ceiling in p.scope.amount_ceilings.items():
        if currency not in (ask.amount_ceilings or {}):
            assert c.scope.amount_ceilings[currency] == ceiling
    assert set(p.scope.constraints) <= set(c.scope.constraints)
    if ask.rate is None:
        assert c.scope.rate == p.scope.rate
    if ask.max_uses is None:
        assert c.scope.max_uses == p.scope.max_uses
    if ask.audience is None:
        assert c.aud == p.aud
    if ask.ttl is None:
        assert c.exp == p.exp
