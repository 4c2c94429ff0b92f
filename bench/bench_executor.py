"""Cost of executor-side verification. Prints p50/p99.

    nox -s bench_executor        # or: python bench/bench_executor.py [--n 1000]

1. ``Executor.admit`` in process (memory and SQLite stores): rebuild the proposal from
   the HTTP call, verify the Ed25519 token, consume ``executor:<jti>``, record.
2. Over loopback: the same Starlette handler served by uvicorn (its own process, so
   client and server do not share a GIL) with and without ``ExecAuthMiddleware``;
   the difference is the middleware's overhead per request, as a client sees it.

Tokens are minted before the clock starts: minting is the authority's cost, not the
executor's. Every loop is bounded (``--n`` requests per row).
"""

from __future__ import annotations

import argparse
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import pct

from execauth_core import AllowListPolicy, Authority, AuthorizationRequest, KeySet, LocalSigner
from execauth_core.executor import Executor, HTTPCall, executor_body, executor_headers
from execauth_core.stores.urls import open_stores

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1
AUD, ISS = "bench.tools", "execauth-bench"
ROUTES = {("POST", "/tools/send"): "send"}


def mint_all(n: int) -> list[tuple[AuthorizationRequest, str]]:
    signer = LocalSigner(SEED)
    authority = Authority(AllowListPolicy(["send"]), signer, issuer=ISS, audience=AUD, token_ttl=300)
    out = []
    now = int(time.time())
    for i in range(n):
        req = AuthorizationRequest(tool="send", args={"to": f"user-{i}", "amount": "10.00"}, principal="alice")
        decision = authority.decide(req, now=now, token_id=secrets.token_urlsafe(18))
        assert decision.token is not None
        out.append((req, decision.token))
    return out


def executor(url: str) -> Executor:
    stores = open_stores(url)
    return Executor(
        KeySet.of_signer(LocalSigner(SEED)),
        audience=AUD,
        issuer=ISS,
        replay_store=stores.replay,
        audit_log=stores.audit,
        routes=ROUTES,
    )


def bench_admit(name: str, url: str, n: int) -> None:
    ex = executor(url)
    calls = [
        HTTPCall.of("POST", "/tools/send", executor_headers(req, tok), executor_body(req)) for req, tok in mint_all(n)
    ]
    samples = []
    for call in calls:
        t = time.perf_counter_ns()
        ex.admit(call)
        samples.append((time.perf_counter_ns() - t) / 1000)
    p50, p99 = pct(samples[n // 10 :])  # the first tenth warms caches and the SQLite file
    print(f"Executor.admit, {name} stores: p50 {p50:.0f} us  p99 {p99:.0f} us  (n={n})")


# -- the loopback server (run as a child process) --------------------------------------


def serve(protected: bool, offload: bool) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from execauth_server.executor import ExecAuthMiddleware

    async def send(request: Request) -> JSONResponse:
        return JSONResponse({"sent": await request.json()})

    middleware = []
    if protected:
        middleware = [Middleware(ExecAuthMiddleware, executor=executor("memory://"), offload=offload)]
    app = Starlette(routes=[Route("/tools/send", send, methods=["POST"])], middleware=middleware)
    sock = socket.socket()
    # Accepted connections inherit this: without it uvicorn's response head and body
    # leave as two segments and a delayed ACK adds ~40 ms per request on Linux.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)  # connections queue from now on, before uvicorn is up
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])


def bench_loopback(n: int) -> None:
    import httpx

    rows: list[tuple[str, tuple[float, float]]] = []
    for label, flags in (
        ("unprotected", []),
        ("protected, offload", ["--protected"]),
        ("protected, inline", ["--protected", "--inline"]),
    ):
        child = subprocess.Popen(
            [sys.executable, __file__, "--serve", *flags], stdout=subprocess.PIPE, text=True, env=os.environ.copy()
        )
        try:
            assert child.stdout is not None
            port = int(child.stdout.readline())
            tokens = mint_all(n + 50)
            # TCP_NODELAY: headers and body leave as two writes; without it Nagle and
            # delayed ACKs add ~40 ms to every request and measure nothing of ours.
            nodelay = httpx.HTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, transport=nodelay) as http:
                samples = []
                for i, (req, tok) in enumerate(tokens):
                    headers = executor_headers(req, tok) if flags else {"Content-Type": "application/json"}
                    body = executor_body(req)
                    t = time.perf_counter_ns()
                    r = http.post("/tools/send", headers=headers, content=body)
                    elapsed = (time.perf_counter_ns() - t) / 1000
                    if r.status_code != 200:
                        raise SystemExit(f"bench: {label}: HTTP {r.status_code} {r.text}")
                    if i >= 50:  # warm-up: connection, imports, first JIT of the route
                        samples.append(elapsed)
            rows.append((label, pct(samples)))
        finally:
            child.terminate()
            child.wait(10)
    base = rows[0][1]
    for label, (p50, p99) in rows:
        extra = f"  overhead p50 {p50 - base[0]:+.0f} us  p99 {p99 - base[1]:+.0f} us" if label != rows[0][0] else ""
        print(f"loopback POST, {label}: p50 {p50:.0f} us  p99 {p99:.0f} us{extra}  (n={n})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="calls per row (default 1000)")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--protected", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--inline", action="store_true", help=argparse.SUPPRESS)
    args: Any = parser.parse_args(argv)
    if args.serve:
        serve(args.protected, offload=not args.inline)
        return
    n = max(100, min(args.n, 20_000))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    # A shared machine's other work inflates every row: the load says how much was going on.
    print(f"execauth executor bench, python {sys.version.split()[0]}, {os.cpu_count()} cpus, load {load:.1f}")
    bench_admit("memory", "memory://", n)
    with tempfile.TemporaryDirectory() as tmp:
        bench_admit("SQLite", f"sqlite://{tmp}/executor.db", n)
    bench_loopback(n)


if __name__ == "__main__":
    main()
