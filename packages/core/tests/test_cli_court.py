"""execauth policy check / decide / record replay."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from execauth_core.cli import main as cli

from .court_fixtures import EMAIL, MONDAY_10, POLICY, REFUND, SEARCH, TRANSFER


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "policy.json").write_text(json.dumps(POLICY))
    drop = {
        "name": "drop_table",
        "version": "1.0",
        "effects": ["data.delete"],
        "args_schema": {"type": "object", "properties": {"table": {"type": "string"}}},
    }
    (tmp_path / "tools.json").write_text(json.dumps([SEARCH, REFUND, TRANSFER, EMAIL, drop]))

    def req(name: str, tool: str, args: dict[str, Any]) -> str:
        path = tmp_path / name
        path.write_text(json.dumps({"tool": tool, "args": args, "principal": "user-42", "agent": "billing-bot"}))
        return str(path)

    return {
        "policy": str(tmp_path / "policy.json"),
        "tools": str(tmp_path / "tools.json"),
        "dir": str(tmp_path),
        "allow": req("a.json", "search_docs", {"q": "x"}),
        "deny": req("d.json", "refund", {"order": "A", "amount": "900.00", "currency": "USD"}),
    }


def decide(files: dict[str, str], which: str, *extra: str) -> list[str]:
    return [
        "decide",
        "--policy",
        files["policy"],
        "--manifests",
        files["tools"],
        "--request",
        files[which],
        "--now",
        str(MONDAY_10),
        *extra,
    ]


def test_policy_check_prints_digest(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["policy", "check", files["policy"], "--manifests", files["tools"]]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] and out["id"] == "payments-prod" and out["digest"].startswith("sha256:")


def test_policy_check_refuses_unknown_tools_and_bad_files(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "few.json").write_text(json.dumps([SEARCH]))
    assert cli(["policy", "check", files["policy"], "--manifests", str(tmp_path / "few.json")]) == 2
    assert "unregistered tools" in capsys.readouterr().err
    (tmp_path / "dup.yaml").write_text("id: a\nid: b\nepoch: 1\n")
    assert cli(["policy", "check", str(tmp_path / "dup.yaml")]) == 2
    err = capsys.readouterr().err
    assert "duplicate key" in err and err.count("\n") == 1


def test_decide_allow_exit_0_deny_exit_1_with_why(files: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(decide(files, "allow")) == 0
    assert json.loads(capsys.readouterr().out)["outcome"] == "ALLOW"
    assert cli(decide(files, "deny")) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["outcome"] == "DENY" and out["reason_codes"][0] == "AMOUNT_CEILING_EXCEEDED"
    assert any("900.00 USD exceeds the per-call ceiling 500.00 USD" in w for w in out["why"])
    assert [s["stage"] for s in out["stages"]][:2] == ["contract", "ceilings"]


def test_decide_against_state(files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"budget/user-42/USD/86400": 95000}))
    refund = tmp_path / "r.json"
    refund.write_text(
        json.dumps(
            {
                "tool": "refund",
                "args": {"order": "A", "amount": "60.00", "currency": "USD"},
                "principal": "user-42",
                "agent": "billing-bot",
            }
        )
    )
    files["r"] = str(refund)
    assert cli(decide(files, "r", "--state", str(state))) == 1
    assert json.loads(capsys.readouterr().out)["reason_codes"] == ["BUDGET_EXCEEDED"]


def test_record_replay_matches_and_detects_policy_change(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decision.json"
    assert cli(decide(files, "deny", "--out", str(out))) == 1
    capsys.readouterr()
    assert cli(["record", "replay", str(out), "--policy", files["policy"], "--manifests", files["tools"]]) == 0
    assert json.loads(capsys.readouterr().out)["match"] is True
    changed = dict(POLICY, epoch=8)
    (tmp_path / "p2.json").write_text(json.dumps(changed))
    assert (
        cli(["record", "replay", str(out), "--policy", str(tmp_path / "p2.json"), "--manifests", files["tools"]]) == 2
    )
    assert "policy differs" in capsys.readouterr().err


def test_record_replay_detects_a_forged_outcome(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "decision.json"
    cli(decide(files, "deny", "--out", str(out)))
    data = json.loads(out.read_text())
    data["record"]["outcome"] = "ALLOW"
    out.write_text(json.dumps(data))
    capsys.readouterr()
    assert cli(["record", "replay", str(out), "--policy", files["policy"], "--manifests", files["tools"]]) == 1
    assert json.loads(capsys.readouterr().out)["match"] is False


def test_record_replay_checks_the_signature_with_jwks(
    files: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    out = tmp_path / "decision.json"
    cli(decide(files, "deny", "--out", str(out), "--key", str(tmp_path / "k" / "authority.key")))
    replay = [
        "record",
        "replay",
        str(out),
        "--policy",
        files["policy"],
        "--manifests",
        files["tools"],
        "--jwks",
        str(tmp_path / "k" / "jwks.json"),
    ]
    capsys.readouterr()
    assert cli(replay) == 0
    assert json.loads(capsys.readouterr().out)["signature_valid"] is True
    data = json.loads(out.read_text())
    data["record"]["explanation"] = ["edited after signing"]
    out.write_text(json.dumps(data))
    assert cli(replay) == 1
    assert json.loads(capsys.readouterr().out)["signature_valid"] is False
