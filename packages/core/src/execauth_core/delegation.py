"""Delegation v1: a signed grant from a parent to a named child agent that can only
narrow what the parent holds.

A delegation is a compact JWS (``alg: EdDSA``, ``typ: execauth-delegation+jwt``, the
same ``kid`` = RFC 7638 thumbprint convention as authority tokens) whose payload is
the JCS form of :class:`DelegationClaims`. A chain is a list of such links, root
first; link *i+1* names link *i* by the SHA-256 of its compact form.

Why omission can never mean "unlimited": every limit of the signed scope
(:class:`DelegationScope`) is a *required* field, so a link that leaves one out does
not parse. A child is only ever built from a verified parent (:func:`delegate`),
where an omitted limit of the :class:`Narrowing` request is filled in with the
parent's own value, and a request for more than the parent holds is refused. The
verifier then re-checks every hop with :func:`widenings`, whatever built the link.

Absence inside a limit is always the narrow reading: a currency missing from
``amount_ceilings`` allows no spending in it, a tool missing from ``tools`` is not
allowed; constraints are a conjunction, so a child holds all of its parent's and
may add more.

Use counts and rates are counters in a :class:`~execauth_core.stores.base.StateStore`
(one atomic check-and-debit over every link of the chain, so a parent's count also
bounds everything below it); revocations are counters there too, so every guard
sharing the store sees them.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

import pydantic
from pydantic import Field, StringConstraints, field_validator, model_validator

from ._b64 import b64url_decode, b64url_encode
from .canonical import CanonicalizationError, canonicalize, loads_strict
from .effects import EFFECTS
from .errors import AuthorizationError, ConfigurationError, ExecutionDenied, StoreUnavailable
from .keys import KeySet, KeyStatus, Signer
from .messages import AuthorizationRequest, Digest, Name, UnixTime, _Wire
from .money import is_currency, parse_amount
from .reasons import ReasonCode as R
from .stores.base import Debit, StateStore

if TYPE_CHECKING:
    from .guard import Guard
    from .manifest import ToolRegistry

T = TypeVar("T")
log = logging.getLogger("execauth")

DELEGATION_TYPE = "execauth-delegation+jwt"
MAX_DELEGATION_LENGTH = 32_768
MAX_CHAIN_LENGTH = 8
"""No verifier accepts a chain longer than this, whatever the links say."""
MAX_DELEGATION_TTL = 30 * 86_400
COUNTER_WINDOW = 2**33
"""Use counts and revocations live in one window aligned to the epoch that ends in
the year 2242: longer than any delegation lives (``MAX_DELEGATION_TTL``)."""
_AMOUNT_EXPONENT = 9  # money.py's widest fraction: compares any two decimal amounts exactly

Amount = Annotated[str, StringConstraints(pattern=r"^(0|[1-9][0-9]{0,17})(\.[0-9]{1,9})?$")]
Scalar = str | int | bool
Jti = Annotated[str, StringConstraints(min_length=16, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


class DelegationError(AuthorizationError):
    """A delegation or chain failed to verify, or a request is outside its scope."""


def _amount(text: str) -> int:
    return parse_amount(text, _AMOUNT_EXPONENT)


class RateLimit(_Wire):
    """At most ``count`` calls in each fixed window of ``window`` seconds."""

    count: int = Field(ge=1, le=1_000_000_000)
    window: int = Field(ge=1, le=366 * 86_400)


class ArgConstraint(_Wire):
    """A condition on one argument of one tool: the argument must be present and
    equal one of ``values`` (``op: in``) or be a string starting with one of them
    (``op: prefix``)."""

    tool: Name
    arg: Name
    op: Literal["in", "prefix"]
    values: tuple[Scalar, ...] = Field(min_length=1, max_length=1000)

    @model_validator(mode="after")
    def _prefixes_are_strings(self) -> ArgConstraint:
        if self.op == "prefix" and not all(isinstance(v, str) for v in self.values):
            raise ValueError("prefix values are strings")
        return self

    def admits(self, value: object) -> bool:
        if self.op == "in":
            # type-exact: 1, 1.0 and True are three different values
            return any(type(value) is type(v) and value == v for v in self.values)
        return isinstance(value, str) and any(value.startswith(str(v)) for v in self.values)


def _sorted_unique(value: tuple[str, ...], what: str) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError(f"{what} listed twice")
    return tuple(sorted(value))


class DelegationScope(_Wire):
    """What a delegation permits. Every field is required: there is no default that
    could stand for "no limit"."""

    tools: tuple[Name, ...] = Field(min_length=1, max_length=1000, description="Tools the child may call.")
    effects: tuple[Name, ...] = Field(description="Effects the child's calls may have (every effect of the tool).")
    amount_ceilings: dict[str, Amount] = Field(
        description="Per-call ceiling per currency, decimal strings; a currency not listed allows no spending."
    )
    constraints: tuple[ArgConstraint, ...] = Field(
        max_length=1000, description="Argument conditions, all of which must hold (a conjunction)."
    )
    rate: RateLimit = Field(description="Calls per fixed window under this delegation and everything below it.")
    max_uses: int = Field(ge=1, le=1_000_000_000, description="Calls in all, under this link and below it.")

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "tools")

    @field_validator("effects")
    @classmethod
    def _effects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in value if e not in EFFECTS]
        if unknown:
            raise ValueError(f"unknown effect types {unknown}")
        return _sorted_unique(value, "effects")

    @field_validator("amount_ceilings")
    @classmethod
    def _currencies(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [c for c in value if not is_currency(c)]
        if bad:
            raise ValueError(f"not ISO 4217 currency codes: {bad}")
        return value

    @field_validator("constraints")
    @classmethod
    def _constraints(cls, value: tuple[ArgConstraint, ...]) -> tuple[ArgConstraint, ...]:
        # One order, no repeats: equal scopes have equal bytes.
        unique = {c.canonical_bytes(): c for c in value}
        return tuple(unique[k] for k in sorted(unique))


class DelegationClaims(_Wire):
    """The payload of one link."""

    v: Literal["execauth.delegation/1"] = "execauth.delegation/1"
    jti: Jti = Field(description="The delegation id (consumed, counted and revoked by it).")
    iss: Name = Field(description="Who grants: the authority's issuer (root) or the parent link's agent.")
    sub: Name = Field(description="The principal on whose behalf every call under the chain is made.")
    agent: Name = Field(description="The child agent this delegation is for.")
    aud: tuple[Name, ...] = Field(min_length=1, max_length=100, description="Guards that may accept it.")
    iat: UnixTime
    nbf: UnixTime
    exp: UnixTime
    parent: Digest | None = Field(description="sha256 of the parent link's compact JWS; null for a root.")
    depth: int = Field(ge=0, lt=MAX_CHAIN_LENGTH, description="Position in the chain (root 0).")
    max_depth: int = Field(ge=0, lt=MAX_CHAIN_LENGTH, description="How many further hops may follow this one.")
    holder_kid: str | None = Field(
        description="The only key that may sign a child of this link; null: any trusted key."
    )
    scope: DelegationScope

    @field_validator("aud")
    @classmethod
    def _aud(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _sorted_unique(value, "aud")


def widenings(child: DelegationClaims, parent: DelegationClaims) -> list[str]:
    """The limits in which ``child`` is NOT within ``parent`` (empty: it narrows).

    Covers every constraint type: tools, effects, amount ceilings per currency,
    argument constraints, rate, use count, audience, validity times and depth.
    """
    c, p = child.scope, parent.scope
    wider: list[str] = []
    if not set(c.tools) <= set(p.tools):
        wider.append("tools")
    if not set(c.effects) <= set(p.effects):
        wider.append("effects")
    for currency, ceiling in c.amount_ceilings.items():
        held = p.amount_ceilings.get(currency)
        if held is None or _amount(ceiling) > _amount(held):
            wider.append(f"amount_ceilings.{currency}")
    if not set(p.constraints) <= set(c.constraints):
        wider.append("constraints")
    if c.rate.count > p.rate.count or c.rate.window < p.rate.window or c.rate.window % p.rate.window:
        wider.append("rate")
    if c.max_uses > p.max_uses:
        wider.append("max_uses")
    if not set(child.aud) <= set(parent.aud):
        wider.append("aud")
    if child.exp > parent.exp:
        wider.append("exp")
    if child.nbf < parent.nbf or child.iat < parent.iat:
        wider.append("nbf")
    if child.max_depth > parent.max_depth - 1:
        wider.append("max_depth")
    return wider


def narrows(child: DelegationClaims, parent: DelegationClaims) -> bool:
    """True if ``child`` grants nothing that ``parent`` does not (child ⊆ parent)."""
    return not widenings(child, parent)


@dataclass(frozen=True)
class Narrowing:
    """What a parent asks to narrow for a child. ``None`` (or, in
    ``amount_ceilings``, a currency left out) keeps the parent's own limit: nothing
    omitted is ever unlimited. Asking for more than the parent holds is refused.

    Attributes:
        constraints: added to the parent's (which the child always keeps).
        ttl: seconds from ``now``; the child never outlives its parent.
    """

    tools: Iterable[str] | None = None
    effects: Iterable[str] | None = None
    amount_ceilings: Mapping[str, str] | None = None
    constraints: Iterable[ArgConstraint | Mapping[str, Any]] = ()
    rate: RateLimit | Mapping[str, int] | None = None
    max_uses: int | None = None
    audience: Iterable[str] | None = None
    max_depth: int | None = None
    ttl: int | None = None


class Delegation:
    """One link: the compact JWS, its claims and its digest (what a child names)."""

    __slots__ = ("claims", "digest", "kid", "token")

    def __init__(self, token: str, claims: DelegationClaims, kid: str) -> None:
        self.token = token
        self.claims = claims
        self.kid = kid
        self.digest = link_digest(token)

    def __repr__(self) -> str:
        return f"Delegation(jti={self.claims.jti!r}, agent={self.claims.agent!r}, depth={self.claims.depth})"


def link_digest(token: str) -> str:
    """``sha256:<hex>`` of a link's compact JWS (ASCII)."""
    return "sha256:" + hashlib.sha256(token.encode("ascii")).hexdigest()


@functools.lru_cache(maxsize=64)
def _header(kid: str) -> str:
    return b64url_encode(canonicalize({"alg": "EdDSA", "kid": kid, "typ": DELEGATION_TYPE}))


def _sign(claims: DelegationClaims, signer: Signer) -> Delegation:
    signing_input = _header(signer.kid) + "." + b64url_encode(claims.canonical_bytes())
    token = signing_input + "." + b64url_encode(signer.sign(signing_input.encode("ascii")))
    return Delegation(token, claims, signer.kid)


def issue_root(
    signer: Signer,
    *,
    jti: str,
    issuer: str,
    principal: str,
    agent: str,
    audience: Iterable[str],
    scope: DelegationScope | Mapping[str, Any],
    now: int,
    ttl: int,
    max_depth: int = 0,
    holder_kid: str | None = None,
) -> Delegation:
    """Issue the first link of a chain, from the authority (or whoever the guards
    trust as ``issuer``) to ``agent``. The scope is given in full: every limit.

    Raises:
        ConfigurationError: a malformed scope or out-of-range ttl / depth.
    """
    if not isinstance(ttl, int) or not 1 <= ttl <= MAX_DELEGATION_TTL:
        raise ConfigurationError(f"ttl must be within 1..{MAX_DELEGATION_TTL} seconds")
    try:
        claims = DelegationClaims(
            jti=jti,
            iss=issuer,
            sub=principal,
            agent=agent,
            aud=tuple(audience),
            iat=now,
            nbf=now,
            exp=now + ttl,
            parent=None,
            depth=0,
            max_depth=max_depth,
            holder_kid=holder_kid,
            scope=scope if isinstance(scope, DelegationScope) else DelegationScope.model_validate(scope),
        )
    except pydantic.ValidationError as exc:
        raise ConfigurationError(f"invalid delegation: {exc}") from exc
    return _sign(claims, signer)


def narrowed_scope(parent: DelegationScope, ask: Narrowing) -> DelegationScope:
    """The child's scope: ``ask`` applied to ``parent``, field by field; every limit
    ``ask`` leaves out is the parent's.

    Raises:
        DelegationError: ``DELEGATION_WIDENS`` naming the first limit ``ask`` would widen.
    """

    def widens(what: str) -> DelegationError:
        return DelegationError(R.DELEGATION_WIDENS, f"the child asks for more than its parent holds: {what}")

    tools = parent.tools if ask.tools is None else tuple(ask.tools)
    if not set(tools) <= set(parent.tools):
        raise widens(f"tools {sorted(set(tools) - set(parent.tools))}")
    effects = parent.effects if ask.effects is None else tuple(ask.effects)
    if not set(effects) <= set(parent.effects):
        raise widens(f"effects {sorted(set(effects) - set(parent.effects))}")
    ceilings = dict(parent.amount_ceilings)
    for currency, ceiling in (ask.amount_ceilings or {}).items():
        held = parent.amount_ceilings.get(currency)
        try:
            if held is None or _amount(ceiling) > _amount(held):
                raise widens(f"amount ceiling {ceiling} {currency} (parent: {held or 'no spending'})")
        except ValueError as exc:
            raise DelegationError(R.DELEGATION_INVALID, f"amount ceiling {currency}: {exc}") from exc
        ceilings[currency] = ceiling
    try:
        added = tuple(c if isinstance(c, ArgConstraint) else ArgConstraint.model_validate(c) for c in ask.constraints)
        rate = (
            parent.rate
            if ask.rate is None
            else (ask.rate if isinstance(ask.rate, RateLimit) else RateLimit.model_validate(ask.rate))
        )
    except pydantic.ValidationError as exc:
        raise DelegationError(R.DELEGATION_INVALID, f"invalid narrowing: {exc}") from exc
    if rate.count > parent.rate.count or rate.window < parent.rate.window or rate.window % parent.rate.window:
        raise widens(f"rate {rate.count}/{rate.window}s (parent: {parent.rate.count}/{parent.rate.window}s)")
    max_uses = parent.max_uses if ask.max_uses is None else ask.max_uses
    if max_uses > parent.max_uses:
        raise widens(f"max_uses {max_uses} (parent: {parent.max_uses})")
    try:
        return DelegationScope(
            tools=tools,
            effects=effects,
            amount_ceilings=ceilings,
            constraints=(*parent.constraints, *added),
            rate=rate,
            max_uses=max_uses,
        )
    except pydantic.ValidationError as exc:
        raise DelegationError(R.DELEGATION_INVALID, f"invalid narrowing: {exc}") from exc


def delegate(
    parent: Delegation,
    signer: Signer,
    *,
    jti: str,
    agent: str,
    now: int,
    narrowing: Narrowing | None = None,
    holder_kid: str | None = None,
) -> Delegation:
    """Build and sign a child of ``parent`` for ``agent``: the only way to make a
    non-root link. Everything ``narrowing`` omits is inherited from ``parent``.

    ``parent`` should come from :meth:`DelegationVerifier.verify` (the grant the
    holder was given); the child's verifier re-checks the whole chain anyway.

    Raises:
        DelegationError: ``DELEGATION_WIDENS`` (more than the parent holds),
            ``DELEGATION_DEPTH_EXCEEDED`` (the parent allows no further hop),
            ``DELEGATION_EXPIRED`` (the parent is no longer valid) or
            ``DELEGATION_INVALID`` (a malformed request).
    """
    ask = narrowing or Narrowing()
    p = parent.claims
    if p.max_depth < 1:
        raise DelegationError(R.DELEGATION_DEPTH_EXCEEDED, "the parent delegation allows no further delegation")
    if now >= p.exp or now < p.nbf:
        raise DelegationError(R.DELEGATION_EXPIRED, "the parent delegation is not valid now")
    exp = p.exp if ask.ttl is None else now + ask.ttl
    if ask.ttl is not None and (ask.ttl < 1 or exp > p.exp):
        raise DelegationError(R.DELEGATION_WIDENS, f"the child cannot outlive its parent (exp {p.exp})")
    aud = p.aud if ask.audience is None else tuple(ask.audience)
    if not set(aud) <= set(p.aud):
        raise DelegationError(R.DELEGATION_WIDENS, f"audience {sorted(set(aud) - set(p.aud))} is not the parent's")
    max_depth = p.max_depth - 1 if ask.max_depth is None else ask.max_depth
    if not 0 <= max_depth <= p.max_depth - 1:
        raise DelegationError(R.DELEGATION_WIDENS, f"max_depth {max_depth} (at most {p.max_depth - 1} here)")
    if p.holder_kid is not None and signer.kid != p.holder_kid:
        raise DelegationError(R.DELEGATION_CHAIN_BROKEN, "the parent names another key as its holder")
    scope = narrowed_scope(p.scope, ask)
    try:
        claims = DelegationClaims(
            jti=jti,
            iss=p.agent,
            sub=p.sub,
            agent=agent,
            aud=aud,
            iat=max(now, p.iat),
            nbf=max(now, p.nbf),
            exp=exp,
            parent=parent.digest,
            depth=p.depth + 1,
            max_depth=max_depth,
            holder_kid=holder_kid,
            scope=scope,
        )
    except pydantic.ValidationError as exc:
        raise DelegationError(R.DELEGATION_INVALID, f"invalid delegation: {exc}") from exc
    return _sign(claims, signer)


@dataclass(frozen=True)
class VerifiedChain:
    """A chain that verified: its links (root first) and what it permits."""

    links: tuple[Delegation, ...]

    @property
    def leaf(self) -> DelegationClaims:
        return self.links[-1].claims

    @property
    def scope(self) -> DelegationScope:
        """The effective scope (the leaf's; every hop was checked to narrow)."""
        return self.leaf.scope

    @property
    def principal(self) -> str:
        return self.leaf.sub

    @property
    def agent(self) -> str:
        return self.leaf.agent

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(link.claims.jti for link in self.links)

    @property
    def refs(self) -> tuple[str, ...]:
        """The ``context_refs`` a request made under this chain carries (root first),
        so its decision record names the chain."""
        return tuple(f"delegation:{jti}" for jti in self.ids)


def _parse_link(token: object) -> tuple[dict[str, Any], bytes, bytes, str]:
    if not isinstance(token, str) or not token or len(token) > MAX_DELEGATION_LENGTH:
        raise DelegationError(R.DELEGATION_INVALID, "a link is a compact JWS string of bounded length")
    parts = token.split(".")
    if len(parts) != 3:
        raise DelegationError(R.DELEGATION_INVALID, "a compact JWS has exactly three parts")
    try:
        header = loads_strict(b64url_decode(parts[0]))
        payload = b64url_decode(parts[1])
        signature = b64url_decode(parts[2])
    except (ValueError, CanonicalizationError) as exc:
        raise DelegationError(R.DELEGATION_INVALID, f"undecodable link: {exc}") from exc
    if (
        not isinstance(header, dict)
        or set(header) != {"alg", "kid", "typ"}
        or header.get("alg") != "EdDSA"
        or header.get("typ") != DELEGATION_TYPE
        or not isinstance(header.get("kid"), str)
    ):
        # As for tokens: no other alg, no key or extension carried in the link.
        raise DelegationError(R.DELEGATION_INVALID, "the header must be exactly {alg: EdDSA, kid, typ}")
    return header, payload, signature, parts[0] + "." + parts[1]


class DelegationVerifier:
    """Verifies delegation chains against a configured trusted key set.

    Args:
        keys: keys that may sign links (the authority's; agents' keys the operator
            trusts to sub-delegate). ``None`` or empty: nothing verifies.
        issuers: the only accepted ``iss`` of a root link.
        audience: this guard's name; every link must list it in ``aud``.
        max_chain: longest chain accepted (at most :data:`MAX_CHAIN_LENGTH`).
        clock_skew: tolerated clock difference, seconds.
    """

    def __init__(
        self,
        *,
        keys: KeySet | None,
        issuers: Iterable[str],
        audience: str,
        max_chain: int = 4,
        clock_skew: int = 30,
    ) -> None:
        self.issuers = frozenset(issuers)
        if not self.issuers or not audience:
            raise ConfigurationError("a delegation verifier needs trusted issuers and an audience")
        if not 1 <= max_chain <= MAX_CHAIN_LENGTH:
            raise ConfigurationError(f"max_chain must be within 1..{MAX_CHAIN_LENGTH}")
        if not 0 <= clock_skew <= 300:
            raise ConfigurationError("clock_skew must be within 0..300 seconds")
        self.keys = keys
        self.audience = audience
        self.max_chain = max_chain
        self.clock_skew = clock_skew

    def verify_link(self, token: object, *, now: int) -> Delegation:
        """Verify one link on its own: header, trusted key, signature, claims, time
        and audience. Chain rules are :meth:`verify`'s."""
        if not self.keys:
            raise DelegationError(R.KEYSET_MISSING, "no trusted key set is configured")
        header, payload, signature, signing_input = _parse_link(token)
        key = self.keys.get(header["kid"])
        if key is None:
            raise DelegationError(R.DELEGATION_KEY_UNTRUSTED, "the link's kid is not in the trusted key set")
        if key.status is KeyStatus.REVOKED or (key.status is KeyStatus.ACTIVE and not key.valid_at(now)):
            raise DelegationError(R.DELEGATION_KEY_UNTRUSTED, "the link's signing key is revoked or outside its window")
        if len(signature) != 64 or not key.verify(signing_input.encode("ascii"), signature):
            raise DelegationError(R.DELEGATION_SIGNATURE_INVALID, "the link's signature does not verify")
        try:
            loads_strict(payload)
            claims = DelegationClaims.model_validate_json(payload, strict=True)
        except (CanonicalizationError, pydantic.ValidationError) as exc:
            raise DelegationError(R.DELEGATION_INVALID, f"claims invalid: {exc}") from exc
        if key.status is KeyStatus.RETIRED and not key.valid_at(claims.iat):
            raise DelegationError(R.DELEGATION_KEY_UNTRUSTED, "retired key: link not signed inside its window")
        if self.audience not in claims.aud:
            raise DelegationError(R.DELEGATION_AUDIENCE_MISMATCH, "the delegation is not for this guard")
        skew = self.clock_skew
        if not claims.iat <= claims.nbf < claims.exp or claims.exp - claims.iat > MAX_DELEGATION_TTL:
            raise DelegationError(R.DELEGATION_EXPIRED, "iat/nbf/exp inconsistent or lifetime too long")
        if claims.nbf > now + skew or claims.iat > now + skew:
            raise DelegationError(R.DELEGATION_EXPIRED, "the delegation is not valid yet")
        if now >= claims.exp + skew:
            raise DelegationError(R.DELEGATION_EXPIRED, "the delegation expired")
        assert isinstance(token, str)  # _parse_link refused anything else
        return Delegation(token, claims, key.kid)

    def verify(
        self,
        chain: Sequence[str],
        *,
        now: int,
        revoked: Callable[[str], bool] | None = None,
    ) -> VerifiedChain:
        """Verify every link and every hop of ``chain`` (root first).

        Args:
            revoked: tells whether a delegation id was revoked (e.g.
                :meth:`DelegationLedger.is_revoked`); a revoked link stops every link
                below it.

        Raises:
            DelegationError: with the reason code of the first check that failed.
        """
        if isinstance(chain, str) or not isinstance(chain, Sequence) or not chain:
            raise DelegationError(R.DELEGATION_INVALID, "a chain is a non-empty list of links, root first")
        if len(chain) > self.max_chain:
            raise DelegationError(
                R.DELEGATION_DEPTH_EXCEEDED, f"the chain has {len(chain)} links; at most {self.max_chain}"
            )
        links: list[Delegation] = []
        seen: set[str] = set()
        for i, token in enumerate(chain):
            link = self.verify_link(token, now=now)
            c = link.claims
            if c.jti in seen:
                raise DelegationError(R.DELEGATION_CHAIN_BROKEN, "a delegation id appears twice in the chain")
            seen.add(c.jti)
            if c.depth != i:
                raise DelegationError(R.DELEGATION_CHAIN_BROKEN, f"link {i} says it is at depth {c.depth}")
            if i == 0:
                if c.parent is not None:
                    raise DelegationError(R.DELEGATION_CHAIN_BROKEN, "the first link names a parent: the chain is cut")
                if c.iss not in self.issuers:
                    raise DelegationError(R.DELEGATION_ISSUER_UNTRUSTED, f"root issuer {c.iss!r} is not trusted")
            else:
                parent = links[-1]
                p = parent.claims
                if c.parent != parent.digest:
                    raise DelegationError(R.DELEGATION_CHAIN_BROKEN, f"link {i} does not name link {i - 1} as parent")
                if c.iss != p.agent or c.sub != p.sub:
                    raise DelegationError(R.DELEGATION_CHAIN_BROKEN, f"link {i} is not granted by link {i - 1}'s agent")
                if p.holder_kid is not None and link.kid != p.holder_kid:
                    raise DelegationError(R.DELEGATION_KEY_UNTRUSTED, f"link {i} is not signed by its parent's holder")
                if p.max_depth < 1:
                    raise DelegationError(R.DELEGATION_DEPTH_EXCEEDED, f"link {i - 1} allows no further delegation")
                wider = widenings(c, p)
                if wider:
                    code = R.DELEGATION_DEPTH_EXCEEDED if wider == ["max_depth"] else R.DELEGATION_WIDENS
                    raise DelegationError(code, f"link {i} widens its parent: {', '.join(wider)}")
            links.append(link)
        if revoked is not None:
            for link in links:
                if revoked(link.claims.jti):
                    raise DelegationError(R.DELEGATION_REVOKED, f"delegation {link.claims.jti} was revoked")
        return VerifiedChain(tuple(links))


def check_request(chain: VerifiedChain, request: AuthorizationRequest, registry: ToolRegistry) -> None:
    """Refuse ``request`` unless it lies inside every link's scope.

    The leaf's scope is the effective one (each hop narrows); every link is checked
    anyway, so a bug in narrowing could not widen what a call may do.

    Raises:
        DelegationError: ``DELEGATION_AGENT_MISMATCH`` (another principal or agent),
            ``DELEGATION_CHAIN_BROKEN`` (the request does not name this chain in its
            ``context_refs``) or ``DELEGATION_SCOPE_EXCEEDED`` (tool, effect,
            amount or argument outside the scope).
    """
    if request.principal != chain.principal or request.agent != chain.agent:
        raise DelegationError(
            R.DELEGATION_AGENT_MISMATCH,
            f"the chain is for agent {chain.agent!r} acting for {chain.principal!r}",
        )
    named = tuple(r for r in request.context_refs if r.startswith("delegation:"))
    if named != chain.refs:
        raise DelegationError(R.DELEGATION_CHAIN_BROKEN, "the request does not name this chain in its context_refs")
    for link in chain.links:
        why = outside_scope(link.claims.scope, request, registry)
        if why is not None:
            raise DelegationError(R.DELEGATION_SCOPE_EXCEEDED, f"{why} (delegation {link.claims.jti})")


def outside_scope(scope: DelegationScope, request: AuthorizationRequest, registry: ToolRegistry) -> str | None:
    """Why ``request`` is outside ``scope`` (``None``: it is inside): the tool, every
    effect its manifest declares, its amount per currency, every argument constraint."""
    tool = registry.get(request.tool)
    if tool is None:
        return f"tool {request.tool!r} has no registered manifest"
    m = tool.manifest
    if request.tool not in scope.tools:
        return f"tool {request.tool!r} is not delegated"
    missing = [e for e in m.effects if e not in scope.effects]
    if missing:
        return f"effects {missing} are not delegated"
    if m.amount_arg is not None:
        raw = request.args.get(m.amount_arg)
        currency = request.args.get(m.currency_arg) if m.currency_arg else m.currency
        ceiling = scope.amount_ceilings.get(currency) if isinstance(currency, str) else None
        if ceiling is None:
            return f"no spending in {_show(currency)} is delegated"
        try:
            over = not isinstance(raw, str) or _amount(raw) > _amount(ceiling)
        except ValueError:
            over = True
        if over:
            return f"amount {_show(raw)} exceeds the delegated {ceiling} {currency}"
    for cond in scope.constraints:
        if cond.tool == request.tool and (cond.arg not in request.args or not cond.admits(request.args[cond.arg])):
            return f"argument {cond.arg!r} is outside the delegated {cond.op} {list(cond.values)[:5]}"
    return None


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class DelegationLedger:
    """Use counts, rates and revocations of delegations, in a state store (shared
    by every guard that uses the same store)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    @staticmethod
    def _revoked_key(jti: str) -> str:
        return f"delegation/{jti}/revoked"

    def revoke(self, jti: str, *, now: int) -> None:
        """Revoke delegation ``jti`` and so everything below it (final)."""
        self.state.debit(f"delegation-revoke:{jti}", [Debit(self._revoked_key(jti), 1, 1, COUNTER_WINDOW)], now=now)

    def is_revoked(self, jti: str, *, now: int) -> bool:
        return self.state.usage(self._revoked_key(jti), COUNTER_WINDOW, now=now) > 0

    def spend(self, chain: VerifiedChain, hold_id: str, *, now: int) -> None:
        """Take one use and one rate slot from every link, all or nothing.

        Raises:
            DelegationError: ``DELEGATION_USES_EXHAUSTED`` or ``DELEGATION_RATE_LIMITED``.
            StoreUnavailable: the outcome is unknown (deny).
        """
        debits: list[Debit] = []
        for link in chain.links:
            c = link.claims
            debits.append(Debit(f"delegation/{c.jti}/uses", 1, c.scope.max_uses, COUNTER_WINDOW))
            debits.append(Debit(f"delegation/{c.jti}/rate", 1, c.scope.rate.count, c.scope.rate.window))
        failed = self.state.debit(hold_id, debits, now=now)
        if failed is not None:
            code = R.DELEGATION_USES_EXHAUSTED if failed.endswith("/uses") else R.DELEGATION_RATE_LIMITED
            raise DelegationError(code, f"counter {failed} is spent")

    def refund(self, hold_id: str) -> None:
        self.state.refund(hold_id)


class DelegationGate:
    """Runs a child agent's calls under a delegation chain, through a guard.

    Before the guard decides, the gate verifies the chain (trusted keys, every hop
    narrows, times, depth, revocation), checks the request lies inside the effective
    scope, and takes a use and a rate slot from every link atomically. Then the
    guard's ordinary path runs (the Court still decides the principal's policy; a
    delegation only ever narrows it). A refusal is a recorded denial
    (:meth:`Guard.deny`) carrying a ``DELEGATION_*`` code; a call that did not start
    gives its use back.

    Args:
        guard: the enforcement point the calls go through.
        verifier: verifies chains for this guard's audience.
        ledger: counts uses and rates; knows revocations.
        registry: the tools' manifests (effects, amount arguments).
    """

    def __init__(
        self, guard: Guard, *, verifier: DelegationVerifier, ledger: DelegationLedger, registry: ToolRegistry
    ) -> None:
        self.guard = guard
        self.verifier = verifier
        self.ledger = ledger
        self.registry = registry

    def proposal(
        self,
        chain: Sequence[str],
        tool: str,
        args: dict[str, Any],
        *,
        call_id: str | None = None,
        manifest_digest: str | None = None,
    ) -> AuthorizationRequest:
        """A proposal for the chain's agent and principal that names the chain.

        Raises:
            ExecutionDenied: the chain does not verify, or the proposal is malformed.
        """
        vc = self._verified(chain, None)
        return self.guard.proposal(
            tool,
            args,
            principal=vc.principal,
            agent=vc.agent,
            call_id=call_id,
            manifest_digest=manifest_digest,
            context_refs=vc.refs,
        )

    def _verified(self, chain: Sequence[str], request: AuthorizationRequest | None) -> VerifiedChain:
        now = self.guard.clock.now()
        try:
            return self.verifier.verify(chain, now=now, revoked=lambda j: self.ledger.is_revoked(j, now=now))
        except Exception as exc:  # noqa: BLE001 - fail closed, recorded
            raise self._deny(request, exc) from None

    def _deny(self, request: AuthorizationRequest | None, exc: BaseException) -> ExecutionDenied:
        if isinstance(exc, AuthorizationError):
            code, message = exc.reason_code, exc.message
        elif isinstance(exc, StoreUnavailable):
            code, message = R.STORE_UNAVAILABLE.value, str(exc)
        else:
            code, message = R.GUARD_ERROR.value, f"delegation check failed: {type(exc).__name__}"
        return self.guard.deny(request, (code,), message)

    def _admit(self, chain: Sequence[str], request: AuthorizationRequest) -> str:
        if not isinstance(request, AuthorizationRequest):
            raise self.guard.deny(None, (R.REQUEST_INVALID.value,), "the proposal is not an AuthorizationRequest")
        vc = self._verified(chain, request)
        # Not the guard's id_factory: a fixed factory (conformance runs) would repeat
        # the hold id, and a repeated hold id is charged only once.
        hold = f"delegation-use:{secrets.token_hex(16)}"
        try:
            check_request(vc, request, self.registry)
            now = self.guard.clock.now()
            self.ledger.spend(vc, hold, now=now)
            # Re-read after the debit: a revocation that landed meanwhile still stops it.
            if any(self.ledger.is_revoked(j, now=now) for j in vc.ids):
                self.ledger.refund(hold)
                raise DelegationError(R.DELEGATION_REVOKED, "a link of the chain was revoked")
        except Exception as exc:  # noqa: BLE001 - fail closed, recorded
            raise self._deny(request, exc) from None
        return hold

    def _give_back(self, hold: str) -> None:
        try:
            self.ledger.refund(hold)
        except Exception as exc:  # noqa: BLE001 - the use stays spent: the narrow failure
            log.warning("execauth: could not give back delegation use %s: %s", hold, exc)

    def run(self, chain: Sequence[str], request: AuthorizationRequest, call: Callable[[], T], **kwargs: Any) -> T:
        """Check the chain and the request against it, then ``guard.run``.

        Raises:
            ExecutionDenied: refused (by the delegation or by the guard).
        """
        hold = self._admit(chain, request)

        def through(once: Callable[[], T]) -> T:
            result: T = self.guard.run(request, once, **kwargs)
            return result

        return self._after(hold, through, call)

    def _after(self, hold: str, through: Callable[[Callable[[], T]], T], call: Callable[[], T]) -> T:
        """Run ``call`` through the guard (``through``); give the use back if the
        call never started (the guard refused it)."""
        started = False

        def once() -> T:
            nonlocal started
            started = True
            return call()

        try:
            return through(once)
        except BaseException:
            if not started:
                self._give_back(hold)
            raise

    async def arun(
        self,
        chain: Sequence[str],
        request: AuthorizationRequest,
        call: Callable[[], Awaitable[T] | T],
        **kwargs: Any,
    ) -> T:
        """Async :meth:`run`."""
        hold = self._admit(chain, request)
        started = False

        async def once() -> T:
            nonlocal started
            started = True
            result = call()
            if inspect.isawaitable(result):
                return await result
            return result

        try:
            return await self.guard.arun(request, once, **kwargs)
        except BaseException:
            if not started:
                self._give_back(hold)
            raise


def delegated_guard(gate: DelegationGate, chain: Sequence[str]) -> Guard:
    """A guard for a child agent that holds ``chain``: hand it to an adapter as the
    child's guard (a LangGraph subgraph's tool node, a handoff target's tools).

    It shares the gate's guard (authority, stores, clock, audit log). Every proposal it
    builds names the chain in ``context_refs``; every ``run`` / ``arun`` goes through
    :meth:`DelegationGate.run` first, so a call outside the delegated scope is a
    recorded denial the framework shows the model. ``execute`` / ``aexecute`` (tokens
    issued elsewhere) check the chain the same way before verifying the token.
    """
    from .guard import Guard

    base = gate.guard
    links = tuple(chain)

    class DelegatedGuard(Guard):
        def __init__(self) -> None:
            self.__dict__.update(base.__dict__)

        def proposal(self, tool: str, args: dict[str, Any], **kwargs: Any) -> AuthorizationRequest:
            refs = tuple(kwargs.pop("context_refs", ()))
            vc = gate._verified(links, None)
            return super().proposal(tool, args, context_refs=(*refs, *vc.refs), **kwargs)

        # Every other way in runs nothing under a delegation: the chain is checked
        # only on run/arun/execute/aexecute (a two-phase tool takes both phases
        # through run), so the Guard methods that would skip it refuse.
        def _refuse(self, *args: Any, **kwargs: Any) -> Any:
            raise ConfigurationError(
                "under a delegation, run tools with run/arun (two-phase tools take both phases there) "
                "or execute/aexecute: authorize, preflight and commit would skip the chain's checks"
            )

        authorize = preflight = apreflight = commit = acommit = _refuse

        # ``**kwargs`` (receipt=, idempotency_key=, approval=) go on to the base guard.
        def run(self, request: AuthorizationRequest, call: Callable[[], T], **kwargs: Any) -> Any:
            return gate.run(links, request, call, **kwargs)

        async def arun(self, request: AuthorizationRequest, call: Callable[[], Awaitable[T] | T], **kwargs: Any) -> Any:
            return await gate.arun(links, request, call, **kwargs)

        def execute(self, request: AuthorizationRequest, token: str | None, call: Callable[[], T], **kwargs: Any) -> T:
            hold = gate._admit(links, request)
            return gate._after(hold, lambda once: base.execute(request, token, once, **kwargs), call)

        async def aexecute(
            self, request: AuthorizationRequest, token: str | None, call: Callable[[], Awaitable[T] | T], **kwargs: Any
        ) -> T:
            hold = gate._admit(links, request)
            started = False

            async def once() -> Any:
                nonlocal started
                started = True
                result = call()
                return await result if inspect.isawaitable(result) else result

            try:
                return await base.aexecute(request, token, once, **kwargs)
            except BaseException:
                if not started:
                    gate._give_back(hold)
                raise

    return DelegatedGuard()
