"""``execauth approvals`` against a local store (the server side is tested in
packages/server/tests/test_approvals_cli_server.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from execauth_core import AllowListPolicy, Guard
from execauth_core.approvals_cli import build_parser
from execauth_core.cli import main
from execauth_core.errors import ApprovalRequired


def _options(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.Action]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += [(f"{name} {n}", a) for n, a in _options(sub)]
        elif not isinstance(action, argparse._HelpAction):
            found.append((action.dest, action))
    return found


def test_every_option_has_help() -> None:
    options = _options(build_parser())
    assert len(options) > 20
    missing = [name for name, action in options if not (action.help and action.help.strip())]
    assert missing == []


def _pending(tmp_path: Path) -> tuple[Guard, str]:
    guard = Guard.local(
        AllowListPolicy(("transfer",), require_approval=("transfer",)), data_dir=tmp_path, approvals=True
    )
    request = guard.proposal("transfer", {"to": "bob", "amount": "5.00"}, principal="alice")
    with pytest.raises(ApprovalRequired) as info:
        guard.run(request, lambda: None)
    assert info.value.request_id
    return guard, info.value.request_id


def test_local_list_show_approve(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    guard, rid = _pending(tmp_path)
    assert main(["approvals", "list", "--state", "pending", "--data-dir", str(tmp_path)]) == 0
    table = capsys.readouterr().out
    assert rid in table and "transfer" in table and "pending" in table
    assert main(["approvals", "show", rid, "--db", str(tmp_path / "execauth.db")]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["proposal"]["args"] == {"to": "bob", "amount": "5.00"} and shown["state"] == "pending"
    code = main(["approvals", "approve", rid, "--data-dir", str(tmp_path), "--approver", "carol", "--comment", "ok"])
    assert code == 0
    approved = json.loads(capsys.readouterr().out)
    assert approved["state"] == "approved" and approved["grant"]["proposal_digest"] == shown["proposal_digest"]
    # The guard's own queue sees the decision, and the grant runs the call once.
    grant = guard.approval_for(rid)
    request = guard.proposal("transfer", {"to": "bob", "amount": "5.00"}, principal="alice")
    assert guard.run(request, lambda: "ran", approval=grant) == "ran"
    # A second decision is refused, in one line.
    assert main(["approvals", "reject", rid, "--data-dir", str(tmp_path), "--approver", "dave"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("execauth: error: APPROVAL_DECIDED") and err.count("\n") == 1


def test_local_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, rid = _pending(tmp_path)
    cases = [
        ["approvals", "list"],  # no queue named
        ["approvals", "approve", rid, "--db", str(tmp_path / "execauth.db"), "--approver", "x"],  # no key
        ["approvals", "reject", rid, "--data-dir", str(tmp_path)],  # no approver
        ["approvals", "show", "apr_nope", "--data-dir", str(tmp_path)],
        ["approvals", "list", "--url", "http://127.0.0.1:9", "--credential-file", str(tmp_path / "none")],
    ]
    for argv in cases:
        assert main(argv) in (1, 2), argv
        err = capsys.readouterr().err
        assert err.startswith("execauth: error: ") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
