"""Verify OxDeAI artifacts: AuthorizationV1, DelegationV1 and its hash-chained audit.

OxDeAI (Apache-2.0, a TypeScript implementation of execution authorization) signs
with Ed25519 over its own canonical JSON, *not* RFC 8785: strings and keys are
Unicode NFC-normalized, keys sorted by their UTF-8 bytes, numbers must be integers
in the IEEE-754 safe range (floats, NaN and infinities are refused), a ``ts`` member
must be such an integer, duplicate keys (after NFC) are refused. That profile is
:func:`canonicalize`, kept apart from :mod:`execauth_core.canonical`.

Trust is explicit: a :class:`OxDeAITrust` names the public keys (raw 32 bytes or a
PEM SubjectPublicKeyInfo), the trusted issuers and this verifier's audience. A key
or issuer carried by an artifact is never trusted for being there. Every failure
raises :class:`OxDeAIError` with OxDeAI's own reason code (``code``).

What the published vectors sign (facts checked against them, see
docs/delegation.md): an AuthorizationV1 is signed over the canonical artifact
without its ``signature`` member and without a domain prefix; a DelegationV1, and a
parent authorization inside the delegation vectors, likewise and also without
``parent_hash``; ``parent_auth_hash`` is SHA-256 (hex) of the canonical parent as
given. The current OxDeAI text describes a preimage that keeps ``signature.alg`` and
``signature.kid``: pass ``preimage="spec"`` for artifacts made that way.

Where OxDeAI's own checker reads an omitted delegation limit as "no limit" (their
fail-open bug, fixed upstream), this verifier reads it as the parent's limit.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import nacl.exceptions
import nacl.signing

from ..errors import ConfigurationError, ExecAuthError

__all__ = [
    "AUDIT_GENESIS_HASH",
    "OxDeAIError",
    "OxDeAITrust",
    "canonicalize",
    "intent_hash",
    "load_public_key",
    "verify_audit_chain",
    "verify_authorization",
    "verify_delegation",
]

SAFE_INT = 2**53 - 1
AUDIT_GENESIS_HASH = hashlib.sha256(b"OxDeAI::GENESIS::v1").hexdigest()
"""OxDeAI's audit chain starts from SHA-256 of ``OxDeAI::GENESIS::v1`` (hex)."""
_SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")
Preimage = Literal["vectors", "spec"]


class OxDeAIError(ExecAuthError):
    """An OxDeAI artifact did not verify. ``code`` is OxDeAI's reason code."""

    def __init__(self, code: str, message: str = "", *, index: int | None = None) -> None:
        self.code = code
        self.index = index
        super().__init__(f"{code}: {message or code}")


# --- canonicalization (OxDeAI canonicalization v1) ----------------------------


def _string(text: str) -> str:
    # JSON string escaping as ECMAScript's JSON.stringify does it (short escapes,
    # \u00XX for other controls, everything else as UTF-8); matches json.dumps with
    # ensure_ascii=False. These bytes are OxDeAI's, never execauth's signed form.
    out: str = json.dumps(unicodedata.normalize("NFC", text), ensure_ascii=False)  # noqa: TID251 - OxDeAI's profile
    return out


def _encode(value: Any, key: str | None, depth: int) -> str:
    if depth > 64:
        raise OxDeAIError("UNSUPPORTED_TYPE", "nesting deeper than 64")
    if key == "ts" and (isinstance(value, bool) or not isinstance(value, int) or abs(value) > SAFE_INT):
        raise OxDeAIError("INVALID_TIMESTAMP", "a ts member must be a safe integer")
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        if abs(value) > SAFE_INT:
            raise OxDeAIError("UNSAFE_INTEGER_NUMBER", "integer outside the safe range")
        return str(value)
    if isinstance(value, float):
        raise OxDeAIError("FLOAT_NOT_ALLOWED", "OxDeAI canonical JSON carries integers only")
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_encode(v, None, depth + 1) for v in value) + "]"
    if isinstance(value, Mapping):
        members: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise OxDeAIError("UNSUPPORTED_TYPE", "object keys are strings")
            nk = unicodedata.normalize("NFC", k)
            if nk in members:
                raise OxDeAIError("DUPLICATE_KEY", "duplicate key after NFC normalization")
            members[nk] = v
        ordered = sorted(members, key=lambda k: k.encode("utf-8"))
        return "{" + ",".join(_string(k) + ":" + _encode(members[k], k, depth + 1) for k in ordered) + "}"
    raise OxDeAIError("UNSUPPORTED_TYPE", f"{type(value).__name__} is not a JSON value")


def canonicalize(value: Any) -> bytes:
    """OxDeAI canonical JSON bytes of ``value``.

    Raises:
        OxDeAIError: ``FLOAT_NOT_ALLOWED``, ``UNSAFE_INTEGER_NUMBER``,
            ``DUPLICATE_KEY``, ``INVALID_TIMESTAMP`` or ``UNSUPPORTED_TYPE``.
    """
    try:
        return _encode(value, None, 0).encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate
        raise OxDeAIError("UNSUPPORTED_TYPE", "string is not valid Unicode") from exc


def _sha256_hex(value: Any) -> str:
    return hashlib.sha256(canonicalize(value)).hexdigest()


def intent_hash(intent: Any) -> str:
    """SHA-256 (lowercase hex) of an intent's OxDeAI canonical form."""
    return _sha256_hex(intent)


# --- keys and trust -----------------------------------------------------------


def load_public_key(key: bytes | str) -> bytes:
    """An Ed25519 public key from 32 raw bytes or a PEM ``PUBLIC KEY`` (SPKI).

    Raises:
        ConfigurationError: anything else.
    """
    if isinstance(key, bytes):
        if len(key) != 32:
            raise ConfigurationError("a raw Ed25519 public key is exactly 32 bytes")
        return key
    if not isinstance(key, str):
        raise ConfigurationError("a public key is 32 raw bytes or a PEM string")
    lines = [line.strip() for line in key.strip().splitlines()]
    if len(lines) < 3 or lines[0] != "-----BEGIN PUBLIC KEY-----" or lines[-1] != "-----END PUBLIC KEY-----":
        raise ConfigurationError("not a PEM PUBLIC KEY block")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"PEM body is not base64: {exc}") from exc
    # An Ed25519 SubjectPublicKeyInfo is a fixed 12-byte header and the 32-byte key.
    if len(der) != 44 or not der.startswith(_SPKI_ED25519):
        raise ConfigurationError("not an Ed25519 SubjectPublicKeyInfo")
    return der[12:]


@dataclass(frozen=True)
class OxDeAITrust:
    """What an OxDeAI verifier trusts: keys by kid, issuers, its own audience.

    Args:
        keys: kid -> public key (32 raw bytes or PEM); an empty mapping verifies nothing.
        issuers: the only accepted ``issuer`` values.
        audience: this verifier's name; an authorization's ``audience`` must equal it.
    """

    keys: Mapping[str, bytes | str]
    issuers: Iterable[str]
    audience: str
    _resolved: dict[str, bytes] = field(init=False, repr=False, compare=False)
    _issuers: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_resolved", {str(k): load_public_key(v) for k, v in self.keys.items()})
        object.__setattr__(self, "_issuers", frozenset(self.issuers))
        if not self.audience:
            raise ConfigurationError("an OxDeAI trust configuration needs an audience")

    def trusts_issuer(self, issuer: object) -> bool:
        return isinstance(issuer, str) and issuer in self._issuers

    def check(self, message: bytes, signature: Any, *, code: str) -> None:
        if not self._resolved:
            raise OxDeAIError("TRUST_CONFIG_MISSING", "no trusted keys are configured")
        if not isinstance(signature, Mapping) or signature.get("alg") != "Ed25519":
            raise OxDeAIError(code, "signature.alg must be Ed25519")
        public = self._resolved.get(signature.get("kid"))  # type: ignore[arg-type]
        if public is None:
            raise OxDeAIError("UNKNOWN_KID" if code == "INVALID_SIGNATURE" else code, "kid is not trusted")
        try:
            sig = base64.b64decode(str(signature.get("sig")), validate=True)
            nacl.signing.VerifyKey(public).verify(message, sig)
        except (binascii.Error, ValueError, nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError) as exc:
            raise OxDeAIError(code, "signature does not verify") from exc


def _preimage(artifact: Mapping[str, Any], how: Preimage, drop: Sequence[str] = ()) -> bytes:
    body = {k: v for k, v in artifact.items() if k not in drop}
    if how == "vectors":
        body.pop("signature", None)
    else:
        sig = dict(body.get("signature") or {})
        sig.pop("sig", None)
        body["signature"] = sig
    return canonicalize(body)


def _expiry(artifact: Mapping[str, Any]) -> int:
    # The published vectors say "expiry"; the current text says "expires_at".
    present = [artifact[k] for k in ("expiry", "expires_at") if k in artifact]
    if len(present) != 1 or isinstance(present[0], bool) or not isinstance(present[0], int):
        raise OxDeAIError("MALFORMED", "exactly one integer expiry / expires_at is required")
    return present[0]


def _str(artifact: Mapping[str, Any], name: str) -> str:
    value = artifact.get(name)
    if not isinstance(value, str) or not value:
        raise OxDeAIError("MALFORMED", f"{name} must be a non-empty string")
    return value


# --- AuthorizationV1 ------------------------------------------------------------


def verify_authorization(
    artifact: Mapping[str, Any],
    *,
    trust: OxDeAITrust,
    now: int,
    intent: Any = None,
    expected_intent_hash: str | None = None,
    state: Any = None,
    require_state: bool = False,
    consume: Callable[[str], bool] | None = None,
    preimage: Preimage = "vectors",
) -> Mapping[str, Any]:
    """Verify an AuthorizationV1 for executing ``intent`` at ``now``.

    Checks: version and decision; the signature with a trusted key (before any other
    field is believed); issuer; audience; expiry; the intent hash (of ``intent``, or
    ``expected_intent_hash``; one is required); the state hash when ``state`` is
    given (``require_state``: a state snapshot must be given); replay, when
    ``consume`` (True the first time an ``auth_id`` is seen) is.

    Returns:
        The artifact, verified.

    Raises:
        OxDeAIError: with OxDeAI's code of the first failed check.
    """
    if not isinstance(artifact, Mapping):
        raise OxDeAIError("MALFORMED", "an artifact is a JSON object")
    if artifact.get("version") != "AuthorizationV1":
        raise OxDeAIError("VERSION_MISMATCH", "not an AuthorizationV1")
    trust.check(_preimage(artifact, preimage), artifact.get("signature"), code="INVALID_SIGNATURE")
    if artifact.get("decision") != "ALLOW":
        raise OxDeAIError("DECISION_DENY", "only ALLOW authorizes execution")
    if not trust.trusts_issuer(_str(artifact, "issuer")):
        raise OxDeAIError("ISSUER_UNTRUSTED", "issuer is not trusted")
    if _str(artifact, "audience") != trust.audience:
        raise OxDeAIError("AUDIENCE_MISMATCH", "authorization is for another audience")
    if _expiry(artifact) <= now:
        raise OxDeAIError("EXPIRED", "authorization expired")
    if intent is None and expected_intent_hash is None:
        raise OxDeAIError("INTENT_HASH_MISMATCH", "no intent to bind the authorization to")
    want = intent_hash(intent) if intent is not None else expected_intent_hash
    if artifact.get("intent_hash") != want:
        raise OxDeAIError("INTENT_HASH_MISMATCH", "authorization is for another intent")
    if state is None and require_state:
        raise OxDeAIError("STATE_SNAPSHOT_MISSING", "this verifier needs the state the decision was made on")
    if state is not None:
        if not artifact.get("state_hash"):
            raise OxDeAIError("STATE_HASH_MISSING", "authorization is not bound to a state")
        if artifact["state_hash"] != _sha256_hex(state):
            raise OxDeAIError("STATE_HASH_MISMATCH", "authorization was decided on another state")
    if consume is not None and consume(_str(artifact, "auth_id")) is not True:
        raise OxDeAIError("REPLAY", "auth_id was already used")
    return artifact


# --- DelegationV1 -----------------------------------------------------------------


def _amount(value: Any, code: str) -> int:
    if isinstance(value, bool):
        raise OxDeAIError(code, "an amount is an integer or a string of digits")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    raise OxDeAIError(code, "an amount is an integer or a string of digits")


def verify_delegation(
    parent: Mapping[str, Any],
    delegation: Mapping[str, Any],
    *,
    trust: OxDeAITrust,
    now: int,
    delegatee: str,
    action: Mapping[str, Any] | None = None,
    consume: Callable[[str], bool] | None = None,
    preimage: Preimage = "vectors",
) -> Mapping[str, Any]:
    """Verify a single-hop DelegationV1 under its parent AuthorizationV1, for
    ``delegatee``, and (if given) that ``action`` lies inside the delegated scope.

    The effective scope is the parent's narrowed by the child's: a limit the child
    omits is the parent's (``tools``, ``max_amount``), never "unlimited".

    Returns:
        The effective scope.

    Raises:
        OxDeAIError: with OxDeAI's ``DELEGATION_*`` code of the first failed check.
    """
    if not isinstance(parent, Mapping) or not isinstance(delegation, Mapping):
        raise OxDeAIError("DELEGATION_MALFORMED", "parent and delegation are JSON objects")
    if parent.get("version") == "DelegationV1":
        raise OxDeAIError("DELEGATION_MULTIHOP_DENIED", "a delegation's parent must be an AuthorizationV1")
    if parent.get("version") != "AuthorizationV1" or delegation.get("version") != "DelegationV1":
        raise OxDeAIError("DELEGATION_MALFORMED", "expected an AuthorizationV1 parent and a DelegationV1")
    trust.check(_preimage(parent, preimage, ("parent_hash",)), parent.get("signature"), code="DELEGATION_TRUST_FAILURE")
    if parent.get("decision") != "ALLOW" or not trust.trusts_issuer(parent.get("issuer")):
        raise OxDeAIError("DELEGATION_TRUST_FAILURE", "the parent is not an ALLOW from a trusted issuer")
    if delegation.get("parent_auth_hash") != _sha256_hex(parent):
        raise OxDeAIError("DELEGATION_PARENT_HASH_MISMATCH", "the delegation names another parent")
    parent_exp = _expiry(parent)
    if parent_exp <= now:
        raise OxDeAIError("DELEGATION_PARENT_EXPIRED", "the parent authorization expired")
    trust.check(
        _preimage(delegation, preimage, ("parent_hash",)),
        delegation.get("signature"),
        code="DELEGATION_SIGNATURE_INVALID",
    )
    if not trust.trusts_issuer(delegation.get("issuer")):
        raise OxDeAIError("DELEGATION_TRUST_FAILURE", "the delegation's issuer is not trusted")
    if delegation.get("delegatee") != delegatee:
        raise OxDeAIError("DELEGATION_DELEGATEE_MISMATCH", "the delegation is for another agent")
    exp = _expiry(delegation)
    if exp <= now:
        raise OxDeAIError("DELEGATION_EXPIRED", "the delegation expired")
    if exp > parent_exp:
        raise OxDeAIError("DELEGATION_SCOPE_WIDENING", "the delegation outlives its parent")
    scope = _effective_scope(parent.get("scope"), delegation.get("scope"))
    if action is not None:
        tools = scope.get("tools")
        if tools is not None and action.get("tool") not in tools:
            raise OxDeAIError("DELEGATION_SCOPE_VIOLATION", "the tool is outside the delegated scope")
        if "max_amount" in scope:
            params = action.get("params")
            amount = params.get("amount") if isinstance(params, Mapping) else None
            if _amount(amount, "DELEGATION_SCOPE_VIOLATION") > scope["max_amount"]:
                raise OxDeAIError("DELEGATION_SCOPE_VIOLATION", "the amount is over the delegated maximum")
    if consume is not None and consume(_str(delegation, "delegation_id")) is not True:
        raise OxDeAIError("DELEGATION_REPLAY", "delegation_id was already used")
    return scope


def _effective_scope(parent: Any, child: Any) -> dict[str, Any]:
    p = parent if isinstance(parent, Mapping) else {}
    c = child if isinstance(child, Mapping) else {}
    if (parent is not None and not isinstance(parent, Mapping)) or (
        child is not None and not isinstance(child, Mapping)
    ):
        raise OxDeAIError("DELEGATION_MALFORMED", "a scope is a JSON object")
    unknown = (set(p) | set(c)) - {"tools", "max_amount"}
    if unknown:
        # A limit this verifier does not know could not be enforced: refuse.
        raise OxDeAIError("DELEGATION_MALFORMED", f"unknown scope members {sorted(unknown)}")
    scope: dict[str, Any] = {}
    for name in ("tools",):
        held, asked = p.get(name), c.get(name)
        for given in (held, asked):
            if given is not None and (not isinstance(given, list) or not all(isinstance(t, str) for t in given)):
                raise OxDeAIError("DELEGATION_MALFORMED", "scope.tools is a list of strings")
        if held is not None and asked is not None and not set(asked) <= set(held):
            raise OxDeAIError("DELEGATION_SCOPE_WIDENING", "the delegation adds tools")
        if asked is not None or held is not None:
            chosen: list[Any] = asked if asked is not None else list(held or ())
            scope[name] = list(chosen)
    held_max = _amount(p["max_amount"], "DELEGATION_MALFORMED") if "max_amount" in p else None
    asked_max = _amount(c["max_amount"], "DELEGATION_MALFORMED") if "max_amount" in c else None
    if held_max is not None and asked_max is not None and asked_max > held_max:
        raise OxDeAIError("DELEGATION_SCOPE_WIDENING", "the delegation raises max_amount")
    if asked_max is not None or held_max is not None:
        scope["max_amount"] = asked_max if asked_max is not None else held_max
    return scope


# --- the hash-chained audit ---------------------------------------------------------


def verify_audit_chain(entries: Sequence[Mapping[str, Any]], *, expected_head: str | None = None) -> str:
    """Verify an OxDeAI hash-chained audit log: entries ``{event, prev_hash, hash}``
    in order, ``hash = sha256(prev_hash + "\\n" + canonical(event))`` with a
    missing ``policyId`` hashed as ``null``, starting from :data:`AUDIT_GENESIS_HASH`.

    ``expected_head`` (from a trusted place) detects a dropped tail; without it, a
    log cut short still verifies as far as it goes.

    Returns:
        The head hash.

    Raises:
        OxDeAIError: ``AUDIT_CHAIN_BROKEN`` (``index`` says where) or
            ``AUDIT_HEAD_MISMATCH``.
    """
    prev = AUDIT_GENESIS_HASH
    for i, entry in enumerate(entries):
        event = entry.get("event") if isinstance(entry, Mapping) else None
        if not isinstance(event, Mapping) or entry.get("prev_hash") != prev:
            raise OxDeAIError("AUDIT_CHAIN_BROKEN", f"entry {i} does not follow entry {i - 1}", index=i)
        body = {**event, "policyId": event.get("policyId")}
        digest = hashlib.sha256(prev.encode("ascii") + b"\n" + canonicalize(body)).hexdigest()
        if entry.get("hash") != digest:
            raise OxDeAIError("AUDIT_CHAIN_BROKEN", f"entry {i} was altered", index=i)
        prev = digest
    if expected_head is not None and prev != expected_head:
        raise OxDeAIError("AUDIT_HEAD_MISMATCH", "the log does not end at the expected head (records dropped?)")
    return prev
