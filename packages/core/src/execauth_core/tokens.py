"""Authority tokens: compact JWS (RFC 7515), ``alg: EdDSA`` (RFC 8037).

Any standard JOSE library can check the signature. The payload is the JCS form of
:class:`~execauth_core.messages.TokenClaims`.

Verification trusts only the configured :class:`~execauth_core.keys.KeySet` and
checks, in order: structure, header (``alg`` must be ``EdDSA``; nothing else is
negotiable, no mode skips the signature), ``kid``, key status and window,
signature, claims schema, issuer, audience, times (bounded skew, maximum TTL),
proposal digest, scope. Every failure raises :class:`TokenError` with a stable
reason code.
"""

from __future__ import annotations

import functools
from typing import Any

import pydantic

from ._b64 import b64url_decode, b64url_encode
from .canonical import CanonicalizationError, canonicalize, loads_strict
from .errors import ConfigurationError, TokenError
from .keys import KeySet, KeyStatus, Signer
from .messages import AuthorizationRequest, TokenClaims
from .reasons import ReasonCode as R

TOKEN_TYPE = "execauth+jwt"
MAX_TOKEN_LENGTH = 16_384
MAX_CLOCK_SKEW = 300
"""Upper bound on configurable skew: a verifier cannot be made to ignore time."""


def issue_token(claims: TokenClaims, signer: Signer) -> str:
    """Sign ``claims`` as a compact JWS with the signer's key."""
    signing_input = _encoded_header(signer.kid) + "." + b64url_encode(claims.canonical_bytes())
    signature = signer.sign(signing_input.encode("ascii"))
    return signing_input + "." + b64url_encode(signature)


@functools.lru_cache(maxsize=64)
def _encoded_header(kid: str) -> str:
    return b64url_encode(canonicalize({"alg": "EdDSA", "kid": kid, "typ": TOKEN_TYPE}))


@functools.lru_cache(maxsize=64)
def _parsed_header(segment: str) -> Any:
    # A pure function of the segment's text; a signer's header is the same string on
    # every token, so it is decoded and strictly parsed once. Failures are not cached.
    return loads_strict(b64url_decode(segment))


def _header(segment: str) -> Any:
    """The strictly parsed JWS header of ``segment`` (a fresh dict: callers may not
    share the cached one). Raises ValueError or CanonicalizationError."""
    header = _parsed_header(segment)
    return dict(header) if isinstance(header, dict) else header


def _fail(code: R, message: str) -> TokenError:
    return TokenError(code, message)


class TokenVerifier:
    """Verifies authority tokens against a configured trusted key set.

    Args:
        keys: the trusted keys. ``None`` or an empty set makes every
            verification fail with ``KEYSET_MISSING``.
        issuer: the only accepted ``iss``.
        audience: the only accepted ``aud``.
        max_ttl: longest accepted ``exp - iat``, seconds.
        clock_skew: tolerated clock difference, seconds (at most 300).
    """

    def __init__(
        self,
        *,
        keys: KeySet | None,
        issuer: str,
        audience: str,
        max_ttl: int = 300,
        clock_skew: int = 30,
    ) -> None:
        if not issuer or not audience:
            raise ConfigurationError("a verifier needs an issuer and an audience")
        if not 0 <= clock_skew <= MAX_CLOCK_SKEW:
            raise ConfigurationError(f"clock_skew must be within 0..{MAX_CLOCK_SKEW} seconds")
        if not 1 <= max_ttl <= 86_400:
            raise ConfigurationError("max_ttl must be within 1..86400 seconds")
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.max_ttl = max_ttl
        self.clock_skew = clock_skew

    def verify(
        self,
        token: Any,
        *,
        request: AuthorizationRequest,
        now: int,
        proposal_digest: str | None = None,
    ) -> TokenClaims:
        """Verify ``token`` for executing ``request`` at time ``now``.

        Args:
            proposal_digest: the request's digest if the caller already computed it.

        Returns:
            The verified claims.

        Raises:
            TokenError: with the reason code of the first check that failed.
        """
        if not self.keys:
            raise _fail(R.KEYSET_MISSING, "no trusted key set is configured")
        if not isinstance(token, str) or not token:
            raise _fail(R.NO_TOKEN if not token else R.TOKEN_MALFORMED, "no token string")
        if len(token) > MAX_TOKEN_LENGTH:
            raise _fail(R.TOKEN_MALFORMED, "token is too long")
        parts = token.split(".")
        if len(parts) != 3:
            raise _fail(R.TOKEN_MALFORMED, "a compact JWS has exactly three parts")
        try:
            header = _header(parts[0])
            payload_raw = b64url_decode(parts[1])
            signature = b64url_decode(parts[2])
        except (ValueError, CanonicalizationError) as exc:
            raise _fail(R.TOKEN_MALFORMED, f"undecodable token: {exc}") from exc
        if not isinstance(header, dict):
            raise _fail(R.TOKEN_MALFORMED, "JWS header is not an object")
        if header.get("alg") != "EdDSA":
            raise _fail(R.TOKEN_ALG_REJECTED, f"alg {header.get('alg')!r} is not accepted")
        if set(header) != {"alg", "kid", "typ"} or header.get("typ") != TOKEN_TYPE:
            # No crit, jwk, jku, x5c...: a key or an extension carried in the token
            # is never honoured, so its presence is refused outright.
            raise _fail(R.TOKEN_ALG_REJECTED, "unexpected JWS header members")
        kid = header["kid"]
        if not isinstance(kid, str):
            raise _fail(R.TOKEN_MALFORMED, "kid is not a string")
        key = self.keys.get(kid)
        if key is None:
            raise _fail(R.TOKEN_KID_UNKNOWN, "kid is not in the trusted key set")
        if key.status is KeyStatus.REVOKED:
            raise _fail(R.TOKEN_KEY_REVOKED, "the signing key is revoked")
        if key.status is KeyStatus.ACTIVE and not key.valid_at(now):
            raise _fail(R.TOKEN_KEY_INACTIVE, "the signing key is outside its validity window")
        if key.status is KeyStatus.RETIRED and key.not_before is not None and now < key.not_before:
            raise _fail(R.TOKEN_KEY_INACTIVE, "the signing key is not valid yet")
        if len(signature) != 64 or not key.verify((parts[0] + "." + parts[1]).encode("ascii"), signature):
            raise _fail(R.TOKEN_SIGNATURE_INVALID, "signature does not verify")
        try:
            loads_strict(payload_raw)
            claims = TokenClaims.model_validate_json(payload_raw, strict=True)
        except (CanonicalizationError, pydantic.ValidationError) as exc:
            raise _fail(R.TOKEN_CLAIMS_INVALID, f"claims invalid: {exc}") from exc
        if key.status is KeyStatus.RETIRED and (key.not_after is None or not key.valid_at(claims.iat)):
            # A retired key verifies only what it signed before it retired; without a
            # retirement time there is no "before", so nothing verifies.
            raise _fail(R.TOKEN_KEY_INACTIVE, "retired key: token not signed inside its window")
        if claims.iss != self.issuer:
            raise _fail(R.TOKEN_ISSUER_MISMATCH, "issuer is not trusted")
        if claims.aud != self.audience:
            raise _fail(R.TOKEN_AUDIENCE_MISMATCH, "token is for another audience")
        skew = self.clock_skew
        if not claims.iat <= claims.nbf < claims.exp or claims.exp - claims.iat > self.max_ttl:
            raise _fail(R.TOKEN_TTL_EXCEEDED, "iat/nbf/exp inconsistent or lifetime too long")
        if claims.iat > now + skew:
            raise _fail(R.TOKEN_ISSUED_IN_FUTURE, "token issued in the future")
        if claims.nbf > now + skew:
            raise _fail(R.TOKEN_NOT_YET_VALID, "token not yet valid")
        if now >= claims.exp + skew:
            raise _fail(R.TOKEN_EXPIRED, "token expired")
        expected = proposal_digest or request.content_digest()
        if claims.proposal_digest != expected:
            raise _fail(R.TOKEN_PROPOSAL_MISMATCH, "token is bound to a different proposal")
        if claims.scope.tool != request.tool or claims.sub != request.principal:
            raise _fail(R.TOKEN_SCOPE_MISMATCH, "token scope does not cover this call")
        return claims


def unverified_claims(token: str) -> dict[str, Any]:
    """Decode a token's payload WITHOUT verifying it, for display and debugging only."""
    try:
        value = loads_strict(b64url_decode(token.split(".")[1]))
    except (ValueError, IndexError, CanonicalizationError, AttributeError) as exc:
        raise TokenError(R.TOKEN_MALFORMED, f"undecodable token: {exc}") from exc
    if not isinstance(value, dict):
        raise TokenError(R.TOKEN_MALFORMED, "payload is not an object")
    return value
