"""Rebuild the conformance vectors deterministically from execauth-core.

    python conformance/tools/generate_vectors.py           # write files + SHA256SUMS
    python conformance/tools/generate_vectors.py --check   # exit 1 if anything would change

Vectors are frozen: the generator refuses to change the expected result of a tcId
that already exists in the files on disk (new tcIds may be added). If core's
behaviour changed on purpose, that is a new tcId, never an edit.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

from execauth_conformance.fixed import (
    AUDIENCE,
    ISSUER,
    TRUSTED_SEED,
    decision_point,
    trusted_signer,
    untrusted_signer,
    vector_guard,
)
from execauth_core import (
    AuthorizationRequest,
    CanonicalizationError,
    ExecutionDenied,
    KeySet,
    KeyStatus,
    TokenError,
    TokenVerifier,
    TrustedKey,
    canonicalize,
    digest,
    loads_strict,
    verify_chain,
)
from execauth_core._b64 import b64url_decode, b64url_encode
from execauth_core.audit import AuditEntry, Checkpoint
from execauth_core.authority import Authority
from execauth_core.errors import AuditIntegrityError
from execauth_core.messages import PendingApproval

VECTORS = Path(__file__).resolve().parents[1] / "src" / "execauth_conformance" / "vectors"
NOW = 1_767_607_200  # Monday 2026-01-05 10:00:00 UTC
GENERATOR = "execauth-conformance generate_vectors 1"


def document(algorithm: str, notes: dict[str, str], tests: list[dict[str, Any]]) -> dict[str, Any]:
    ids = [t["tcId"] for t in tests]
    if len(set(ids)) != len(ids):
        raise SystemExit(f"{algorithm}: duplicate tcIds")
    return {
        "algorithm": algorithm,
        "schema": f"execauth_conformance/{algorithm}/1",
        "generatorVersion": GENERATOR,
        "numberOfTests": len(tests),
        "notes": notes,
        "tests": tests,
    }


def case(tc: int, comment: str, flags: list[str], inp: Any, expected: Any) -> dict[str, Any]:
    return {"tcId": tc, "comment": comment, "flags": flags, "input": inp, "expected": expected}


# --- canonicalization --------------------------------------------------------

IEEE = [
    ("0000000000000000", "zero"),
    ("8000000000000000", "minus zero serializes as 0"),
    ("0000000000000001", "smallest subnormal"),
    ("8000000000000001", "negative smallest subnormal"),
    ("7fefffffffffffff", "largest double"),
    ("ffefffffffffffff", "most negative double"),
    ("4340000000000000", "2^53"),
    ("c340000000000000", "-2^53"),
    ("4430000000000000", "2^68"),
    ("44b52d02c7e14af5", "just below 1e23"),
    ("44b52d02c7e14af6", "1e23"),
    ("44b52d02c7e14af7", "just above 1e23"),
    ("444b1ae4d6e2ef4e", "below 1e21"),
    ("444b1ae4d6e2ef4f", "below 1e21 (2)"),
    ("444b1ae4d6e2ef50", "1e21: exponent form"),
    ("3eb0c6f7a0b5ed8c", "just below 1e-6"),
    ("3eb0c6f7a0b5ed8d", "1e-6: still fixed"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]

JSON_CASES = [
    (
        '{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],'
        '"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}',
        "RFC 8785 section 3.2.2 sample",
    ),
    (
        '{"\\u20ac":"Euro Sign","\\r":"Carriage Return","\\ufb33":"Hebrew Letter Dalet With Dagesh","1":"One",'
        '"\\ud83d\\ude00":"Emoji: Grinning Face","\\u0080":"Control","\\u00f6":"Latin Small Letter O With Diaeresis"}',
        "RFC 8785 section 3.2.3: keys sorted by UTF-16 code units, not code points",
    ),
    ('{"b":1,"a":{"d":[3,{"z":1,"y":2}],"c":"\\u001f\\u007f\\u2028"}}', "nesting and escapes of control characters"),
    ('{"text":"e\\u0301"}', "no Unicode normalization (unlike OxDeAI's NFC scheme)"),
    ("[]", "empty array"),
    ("{}", "empty object"),
    ('"\\ud83d\\ude00"', "surrogate pair as literal UTF-8"),
    ("9007199254740991", "largest safe integer"),
    ("-9007199254740991", "smallest safe integer"),
    ("1.0", "1.0 serializes as 1"),
    ("-0.0", "-0.0 serializes as 0"),
    ("1e-7", "1e-7 keeps exponent form"),
]

REJECTED = [
    ('{"a":1,"a":2}', "duplicate key"),
    ('{"a":NaN}', "NaN"),
    ('{"a":Infinity}', "Infinity"),
    ('{"a":-Infinity}', "-Infinity"),
    ("9007199254740992", "integer beyond 2^53-1"),
    ("-9007199254740992", "integer below -(2^53-1)"),
    ("1e400", "number overflows a double"),
    ('"\\ud800"', "lone surrogate"),
    ("{'a':1}", "not JSON"),
    ("", "empty input"),
    ("[" * 70 + "]" * 70, "nesting deeper than 64"),
]


def canonical_vectors() -> dict[str, Any]:
    tests = []
    tc = 1
    for bits, comment in IEEE:
        value = struct.unpack(">d", bytes.fromhex(bits))[0]
        out = canonicalize(value)
        tests.append(
            case(
                tc,
                f"RFC 8785 Appendix B: {comment}",
                ["rfc8785", "number"],
                {"ieee754": bits},
                {"canonical": out.decode(), "digest": digest(value)},
            )
        )
        tc += 1
    tc = 100
    for text, comment in JSON_CASES:
        value = loads_strict(text)
        tests.append(
            case(
                tc,
                comment,
                ["rfc8785"],
                {"json": text},
                {"canonical": canonicalize(value).decode("utf-8"), "digest": digest(value)},
            )
        )
        tc += 1
    tc = 200
    for text, comment in REJECTED:
        try:
            canonicalize(loads_strict(text))
        except CanonicalizationError:
            pass
        else:
            raise SystemExit(f"rejected vector {comment!r} was accepted")
        tests.append(case(tc, comment, ["rejected"], {"json": text}, {"error": "CanonicalizationError"}))
        tc += 1
    return document(
        "canonicalization",
        {
            "ieee754": "input is the big-endian hex of an IEEE-754 double",
            "json": "input is JSON text, parsed with the strict reader, then canonicalized",
            "rejected": "the strict reader or the canonicalizer must refuse the input",
        },
        tests,
    )


# --- tokens ----------------------------------------------------------------

TOKEN_REQUEST = {
    "tool": "transfer",
    "args": {"amount": "10.00", "to": "bob"},
    "principal": "alice",
    "agent": "billing-bot",
    "call_id": "call_1",
}


def sign_raw(header: dict[str, Any], claims: dict[str, Any], seed_signer: Any) -> str:
    h = b64url_encode(canonicalize(header))
    p = b64url_encode(canonicalize(claims))
    return f"{h}.{p}.{b64url_encode(seed_signer.sign(f'{h}.{p}'.encode()))}"


def token_vectors() -> dict[str, Any]:
    signer = trusted_signer()
    guard = vector_guard({"allowlist": {"allow": ["transfer"]}}, now=NOW, token_id="conformance-token-0001")
    req = AuthorizationRequest(**TOKEN_REQUEST)
    token = guard.authorize(req).token
    assert token is not None
    h, p, s = token.split(".")
    header, claims = json.loads(b64url_decode(h)), json.loads(b64url_decode(p))

    def with_claims(**changes: Any) -> str:
        c = copy.deepcopy(claims)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return sign_raw(header, c, signer)

    other_req = dict(TOKEN_REQUEST, args={"amount": "10000.00", "to": "bob"})
    sig = bytearray(b64url_decode(s))
    sig[0] ^= 1
    import hmac

    hs_header = b64url_encode(canonicalize({"alg": "HS256", "kid": signer.kid, "typ": header["typ"]}))
    mac = hmac.new(signer.public_key, f"{hs_header}.{p}".encode(), hashlib.sha256).digest()
    none_header = b64url_encode(canonicalize({"alg": "none", "typ": header["typ"]}))
    stranger = untrusted_signer()
    cases: list[tuple[int, str, str, dict[str, Any], str | None]] = [
        (1, "valid token", token, {}, None),
        (2, "valid within clock skew after exp", token, {"now": NOW + 60 + 29}, None),
        (3, "valid: retired key inside its window", token, {"keys": "retired"}, None),
        (10, "no token", "", {}, "NO_TOKEN"),
        (11, "three parts of garbage", "a.b.c", {}, "TOKEN_MALFORMED"),
        (12, "truncated", token[: len(token) // 2], {}, "TOKEN_MALFORMED"),
        (13, "padding is not base64url", token + "=", {}, "TOKEN_MALFORMED"),
        (14, "alg none", f"{none_header}.{p}.", {}, "TOKEN_ALG_REJECTED"),
        (15, "alg HS256 keyed with the public key", f"{hs_header}.{p}.{b64url_encode(mac)}", {}, "TOKEN_ALG_REJECTED"),
        (
            16,
            "embedded jwk header",
            sign_raw({**header, "jwk": {"kty": "OKP"}}, claims, signer),
            {},
            "TOKEN_ALG_REJECTED",
        ),
        (17, "no trusted keys configured", token, {"keys": "none"}, "KEYSET_MISSING"),
        (
            18,
            "kid of an untrusted key",
            sign_raw({**header, "kid": stranger.kid}, claims, stranger),
            {},
            "TOKEN_KID_UNKNOWN",
        ),
        (19, "revoked key", token, {"keys": "revoked"}, "TOKEN_KEY_REVOKED"),
        (20, "key outside its validity window", token, {"keys": "expired-window"}, "TOKEN_KEY_INACTIVE"),
        (21, "forged: right kid, wrong key", sign_raw(header, claims, stranger), {}, "TOKEN_SIGNATURE_INVALID"),
        (22, "flipped signature bit", f"{h}.{p}.{b64url_encode(bytes(sig))}", {}, "TOKEN_SIGNATURE_INVALID"),
        (
            23,
            "claim edited after signing",
            f"{h}.{b64url_encode(canonicalize({**claims, 'aud': 'x'}))}.{s}",
            {},
            "TOKEN_SIGNATURE_INVALID",
        ),
        (24, "unknown claim", with_claims(extra="x"), {}, "TOKEN_CLAIMS_INVALID"),
        (25, "missing exp", with_claims(exp=None), {}, "TOKEN_CLAIMS_INVALID"),
        (26, "iat as a string", with_claims(iat="yesterday"), {}, "TOKEN_CLAIMS_INVALID"),
        (27, "wrong issuer", with_claims(iss="evil"), {}, "TOKEN_ISSUER_MISMATCH"),
        (28, "wrong audience", with_claims(aud="other-guard"), {}, "TOKEN_AUDIENCE_MISMATCH"),
        (29, "expired", token, {"now": NOW + 60 + 30}, "TOKEN_EXPIRED"),
        (30, "not yet valid", with_claims(nbf=NOW + 45), {}, "TOKEN_NOT_YET_VALID"),
        (
            31,
            "issued in the future",
            with_claims(iat=NOW + 100, nbf=NOW + 100, exp=NOW + 160),
            {},
            "TOKEN_ISSUED_IN_FUTURE",
        ),
        (32, "lifetime beyond max TTL", with_claims(exp=NOW + 10_000), {}, "TOKEN_TTL_EXCEEDED"),
        (33, "bound to another proposal", token, {"request": other_req}, "TOKEN_PROPOSAL_MISMATCH"),
        (
            35,
            "retired key without a retirement time verifies nothing",
            token,
            {"keys": "retired-unbounded"},
            "TOKEN_KEY_INACTIVE",
        ),
        (
            34,
            "scope names another tool",
            with_claims(scope={"tool": "search", "effects": [], "limits": {}}),
            {},
            "TOKEN_SCOPE_MISMATCH",
        ),
    ]
    tests = []
    for tc, comment, tok, over, code in cases:
        inp = {
            "token": tok,
            "request": over.get("request", TOKEN_REQUEST),
            "now": over.get("now", NOW),
            "keys": over.get("keys", "trusted"),
            "issuer": ISSUER,
            "audience": AUDIENCE,
            "max_ttl": 300,
            "clock_skew": 30,
        }
        got = check_token(inp)
        if got != code:
            raise SystemExit(f"token tcId {tc} ({comment}): expected {code}, core says {got}")
        tests.append(
            case(
                tc, comment, ["valid" if code is None else "invalid"], inp, {"valid": code is None, "reason_code": code}
            )
        )
    return document(
        "tokens",
        {
            "keys": "trusted: RFC 8032 TEST 1 key active; none: empty key set; revoked: that key revoked; "
            "retired: retired at now (not_after = now); retired-unbounded: retired, no not_after; "
            "expired-window: that key with not_after = now - 1",
        },
        tests,
    )


def keyset(name: str, now: int) -> KeySet:
    pub = trusted_signer().public_key
    return {
        "trusted": lambda: KeySet([TrustedKey.from_public_key(pub)]),
        "none": lambda: KeySet(),
        "revoked": lambda: KeySet([TrustedKey.from_public_key(pub, status=KeyStatus.REVOKED)]),
        "retired": lambda: KeySet([TrustedKey.from_public_key(pub, status=KeyStatus.RETIRED, not_after=now)]),
        "retired-unbounded": lambda: KeySet([TrustedKey.from_public_key(pub, status=KeyStatus.RETIRED)]),
        "expired-window": lambda: KeySet([TrustedKey.from_public_key(pub, not_after=now - 1)]),
    }[name]()


def check_token(inp: dict[str, Any]) -> str | None:
    verifier = TokenVerifier(
        keys=keyset(inp["keys"], inp["now"]),
        issuer=inp["issuer"],
        audience=inp["audience"],
        max_ttl=inp["max_ttl"],
        clock_skew=inp["clock_skew"],
    )
    try:
        verifier.verify(inp["token"], request=AuthorizationRequest(**inp["request"]), now=inp["now"])
    except TokenError as exc:
        return exc.reason_code
    return None


# --- decisions ---------------------------------------------------------------

MANIFESTS = [
    {
        "name": "search_docs",
        "version": "1.0",
        "effects": ["data.read"],
        "args_schema": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
            "additionalProperties": False,
        },
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
            "additionalProperties": False,
        },
    },
    {
        "name": "transfer",
        "version": "1.0",
        "effects": ["payment.transfer"],
        "amount_arg": "amount",
        "currency": "USD",
        "args_schema": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "amount": {"type": "string"}},
            "required": ["to", "amount"],
        },
    },
    {
        "name": "send_email",
        "version": "1.0",
        "effects": ["message.email"],
        "args_schema": {
            "type": "object",
            "properties": {"to": {"type": "string"}, "body": {"type": "string"}},
            "required": ["to", "body"],
        },
    },
    {
        "name": "drop_table",
        "version": "1.0",
        "effects": ["data.delete"],
        "args_schema": {"type": "object", "properties": {"table": {"type": "string"}}, "required": ["table"]},
    },
    {
        "name": "post_public",
        "version": "1.0",
        "effects": ["message.public_post"],
        "args_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
]
PREFLIGHTS = {"refund": {"ok": True, "grade": "simulated", "detail": "order exists, refundable"}}
POLICY = {
    "id": "conformance",
    "epoch": 1,
    "invariants": {"approval_at_or_above_tier": "E4", "forbidden_effects": ["data.delete"]},
    "principals": [
        {
            "id": "user-42",
            "agents": ["billing-bot"],
            "allow_tools": ["search_docs", "refund", "transfer", "drop_table", "post_public"],
            "allow_effects": ["data.read", "payment.refund", "payment.transfer", "data.delete", "message.email"],
            "max_risk_tier": "E4",
            "amount_ceilings": {"USD": "500.00"},
            "budgets": [{"currency": "USD", "limit": "1000.00", "window": 86400}],
            "rate_limits": [{"tool": "search_docs", "limit": 3, "window": 60}],
            "time_windows": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start": "08:00", "end": "18:00"}],
            "require_approval_above": {"USD": "200.00"},
        },
        {"id": "intern", "allow_tools": ["search_docs", "refund"], "max_risk_tier": "E0"},
    ],
}


def court(preflights: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    return {
        "court": {
            "policy": {**copy.deepcopy(POLICY), **changes},
            "manifests": MANIFESTS,
            "preflights": PREFLIGHTS if preflights is None else preflights,
        }
    }


def req(
    tool: str,
    args: dict[str, Any],
    *,
    principal: str = "user-42",
    agent: str | None = "billing-bot",
    call_id: str = "call_1",
) -> dict[str, Any]:
    return {"tool": tool, "args": args, "principal": principal, "agent": agent, "call_id": call_id}


REFUND = {"order": "A-1", "amount": "150.00", "currency": "USD"}
ALLOWLIST = {"allowlist": {"allow": ["search_docs", "transfer"], "require_approval": ["transfer"]}}

DECISIONS: list[tuple[int, str, list[str], dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    # tcId, comment, flags, decision point, request, extra (now, state, approval)
    (1, "allow-list: allowed tool", ["allowlist"], ALLOWLIST, req("search_docs", {"q": "refunds"}), {}),
    (2, "allow-list: tool not on the list", ["allowlist"], ALLOWLIST, req("drop_table", {"table": "users"}), {}),
    (
        3,
        "allow-list: empty policy denies all",
        ["allowlist"],
        {"allowlist": {"allow": []}},
        req("search_docs", {"q": "x"}),
        {},
    ),
    (
        4,
        "allow-list: approval required",
        ["allowlist"],
        ALLOWLIST,
        req("transfer", {"to": "bob", "amount": "5.00"}),
        {},
    ),
    (
        5,
        "allow-list: approval granted for this proposal",
        ["allowlist", "approval", "direct-only"],
        ALLOWLIST,
        req("transfer", {"to": "bob", "amount": "5.00"}),
        {"approval": "same"},
    ),
    (
        6,
        "allow-list: approval granted for other arguments",
        ["allowlist", "approval", "direct-only"],
        ALLOWLIST,
        req("transfer", {"to": "bob", "amount": "5000.00"}),
        {"approval": "other"},
    ),
    (100, "court: read within every ceiling", ["court", "stage:emit"], court(), req("search_docs", {"q": "x"}), {}),
    (
        101,
        "court: no policy denies all",
        ["court", "stage:contract"],
        {"court": {"policy": None, "manifests": MANIFESTS}},
        req("search_docs", {"q": "x"}),
        {},
    ),
    (102, "court: unknown tool", ["court", "stage:contract"], court(), req("rm_rf", {"path": "/"}), {}),
    (
        103,
        "court: arguments violate the schema",
        ["court", "stage:contract"],
        court(),
        req("search_docs", {"q": 5}),
        {},
    ),
    (
        104,
        "court: money as a float",
        ["court", "stage:contract"],
        court(),
        req("refund", {**REFUND, "amount": 150.5}),
        {},
    ),
    (
        105,
        "court: amount with too many fraction digits",
        ["court", "stage:contract"],
        court(),
        req("refund", {**REFUND, "amount": "1.005"}),
        {},
    ),
    (
        106,
        "court: undeclared currency",
        ["court", "stage:contract"],
        court(),
        req("refund", {**REFUND, "currency": "XYZ"}),
        {},
    ),
    (
        107,
        "court: unknown principal",
        ["court", "stage:ceilings"],
        court(),
        req("search_docs", {"q": "x"}, principal="stranger"),
        {},
    ),
    (
        108,
        "court: agent may not act for the principal",
        ["court", "stage:ceilings"],
        court(),
        req("search_docs", {"q": "x"}, agent="rogue-bot"),
        {},
    ),
    (
        109,
        "court: tool not allowed for the principal",
        ["court", "stage:ceilings"],
        court(),
        req("send_email", {"to": "a@example.com", "body": "hi"}),
        {},
    ),
    (
        110,
        "court: effect not allowed for the principal",
        ["court", "stage:ceilings"],
        court(),
        req("post_public", {"text": "hello world"}),
        {},
    ),
    (
        111,
        "court: risk tier above the principal's maximum",
        ["court", "stage:ceilings"],
        court(),
        req("refund", REFUND, principal="intern", agent=None),
        {},
    ),
    (
        112,
        "court: amount above the per-call ceiling",
        ["court", "stage:ceilings"],
        court(),
        req("refund", {**REFUND, "amount": "600.00"}),
        {},
    ),
    (
        113,
        "court: outside the time window defers",
        ["court", "stage:ceilings"],
        court(),
        req("search_docs", {"q": "x"}),
        {"now": NOW - 86400},
    ),
    (
        114,
        "court: budget would be overspent",
        ["court", "stage:counterfactuals"],
        court(),
        req("refund", REFUND),
        {"state": {"budget/user-42/USD/86400": 90000}},
    ),
    (
        115,
        "court: rate limit reached defers",
        ["court", "stage:counterfactuals"],
        court(),
        req("search_docs", {"q": "x"}),
        {"state": {"rate/user-42/search_docs/60": 3}},
    ),
    (
        116,
        "court: kill switch",
        ["court", "stage:invariants"],
        court(kill_switch=True),
        req("search_docs", {"q": "x"}),
        {},
    ),
    (
        117,
        "court: effect forbidden policy-wide",
        ["court", "stage:invariants"],
        court(),
        req("drop_table", {"table": "users"}),
        {},
    ),
    (
        118,
        "court: amount above the approval threshold",
        ["court", "stage:invariants"],
        court(),
        req("refund", {**REFUND, "amount": "300.00"}),
        {},
    ),
    (
        119,
        "court: E4 effect without a preflight",
        ["court", "stage:preflight"],
        court(),
        req("transfer", {"to": "bob", "amount": "10.00"}),
        {},
    ),
    (
        120,
        "court: preflight fails",
        ["court", "stage:preflight"],
        court(preflights={"refund": {"ok": False, "grade": "simulated", "detail": "already refunded"}}),
        req("refund", REFUND),
        {},
    ),
    (
        121,
        "court: preflight evidence too weak",
        ["court", "stage:preflight"],
        court(preflights={"refund": {"ok": True, "grade": "none", "detail": "looks fine"}}),
        req("refund", REFUND),
        {},
    ),
    (
        122,
        "court: refund within every ceiling, budget debited",
        ["court", "stage:emit"],
        court(),
        req("refund", REFUND),
        {"state": {"budget/user-42/USD/86400": 80000}},
    ),
    (
        123,
        "court: shadow mode records DENY, does not block",
        ["court", "shadow", "stage:emit"],
        court(mode="shadow"),
        req("refund", {**REFUND, "amount": "600.00"}),
        {},
    ),
    (
        124,
        "court: approval lifts the approval requirement",
        ["court", "approval", "direct-only", "stage:invariants"],
        court(),
        req("refund", {**REFUND, "amount": "300.00"}),
        {"approval": "same"},
    ),
    (
        125,
        "court: approval does not lift a denial",
        ["court", "approval", "direct-only", "stage:ceilings"],
        court(),
        req("refund", {**REFUND, "amount": "600.00"}),
        {"approval": "same"},
    ),
]


def approval_for(spec: dict[str, Any], request: AuthorizationRequest, kind: str, now: int) -> dict[str, Any]:
    target = request
    if kind == "other":
        target = request.model_copy(update={"args": {**request.args, "amount": "1.00"}})
    authority = Authority(decision_point(spec), trusted_signer(), issuer=ISSUER, audience=AUDIENCE)
    pending = PendingApproval(
        proposal_digest=target.content_digest(), request=target, reason_codes=("APPROVAL_REQUIRED",), requested_at=now
    )
    grant = authority.grant_approval(
        pending, approver="approver@example.com", now=now, grant_id="conformance-grant-0001", ttl=900
    )
    return grant.model_dump(mode="json")


def decide(inp: dict[str, Any]) -> dict[str, Any]:
    """Decide a vector's input with core, directly (no guard)."""
    from execauth_core import ApprovalGrant

    request = AuthorizationRequest(**inp["request"])
    dp = decision_point(inp["decision_point"], now=inp["now"], state=inp["state"])
    authority = Authority(dp, trusted_signer(), issuer=ISSUER, audience=AUDIENCE)
    approval = ApprovalGrant.model_validate(inp["approval"]) if inp["approval"] else None
    d = authority.decide(request, now=inp["now"], token_id=inp["token_id"], approval=approval)
    claims = json.loads(b64url_decode(d.token.split(".")[1])) if d.token else None
    return {
        "outcome": d.outcome.value,
        "reason_codes": list(d.reason_codes),
        "record_digest": d.record_digest,
        "decision_digest": digest(d.model_dump(mode="json")),
        "token_claims": claims,
    }


def decision_vectors() -> dict[str, Any]:
    tests = []
    for tc, comment, flags, spec, request, extra in DECISIONS:
        now = extra.get("now", NOW)
        inp: dict[str, Any] = {
            "decision_point": spec,
            "request": request,
            "now": now,
            "token_id": f"conformance-token-{tc:04d}",
            "state": extra.get("state"),
            "approval": None,
        }
        if "approval" in extra:
            inp["approval"] = approval_for(spec, AuthorizationRequest(**request), extra["approval"], now)
        tests.append(case(tc, comment, flags if "direct-only" in flags else [*flags, "adapter"], inp, decide(inp)))
    outcomes = {t["expected"]["outcome"] for t in tests}
    if outcomes != {"ALLOW", "DENY", "REQUIRE_APPROVAL", "REQUIRE_EVIDENCE", "DEFER"}:
        raise SystemExit(f"decision vectors miss outcomes: {outcomes}")
    return document(
        "decisions",
        {
            "adapter": "run through every adapter's real framework path; the tool must run exactly when ALLOW",
            "direct-only": "needs an approval grant passed to the guard: checked against core directly",
            "stage:*": "the pipeline stage whose finding decides the vector",
        },
        tests,
    )


# --- audit -----------------------------------------------------------------------


def audit_vectors() -> dict[str, Any]:
    guard = vector_guard(ALLOWLIST, now=NOW, token_id="conformance-audit-0001")
    for i, (tool, args) in enumerate(
        [
            ("search_docs", {"q": "a"}),
            ("drop_table", {"table": "t"}),
            ("search_docs", {"q": "b"}),
            ("transfer", {"to": "x", "amount": "1.00"}),
        ]
    ):
        request = guard.proposal(tool, args, principal="user-42", agent="billing-bot", call_id=f"call_{i}")
        try:
            guard.run(request, lambda: "ok")
        except ExecutionDenied:
            pass
    chain = [{"seq": e.seq, "digest": e.digest, "body": dict(e.body)} for e in guard.audit_log.entries()]
    head = list(guard.audit_log.head())
    checkpoint = Checkpoint.sign(guard.audit_log, trusted_signer(), now=NOW).to_json()

    def edited(seq: int, field: str, value: Any) -> list[dict[str, Any]]:
        c = copy.deepcopy(chain)
        c[seq - 1]["body"][field] = value
        return c

    def rehashed(seq: int, field: str, value: Any) -> list[dict[str, Any]]:
        c = edited(seq, field, value)
        c[seq - 1]["digest"] = digest(c[seq - 1]["body"])
        return c

    den = next(e["seq"] for e in chain if e["body"]["event"] == "denial")
    swapped = copy.deepcopy(chain)
    swapped[1], swapped[2] = swapped[2], swapped[1]
    cases = [
        (1, "intact chain", chain, head, None, None),
        (2, "intact chain with its signed checkpoint", chain, None, checkpoint, None),
        (10, "executed flipped on a denial", edited(den, "executed", True), head, None, den),
        (11, "reason codes edited", edited(den, "reason_codes", ["TOOL_ALLOWED"]), head, None, den),
        (12, "edit re-hashed: the next link breaks", rehashed(den, "outcome", "ALLOW"), head, None, den + 1),
        (13, "entry deleted", chain[:2] + chain[3:], head, None, 3),
        (14, "entries reordered", swapped, head, None, 2),
        (15, "tail cut: the head record knows", chain[:-2], head, None, len(chain) - 1),
        (16, "tail cut and head forged: the signed checkpoint knows", chain[:-2], None, checkpoint, len(chain) - 1),
    ]
    tests = []
    for tc, comment, entries, hd, cp, bad in cases:
        inp = {"entries": entries, "head": hd, "checkpoint": cp}
        got = check_audit(inp)
        if got != bad:
            raise SystemExit(f"audit tcId {tc} ({comment}): expected first bad seq {bad}, got {got}")
        tests.append(
            case(
                tc, comment, ["valid" if bad is None else "tampered"], inp, {"valid": bad is None, "first_bad_seq": bad}
            )
        )
    return document("audit", {"checkpoint": "signed with the RFC 8032 TEST 1 key"}, tests)


def check_audit(inp: dict[str, Any]) -> int | None:
    entries = [AuditEntry(seq=e["seq"], digest=e["digest"], body=e["body"]) for e in inp["entries"]]
    keys = KeySet([TrustedKey.from_public_key(trusted_signer().public_key)])
    cp = Checkpoint.from_json(inp["checkpoint"], keys) if inp["checkpoint"] else None
    head = tuple(inp["head"]) if inp["head"] else None
    try:
        verify_chain(entries, checkpoint=cp, expected_head=head)  # type: ignore[arg-type]
    except AuditIntegrityError as exc:
        return exc.seq
    return None


# --- two-phase commit (CommitToken) -------------------------------------------------

# The conformance policy with send_email (message.email: irreversible) allowed.
COMMIT_POLICY_PRINCIPAL = {
    **POLICY["principals"][0],
    "allow_tools": [*POLICY["principals"][0]["allow_tools"], "send_email"],
    "rate_limits": [{"tool": "*", "limit": 5, "window": 60}],
}
COMMIT_SPEC = court(principals=[COMMIT_POLICY_PRINCIPAL, POLICY["principals"][1]])
EMAIL_REQ = req("send_email", {"to": "a@example.com", "body": "hi"})


def check_commit(inp: dict[str, Any]) -> dict[str, Any]:
    """preflight -> commit -> execute the CommitToken, as the vector says."""
    from execauth_core import FixedClock, Guard
    from execauth_core.messages import Outcome
    from execauth_core.stores import Debit
    from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore
    from execauth_core.twophase import PreflightDecision

    request = AuthorizationRequest(**inp["request"])
    dp = decision_point(inp["decision_point"], now=inp["now"], state=inp["state"])
    signer = untrusted_signer() if inp.get("preflight_key") == "untrusted" else trusted_signer()
    authority = Authority(dp, signer, issuer=ISSUER, audience=AUDIENCE)
    pre = authority.decide(request, now=inp["now"], token_id=inp["preflight_id"], phase="preflight")
    out: dict[str, Any] = {
        "preflight": {
            "outcome": pre.outcome.value,
            "reason_codes": list(pre.reason_codes),
            "record_digest": pre.record_digest,
        },
        "commit": None,
        "execute": None,
    }
    if pre.outcome is not Outcome.ALLOW:
        return out
    data = PreflightDecision(decision=pre).model_dump(mode="json")
    for key, value in inp.get("tamper", {}).items():
        data["decision"]["record"]["request"]["args"][key] = value
    preflight = PreflightDecision.model_validate(data)
    authority = Authority(dp, trusted_signer(), issuer=ISSUER, audience=AUDIENCE)
    for key, used in sorted((inp.get("state_change") or {}).items()):
        window = int(key.rsplit("/", 1)[1])
        state: Any = dp.state  # type: ignore[attr-defined]
        state.debit("between", [Debit(key, used, used + 10**9, window)], now=inp["commit_now"])
    if inp.get("policy_after") is not None:
        from execauth_core import Court, parse_policy

        authority.decision_point = Court(parse_policy(inp["policy_after"]), dp.registry, state=dp.state)  # type: ignore[attr-defined]
    c = authority.commit(preflight, now=inp["commit_now"], token_id=inp["token_id"])
    out["commit"] = {
        "outcome": c.outcome.value,
        "reason_codes": list(c.reason_codes),
        "record_digest": c.record_digest,
        "token_claims": json.loads(b64url_decode(c.token.split(".")[1])) if c.token else None,
    }
    if c.token is None:
        return out
    guard = Guard(
        authority=None,
        verifier=TokenVerifier(keys=keyset("trusted", inp["now"]), issuer=ISSUER, audience=AUDIENCE),
        replay_store=MemoryReplayStore(),
        audit_log=MemoryAuditLog(),
        clock=FixedClock(inp["execute"]["now"]),
    )
    executed = []
    codes: list[str | None] = []
    for _ in range(inp["execute"].get("times", 1)):
        target = AuthorizationRequest(**inp["execute"].get("request", inp["request"]))
        try:
            guard.execute(target, c.token, lambda: executed.append(1))
            codes.append(None)
        except ExecutionDenied as exc:
            codes.append(exc.reason_code)
    out["execute"] = {"reason_codes": codes, "executions": len(executed)}
    return out


def commit_vectors() -> dict[str, Any]:
    base = {
        "decision_point": COMMIT_SPEC,
        "request": EMAIL_REQ,
        "now": NOW,
        "state": {"budget/user-42/USD/86400": 0},
        "preflight_id": "conformance-preflight-0001",
        "token_id": "conformance-commit-0001",
        "commit_now": NOW + 5,
        "execute": {"now": NOW + 6},
    }
    other = dict(EMAIL_REQ, args={"to": "mallory@example.com", "body": "hi"})
    epoch2 = {**COMMIT_SPEC["court"]["policy"], "epoch": 2}
    killed = court(principals=[COMMIT_POLICY_PRINCIPAL], kill_switch=True)
    cases: list[tuple[int, str, list[str], dict[str, Any]]] = [
        (1, "preflight ALLOW, commit ALLOW, the CommitToken executes once", ["valid"], {}),
        (
            2,
            "commit at the last second of the preflight's lifetime",
            ["valid"],
            {"commit_now": NOW + 60, "execute": {"now": NOW + 61}},
        ),
        (
            3,
            "commit in the second of the preflight, as guard.run does",
            ["valid", "reference"],
            {"commit_now": NOW, "execute": {"now": NOW}},
        ),
        (10, "state changed between preflight and commit", ["invalid"], {"state_change": {"rate/user-42/*/60": 1}}),
        (11, "policy changed between preflight and commit", ["invalid"], {"policy_after": epoch2}),
        (12, "preflight expired", ["invalid"], {"commit_now": NOW + 61, "execute": {"now": NOW + 62}}),
        (13, "preflight edited after signing", ["invalid"], {"tamper": {"to": "mallory@example.com"}}),
        (14, "preflight signed by an untrusted key", ["invalid"], {"preflight_key": "untrusted"}),
        (15, "CommitToken presented for another draft", ["invalid"], {"execute": {"now": NOW + 6, "request": other}}),
        (16, "CommitToken replayed", ["invalid"], {"execute": {"now": NOW + 6, "times": 2}}),
        (17, "CommitToken expired", ["invalid"], {"execute": {"now": NOW + 5 + 60 + 30}}),
        (18, "preflight refused: nothing to commit", ["invalid"], {"decision_point": killed}),
    ]
    tests = []
    for tc, comment, flags, changes in cases:
        inp = {**copy.deepcopy(base), **copy.deepcopy(changes)}
        tests.append(case(tc, comment, flags, inp, check_commit(inp)))
    return document(
        "commit",
        {
            "flow": "Authority.decide(phase=preflight) -> Authority.commit -> a verify-only guard executes the "
            "CommitToken (phase commit); commit.* is null when the preflight was refused, execute.* when the "
            "commit was",
            "state_change": "counters debited between preflight and commit",
            "tamper": "arguments of the signed preflight record edited before the commit",
            "reference": "also run through the reference harness: guard.run takes both phases by itself",
        },
        tests,
    )


# --- execution receipts ---------------------------------------------------------------

RECEIPT_FIELDS = {
    "issuer": ISSUER,
    "token_id": "conformance-token-0001",
    "proposal_digest": AuthorizationRequest(**TOKEN_REQUEST).content_digest(),
    "tool": "transfer",
    "idempotency_key": None,
    "execution_seq": 2,
    "started_at": NOW,
    "ended_at": NOW + 1,
}


def check_receipt(inp: dict[str, Any]) -> str | None:
    from execauth_core.receipts import ReceiptError, verify_receipt

    try:
        if "result" in inp:
            verify_receipt(canonicalize(inp["receipt"]), keyset(inp["keys"], NOW), result=inp["result"])
        else:
            verify_receipt(canonicalize(inp["receipt"]), keyset(inp["keys"], NOW))
    except ReceiptError as exc:
        return exc.reason_code
    return None


def receipt_vectors() -> dict[str, Any]:
    from execauth_core.receipts import issue_receipt

    def signed(signer: Any = None, **over: Any) -> dict[str, Any]:
        fields = {**RECEIPT_FIELDS, **over}
        r = issue_receipt(signer or trusted_signer(), **fields)
        return r.model_dump(mode="json")

    class Blob:
        result_hash = "sha256:" + "ab" * 32

    ok = signed(result={"refunded": "10.00"})
    failed = signed(error=RuntimeError("upstream down"))
    declared = signed(result=Blob())
    opaque = signed(result=b"\x89PNG")
    guard = vector_guard({"allowlist": {"allow": ["transfer"]}}, now=NOW, token_id="conformance-token-0001")
    # idempotency_key=False: a call without a key (tcId 6 predates the effect ledger,
    # whose key every call with a call_id now gets; tcId 7 is that case).
    _, from_guard = guard.run(
        AuthorizationRequest(**TOKEN_REQUEST), lambda: {"ok": True}, receipt=True, idempotency_key=False
    )
    assert from_guard is not None and from_guard.idempotency_key is None
    keyed_guard = vector_guard(
        {"allowlist": {"allow": ["transfer"]}}, now=NOW, token_id="conformance-token-0001", ledger=True
    )
    _, keyed = keyed_guard.run(AuthorizationRequest(**TOKEN_REQUEST), lambda: {"ok": True}, receipt=True)
    assert keyed is not None and keyed.idempotency_key is not None  # derived from the call id

    def edited(r: dict[str, Any], **changes: Any) -> dict[str, Any]:
        c = copy.deepcopy(r)
        for k, v in changes.items():
            if v is None:
                c.pop(k, None)
            else:
                c[k] = v
        return c

    def resigned(**changes: Any) -> dict[str, Any]:
        """Fields made inconsistent, then validly signed: the checks after the signature."""
        from execauth_core.receipts import RECEIPT_TYPE

        body = edited(ok, signature=None, **changes)
        body = {k: v for k, v in body.items() if v != "__null__"}
        for k in [k for k, v in changes.items() if v == "__null__"]:
            body[k] = None
        sig = trusted_signer().sign(b"execauth:" + RECEIPT_TYPE.encode() + b"/1\n" + canonicalize(body))
        return {**body, "signature": b64url_encode(sig)}

    stranger = signed(untrusted_signer(), result={"refunded": "10.00"})
    sig = bytearray(b64url_decode(ok["signature"]))
    sig[0] ^= 1
    cases: list[tuple[int, str, dict[str, Any], dict[str, Any], str | None]] = [
        (1, "succeeded, digest of the RFC 8785 result", ok, {}, None),
        (2, "succeeded, checked against the result", ok, {"result": {"refunded": "10.00"}}, None),
        (3, "failed: no digest, a reason", failed, {}, None),
        (4, "declared result_hash", declared, {}, None),
        (5, "result not JSON, nothing declared: null with a reason", opaque, {}, None),
        (6, "issued by a guard (fixed clock and ids)", from_guard.model_dump(mode="json"), {}, None),
        (
            7,
            "issued by a guard with the effect ledger: names the call's idempotency key",
            keyed.model_dump(mode="json"),
            {},
            None,
        ),
        (10, "status edited after signing", edited(ok, status="failed", error="RuntimeError"), {}, "RECEIPT_INVALID"),
        (11, "result digest edited", edited(ok, result_digest="sha256:" + "1" * 64), {}, "RECEIPT_INVALID"),
        (12, "token id edited", edited(ok, token_id="conformance-token-9999"), {}, "RECEIPT_INVALID"),
        (13, "flipped signature bit", edited(ok, signature=b64url_encode(bytes(sig))), {}, "RECEIPT_INVALID"),
        (14, "signed by an untrusted key under its own kid", stranger, {}, "RECEIPT_INVALID"),
        (
            15,
            "untrusted key claiming the trusted kid",
            edited(stranger, kid=trusted_signer().kid),
            {},
            "RECEIPT_INVALID",
        ),
        (16, "no trusted keys configured", ok, {"keys": "none"}, "RECEIPT_INVALID"),
        (17, "revoked key", ok, {"keys": "revoked"}, "RECEIPT_INVALID"),
        (18, "unknown field", edited(ok, extra="x"), {}, "RECEIPT_INVALID"),
        (19, "missing field", edited(ok, ended_at=None), {}, "RECEIPT_INVALID"),
        (20, "another result than the receipt names", ok, {"result": {"refunded": "99.00"}}, "RECEIPT_INVALID"),
        (21, "validly signed, ended before it started", resigned(ended_at=NOW - 1), {}, "RECEIPT_INVALID"),
        (
            22,
            "validly signed, null digest without a reason",
            resigned(result_digest="__null__", result_digest_source="__null__"),
            {},
            "RECEIPT_INVALID",
        ),
    ]
    tests = []
    for tc, comment, receipt, over, code in cases:
        inp = {"receipt": receipt, "keys": over.get("keys", "trusted")}
        if "result" in over:
            inp["result"] = over["result"]
        got = check_receipt(inp)
        if got != code:
            raise SystemExit(f"receipt tcId {tc} ({comment}): expected {code}, core says {got}")
        flags = ["valid" if code is None else "invalid"]
        tests.append(case(tc, comment, flags, inp, {"valid": code is None, "reason_code": code}))
    return document(
        "receipts",
        {
            "keys": "as in tokens-v1.json (trusted, none, revoked)",
            "signature": "Ed25519 over b'execauth:receipt/1\\n' + JCS(receipt without signature)",
            "result": "when present, the receipt's result_digest must be sha256(JCS(result))",
        },
        tests,
    )


# --- writing -----------------------------------------------------------------------

from delegation_vectors import delegation_vectors  # noqa: E402 - its own module, next to this one

BUILDERS = {
    "canonicalization-v1.json": canonical_vectors,
    "tokens-v1.json": token_vectors,
    "decisions-v1.json": decision_vectors,
    "audit-v1.json": audit_vectors,
    "commit-v1.json": commit_vectors,
    "receipts-v1.json": receipt_vectors,
    "delegation-v1.json": lambda: delegation_vectors(document, case),
}


def render(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if files would change")
    args = parser.parse_args()
    assert TRUSTED_SEED  # the keys are RFC 8032's, fixed
    changed = []
    sums = []
    for name, build in BUILDERS.items():
        doc = build()
        path = VECTORS / name
        if path.exists():
            old = {t["tcId"]: t for t in json.loads(path.read_text(encoding="utf-8"))["tests"]}
            for t in doc["tests"]:
                prior = old.get(t["tcId"])
                if prior is not None and (prior["expected"] != t["expected"] or prior["input"] != t["input"]):
                    print(
                        f"refusing: {name} tcId {t['tcId']} would change; frozen vectors get new tcIds", file=sys.stderr
                    )
                    return 1
            missing = set(old) - {t["tcId"] for t in doc["tests"]}
            if missing:
                print(f"refusing: {name} would drop tcIds {sorted(missing)}", file=sys.stderr)
                return 1
        data = render(doc)
        if not path.exists() or path.read_bytes() != data:
            changed.append(name)
            if not args.check:
                path.write_bytes(data)
        sums.append(f"{hashlib.sha256(data).hexdigest()}  {name}\n")
    sums_data = "".join(sums).encode()
    sums_path = VECTORS / "SHA256SUMS"
    if not sums_path.exists() or sums_path.read_bytes() != sums_data:
        changed.append("SHA256SUMS")
        if not args.check:
            sums_path.write_bytes(sums_data)
    for name in changed:
        print(("would change " if args.check else "wrote ") + name)
    return 1 if (args.check and changed) else 0


if __name__ == "__main__":
    sys.exit(main())
