"""A small, real MCP server for the adapters' MCP tests, and what they share.

Each adapter's MCP test loads this server's tools the framework's own way (a stdio
subprocess, or streamable HTTP on 127.0.0.1) and drives the framework's real agent
loop with a scripted model. Every tool call that reaches the server appends one line
to the file given with ``--log``, so a test can prove a denied call never got there.

    python -m execauth_conformance.mcp_server --log PATH            # stdio
    python -m execauth_conformance.mcp_server --log PATH --http PORT  # streamable HTTP, /mcp

Written with the SDK's FastMCP (``mcp.server.fastmcp`` on mcp 1.x, ``MCPServer`` on
2.x: frameworks pin either). The server's identity in proposals is ``files``; its
tools are proposed as ``files.<tool>`` (:mod:`execauth_core.mcp_names`).
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SERVER = "files"

POLICY: dict[str, Any] = {
    "id": "mcp-adapters",
    "epoch": 1,
    "principals": [
        {
            "id": "alice",
            # files.undeclared has no manifest (and a policy cannot allow an undeclared tool).
            "allow_tools": ["files.write_note"],
            "max_risk_tier": "E3",
        }
    ],
}

MANIFESTS: list[dict[str, Any]] = [
    {
        "name": "files.write_note",
        "version": "1",
        "args_schema": {
            "type": "object",
            "properties": {"text": {"type": "string", "maxLength": 100}},
            "required": ["text"],
            "additionalProperties": False,
        },
        "effects": ["file.write"],
    },
    {
        "name": "files.delete_all",
        "version": "1",
        "args_schema": {"type": "object", "properties": {}, "additionalProperties": False},
        "effects": ["file.delete"],
    },
]


def guard() -> Any:
    """A local guard (in memory) for :data:`POLICY` and :data:`MANIFESTS`."""
    from execauth_core import Court, Guard, ToolManifest, ToolRegistry, parse_policy

    registry = ToolRegistry([ToolManifest.model_validate(m) for m in MANIFESTS])
    return Guard.local(Court(parse_policy(POLICY), registry))


def effects(log: Path) -> list[str]:
    """The calls that reached the server, in order."""
    return log.read_text(encoding="utf-8").splitlines() if log.exists() else []


def stdio_command(log: Path) -> list[str]:
    """The command that starts the server over stdio."""
    return [sys.executable, "-m", "execauth_conformance.mcp_server", "--log", str(log)]


@contextlib.contextmanager
def http_server(log: Path, *, startup_timeout: float = 120.0) -> Iterator[str]:
    """Run the server over streamable HTTP on 127.0.0.1; yields its URL (``.../mcp``).
    The subprocess is stopped when the block ends."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module, no shell
        [*stdio_command(log), "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the MCP test server exited with {proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the MCP test server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _build(log: Path) -> Any:
    try:
        from mcp.server import MCPServer as FastMCP  # type: ignore[attr-defined, unused-ignore]  # mcp 2.x
    except ImportError:
        from mcp.server.fastmcp import FastMCP  # type: ignore[no-redef, attr-defined, unused-ignore]  # mcp 1.x

    app = FastMCP(SERVER)

    def effect(line: str) -> None:
        with log.open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    @app.tool()
    def write_note(text: str) -> str:
        """Append a note."""
        effect(f"write_note {text}")
        return f"wrote {text}"

    @app.tool()
    def delete_all() -> str:
        """Delete every note."""
        effect("delete_all")
        return "deleted"

    @app.tool()
    def undeclared() -> str:
        """A tool no manifest declares."""
        effect("undeclared")
        return "ran"

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--log", required=True, type=Path)
    parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on this 127.0.0.1 port")
    ns = parser.parse_args(argv)
    app = _build(ns.log)
    if ns.http is None:
        app.run("stdio")
        return
    import uvicorn

    uvicorn.run(app.streamable_http_app(), host="127.0.0.1", port=ns.http, log_level="warning")


if __name__ == "__main__":
    main()
