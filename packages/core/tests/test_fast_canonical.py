"""The fast canonical encoder against ``rfc8785``: byte for byte, or it stands aside.

``canonical._fast_jcs`` writes plain values (str, safe int, bool, None, list, tuple,
dict with str keys, nothing beyond U+FFFF) with the C JSON encoder; everything else
goes to ``rfc8785``. These tests generate every JSON value shape, floats, non-BMP
keys (where code-point order and JCS's UTF-16 order differ), escapes, control
characters and integers beyond 2^53, and require the output to be ``rfc8785``'s.
"""

from __future__ import annotations

import enum
from collections import OrderedDict
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from execauth_core import CanonicalizationError, canonicalize
from execauth_core.canonical import (
    MAX_DEPTH,
    _fast_jcs,
    _plain,
    canonicalize_strict,
    canonicalize_trusted,
)

# Characters where encoders disagree if they can: quotes, backslash, every control
# character, DEL, the line/paragraph separators, the top of the BMP (U+E000..U+FFFF
# sorts after U+10000.. in code points but before it in UTF-16) and beyond.
TRICKY = (
    [chr(c) for c in range(0x20)]
    + ['"', "\\", "/", "\x7f", "\x80", "\xff", "\u2028", "\u2029", "\u20ac", "\ud7ff"]
    + ["\ue000", "\ufb33", "\ufeff", "\uffff", "\U00010000", "\U0001f600", "\U0010ffff", "a", "A", "1", " "]
)
chars = st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8"))
texts = st.text(chars, max_size=12)
keys = st.text(st.one_of(st.sampled_from(TRICKY), st.characters(codec="utf-8")), max_size=6)
integers = st.one_of(
    st.integers(-(2**53) + 1, 2**53 - 1),
    st.sampled_from([2**53 - 1, -(2**53) + 1, 2**53, -(2**53), 2**64, -(2**70), 0, -1]),
    st.integers(),
)
floats = st.floats(allow_nan=True, allow_infinity=True)
scalars = st.one_of(st.none(), st.booleans(), integers, floats, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(keys, inner, max_size=6),
    ),
    max_leaves=30,
)


def reference(value: Any) -> bytes | type[Exception]:
    """What rfc8785 makes of ``value``: its bytes, or the fact that it refuses."""
    try:
        return rfc8785.dumps(value)
    except (rfc8785.CanonicalizationError, UnicodeError, RecursionError, TypeError, ValueError):
        return CanonicalizationError


def ours(fn: Any, value: Any) -> bytes | type[Exception]:
    try:
        return bytes(fn(value))
    except CanonicalizationError:
        return CanonicalizationError


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_trusted_is_rfc8785_byte_for_byte(value: Any) -> None:
    want = reference(value)
    plain = _plain(value, 0)
    fast = _fast_jcs(value) if plain else None
    event(f"fast path: {fast is not None}")
    if fast is not None:
        assert fast == want  # the claim itself: where the fast encoder answers, it is JCS
    assert ours(canonicalize_trusted, value) == want


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(values)
def test_checked_is_rfc8785_where_it_accepts(value: Any) -> None:
    got = ours(canonicalize, value)
    if got is not CanonicalizationError:
        assert got == reference(value)
    got = ours(canonicalize_strict, value)
    if got is not CanonicalizationError:
        assert got == reference(value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, st.integers(0, 9), min_size=2, max_size=8))
def test_key_order_is_utf16_order(obj: dict[str, int]) -> None:
    assert canonicalize(obj) == rfc8785.dumps(obj)
    if any(ord(c) > 0xFFFF for k in obj for c in k):
        assert _fast_jcs(obj) is None  # code-point order is not JCS order there


def test_rfc8785_sorting_example_is_left_to_rfc8785() -> None:
    # RFC 8785 section 3.2.3: keys whose UTF-16 order differs from their code points'.
    obj = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    assert _plain(obj, 0) and _fast_jcs(obj) is None
    expected = (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis",'
        '"\u20ac":"Euro Sign","\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )
    assert canonicalize(obj) == expected.encode("utf-8") == rfc8785.dumps(obj)


def test_common_values_take_the_fast_path() -> None:
    # The hot path's shapes: if these fell back, the encoder would be dead code.
    proposal = {
        "v": "execauth.request/1",
        "tool": "search",
        "args": {"q": "caf\u00e9 \"x\"\n", "n": 10, "ok": True},
        "principal": "u",
        "agent": None,
        "context_refs": ["a", "b"],
    }
    assert _plain(proposal, 0)
    assert _fast_jcs(proposal) == rfc8785.dumps(proposal)
    assert canonicalize(proposal) == rfc8785.dumps(proposal)


@pytest.mark.parametrize(
    "value",
    [
        1.0,
        {"x": 0.1},
        [1e21, 1e-7, -0.0],
        {"n": 2**53},
        [-(2**53)],
        {1: "int key"},
        OrderedDict(a=1),
        {"deep": "\U0001f600"},
    ],
)
def test_what_is_not_plain_or_not_bmp_goes_to_rfc8785(value: Any) -> None:
    assert not _plain(value, 0) or _fast_jcs(value) is None
    assert ours(canonicalize_trusted, value) == reference(value)


class Color(str, enum.Enum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Text(str):
    pass


@pytest.mark.parametrize("value", [Color.RED, {"c": Color.RED}, [Level.HIGH], Text("t"), {Text("k"): 1}, True])
def test_subclasses_are_not_plain_and_match_rfc8785(value: Any) -> None:
    if value is not True:
        assert not _plain(value, 0)
    assert ours(canonicalize_trusted, value) == reference(value)


def test_lone_surrogate_never_passes_the_fast_path() -> None:
    for value in ("\ud800", {"k": "a\udfffb"}, {"\udc00": 1}):
        assert _fast_jcs(value) is None
        with pytest.raises(CanonicalizationError):
            canonicalize_trusted(value)
        with pytest.raises(CanonicalizationError, match="lone surrogate"):
            canonicalize(value)


def test_depth_beyond_the_bound_is_not_plain() -> None:
    deep: Any = "x"
    for _ in range(MAX_DEPTH + 1):
        deep = [deep]
    assert not _plain(deep, 0)
    assert canonicalize_trusted(deep) == rfc8785.dumps(deep)
    with pytest.raises(CanonicalizationError, match="nesting deeper"):
        canonicalize(deep)
