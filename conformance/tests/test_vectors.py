"""Every frozen vector, checked against execauth-core directly; the checksums hold."""

from __future__ import annotations

import hashlib
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from execauth_conformance import vectors
from execauth_core import CanonicalizationError, canonicalize, digest, loads_strict

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import delegation_vectors as deleg  # noqa: E402
import generate_vectors as gen  # noqa: E402 - the generator's check functions are the reference

ids = lambda t: f"tc{t['tcId']}"  # noqa: E731


def test_checksums_are_enforced() -> None:
    for name in vectors.FILES:
        data = vectors._raw(name)
        assert hashlib.sha256(data).hexdigest() == vectors.checksums()[name]
        assert vectors.load(name)["numberOfTests"] == len(vectors.load(name)["tests"])


def test_generator_reproduces_the_frozen_files() -> None:
    """Regenerating from core gives byte-identical files: core has not drifted."""
    proc = subprocess.run(
        [sys.executable, str(TOOLS / "generate_vectors.py"), "--check"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_every_outcome_and_stage_is_covered() -> None:
    tests = vectors.tests("decisions-v1.json")
    assert {t["expected"]["outcome"] for t in tests} == {
        "ALLOW",
        "DENY",
        "REQUIRE_APPROVAL",
        "REQUIRE_EVIDENCE",
        "DEFER",
    }
    stages = {f.split(":", 1)[1] for t in tests for f in t["flags"] if f.startswith("stage:")}
    assert stages == {"contract", "ceilings", "counterfactuals", "invariants", "preflight", "emit"}
    codes = {t["expected"]["reason_code"] for t in vectors.tests("tokens-v1.json")} - {None}
    from execauth_core.reasons import ReasonCode

    token_codes = {
        c.value for c in ReasonCode if c.value.startswith("TOKEN_") or c.value in ("KEYSET_MISSING", "NO_TOKEN")
    }
    # TOKEN_REPLAYED needs a replay store and TOKEN_POLICY_STALE a guard: the suite covers them
    assert token_codes - codes == {"TOKEN_REPLAYED", "TOKEN_POLICY_STALE"}


@pytest.mark.parametrize("t", vectors.tests("canonicalization-v1.json"), ids=ids)
def test_canonicalization(t: dict[str, Any]) -> None:
    inp, exp = t["input"], t["expected"]
    if "error" in exp:
        with pytest.raises(CanonicalizationError):
            canonicalize(loads_strict(inp["json"]))
        return
    value = struct.unpack(">d", bytes.fromhex(inp["ieee754"]))[0] if "ieee754" in inp else loads_strict(inp["json"])
    assert canonicalize(value).decode("utf-8") == exp["canonical"]
    assert digest(value) == exp["digest"]


@pytest.mark.parametrize("t", vectors.tests("tokens-v1.json"), ids=ids)
def test_tokens(t: dict[str, Any]) -> None:
    assert gen.check_token(t["input"]) == t["expected"]["reason_code"]


@pytest.mark.parametrize("t", vectors.tests("decisions-v1.json"), ids=ids)
def test_decisions(t: dict[str, Any]) -> None:
    assert gen.decide(t["input"]) == t["expected"]


@pytest.mark.parametrize("t", vectors.tests("audit-v1.json"), ids=ids)
def test_audit(t: dict[str, Any]) -> None:
    assert gen.check_audit(t["input"]) == t["expected"]["first_bad_seq"]


@pytest.mark.parametrize("t", vectors.tests("delegation-v1.json"), ids=ids)
def test_delegation(t: dict[str, Any]) -> None:
    assert deleg.check_delegation(t["input"]) == t["expected"]


def test_every_delegation_reason_code_is_covered() -> None:
    from execauth_core.reasons import ReasonCode

    codes = {t["expected"]["reason_code"] for t in vectors.tests("delegation-v1.json")}
    wanted = {c.value for c in ReasonCode if c.value.startswith("DELEGATION_")} | {"KEYSET_MISSING", None}
    # DELEGATION_INVALID comes from both a malformed link and an omitted limit
    assert codes == wanted


def test_a_tampered_vector_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    real = vectors._raw
    vectors.load.cache_clear()
    monkeypatch.setattr(vectors, "_raw", lambda name: real(name) + (b" " if name != "SHA256SUMS" else b""))
    try:
        with pytest.raises(vectors.VectorIntegrityError):
            vectors.load("tokens-v1.json")
    finally:
        monkeypatch.undo()
        vectors.load.cache_clear()


@pytest.mark.parametrize("t", vectors.tests("commit-v1.json"), ids=ids)
def test_commit(t: dict[str, Any]) -> None:
    """preflight -> CommitToken -> execute, and every refusal, reproduce from core."""
    assert gen.check_commit(t["input"]) == t["expected"]


def test_commit_vectors_cover_every_refusal() -> None:
    codes = set()
    for t in vectors.tests("commit-v1.json"):
        e = t["expected"]
        codes.update(e["preflight"]["reason_codes"])
        codes.update((e["commit"] or {}).get("reason_codes", []))
        codes.update(c for c in (e["execute"] or {}).get("reason_codes", []) if c)
    assert {
        "COMMIT_REQUIRED",
        "COMMIT_STATE_CHANGED",
        "COMMIT_POLICY_CHANGED",
        "PREFLIGHT_EXPIRED",
        "PREFLIGHT_INVALID",
        "TOKEN_PROPOSAL_MISMATCH",
        "TOKEN_REPLAYED",
        "TOKEN_EXPIRED",
    } <= codes
    phases = {t["expected"]["commit"]["token_claims"]["phase"] for t in vectors.tests("commit-v1.json", "valid")}
    assert phases == {"commit"}


@pytest.mark.parametrize("t", vectors.tests("receipts-v1.json"), ids=ids)
def test_receipts(t: dict[str, Any]) -> None:
    assert gen.check_receipt(t["input"]) == t["expected"]["reason_code"]
