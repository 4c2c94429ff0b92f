"""Adversarial token tests: every attack ends in denial, with the right reason
code, and the tool is never called."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from jwcrypto import jwk as jwcrypto_jwk
from jwcrypto import jws as jwcrypto_jws

from execauth_core import (
    ExecutionDenied,
    FixedClock,
    Guard,
    KeySet,
    KeyStatus,
    LocalSigner,
    TokenError,
    TokenVerifier,
    TrustedKey,
    canonicalize,
)
from execauth_core._b64 import b64url_decode, b64url_encode
from execauth_core.tokens import TOKEN_TYPE

from .conftest import RFC8032_SEED_2, T0, Tool


def sign_raw(header: dict[str, Any], claims: dict[str, Any], signer: LocalSigner) -> str:
    h = b64url_encode(canonicalize(header))
    p = b64url_encode(canonicalize(claims))
    return f"{h}.{p}.{b64url_encode(signer.sign(f'{h}.{p}'.encode()))}"


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    import json

    h, p, _ = token.split(".")
    return json.loads(b64url_decode(h)), json.loads(b64url_decode(p))


@pytest.fixture
def setup(make_guard: Callable[..., Guard], tool: Tool) -> tuple[Guard, Any, str]:
    guard = make_guard()
    request = guard.proposal("transfer", {"amount": "10.00", "to": "bob"}, principal="alice")
    decision = guard.authorize(request)
    assert decision.token is not None
    return guard, request, decision.token


def deny_code(guard: Guard, request: Any, token: Any, tool: Tool) -> str:
    with pytest.raises(ExecutionDenied) as info:
        guard.execute(request, token, lambda: tool(**request.args))
    assert tool.calls == [], "the tool must never run on a denied path"
    denial = list(guard.audit_log.entries())[-1]
    assert denial.event == "denial" and denial.executed is False
    assert denial.body["reason_codes"] == list(info.value.reason_codes)
    return info.value.reason_codes[0]


def test_valid_token_executes_once(setup: tuple[Guard, Any, str], tool: Tool) -> None:
    guard, request, token = setup
    assert guard.execute(request, token, lambda: tool(**request.args)) == "done"
    assert tool.calls == [{"amount": "10.00", "to": "bob"}]
    assert deny_code(guard, request, token, Tool()) == "TOKEN_REPLAYED"


def test_forged_signature_other_key(setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner) -> None:
    guard, request, token = setup
    header, claims = parts(token)
    forged = sign_raw(header, claims, LocalSigner(RFC8032_SEED_2))  # same kid, wrong key
    assert deny_code(guard, request, forged, tool) == "TOKEN_SIGNATURE_INVALID"


def test_flipped_signature_bit(setup: tuple[Guard, Any, str], tool: Tool) -> None:
    guard, request, token = setup
    h, p, s = token.split(".")
    sig = bytearray(b64url_decode(s))
    sig[10] ^= 1
    assert deny_code(guard, request, f"{h}.{p}.{b64url_encode(bytes(sig))}", tool) == "TOKEN_SIGNATURE_INVALID"


CLAIM_TAMPERS: list[tuple[str, Any]] = [
    ("iss", "evil"),
    ("aud", "other-guard"),
    ("sub", "mallory"),
    ("iat", T0 - 1),
    ("nbf", T0 - 1),
    ("exp", T0 + 10_000),
    ("jti", "another-token-id-0001"),
    ("proposal_digest", "sha256:" + "0" * 64),
    ("record_digest", "sha256:" + "1" * 64),
    ("scope", {"tool": "search", "effects": [], "limits": {}}),
    ("policy", {"id": "x", "epoch": 9, "digest": "sha256:" + "2" * 64}),
    ("phase", "execute"),
    ("v", "execauth.token/1"),
]


@pytest.mark.parametrize(("claim", "value"), CLAIM_TAMPERS, ids=[c for c, _ in CLAIM_TAMPERS])
def test_tampered_claim_breaks_signature(setup: tuple[Guard, Any, str], tool: Tool, claim: str, value: Any) -> None:
    guard, request, token = setup
    h, _, s = token.split(".")
    _, claims = parts(token)
    claims[claim] = value
    if claim in ("phase", "v"):  # same value: re-encode with a space so the bytes differ
        payload = b64url_encode(canonicalize(claims) + b" ")
    else:
        payload = b64url_encode(canonicalize(claims))
    assert deny_code(guard, request, f"{h}.{payload}.{s}", tool) == "TOKEN_SIGNATURE_INVALID"


@pytest.mark.parametrize(
    ("claim", "value", "code"),
    [
        ("iss", "evil", "TOKEN_ISSUER_MISMATCH"),
        ("aud", "other-guard", "TOKEN_AUDIENCE_MISMATCH"),
        ("proposal_digest", "sha256:" + "0" * 64, "TOKEN_PROPOSAL_MISMATCH"),
        ("sub", "mallory", "TOKEN_SCOPE_MISMATCH"),
        ("scope", {"tool": "search", "effects": [], "limits": {}}, "TOKEN_SCOPE_MISMATCH"),
        ("exp", T0 + 10_000, "TOKEN_TTL_EXCEEDED"),
        ("nbf", T0 + 120, "TOKEN_TTL_EXCEEDED"),  # nbf beyond exp: inconsistent
        ("extra", "field", "TOKEN_CLAIMS_INVALID"),
        ("iat", "yesterday", "TOKEN_CLAIMS_INVALID"),
        ("jti", "short", "TOKEN_CLAIMS_INVALID"),
        ("phase", "preflight", "TOKEN_CLAIMS_INVALID"),
    ],
)
def test_validly_signed_bad_claims(
    setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner, claim: str, value: Any, code: str
) -> None:
    """Signed by the trusted key, so only the claim checks stand in the way."""
    guard, request, token = setup
    header, claims = parts(token)
    claims[claim] = value
    assert deny_code(guard, request, sign_raw(header, claims, signer), tool) == code


def test_missing_claim(setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner) -> None:
    guard, request, token = setup
    header, claims = parts(token)
    del claims["exp"]
    assert deny_code(guard, request, sign_raw(header, claims, signer), tool) == "TOKEN_CLAIMS_INVALID"


@pytest.mark.parametrize(
    ("advance", "code"),
    [(60 + 30, "TOKEN_EXPIRED"), (10_000, "TOKEN_EXPIRED")],
)
def test_expired(setup: tuple[Guard, Any, str], tool: Tool, clock: FixedClock, advance: int, code: str) -> None:
    guard, request, token = setup
    clock.advance(advance)
    assert deny_code(guard, request, token, tool) == code


def test_within_skew_after_exp_still_valid(setup: tuple[Guard, Any, str], tool: Tool, clock: FixedClock) -> None:
    guard, request, token = setup
    clock.advance(60 + 29)
    guard.execute(request, token, lambda: tool(**request.args))
    assert len(tool.calls) == 1


def test_not_yet_valid_and_issued_in_future(
    setup: tuple[Guard, Any, str], tool: Tool, clock: FixedClock, signer: LocalSigner
) -> None:
    guard, request, token = setup
    header, claims = parts(token)
    claims.update(iat=T0, nbf=T0 + 45, exp=T0 + 60)
    assert deny_code(guard, request, sign_raw(header, claims, signer), tool) == "TOKEN_NOT_YET_VALID"
    claims.update(iat=T0 + 100, nbf=T0 + 100, exp=T0 + 160)
    assert deny_code(guard, request, sign_raw(header, claims, signer), tool) == "TOKEN_ISSUED_IN_FUTURE"


def test_wrong_proposal(setup: tuple[Guard, Any, str], tool: Tool) -> None:
    guard, _request, token = setup
    other = guard.proposal("transfer", {"amount": "10000.00", "to": "bob"}, principal="alice")
    assert deny_code(guard, other, token, tool) == "TOKEN_PROPOSAL_MISMATCH"


def test_positional_vs_keyword_is_the_same_proposal(make_guard: Callable[..., Guard]) -> None:
    from execauth_core import bind_arguments

    def transfer(amount: str, to: str, memo: str = "") -> None: ...

    assert bind_arguments(transfer, ("5000", "bob")) == bind_arguments(transfer, (), {"amount": "5000", "to": "bob"})


def test_unknown_kid(setup: tuple[Guard, Any, str], tool: Tool) -> None:
    guard, request, token = setup
    header, claims = parts(token)
    stranger = LocalSigner(RFC8032_SEED_2)
    header["kid"] = stranger.kid
    assert deny_code(guard, request, sign_raw(header, claims, stranger), tool) == "TOKEN_KID_UNKNOWN"


def test_revoked_key(setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner) -> None:
    guard, request, token = setup
    assert guard.verifier.keys is not None
    guard.verifier.keys.set_status(signer.kid, KeyStatus.REVOKED)
    assert deny_code(guard, request, token, tool) == "TOKEN_KEY_REVOKED"


def test_key_outside_validity_window(setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner) -> None:
    guard, request, token = setup
    guard.verifier.keys = KeySet([TrustedKey.from_public_key(signer.public_key, not_after=T0 - 1)])
    assert deny_code(guard, request, token, tool) == "TOKEN_KEY_INACTIVE"


def test_retired_key_still_verifies_inside_window(
    setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner
) -> None:
    guard, request, token = setup
    guard.verifier.keys = KeySet(
        [TrustedKey.from_public_key(signer.public_key, status=KeyStatus.RETIRED, not_after=T0)]
    )
    guard.execute(request, token, lambda: tool(**request.args))
    assert len(tool.calls) == 1


def test_retired_key_never_verifies_what_it_signs_after_retiring(
    setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner
) -> None:
    guard, request, token = setup
    guard.verifier.keys = KeySet(
        [TrustedKey.from_public_key(signer.public_key, status=KeyStatus.RETIRED, not_after=T0 - 1)]
    )
    assert deny_code(guard, request, token, tool) == "TOKEN_KEY_INACTIVE"
    guard.verifier.keys = KeySet([TrustedKey.from_public_key(signer.public_key, status=KeyStatus.RETIRED)])
    assert deny_code(guard, request, token, tool) == "TOKEN_KEY_INACTIVE"  # no retirement time: nothing new


def test_retiring_needs_a_time(signer: LocalSigner) -> None:
    from execauth_core import ConfigurationError

    keys = KeySet.of_signer(signer)
    with pytest.raises(ConfigurationError, match="at"):
        keys.set_status(signer.kid, KeyStatus.RETIRED)
    keys.set_status(signer.kid, KeyStatus.RETIRED, at=T0)
    assert keys.get(signer.kid).not_after == T0  # type: ignore[union-attr]


def test_missing_keyset(setup: tuple[Guard, Any, str], tool: Tool) -> None:
    guard, request, token = setup
    guard.verifier.keys = None
    assert deny_code(guard, request, token, tool) == "KEYSET_MISSING"
    guard.verifier.keys = KeySet()
    assert deny_code(guard, request, token, tool) == "KEYSET_MISSING"


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "none", "typ": TOKEN_TYPE},
        {"alg": "HS256", "kid": "k", "typ": TOKEN_TYPE},
        {"alg": "ES256", "kid": "k", "typ": TOKEN_TYPE},
        {"alg": "Ed25519", "kid": "k", "typ": TOKEN_TYPE},
        {"alg": "EDDSA", "kid": "k", "typ": TOKEN_TYPE},
        {"kid": "k", "typ": TOKEN_TYPE},
    ],
)
def test_alg_confusion(setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner, header: dict[str, Any]) -> None:
    guard, request, token = setup
    _, claims = parts(token)
    h = b64url_encode(canonicalize(header))
    p = b64url_encode(canonicalize(claims))
    # HMAC keyed with the public key: the classic RS/HS confusion attack.
    mac = hmac.new(signer.public_key, f"{h}.{p}".encode(), hashlib.sha256).digest()
    for sig in ("", b64url_encode(mac)):
        assert deny_code(guard, request, f"{h}.{p}.{sig}", tool) in ("TOKEN_ALG_REJECTED", "TOKEN_MALFORMED")
    assert deny_code(guard, request, f"{h}.{p}.{b64url_encode(mac)}", tool) == "TOKEN_ALG_REJECTED"


@pytest.mark.parametrize(
    "extra",
    [{"jwk": {"kty": "OKP"}}, {"jku": "https://evil.example/jwks"}, {"crit": ["exp"]}, {"x5c": ["AA"]}],
)
def test_header_members_that_carry_keys_are_refused(
    setup: tuple[Guard, Any, str], tool: Tool, signer: LocalSigner, extra: dict[str, Any]
) -> None:
    guard, request, token = setup
    header, claims = parts(token)
    header.update(extra)
    assert deny_code(guard, request, sign_raw(header, claims, signer), tool) == "TOKEN_ALG_REJECTED"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[: len(t) // 2],
        lambda t: t.rsplit(".", 1)[0],
        lambda t: t + ".extra",
        lambda t: t.replace(".", "..", 1),
        lambda t: "garbage",
        lambda t: "a.b.c",
        lambda t: "!!!.###.$$$",
        lambda t: t + "=",
        lambda t: "x" * 20_000,
        lambda t: b64url_encode(b"[1,2]") + "." + t.split(".", 1)[1],
        lambda t: (
            b64url_encode(b'{"alg":"EdDSA","alg":"EdDSA","kid":"x","typ":"execauth+jwt"}') + "." + t.split(".", 1)[1]
        ),
    ],
)
def test_truncated_and_garbage_tokens(setup: tuple[Guard, Any, str], tool: Tool, mangle: Callable[[str], str]) -> None:
    guard, request, token = setup
    code = deny_code(guard, request, mangle(token), tool)
    assert code in ("TOKEN_MALFORMED", "TOKEN_SIGNATURE_INVALID", "TOKEN_ALG_REJECTED")


@pytest.mark.parametrize("token", [None, "", 42, b"bytes"])
def test_no_token_or_wrong_type(setup: tuple[Guard, Any, str], tool: Tool, token: Any) -> None:
    guard, request, _ = setup
    assert deny_code(guard, request, token, tool) in ("NO_TOKEN", "TOKEN_MALFORMED")


def test_verifier_raises_typed_error_never_false(signer: LocalSigner) -> None:
    verifier = TokenVerifier(keys=KeySet.of_signer(signer), issuer="i", audience="a")
    from execauth_core import AuthorizationRequest

    req = AuthorizationRequest(tool="t", args={}, principal="p")
    with pytest.raises(TokenError) as info:
        verifier.verify("a.b.c", request=req, now=T0)
    assert info.value.reason_code == "TOKEN_MALFORMED"


def test_pyjwt_verifies_our_tokens(setup: tuple[Guard, Any, str], signer: LocalSigner) -> None:
    """The format is really JWS: an independent JOSE library checks the signature."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    _, request, token = setup
    public = Ed25519PublicKey.from_public_bytes(signer.public_key)
    claims = jwt.decode(
        token,
        public,
        algorithms=["EdDSA"],
        audience="execauth-guard",
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["proposal_digest"] == request.content_digest()
    with pytest.raises(jwt.InvalidSignatureError):
        other = Ed25519PublicKey.from_public_bytes(LocalSigner(RFC8032_SEED_2).public_key)
        jwt.decode(token, other, algorithms=["EdDSA"], options={"verify_aud": False, "verify_exp": False})


def test_jwcrypto_verifies_our_tokens(setup: tuple[Guard, Any, str], signer: LocalSigner) -> None:
    _, _, token = setup
    key = jwcrypto_jwk.JWK(kty="OKP", crv="Ed25519", x=b64url_encode(signer.public_key))
    obj = jwcrypto_jws.JWS()
    obj.deserialize(token)
    obj.verify(key, alg="EdDSA")
    assert obj.jose_header["kid"] == signer.kid == key.thumbprint()
