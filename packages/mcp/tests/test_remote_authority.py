"""The proxy deciding with a remote authority: a real ``execauth serve`` on 127.0.0.1."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from mcphelpers import Workdir, free_port, open_session, proxy_command

from execauth_core import ConfigurationError
from execauth_mcp import build_guard, parse_config
from execauth_server.testing import running_server

CRED = "EXECAUTH_MCP_TEST_CREDENTIAL"


def text(result: object) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)  # type: ignore[attr-defined]


def remote_config(work: Workdir, url: str) -> Path:
    cfg = {
        "server": "files",
        "principal": "alice",
        "data_dir": "state",
        "call_timeout": 5,
        "authority": {"url": url, "credential_env": CRED, "timeout": 3},
    }
    path = work.root / "proxy-remote.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.anyio
async def test_the_remote_authority_decides_and_the_proxy_records(work: Workdir) -> None:
    server_config = {"policy": str(work.root / "policy.yaml"), "manifests": str(work.root / "manifests.yaml")}
    with running_server(server_config) as srv:
        env = work.env(**{CRED: srv.credential})
        async with open_session(proxy_command(remote_config(work, srv.url)), env, work.root) as s:
            allowed = await s.call_tool("write_note", {"text": "hello"})
            denied = await s.call_tool("delete_all", {})
            undeclared = await s.call_tool("undeclared", {})
    assert not allowed.is_error and "wrote hello" in text(allowed)
    assert denied.is_error and "TOOL_NOT_ALLOWED" in text(denied)
    assert undeclared.is_error and "UNKNOWN_TOOL" in text(undeclared)
    assert work.effects() == ["write_note hello"]
    decided = [(e["event"], e["tool"], e["executed"]) for e in work.audit() if e["event"] in ("execution", "denial")]
    assert decided == [
        ("execution", "files.write_note", True),
        ("denial", "files.delete_all", False),
        ("denial", "files.undeclared", False),
    ]


@pytest.mark.anyio
async def test_an_unreachable_authority_denies_and_nothing_runs(work: Workdir) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = work.env(**{CRED: "not-used"})
    async with open_session(proxy_command(remote_config(work, url)), env, work.root) as s:
        result = await s.call_tool("write_note", {"text": "hello"})
        again = await s.call_tool("write_note", {"text": "again"})  # the proxy keeps serving
    assert result.is_error and "AUTHORITY_UNAVAILABLE" in text(result)
    assert again.is_error and "AUTHORITY_UNAVAILABLE" in text(again)
    assert work.effects() == []
    refused = [e for e in work.audit() if e["event"] == "denial"]
    assert len(refused) == 2 and all(e["executed"] is False for e in refused)


@pytest.mark.parametrize(
    ("extra", "env", "message"),
    [
        ({"policy": {"id": "p", "epoch": 1, "principals": []}}, {CRED: "x"}, "live in the server"),
        ({"hide_denied_tools": True}, {CRED: "x"}, "hide_denied_tools"),
        ({}, {}, CRED),
    ],
)
def test_remote_configuration_errors(
    monkeypatch: pytest.MonkeyPatch, extra: dict[str, Any], env: dict[str, str], message: str
) -> None:
    monkeypatch.delenv(CRED, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    authority = {"url": "http://127.0.0.1:9", "credential_env": CRED}
    cfg = parse_config({"server": "files", "principal": "alice", "authority": authority, **extra})
    with pytest.raises(ConfigurationError, match=message):
        build_guard(cfg)


def test_the_authority_url_must_be_http() -> None:
    with pytest.raises(ConfigurationError, match=r"authority\.url"):
        parse_config({"server": "files", "principal": "alice", "authority": {"url": "file:///etc/passwd"}})
