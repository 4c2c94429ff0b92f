"""Edge cases a field test found (issue 15, items 13-17): each is refused early and clearly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from execauth_core import (
    AllowListPolicy,
    CanonicalizationError,
    ConfigurationError,
    ExecutionDenied,
    FixedClock,
    Guard,
    KeySet,
    LocalSigner,
    TokenVerifier,
    canonicalize,
    loads_strict,
)
from execauth_core.canonical import canonicalize_strict
from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore

from .conftest import Tool

# -- item 13: floats JCS would write as unsafe integers -------------------------


@pytest.mark.parametrize("number", [1e17, -1e17, 2.0**53, 9.5e20, 1.5e16])
def test_floats_that_canonicalize_as_unsafe_integers_are_refused(number: float) -> None:
    with pytest.raises(CanonicalizationError, match="send large numbers as strings"):
        canonicalize_strict({"n": number})
    with pytest.raises(CanonicalizationError, match="send large numbers as strings"):
        loads_strict(f'{{"n": {number!r}}}')
    # The plain serializer still writes it, as RFC 8785 says (appendix B has 2^53).
    assert canonicalize(number).isdigit() or canonicalize(number).startswith(b"-")


@pytest.mark.parametrize("number", [1e21, 1e300, 9007199254740991.0, 0.1, -2.5e-300])
def test_floats_that_survive_their_round_trip_are_kept(number: float) -> None:
    assert loads_strict(canonicalize_strict({"n": number}))["n"] == number


def test_a_proposal_with_1e17_is_request_invalid_when_built(make_guard: Callable[..., Guard], tool: Tool) -> None:
    guard = make_guard()
    with pytest.raises(ExecutionDenied) as info:
        guard.proposal("search", {"q": 1e17}, principal="alice")
    assert info.value.reason_codes == ("REQUEST_INVALID",)
    assert "send large numbers as strings" in info.value.message
    entry = list(guard.audit_log.entries())[-1]
    assert (entry.event, entry.executed) == ("denial", False)


# -- item 14: escaped lone surrogates ---------------------------------------------


@pytest.mark.parametrize("text", ['{"a": "\\ud800"}', '{"\\udfff": 1}', '["ok", "x\\ud83d"]'])
def test_the_strict_reader_refuses_escaped_lone_surrogates(text: str) -> None:
    with pytest.raises(CanonicalizationError, match="lone surrogate"):
        loads_strict(text)


def test_the_strict_reader_keeps_escaped_surrogate_pairs() -> None:
    assert loads_strict('{"a": "\\ud83d\\ude00"}') == {"a": "\U0001f600"}


# -- item 15: Guard.local on an unusable path ---------------------------------------


def test_guard_local_on_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ConfigurationError) as info:
        Guard.local(AllowListPolicy(["search"]), data_dir=blocker / "sub")
    assert str(blocker / "sub") in str(info.value)


@pytest.mark.parametrize("in_the_way", ["jwks.json", "execauth.db"])
def test_guard_local_with_a_folder_in_the_way_names_the_path(tmp_path: Path, in_the_way: str) -> None:
    (tmp_path / in_the_way).mkdir()  # root ignores file modes: a folder where a file goes fails for anyone
    with pytest.raises(ConfigurationError) as info:
        Guard.local(AllowListPolicy(["search"]), data_dir=tmp_path)
    assert str(tmp_path) in str(info.value) and "cannot be used" in str(info.value)


# -- item 16: a verify-only guard pins the policy ---------------------------------------


def _verify_only(signer: LocalSigner, clock: FixedClock, expected: object) -> Guard:
    verifier = TokenVerifier(
        keys=KeySet.of_signer(signer), issuer="execauth-local", audience="execauth-guard", max_ttl=60
    )
    return Guard(
        authority=None,
        verifier=verifier,
        replay_store=MemoryReplayStore(),
        audit_log=MemoryAuditLog(),
        clock=clock,
        expected_policy=expected,
    )


def test_a_verify_only_guard_refuses_tokens_of_a_changed_policy(
    make_guard: Callable[..., Guard], signer: LocalSigner, clock: FixedClock, tool: Tool
) -> None:
    issuer = make_guard()
    assert issuer.authority is not None
    old = issuer.authority.decision_point.policy_ref
    req = issuer.proposal("search", {"q": "x"}, principal="alice")
    stale_token = issuer.authorize(req).token
    issuer.authority.decision_point = AllowListPolicy(["search"], epoch=2)  # the policy changed
    fresh_token = issuer.authorize(req).token
    new = issuer.authority.decision_point.policy_ref
    assert old != new

    for expected in (new, issuer.authority.decision_point, lambda: new):
        guard = _verify_only(signer, clock, expected)
        with pytest.raises(ExecutionDenied) as info:
            guard.execute(req, stale_token, lambda: tool(q="stale"))
        assert info.value.reason_codes == ("TOKEN_POLICY_STALE",)
        assert list(guard.audit_log.entries())[-1].executed is False
        assert guard.execute(req, fresh_token, lambda: tool(q="fresh")) == "done"
    assert tool.calls == [{"q": "fresh"}] * 3


def test_a_verify_only_guard_without_a_pin_keeps_todays_behaviour(
    make_guard: Callable[..., Guard], signer: LocalSigner, clock: FixedClock, tool: Tool
) -> None:
    issuer = make_guard()
    req = issuer.proposal("search", {}, principal="alice")
    token = issuer.authorize(req).token
    assert _verify_only(signer, clock, None).execute(req, token, lambda: tool()) == "done"


def test_expected_policy_of_the_wrong_type_is_refused_when_built(
    make_guard: Callable[..., Guard], signer: LocalSigner, clock: FixedClock
) -> None:
    with pytest.raises(ConfigurationError, match="expected_policy is a PolicyRef"):
        _verify_only(signer, clock, "policy-v2")


# -- item 17: an immutable -shm file ------------------------------------------------------


def _chattr(flag: str, path: Path) -> bool:
    tool = shutil.which("chattr")
    if tool is None:
        return False
    return subprocess.run([tool, flag, str(path)], capture_output=True, check=False).returncode == 0


def test_an_immutable_shm_file_is_refused_not_a_sigbus(tmp_path: Path) -> None:
    """chattr +i on <db>-shm while a guard has it mapped used to kill the process
    (SIGBUS). Run in a child process, so a regression cannot take pytest down."""
    if shutil.which("chattr") is None:
        pytest.skip("chattr is not installed: cannot make the -shm file immutable")
    script = f"""
import subprocess, sys
from execauth_core import AllowListPolicy, ExecutionDenied, Guard
guard = Guard.local(AllowListPolicy(["search"]), data_dir={str(tmp_path)!r})
guard.run(guard.proposal("search", {{}}, principal="a"), lambda: None)
if subprocess.run(["chattr", "+i", {str(tmp_path / "execauth.db-shm")!r}]).returncode != 0:
    print("NOCHATTR"); sys.exit(0)
ran = []
try:
    guard.run(guard.proposal("search", {{"n": 1}}, principal="a"), lambda: ran.append(1))
except ExecutionDenied as exc:
    print("DENIED", ",".join(exc.reason_codes), "ran" if ran else "not-run", flush=True)
# Closing the connection still checkpoints into the mapped file and faults (SIGBUS):
# what is checked here is the call. docs/deploying.md says so.
import os
os._exit(0)
"""
    try:
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        _chattr("-i", tmp_path / "execauth.db-shm")
    if "NOCHATTR" in done.stdout:
        pytest.skip("this file system does not take the immutable attribute (or we are not root)")
    assert done.returncode == 0, f"child died (rc={done.returncode}): {done.stderr[-500:]}"
    assert done.stdout.split()[:1] == ["DENIED"] and "STORE_UNAVAILABLE" in done.stdout
    assert done.stdout.strip().endswith("not-run")


def test_opening_a_database_with_an_unwritable_shm_file_names_it(tmp_path: Path) -> None:
    from execauth_core import StoreUnavailable
    from execauth_core.stores.sqlite import SQLiteAuditLog

    SQLiteAuditLog(tmp_path / "a.db").close()
    shm = tmp_path / "a.db-shm"
    shm.write_bytes(b"")
    if not _chattr("+i", shm):
        pytest.skip("cannot make the -shm file immutable here (no chattr, not root, or the file system refuses)")
    try:
        with pytest.raises(StoreUnavailable, match=r"a\.db-shm is not writable"):
            SQLiteAuditLog(tmp_path / "a.db")
    finally:
        _chattr("-i", shm)
