"""RFC 8785 canonicalization and the strict JSON reader."""

from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from execauth_core import CanonicalizationError, canonicalize, digest, loads_strict
from execauth_core.canonical import MAX_DEPTH, canonicalize_spliced, signing_input
from execauth_core.messages import PolicyRef

from .test_court_properties import json_values


def f64(bits: str) -> float:
    return struct.unpack(">d", bytes.fromhex(bits))[0]


# RFC 8785 Appendix B: IEEE-754 bit patterns and their canonical serialization.
RFC8785_NUMBERS = [
    ("0000000000000000", "0"),
    ("8000000000000000", "0"),  # -0 serializes as 0
    ("0000000000000001", "5e-324"),
    ("8000000000000001", "-5e-324"),
    ("7fefffffffffffff", "1.7976931348623157e+308"),
    ("ffefffffffffffff", "-1.7976931348623157e+308"),
    ("4340000000000000", "9007199254740992"),
    ("c340000000000000", "-9007199254740992"),
    ("4430000000000000", "295147905179352830000"),
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),
]


@pytest.mark.parametrize(("bits", "expected"), RFC8785_NUMBERS)
def test_rfc8785_appendix_b_numbers(bits: str, expected: str) -> None:
    assert canonicalize(f64(bits)) == expected.encode()


def test_rfc8785_section_3_2_2_sample() -> None:
    value = loads_strict(
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/",'
        ' "literals": [null, true, false]}'
    )
    expected = (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"\u20ac$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    assert canonicalize(value) == expected.encode("utf-8")


def test_rfc8785_section_3_2_3_utf16_key_order() -> None:
    value = {
        "\u20ac": "Euro Sign",
        "\r": "Carriage Return",
        "\ufb33": "Hebrew Letter Dalet With Dagesh",
        "1": "One",
        "\U0001f600": "Emoji: Grinning Face",
        "\u0080": "Control",
        "\u00f6": "Latin Small Letter O With Diaeresis",
    }
    out = canonicalize(value).decode("utf-8")
    order = [out.index('"' + k + '"') for k in ["\\r", "1", "\u0080", "\u00f6", "\u20ac", "\U0001f600", "\ufb33"]]
    assert order == sorted(order)
    # json.dumps(sort_keys=True) orders by code point, which puts U+FB33 before
    # U+1F600: exactly the mistake real JCS avoids.
    assert sorted(value)[-1] == "\U0001f600"


def test_digest_is_sha256_of_jcs() -> None:
    value = {"b": [1, 2.5, "x"], "a": None}
    assert digest(value) == "sha256:" + hashlib.sha256(b'{"a":null,"b":[1,2.5,"x"]}').hexdigest()


def test_signing_input_is_domain_separated() -> None:
    assert signing_input("approval", {"a": 1}) == b'execauth:approval/1\n{"a":1}'


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ('{"a": 1, "a": 2}', "duplicate"),
        ('{"x": {"k": 1, "k": 1}}', "duplicate"),
        ('{"a": NaN}', "NaN"),
        ('{"a": Infinity}', "Infinity"),
        ('{"a": -Infinity}', "Infinity"),
        ('{"a": 9007199254740992}', "2^53"),
        ('{"a": -9007199254740992}', "2^53"),
        ('{"a": 1e400}', "overflows"),
        ("{'a': 1}", "invalid JSON"),
        ("", "invalid JSON"),
    ],
)
def test_strict_reader_rejects(text: str, fragment: str) -> None:
    with pytest.raises(CanonicalizationError, match=fragment.replace("^", r"\^")):
        loads_strict(text)


def test_strict_reader_accepts_edges() -> None:
    assert loads_strict('{"a": 9007199254740991, "b": -9007199254740991}') == {
        "a": 9007199254740991,
        "b": -9007199254740991,
    }


def test_strict_reader_rejects_invalid_utf8_and_deep_nesting() -> None:
    with pytest.raises(CanonicalizationError, match="UTF-8"):
        loads_strict(b'{"a": "\xff"}')
    with pytest.raises(CanonicalizationError, match="nesting"):
        loads_strict("[" * (MAX_DEPTH + 2) + "]" * (MAX_DEPTH + 2))


@pytest.mark.parametrize(
    "value",
    [
        float("nan"),
        float("inf"),
        2**53,
        -(2**53),
        {1: "non-string key"},
        {"a": object()},
        {"a": b"bytes"},
        "\ud800",  # lone surrogate: not encodable as UTF-8
    ],
)
def test_canonicalize_rejects(value: object) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


# -- splicing already-canonical members ---------------------------------------


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=6), json_values, min_size=1, max_size=6), data=st.data())
def test_spliced_members_give_the_same_bytes_as_canonicalizing_whole(
    value: dict[str, object], data: st.DataObject
) -> None:
    keys = data.draw(st.sets(st.sampled_from(sorted(value)), min_size=1))
    parts = {k: canonicalize(value[k]) for k in keys}
    assert canonicalize_spliced(value, parts) == canonicalize(value)


def test_a_value_holding_a_marker_is_canonicalized_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    # The markers are random; make the next one predictable and plant it in another member.
    monkeypatch.setattr("execauth_core.canonical.secrets.token_hex", lambda n: "0" * (2 * n))
    marker = "execauth-splice-" + "0" * 32
    value = {"a": {"x": 1}, "b": marker}
    # The spliced part is deliberately wrong: it must not be used when the marker is ambiguous.
    assert canonicalize_spliced(value, {"a": b'{"x":2}'}) == canonicalize(value)


def test_splicing_a_missing_member_is_refused() -> None:
    with pytest.raises(CanonicalizationError, match="no member 'b'"):
        canonicalize_spliced({"a": 1}, {"b": b"1"})


def test_policy_reference_bytes_follow_their_values() -> None:
    ref = PolicyRef(id="p", epoch=1, digest="sha256:" + "0" * 64)
    assert ref.canonical_bytes() == canonicalize(ref.model_dump(mode="json"))
    moved = ref.model_copy(update={"epoch": 2})  # a copy must not reuse the first one's bytes
    assert moved.canonical_bytes() == canonicalize({"digest": ref.digest, "epoch": 2, "id": "p"})
    assert ref.canonical_bytes() == canonicalize(ref.model_dump(mode="json"))
    # Equality is by value: remembering bytes must not make two equal references differ.
    assert ref == PolicyRef(id="p", epoch=1, digest=ref.digest)
