"""RFC 8785 canonical JSON, digests, and a strict JSON reader.

Everything that is signed or digested goes through :func:`canonicalize`, which is
the ``rfc8785`` library (a real JCS implementation: ECMAScript number
formatting, UTF-16 key ordering), never a bare ``json.dumps(sort_keys=True)``.
The common case (only strings, safe integers, booleans, null, arrays and objects,
no character beyond U+FFFF) is written by the C JSON encoder, whose output for
exactly those values is the JCS output (see :func:`_fast_jcs`, held to
``rfc8785`` by a differential test); every other value goes to ``rfc8785``.

The strict reader refuses what JCS cannot carry faithfully or what would let
two parsers disagree: duplicate object keys, ``NaN``/``Infinity``, integers
outside the IEEE-754 safe range, and absurd nesting. Money travels as decimal
strings, not floats.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import rfc8785

from .errors import CanonicalizationError

__all__ = [
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "CanonicalizationError",
    "canonicalize",
    "canonicalize_spliced",
    "canonicalize_strict",
    "canonicalize_trusted",
    "digest",
    "digest_bytes",
    "is_digest",
    "loads_strict",
    "signing_input",
    "signing_input_bytes",
]

MAX_SAFE_INTEGER = 2**53 - 1
MAX_DEPTH = 64
"""Deeper nesting is rejected: nobody's tool arguments are legitimately deeper."""

_DIGEST_PREFIX = "sha256:"
_EXPONENT_FROM = 1e21
"""ECMAScript (and so JCS) writes numbers of this magnitude and above with an exponent."""


def _check(value: Any, depth: int, strict: bool = False) -> bool:
    # rfc8785 checks numbers; this walk adds the depth bound, the key type and
    # valid Unicode, and rejects container types that have no JSON meaning.
    # ``strict`` also refuses the floats whose canonical form reads back as an
    # unsafe integer (see canonicalize_strict).
    # Returns whether the value is "plain" (see _plain): the same walk decides
    # whether the fast encoder may write it.
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"nesting deeper than {MAX_DEPTH} levels")
    if isinstance(value, Mapping):
        plain = type(value) is dict
        for key, item in value.items():
            if type(key) is not str:
                if not isinstance(key, str):
                    raise CanonicalizationError(f"object key {key!r} is not a string")
                plain = False
            if not key.isascii():
                _utf8(key)
            # Leaves of the exact types are checked here, without a call (the hot path).
            kind = type(item)
            if depth >= MAX_DEPTH:
                _check(item, depth + 1, strict)  # raises: too deep
            elif kind is str:
                if not item.isascii():
                    _utf8(item)
            elif kind is bool or item is None or (kind is int and -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER):
                pass
            elif not _check(item, depth + 1, strict):
                plain = False
        return plain
    if isinstance(value, (list, tuple)):
        plain = type(value) is list or type(value) is tuple
        for item in value:
            if not _check(item, depth + 1, strict):
                plain = False
        return plain
    if isinstance(value, str):
        if not value.isascii():
            _utf8(value)
        return type(value) is str
    if isinstance(value, bool) or value is None:
        return type(value) is bool or value is None
    if isinstance(value, int):
        if not -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            raise CanonicalizationError(f"integer {value} is outside ±(2^53-1); send large numbers as strings")
        return type(value) is int
    if isinstance(value, float):
        # rfc8785 rejects NaN and the infinities with its own error. A float of
        # magnitude in (2^53-1, 1e21) is written by JCS as a plain integer
        # (1e17 -> 100000000000000000), which reads back as an unsafe integer:
        # untrusted input holding one could not survive its own round trip.
        if strict and MAX_SAFE_INTEGER < abs(value) < _EXPONENT_FROM:
            raise CanonicalizationError(
                f"number {value!r} is beyond ±(2^53-1) and below 1e21, which JSON canonical form "
                "writes as an unsafe integer; send large numbers as strings"
            )
        return False  # ECMAScript number formatting: rfc8785 writes floats
    raise CanonicalizationError(f"{type(value).__name__} is not a JSON value")


def _plain(value: Any, depth: int) -> bool:
    """True when ``value`` holds only exact ``dict`` (``str`` keys), ``list``,
    ``tuple``, ``str``, ``bool``, ``None`` and ``int`` within ±(2^53-1), at most
    :data:`MAX_DEPTH` deep: the values :func:`_fast_jcs` writes exactly as RFC 8785
    does. Anything else (a float, a subclass, a Mapping, an unsafe integer...) is
    not plain and goes to ``rfc8785``, which also raises the errors."""
    kind = type(value)
    if depth >= MAX_DEPTH and (kind is dict or kind is list or kind is tuple):
        return False  # its members would be deeper than MAX_DEPTH
    if kind is dict:
        for key in value:
            if type(key) is not str:
                return False
        items: Any = value.values()
    elif kind is list or kind is tuple:
        items = value
    else:
        return (
            kind is str
            or value is None
            or kind is bool
            or (kind is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER)
        )
    for item in items:
        kind = type(item)
        if kind is str or item is None or kind is bool:
            continue
        if kind is int:
            if -MAX_SAFE_INTEGER <= item <= MAX_SAFE_INTEGER:
                continue
            return False
        if (kind is dict or kind is list or kind is tuple) and _plain(item, depth + 1):
            continue
        return False
    return True


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False)
_NON_BMP = re.compile("[\U00010000-\U0010ffff]")


def _fast_jcs(value: Any) -> bytes | None:
    r"""RFC 8785 bytes of a *plain* value (see :func:`_plain`) through the C JSON
    encoder, or ``None`` where that encoder's output could differ from JCS.

    For plain values the two agree byte for byte: strings are escaped with the same
    table (``\"``, ``\\``, ``\b \f \n \r \t``, other controls as lowercase
    ``\u00xx``, everything else literal UTF-8), integers in the safe range are
    their decimal digits, and ``sort_keys`` orders keys by code point, which is
    JCS's UTF-16 order as long as no key holds a character beyond U+FFFF, so any
    such character anywhere gives ``None``. A string that is not valid Unicode
    (a lone surrogate) gives ``None`` too, and ``rfc8785`` raises. Floats are never
    plain: ECMAScript number formatting stays with ``rfc8785``. The differential
    test ``test_fast_canonical.py`` holds this against ``rfc8785`` on generated
    values of every JSON shape.
    """
    text = _ENCODER.encode(value)
    if not text.isascii() and _NON_BMP.search(text) is not None:
        return None
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return None


def _jcs(value: Any, plain: bool) -> bytes:
    if plain:
        fast = _fast_jcs(value)
        if fast is not None:
            return fast
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeError, RecursionError, TypeError, ValueError) as exc:
        raise CanonicalizationError(f"cannot canonicalize: {exc}") from exc


def _utf8(text: str) -> None:
    # An escaped lone surrogate ("\ud800") is a valid Python str but has no UTF-8
    # form: it could never be canonicalized, signed or logged.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError(
            f"string {text[:40]!r} holds a lone surrogate (U+{ord(text[exc.start]):04X}), which is not valid Unicode"
        ) from None


def canonicalize(value: Any) -> bytes:
    """Return the RFC 8785 (JCS) canonical UTF-8 bytes of a JSON value.

    Checks the value on the way (nesting depth, key types, safe integers, valid
    Unicode) so untrusted input gets a clear error.

    Raises:
        CanonicalizationError: the value cannot be represented in JCS.
    """
    return _jcs(value, _check(value, 0))


def canonicalize_strict(value: Any) -> bytes:
    """:func:`canonicalize` for untrusted values that must also read back as
    themselves: refuses, besides, a float of magnitude between 2^53-1 and 1e21
    (``1e17``), which JCS writes as digits that parse as an unsafe integer.

    Used when a proposal is built, so such a number is ``REQUEST_INVALID`` at
    once rather than a guard error later.

    Raises:
        CanonicalizationError: the value cannot be represented, or would not
            survive the round trip.
    """
    return _jcs(value, _check(value, 0, strict=True))


def canonicalize_trusted(value: Any) -> bytes:
    """RFC 8785 bytes of a value built by execauth itself from checked parts.

    Skips the depth walk (``rfc8785`` still refuses NaN, infinities, unsafe
    integers and non-string keys); used on the hot path for records, claims and
    audit bodies whose untrusted parts were checked by :func:`canonicalize`.
    """
    return _jcs(value, _plain(value, 0))


def canonicalize_spliced(value: Mapping[str, Any], parts: Mapping[str, bytes]) -> bytes:
    """RFC 8785 bytes of the object ``value``, taking the members named in ``parts``
    as already canonical: ``parts[key]`` must be the JCS bytes of ``value[key]``.

    JCS orders an object's members by key alone and serializes each member's value
    on its own, so a value canonicalized once (a proposal, a policy reference) can
    be spliced into every object that embeds it. ``rfc8785`` still canonicalizes the
    whole object, with a fresh random marker string in each spliced member's place;
    each marker is then replaced by its bytes. A marker can only occur as a whole
    JSON string (a quote inside a string is escaped), and each must occur exactly
    once; if not (a value that happens to hold one), the object is canonicalized
    whole instead. The result is byte for byte ``canonicalize_trusted(value)``.
    """
    if not parts:
        return canonicalize_trusted(value)
    stand_in = dict(value)
    quoted: dict[bytes, bytes] = {}
    for key, raw in parts.items():
        if key not in stand_in:
            raise CanonicalizationError(f"no member {key!r} to splice")
        marker = "execauth-splice-" + secrets.token_hex(16)
        stand_in[key] = marker
        quoted[b'"' + marker.encode("ascii") + b'"'] = raw
    out = canonicalize_trusted(stand_in)
    cuts = []
    for q, raw in quoted.items():
        at = out.find(q)
        if at < 0 or out.find(q, at + 1) >= 0:  # a value held a marker: splice nothing
            return canonicalize_trusted(value)
        cuts.append((at, len(q), raw))
    pieces: list[bytes] = []
    done = 0
    for at, length, raw in sorted(cuts, key=lambda cut: cut[0]):
        pieces += (out[done:at], raw)
        done = at + length
    pieces.append(out[done:])
    return b"".join(pieces)


def digest_bytes(data: bytes) -> str:
    """``sha256:<hex>`` of raw bytes."""
    return _DIGEST_PREFIX + hashlib.sha256(data).hexdigest()


def digest(value: Any) -> str:
    """``sha256:<hex>`` of the JCS form of a JSON value."""
    return digest_bytes(canonicalize(value))


def signing_input_bytes(type_name: str, canonical: bytes) -> bytes:
    """:func:`signing_input` for bytes that are already canonical."""
    return b"execauth:" + type_name.encode("ascii") + b"/1\n" + canonical


def is_digest(value: object) -> bool:
    """True if ``value`` is a well-formed ``sha256:<64 lowercase hex>`` string."""
    if not isinstance(value, str) or not value.startswith(_DIGEST_PREFIX):
        return False
    hexpart = value[len(_DIGEST_PREFIX) :]
    return len(hexpart) == 64 and all(c in "0123456789abcdef" for c in hexpart)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CanonicalizationError(f"duplicate object key {key!r}")
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise CanonicalizationError(f"{name} is not valid JSON")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise CanonicalizationError(f"number {text} overflows a double")
    return value


_STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_no_constants, parse_float=_float)


def loads_strict(data: str | bytes) -> Any:
    """Parse JSON strictly.

    Rejects duplicate keys, ``NaN``/``Infinity``, integers outside ±(2^53-1),
    numbers that overflow a double, numbers whose canonical form would be an unsafe
    integer (``1e17``), invalid UTF-8 (and escaped lone surrogates such as
    ``"\\ud800"``), and nesting deeper than :data:`MAX_DEPTH`.

    Raises:
        CanonicalizationError: with a message that says what is wrong.
    """
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise CanonicalizationError(f"not UTF-8: {exc}") from exc
    else:
        text = data
    try:
        if type(text) is str:
            if text.startswith("\ufeff"):  # what json.loads refuses before decoding
                raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
            value = _STRICT_DECODER.decode(text)  # built once (json.loads builds one per call)
        else:
            value = json.loads(
                text,
                object_pairs_hook=_no_duplicates,
                parse_constant=_no_constants,
                parse_float=_float,
            )
    except CanonicalizationError:
        raise
    except RecursionError as exc:
        raise CanonicalizationError("nesting too deep") from exc
    except ValueError as exc:
        raise CanonicalizationError(f"invalid JSON: {exc}") from exc
    _check(value, 0, strict=True)  # integers outside ±(2^53-1) too, with the same message
    return value


def signing_input(type_name: str, value: Any) -> bytes:
    """Domain-separated bytes to sign for a non-JWS object.

    ``b"execauth:" + type + b"/1\\n" + JCS(value)``, so a signature over one kind
    of object can never be replayed as a signature over another.
    """
    return b"execauth:" + type_name.encode("ascii") + b"/1\n" + canonicalize(value)
