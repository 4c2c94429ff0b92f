"""``execauth delegate`` and ``execauth delegation verify``: exit codes 0/1/2."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from execauth_core.cli import main as cli

from .court_fixtures import MONDAY_10, REFUND, SEARCH

SCOPE = {
    "tools": ["refund", "search_docs"],
    "effects": ["data.read", "payment.refund"],
    "amount_ceilings": {"USD": "300.00"},
    "constraints": [],
    "rate": {"count": 10, "window": 60},
    "max_uses": 5,
}


def out(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    assert cli(["keys", "generate", "--out", str(tmp_path / "auth")]) == 0
    assert cli(["keys", "generate", "--out", str(tmp_path / "agent")]) == 0
    keys = [json.loads((tmp_path / d / "jwks.json").read_text())["keys"][0] for d in ("auth", "agent")]
    (tmp_path / "trusted.json").write_text(json.dumps({"keys": keys}))
    (tmp_path / "scope.json").write_text(json.dumps(SCOPE))
    (tmp_path / "registry.json").write_text(json.dumps([SEARCH, REFUND]))
    return {k: str(tmp_path / v) for k, v in {
        "dir": ".", "auth": "auth/authority.key", "agent": "agent/authority.key", "jwks": "trusted.json",
        "scope": "scope.json", "root": "root.json", "child": "child.json", "registry": "registry.json",
    }.items()}  # fmt: skip


def issue(f: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    root = ["delegate", "--key", f["auth"], "--issuer", "execauth-local", "--principal", "user-42"]
    root += ["--agent", "billing-bot", "--audience", "g", "--scope", f["scope"], "--ttl", "3600"]
    assert cli([*root, "--max-depth", "1", "--now", str(MONDAY_10), "--out", f["root"]]) == 0
    child = ["delegate", "--key", f["agent"], "--parent", f["root"], "--jwks", f["jwks"]]
    child += ["--trusted-issuer", "execauth-local", "--agent", "child", "--tools", "refund", "--ceiling", "USD=50.00"]
    assert cli([*child, "--now", str(MONDAY_10 + 1), "--out", f["child"]]) == 0


def verify(f: dict[str, str], *extra: str) -> list[str]:
    args = ["delegation", "verify", f["child"], "--jwks", f["jwks"], "--issuer", "execauth-local"]
    return [*args, "--audience", "g", "--now", str(MONDAY_10 + 2), *extra]


def test_issue_a_chain_and_verify_it(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    issue(files, capsys)
    assert cli(verify(files)) == 0
    shown = out(capsys)
    assert shown["valid"] is True and shown["agent"] == "child" and len(shown["chain"]) == 2
    assert shown["scope"]["tools"] == ["refund"] and shown["scope"]["amount_ceilings"] == {"USD": "50.00"}
    assert shown["scope"]["max_uses"] == 5  # inherited


def test_a_request_is_checked_against_the_scope(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    issue(files, capsys)
    refs = json.loads(Path(files["child"]).read_text())["chain"]
    capsys.readouterr()
    assert cli(verify(files)) == 0
    names = out(capsys)["chain"]
    assert len(refs) == 2
    request = {
        "tool": "refund",
        "args": {"order": "A-1", "amount": "80.00", "currency": "USD"},
        "principal": "user-42",
        "agent": "child",
        "context_refs": names,
    }
    (tmp_path / "req.json").write_text(json.dumps(request))
    assert cli(verify(files, "--request", str(tmp_path / "req.json"), "--registry", files["registry"])) == 1
    assert out(capsys)["reason_code"] == "DELEGATION_SCOPE_EXCEEDED"
    request["args"]["amount"] = "8.00"  # type: ignore[index]
    (tmp_path / "req.json").write_text(json.dumps(request))
    assert cli(verify(files, "--request", str(tmp_path / "req.json"), "--registry", files["registry"])) == 0


def test_a_wider_child_is_not_issued(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    issue(files, capsys)
    capsys.readouterr()
    wide = ["delegate", "--key", files["agent"], "--parent", files["root"], "--jwks", files["jwks"]]
    wide += ["--trusted-issuer", "execauth-local", "--agent", "child", "--max-uses", "6", "--now", str(MONDAY_10 + 1)]
    assert cli(wide) == 1
    assert out(capsys)["reason_code"] == "DELEGATION_WIDENS"


def test_untrusted_keys_and_bad_input(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    issue(files, capsys)
    capsys.readouterr()
    only_auth = str(Path(files["auth"]).parent / "jwks.json")
    args = verify(files)
    args[args.index("--jwks") + 1] = only_auth
    assert cli(args) == 1
    assert out(capsys)["reason_code"] == "DELEGATION_KEY_UNTRUSTED"
    Path(files["child"]).write_text('{"chain": "nope"}')
    assert cli(verify(files)) == 2
    assert "not a chain file" in capsys.readouterr().err
    missing = ["delegate", "--key", files["auth"], "--agent", "x"]
    assert cli(missing) == 2
    assert "needs --issuer" in capsys.readouterr().err
