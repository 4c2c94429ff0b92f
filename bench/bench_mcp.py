"""execauth-mcp: proxy overhead per tools/call against a direct client -> server call.

Runs the test server (packages/mcp/tests/upstream_server.py) over stdio and over
streamable HTTP on a loopback ephemeral port; for each, N calls directly and N calls
through ``execauth mcp-proxy`` (local guard, in-memory stores). Prints p50/p99 in ms.

    python bench/bench_mcp.py [--calls N]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anyio
import yaml
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

ROOT = Path(__file__).resolve().parent.parent
UPSTREAM = str(ROOT / "packages" / "mcp" / "tests" / "upstream_server.py")
CONFIG = {
    "server": "files",
    "principal": "alice",
    "policy": {
        "id": "bench",
        "epoch": 1,
        "principals": [{"id": "alice", "allow_tools": ["files.write_note"], "max_risk_tier": "E1"}],
    },
    "manifests": [
        {
            "name": "files.write_note",
            "version": "1",
            "args_schema": {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]},
            "effects": ["file.write"],
        }
    ],
    "call_timeout": 10,
}


async def timed(session: ClientSession, n: int) -> list[float]:
    await session.call_tool("write_note", {"text": "warm"})
    out = []
    for i in range(n):
        t = time.perf_counter()
        result = await session.call_tool("write_note", {"text": f"b{i}"})
        out.append((time.perf_counter() - t) * 1000)
        if result.is_error:
            raise SystemExit(f"bench call failed: {result.content}")
    return out


async def over_stdio(command: list[str], env: dict[str, str], n: int) -> list[float]:
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    with anyio.fail_after(300):
        async with stdio_client(params) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            return await timed(s, n)


async def over_http(url: str, n: int) -> list[float]:
    with anyio.fail_after(300):
        async with streamable_http_client(url) as (r, w), ClientSession(r, w) as s:
            await s.initialize()
            return await timed(s, n)


def show(label: str, ms: list[float]) -> float:
    ms = sorted(ms)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    print(f"{label:<28} p50 {p50:7.2f} ms   p99 {p99:7.2f} ms   (n={len(ms)})")
    return p50


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=200)
    n = ap.parse_args().calls
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "UPSTREAM_LOG": str(Path(tmp) / "effects.log")}
        cfg = Path(tmp) / "proxy.yaml"
        cfg.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
        proxy = [sys.executable, "-m", "execauth_mcp", "--config", str(cfg)]
        direct = anyio.run(over_stdio, [sys.executable, UPSTREAM], env, n)
        gated = anyio.run(over_stdio, [*proxy, "--", sys.executable, UPSTREAM], env, n)
        a, b = show("stdio direct", direct), show("stdio via proxy", gated)
        print(f"{'stdio proxy overhead':<28} p50 {b - a:7.2f} ms")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = subprocess.Popen([sys.executable, UPSTREAM, "http", str(port)], env=env, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the HTTP server did not start") from None
                    time.sleep(0.05)
            url = f"http://127.0.0.1:{port}/mcp"
            direct = anyio.run(over_http, url, n)
            gated = anyio.run(over_stdio, [*proxy, "--url", url], env, n)
            a, b = show("http direct", direct), show("http via proxy (stdio face)", gated)
            print(f"{'http proxy overhead':<28} p50 {b - a:7.2f} ms")
        finally:
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()
