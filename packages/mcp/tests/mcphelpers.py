"""Shared helpers of the execauth-mcp tests (imported through conftest's sys.path entry)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

HERE = Path(__file__).parent
UPSTREAM = str(HERE / "upstream_server.py")

POLICY = {
    "id": "mcp-test",
    "epoch": 1,
    "principals": [
        {
            "id": "alice",
            "allow_tools": ["files.write_note", "files.publish", "files.crash", "files.sleep", "files.steps"],
            "max_risk_tier": "E3",
            "require_approval_effects": ["message.public_post"],
        }
    ],
}


def _manifest(
    name: str, effect: str, props: dict[str, Any] | None = None, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props or {}, "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return {"name": f"files.{name}", "version": "1", "args_schema": schema, "effects": [effect]}


MANIFESTS = [
    _manifest("write_note", "file.write", {"text": {"type": "string", "maxLength": 100}}, ("text",)),
    _manifest("delete_all", "file.delete"),
    _manifest("publish", "message.public_post", {"text": {"type": "string"}}, ("text",)),
    _manifest("crash", "file.write"),
    _manifest("sleep", "file.write", {"seconds": {"type": "number"}}, ("seconds",)),
    _manifest("steps", "file.write", {"n": {"type": "integer"}}, ("n",)),
]


class Workdir:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root / "effects.log"
        self.log.write_text("", encoding="utf-8")
        (root / "policy.yaml").write_text(yaml.safe_dump(POLICY), encoding="utf-8")
        (root / "manifests.yaml").write_text(yaml.safe_dump(MANIFESTS), encoding="utf-8")

    def config(self, **overrides: Any) -> Path:
        cfg: dict[str, Any] = {
            "server": "files",
            "principal": "alice",
            "policy": "policy.yaml",
            "manifests": "manifests.yaml",
            "data_dir": "state",
            "call_timeout": 5,
        }
        cfg.update(overrides)
        path = self.root / "proxy.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path

    def effects(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "UPSTREAM_LOG": str(self.log), **extra}

    def audit(self) -> list[dict[str, Any]]:
        from execauth_core.stores.sqlite import SQLiteAuditLog

        log = SQLiteAuditLog(self.root / "state" / "execauth.db")
        try:
            return [dict(e.body) for e in log.entries()]
        finally:
            log.close()


@pytest.fixture
def work(tmp_path: Path) -> Workdir:
    return Workdir(tmp_path)


@asynccontextmanager
async def open_session(command: list[str], env: dict[str, str], cwd: Path) -> AsyncIterator[ClientSession]:
    import anyio

    params = StdioServerParameters(command=command[0], args=command[1:], env=env, cwd=str(cwd))
    with anyio.fail_after(60):
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=30) as session:
                await session.initialize()
                yield session


def proxy_command(config: Path, *upstream: str, url: str | None = None) -> list[str]:
    cmd = [sys.executable, "-m", "execauth_mcp", "--config", str(config)]
    if url is not None:
        return [*cmd, "--url", url]
    return [*cmd, "--", *(upstream or (sys.executable, UPSTREAM))]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def http_upstream(work: Workdir) -> Iterator[str]:
    """The test server over streamable HTTP on an ephemeral loopback port; stopped at teardown."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, UPSTREAM, "http", str(port)], env=work.env(), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the HTTP test server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
