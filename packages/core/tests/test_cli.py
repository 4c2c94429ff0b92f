"""The execauth CLI: exit codes 0/1/2 and one-line errors."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner
from execauth_core.cli import main as cli

from .conftest import T0


@pytest.fixture
def material(tmp_path: Path) -> dict[str, str]:
    assert cli(["keys", "generate", "--out", str(tmp_path)]) == 0
    signer = LocalSigner.load(tmp_path / "authority.key")
    guard = Guard.local(AllowListPolicy(["search"]), signer=signer, clock=FixedClock(T0), issuer="iss", audience="aud")
    req = guard.proposal("search", {"q": "x"}, principal="alice")
    (tmp_path / "req.json").write_bytes(req.canonical_bytes())
    other = guard.proposal("search", {"q": "y"}, principal="alice")
    (tmp_path / "other.json").write_bytes(other.canonical_bytes())
    token = guard.authorize(req).token
    assert token
    return {
        "dir": str(tmp_path),
        "token": token,
        "jwks": str(tmp_path / "jwks.json"),
        "req": str(tmp_path / "req.json"),
        "other": str(tmp_path / "other.json"),
    }


def verify_args(m: dict[str, str], request: str, token: str | None = None, now: int = T0) -> list[str]:
    return [
        "token",
        "verify",
        token or m["token"],
        "--jwks",
        m["jwks"],
        "--request",
        request,
        "--issuer",
        "iss",
        "--audience",
        "aud",
        "--now",
        str(now),
    ]


def test_keys_generate_writes_0600_key(material: dict[str, str]) -> None:
    assert os.stat(Path(material["dir"]) / "authority.key").st_mode & 0o777 == 0o600


def test_token_verify_valid(material: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert cli(verify_args(material, material["req"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is True and out["claims"]["scope"]["tool"] == "search"


@pytest.mark.parametrize(
    ("which", "token", "now", "code"),
    [
        ("other", None, T0, "TOKEN_PROPOSAL_MISMATCH"),
        ("req", None, T0 + 3600, "TOKEN_EXPIRED"),
        ("req", "a.b.c", T0, "TOKEN_MALFORMED"),
    ],
)
def test_token_verify_invalid(
    material: dict[str, str], capsys: pytest.CaptureFixture[str], which: str, token: str | None, now: int, code: str
) -> None:
    capsys.readouterr()
    assert cli(verify_args(material, material[which], token, now)) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["valid"] is False and out["reason_code"] == code and out["message"]


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m, d: verify_args({**m, "jwks": str(d / "missing.json")}, m["req"]),
        lambda m, d: verify_args(m, str(d / "missing.json")),
        lambda m, d: (d / "bad.json").write_text('{"tool": "x", "tool": "y"}') and verify_args(m, str(d / "bad.json")),
        lambda m, d: (d / "bad.json").write_text('{"tool": "x"}') and verify_args(m, str(d / "bad.json")),
        lambda m, d: (d / "j.json").write_text("not json") and verify_args({**m, "jwks": str(d / "j.json")}, m["req"]),
        lambda m, d: (
            (d / "j.json").write_text('{"keys":[{"kty":"RSA"}]}')
            and verify_args({**m, "jwks": str(d / "j.json")}, m["req"])
        ),
        lambda m, d: ["audit", "verify", "--db", str(d / "nope.db")],
        lambda m, d: (
            (d / "garbage.db").write_bytes(b"\0" * 4096) and ["audit", "verify", "--db", str(d / "garbage.db")]
        ),
    ],
)
def test_usage_errors_exit_2_with_one_line(
    material: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], mutate
) -> None:  # type: ignore[no-untyped-def]
    capsys.readouterr()
    assert cli(mutate(material, tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.startswith("execauth: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_bad_arguments_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        cli(["token", "verify"])
    assert info.value.code == 2


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "execauth_core.cli", "demo", "--dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "demo: OK" in proc.stdout and "TOKEN_REPLAYED" in proc.stdout and "TOOL_NOT_ALLOWED" in proc.stdout
    assert proc.stderr == ""
    assert cli(["audit", "verify", "--db", str(tmp_path / "d" / "execauth.db")]) == 0


def _script(name: str) -> Path:
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(f"{path}: the console script of this environment is missing")
    return path


def _check_line(stdout: str) -> str:
    (line,) = [ln for ln in stdout.splitlines() if ln.startswith("check it yourself: ")]
    return line.removeprefix("check it yourself: ")


@pytest.mark.parametrize("how", ["script", "module"])
def test_demo_prints_a_check_command_that_works_from_any_shell(tmp_path: Path, how: str) -> None:
    """Issue 15 item 6: `execauth audit verify` was printed, but nox's venv is not on PATH."""
    cmd = [str(_script("execauth"))] if how == "script" else [sys.executable, "-m", "execauth_core"]
    data = tmp_path / "demo data"
    first = subprocess.run([*cmd, "demo", "--dir", str(data)], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    check = _check_line(first.stdout)
    assert "audit verify --db" in check and check.split()[0] != "execauth"
    # Another shell, another folder, no venv on PATH: the printed command still works.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.run(
        ["bash", "-c", check], cwd=elsewhere, env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["ok"] is True


def test_demo_words_a_pause_as_a_pause_and_says_the_log_accumulates(tmp_path: Path) -> None:
    run = [sys.executable, "-m", "execauth_core", "demo", "--dir", str(tmp_path / "d")]
    first = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    (paused,) = [ln for ln in first.stdout.splitlines() if "PAUSED" in ln]
    assert "waiting for a person's approval" in paused and "nothing ran" in paused
    assert "denied" not in paused.lower()
    assert "9 records (9 from this run)" in first.stdout and "earlier runs" not in first.stdout
    second = subprocess.run(run, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "already holds 9 records from earlier runs" in second.stdout
    assert "18 records (9 from this run)" in second.stdout
    assert "keeps every run's records" in second.stdout


# --- issue 15 items 8 and 8b: help, one-line errors that say what is wrong ----------


def _one_error_line(err: str) -> str:
    assert err.startswith("execauth: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err.strip()


def _walk(parser: argparse.ArgumentParser, path: str = "execauth") -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                missing += _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction) and not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return missing


def test_every_option_and_argument_has_help() -> None:
    from execauth_core.cli import build_parser

    assert _walk(build_parser()) == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    from execauth_core import __version__

    with pytest.raises(SystemExit) as info:
        cli(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"execauth {__version__}\n"


@pytest.mark.parametrize(
    ("token", "says"),
    [("notatoken", "three base64url parts"), ("a.b.c", "do not decode"), ("x.y", "this has 2")],
)
def test_token_inspect_of_a_non_token_is_one_clear_line(
    capsys: pytest.CaptureFixture[str], token: str, says: str
) -> None:
    assert cli(["token", "inspect", token]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert says in line and "index" not in line


BAD_REQUEST = '{"v": "execauth.request/1", "tool": 5, "args": [], "principal": "alice", "surprise": 1}'


def test_a_bad_request_names_every_problem_with_its_path(
    material: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.json").write_text(BAD_REQUEST)
    (tmp_path / "policy.yaml").write_text("id: p\nepoch: 1\nprincipals: [{id: alice, allow_tools: []}]\n")
    capsys.readouterr()
    for argv in (
        verify_args(material, str(tmp_path / "bad.json")),
        ["decide", "--policy", str(tmp_path / "policy.yaml"), "--request", str(tmp_path / "bad.json")],
    ):
        assert cli(argv) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "validation errors" not in line
        for where in ("tool: ", "args: ", "surprise: ", "problems: "):
            assert where in line, line


def test_policy_check_names_all_problems_with_their_paths(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(
        "id: p\nepoch: seven\nmode: loud\nprincipals:\n"
        "  - id: u\n    allow_tools: [search]\n  - id: v\n    max_risk_tier: E9\n    alow_tools: [x]\n"
    )
    assert cli(["policy", "check", str(tmp_path / "p.yaml")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    for where in ("epoch: ", "mode: ", "principals[1].max_risk_tier: ", "principals[1].alow_tools: "):
        assert where in line, line
    assert "4 problems" in line


@pytest.mark.parametrize("command", ["keys", "demo"])
def test_a_folder_that_cannot_be_created_is_one_line_exit_2(tmp_path: Path, command: str) -> None:
    (tmp_path / "a-file").write_text("")
    folder = str(tmp_path / "a-file" / "sub")
    argv = ["keys", "generate", "--out", folder] if command == "keys" else ["demo", "--dir", folder]
    proc = subprocess.run([sys.executable, "-m", "execauth_core", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert folder in line and "cannot create" in line


def test_a_bad_decision_file_names_its_problems(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "d.json").write_text('{"v": "execauth.decision_record/1", "outcome": "MAYBE"}')
    (tmp_path / "policy.yaml").write_text("id: p\nepoch: 1\nprincipals: [{id: alice, allow_tools: []}]\n")
    assert cli(["record", "replay", str(tmp_path / "d.json"), "--policy", str(tmp_path / "policy.yaml")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "problems: " in line and "outcome: " in line and "validation error" not in line
