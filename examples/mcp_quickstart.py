"""execauth-mcp, offline: a small MCP server behind the gating proxy.

    pip install ./packages/core ./packages/mcp   # from the repository root of a checkout
    python examples/mcp_quickstart.py

Writes a two-tool MCP server (written with the SDK), a policy and the proxy config to
a temporary folder, starts ``execauth mcp-proxy -- python notes_server.py`` as an MCP
client would, and calls both tools through it: ``add_note`` is allowed and runs once,
``wipe_notes`` is denied by the policy and never reaches the server.
"""

from __future__ import annotations

import sys
import tempfile
import textwrap
from pathlib import Path

import anyio
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

SERVER = '''
import sys
from pathlib import Path
from mcp.server import MCPServer

notes = Path(__file__).with_name("notes.txt")
mcp = MCPServer("notes")

@mcp.tool()
def add_note(text: str) -> str:
    """Add a note."""
    with notes.open("a") as f:
        f.write(text + "\\n")
    return f"added {text!r}"

@mcp.tool()
def wipe_notes() -> str:
    """Delete every note."""
    notes.write_text("")
    return "wiped"

mcp.run("stdio")
'''

CONFIG = """
server: notes
principal: alice
policy:
  id: notes-policy
  epoch: 1
  principals:
    - id: alice
      allow_tools: [notes.add_note]
      max_risk_tier: E1
manifests:
  - name: notes.add_note
    version: "1"
    args_schema: {type: object, properties: {text: {type: string}}, required: [text]}
    effects: [file.write]
  - name: notes.wipe_notes
    version: "1"
    args_schema: {type: object, properties: {}}
    effects: [file.delete]
"""


async def main(folder: Path) -> None:
    (folder / "notes_server.py").write_text(textwrap.dedent(SERVER), encoding="utf-8")
    (folder / "proxy.yaml").write_text(CONFIG, encoding="utf-8")
    proxy = StdioServerParameters(
        command=sys.executable,
        args=["-m", "execauth_mcp", "--config", "proxy.yaml", "--", sys.executable, "notes_server.py"],
        cwd=str(folder),
    )
    with anyio.fail_after(60):
        async with stdio_client(proxy) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            for name, args in (("add_note", {"text": "buy milk"}), ("wipe_notes", {})):
                result = await session.call_tool(name, args)
                verdict = "ERROR" if result.is_error else "OK"
                print(f"{name}: {verdict}: {result.content[0].text}")  # type: ignore[union-attr]
    print("notes on disk:", (folder / "notes.txt").read_text().splitlines())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        anyio.run(main, Path(tmp))
