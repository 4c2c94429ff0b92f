"""Delegation decision vectors (``delegation-v1.json``), built and checked here;
``generate_vectors.py`` writes them with the other files.

Each vector is a chain of links (compact JWS, RFC 8032 TEST 1 key unless a case
says otherwise), the verifier's configuration, the counters already spent, and one
request. Expected: the first refusing reason code (``null``: admitted), the chain's
``context_refs`` and the digest of the effective scope when admitted.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from execauth_conformance.fixed import AUDIENCE, ISSUER, trusted_signer, untrusted_signer
from execauth_core import KeySet, KeyStatus, ToolRegistry, TrustedKey, digest
from execauth_core._b64 import b64url_decode, b64url_encode
from execauth_core.canonical import canonicalize
from execauth_core.delegation import (
    COUNTER_WINDOW,
    Delegation,
    DelegationError,
    DelegationLedger,
    DelegationVerifier,
    Narrowing,
    check_request,
    delegate,
    issue_root,
)
from execauth_core.messages import AuthorizationRequest
from execauth_core.stores import Debit, MemoryStateStore

NOW = 1_767_607_200  # Monday 2026-01-05 10:00:00 UTC
MANIFESTS: list[dict[str, Any]] = [
    {
        "name": "search_docs",
        "version": "1.0",
        "effects": ["data.read"],
        "args_schema": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
    {
        "name": "refund",
        "version": "2.1",
        "effects": ["payment.refund"],
        "amount_arg": "amount",
        "currency_arg": "currency",
        "target_arg": "order",
        "args_schema": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "amount": {"type": "string"}, "currency": {"type": "string"}},
            "required": ["order", "amount", "currency"],
        },
    },
    {
        "name": "export",
        "version": "1.0",
        "effects": ["data.read", "data.write"],
        "args_schema": {"type": "object", "properties": {"table": {"type": "string"}}},
    },
]
ROOT_SCOPE: dict[str, Any] = {
    "tools": ["search_docs", "refund", "export"],
    "effects": ["data.read", "payment.refund"],
    "amount_ceilings": {"USD": "300.00", "EUR": "100.00"},
    "constraints": [{"tool": "refund", "arg": "order", "op": "prefix", "values": ["A-"]}],
    "rate": {"count": 10, "window": 60},
    "max_uses": 5,
}


def _root(**kw: Any) -> Delegation:
    args: dict[str, Any] = {
        "jti": "conformance-deleg-root",
        "issuer": ISSUER,
        "principal": "user-42",
        "agent": "billing-bot",
        "audience": [AUDIENCE],
        "scope": ROOT_SCOPE,
        "now": NOW,
        "ttl": 3600,
        "max_depth": 2,
    }
    args.update(kw)
    signer = args.pop("signer", trusted_signer())
    return issue_root(signer, **args)


def _child(parent: Delegation, ask: Narrowing | None = None, **kw: Any) -> Delegation:
    args: dict[str, Any] = {"jti": "conformance-deleg-child", "agent": "child-agent", "now": NOW + 1}
    args.update(kw)
    return delegate(parent, trusted_signer(), narrowing=ask, **args)


def _forge(link: Delegation, signer: Any = None, **changes: Any) -> str:
    """Re-sign ``link`` with changed claims (``__`` descends; ``...`` deletes)."""
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
    s = signer or trusted_signer()
    header = b64url_encode(canonicalize({"alg": "EdDSA", "kid": s.kid, "typ": "execauth-delegation+jwt"}))
    body = header + "." + b64url_encode(canonicalize(claims))
    return body + "." + b64url_encode(s.sign(body.encode("ascii")))


def _request(tool: str, args: dict[str, Any], agent: str, refs: list[str]) -> dict[str, Any]:
    return {
        "tool": tool,
        "args": args,
        "principal": "user-42",
        "agent": agent,
        "call_id": "call_d1",
        "context_refs": refs,
    }


def _refs(*links: Delegation) -> list[str]:
    return [f"delegation:{link.claims.jti}" for link in links]


def _keys(name: str) -> KeySet:
    pub = trusted_signer().public_key
    return {
        "trusted": lambda: KeySet([TrustedKey.from_public_key(pub)]),
        "none": lambda: KeySet(),
        "revoked": lambda: KeySet([TrustedKey.from_public_key(pub, status=KeyStatus.REVOKED)]),
    }[name]()


def check_delegation(inp: dict[str, Any]) -> dict[str, Any]:
    """Run one vector's input through core: verify, check the request, spend."""
    verifier = DelegationVerifier(
        keys=_keys(inp["keys"]), issuers=inp["issuers"], audience=inp["audience"], max_chain=inp["max_chain"]
    )
    registry = ToolRegistry(inp["manifests"])
    state = MemoryStateStore()
    now = inp["now"]
    for key, used in sorted(inp["spent"].items()):
        window = COUNTER_WINDOW if key.endswith("/uses") else int(inp["rate_window"])
        state.debit(f"seed/{key}", [Debit(key, used, used, window)], now=now)
    ledger = DelegationLedger(state)
    for jti in inp["revoked"]:
        ledger.revoke(jti, now=now)
    try:
        chain = verifier.verify(inp["chain"], now=now, revoked=lambda j: ledger.is_revoked(j, now=now))
        check_request(chain, AuthorizationRequest(**inp["request"]), registry)
        ledger.spend(chain, "conformance-hold", now=now)
    except DelegationError as exc:
        return {"reason_code": exc.reason_code, "chain": None, "scope_digest": None}
    return {
        "reason_code": None,
        "chain": list(chain.refs),
        "scope_digest": digest(chain.scope.model_dump(mode="json")),
    }


def delegation_vectors(document: Any, case: Any) -> dict[str, Any]:
    root = _root()
    child = _child(root, Narrowing(tools=["refund", "search_docs"], amount_ceilings={"USD": "50.00"}))
    grand = _child(
        child,
        Narrowing(tools=["refund"], max_uses=2),
        jti="conformance-deleg-grand",
        agent="grandchild",
        now=NOW + 2,
    )
    chain2 = [root.token, child.token]
    chain3 = [*chain2, grand.token]
    refund_ok = {"order": "A-1", "amount": "20.00", "currency": "USD"}
    other_root = _root(jti="conformance-deleg-root2")
    other_child = _child(other_root, jti="conformance-deleg-child2")
    leaf = _root(max_depth=0)
    too_deep = _forge(_child(root), parent=leaf.digest)

    def base(chain: list[str], request: dict[str, Any], **changes: Any) -> dict[str, Any]:
        inp: dict[str, Any] = {
            "chain": chain,
            "keys": "trusted",
            "issuers": [ISSUER],
            "audience": AUDIENCE,
            "max_chain": 4,
            "now": NOW + 5,
            "revoked": [],
            "spent": {},
            "rate_window": 60,
            "manifests": MANIFESTS,
            "request": request,
        }
        inp.update(changes)
        return inp

    child_req = _request("refund", refund_ok, "child-agent", _refs(root, child))
    cases: list[tuple[int, str, list[str], dict[str, Any]]] = [
        (
            1,
            "a root delegation, request inside its scope",
            ["valid"],
            base([root.token], _request("refund", refund_ok, "billing-bot", _refs(root))),
        ),
        (
            2,
            "a two-hop chain; the child inherits what it did not narrow (EUR ceiling, rate)",
            ["valid"],
            base(chain2, child_req),
        ),
        (
            3,
            "a three-hop chain",
            ["valid"],
            base(chain3, _request("refund", refund_ok, "grandchild", _refs(root, child, grand))),
        ),
        (
            4,
            "an argument the scope admits by prefix",
            ["valid"],
            base(chain2, _request("refund", {**refund_ok, "order": "A-99"}, "child-agent", _refs(root, child))),
        ),
        (
            10,
            "tool not delegated to the child",
            ["scope"],
            base(chain2, _request("export", {"table": "t"}, "child-agent", _refs(root, child))),
        ),
        (
            11,
            "amount over the child's narrowed ceiling",
            ["scope"],
            base(chain2, _request("refund", {**refund_ok, "amount": "50.01"}, "child-agent", _refs(root, child))),
        ),
        (
            12,
            "a currency with no delegated ceiling",
            ["scope"],
            base(chain2, _request("refund", {**refund_ok, "currency": "GBP"}, "child-agent", _refs(root, child))),
        ),
        (
            13,
            "an argument outside the delegated constraint",
            ["scope"],
            base(chain2, _request("refund", {**refund_ok, "order": "B-1"}, "child-agent", _refs(root, child))),
        ),
        (
            14,
            "a tool whose effect is not delegated (export has data.write)",
            ["scope"],
            base([root.token], _request("export", {"table": "t"}, "billing-bot", _refs(root))),
        ),
        (
            20,
            "forged child widens tools",
            ["widen"],
            base([root.token, _forge(child, scope__tools=["export", "refund", "search_docs", "x"])], child_req),
        ),
        (
            21,
            "forged child widens an amount ceiling",
            ["widen"],
            base([root.token, _forge(child, scope__amount_ceilings={"USD": "300.01", "EUR": "100.00"})], child_req),
        ),
        (
            22,
            "forged child widens max_uses",
            ["widen"],
            base([root.token, _forge(child, scope__max_uses=6)], child_req),
        ),
        (
            23,
            "forged child widens the rate",
            ["widen"],
            base([root.token, _forge(child, scope__rate={"count": 11, "window": 60})], child_req),
        ),
        (
            24,
            "forged child widens the audience",
            ["widen"],
            base([root.token, _forge(child, aud=["elsewhere", AUDIENCE])], child_req),
        ),
        (
            25,
            "forged child outlives its parent",
            ["widen"],
            base([root.token, _forge(child, exp=NOW + 3601)], child_req),
        ),
        (
            26,
            "forged child omits a limit: refused, never unlimited",
            ["omit"],
            base([root.token, _forge(child, scope__amount_ceilings=...)], child_req),
        ),
        (
            27,
            "forged child drops its parent's constraint",
            ["widen"],
            base([root.token, _forge(child, scope__constraints=[])], child_req),
        ),
        (
            28,
            "forged child widens effects",
            ["widen"],
            base([root.token, _forge(child, scope__effects=["data.read", "data.write", "payment.refund"])], child_req),
        ),
        (30, "links spliced from two chains", ["chain"], base([root.token, other_child.token], child_req)),
        (31, "a chain without its root", ["chain"], base([child.token], child_req)),
        (
            32,
            "a child granted by someone other than its parent's agent",
            ["chain"],
            base([root.token, _forge(child, iss="intruder")], child_req),
        ),
        (
            33,
            "a link signed by an untrusted key",
            ["key"],
            base([root.token, _forge(child, signer=untrusted_signer())], child_req),
        ),
        (
            34,
            "a link whose signature was altered",
            ["key"],
            base([root.token, child.token[:-3] + ("AAA" if child.token[-3:] != "AAA" else "BBB")], child_req),
        ),
        (
            35,
            "a link with alg none",
            ["key"],
            base(
                [
                    b64url_encode(
                        canonicalize({"alg": "none", "kid": trusted_signer().kid, "typ": "execauth-delegation+jwt"})
                    )
                    + "."
                    + root.token.split(".", 1)[1]
                ],
                child_req,
            ),
        ),
        (
            36,
            "a root from an untrusted issuer",
            ["key"],
            base(
                [_root(issuer="someone-else").token],
                _request("refund", refund_ok, "billing-bot", ["delegation:conformance-deleg-root"]),
            ),
        ),
        (37, "the signing key is revoked", ["key"], base(chain2, child_req, keys="revoked")),
        (38, "no trusted keys configured", ["key"], base(chain2, child_req, keys="none")),
        (40, "a hop below a link that allows none", ["depth"], base([leaf.token, too_deep], child_req)),
        (
            41,
            "a chain longer than the verifier allows",
            ["depth"],
            base(chain3, _request("refund", refund_ok, "grandchild", _refs(root, child, grand)), max_chain=2),
        ),
        (
            42,
            "the parent is revoked: everything below stops",
            ["revoked"],
            base(
                chain3,
                _request("refund", refund_ok, "grandchild", _refs(root, child, grand)),
                revoked=["conformance-deleg-child"],
            ),
        ),
        (
            43,
            "the delegation's uses are spent (consumed)",
            ["uses"],
            base(
                chain3,
                _request("refund", refund_ok, "grandchild", _refs(root, child, grand)),
                spent={"delegation/conformance-deleg-grand/uses": 2},
            ),
        ),
        (
            44,
            "the parent's uses are spent: it bounds its children",
            ["uses"],
            base(chain2, child_req, spent={"delegation/conformance-deleg-root/uses": 5}),
        ),
        (
            45,
            "the rate of a link is spent in this window",
            ["rate"],
            base(chain2, child_req, spent={"delegation/conformance-deleg-child/rate": 10}),
        ),
        (46, "the chain has expired", ["time"], base(chain2, child_req, now=NOW + 3600 + 31)),
        (47, "a guard not in the audience", ["audience"], base(chain2, child_req, audience="other-guard")),
        (
            48,
            "a request from another agent",
            ["agent"],
            base(chain2, _request("refund", refund_ok, "billing-bot", _refs(root, child))),
        ),
        (
            49,
            "a request that does not name its chain",
            ["chain"],
            base(chain2, _request("refund", refund_ok, "child-agent", [])),
        ),
    ]
    tests = [case(tc, comment, flags, inp, check_delegation(inp)) for tc, comment, flags, inp in cases]
    notes = {
        "keys": "RFC 8032 section 7.1 TEST 1 signs every link; TEST 2 is the untrusted key",
        "clock": "NOW = 1767607200 (2026-01-05T10:00:00Z); root links are valid for one hour",
        "expected": "reason_code null means admitted (then chain and scope_digest are set)",
        "spent": "counters already used before the request, keyed like DelegationLedger's",
    }
    return copy.deepcopy(document("delegation", notes, tests))  # type: ignore[no-any-return]
