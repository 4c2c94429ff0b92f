"""A small MCP server for the tests, written with the SDK.

Every tool call that runs appends one line to the file named by ``UPSTREAM_LOG``,
so a test can tell whether (and how often) a side effect happened.

    python upstream_server.py            # stdio
    python upstream_server.py http PORT  # streamable HTTP on 127.0.0.1:PORT
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context

middleware = []
if os.environ.get("UPSTREAM_JWKS"):
    import json

    from execauth_core import KeySet
    from execauth_mcp import require_execauth

    keys = KeySet.from_jwks(json.loads(Path(os.environ["UPSTREAM_JWKS"]).read_text()))
    middleware.append(require_execauth(server="files", keys=keys, issuer="execauth-local", audience="execauth-guard"))

mcp = MCPServer("files", instructions="a test server", middleware=middleware)


def _effect(line: str) -> None:
    with open(os.environ["UPSTREAM_LOG"], "a", encoding="utf-8") as f:
        f.write(line + "\n")


@mcp.tool()
def write_note(text: str) -> str:
    """Append a note."""
    _effect(f"write_note {text}")
    return f"wrote {text}"


@mcp.tool()
def delete_all() -> str:
    """Delete every note."""
    _effect("delete_all")
    return "deleted"


@mcp.tool()
def publish(text: str) -> str:
    """Publish a note to the world."""
    _effect(f"publish {text}")
    return "published"


@mcp.tool()
def undeclared() -> str:
    """A tool no manifest declares."""
    _effect("undeclared")
    return "ran"


@mcp.tool()
def crash() -> str:
    """Kill the server mid-call."""
    _effect("crash")
    os._exit(3)


@mcp.tool()
async def sleep(seconds: float) -> str:
    """Take a while."""
    _effect(f"sleep {seconds}")
    await anyio.sleep(seconds)
    return "slept"


@mcp.tool()
async def steps(n: int, ctx: Context) -> str:
    """Report progress n times."""
    _effect(f"steps {n}")
    for i in range(n):
        await ctx.report_progress(i + 1, n, f"step {i + 1}")
    return "stepped"


@mcp.resource("note://readme")
def readme() -> str:
    """A resource, to check resources pass through."""
    return "hello from the upstream"


@mcp.prompt()
def greet(name: str) -> str:
    """A prompt, to check prompts pass through."""
    return f"Say hello to {name}."


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        import uvicorn

        uvicorn.run(mcp.streamable_http_app(), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
    else:
        mcp.run("stdio")
