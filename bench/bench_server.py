"""The authority service: decide round trip over loopback, beside the in-process figure,
and calls/s with 1 and 2 uvicorn workers on SQLite and PostgreSQL.

    nox -s bench_server          # or: python bench/bench_server.py [--n 300] [--calls 600]

Bounded: --n round trips per latency figure, --calls decisions per throughput figure
(each also stops after --seconds). PostgreSQL comes from DATABASE_URL (default
postgresql://127.0.0.1:5432/test, its own schema, dropped afterwards); unreachable, those
rows say so and are left out. The server runs as its own process(es), as deployed.
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from execauth_core import Authority, AuthorizationRequest, Guard, LocalSigner
from execauth_server.app import build_court
from execauth_server.config import parse_config
from execauth_server.testing import running_server

POLICY = """\
id: bench
epoch: 1
principals:
  - id: alice
    allow_tools: [search_docs]
"""
TOOLS = """\
- name: search_docs
  version: "1.0"
  effects: [data.read]
  args_schema: {type: object, properties: {q: {type: string}}, required: [q]}
"""


def pct(xs: list[float]) -> tuple[float, float]:
    xs = sorted(xs)
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.99))]


def timed(fn: Callable[[int], object], n: int, warmup: int = 30) -> tuple[float, float]:
    for i in range(warmup):
        fn(-1 - i)
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t) / 1000)
    return pct(out)


def body(i: int) -> dict[str, Any]:
    return {"tool": "search_docs", "args": {"q": f"q{i}"}, "principal": "alice"}


def throughput(url: str, credential: str, calls: int, seconds: float, clients: int = 8) -> float:
    """Decisions per second from ``clients`` concurrent keep-alive connections."""
    done = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    per = calls // clients

    def worker(k: int) -> None:
        with httpx.Client(headers={"Authorization": f"Bearer {credential}"}, timeout=10) as c:
            for i in range(per):
                if time.monotonic() > deadline:
                    return
                r = c.post(url + "/v1/decide", json=body(k * 100_000 + i))
                assert r.status_code == 200 and r.json()["outcome"] == "ALLOW", r.text
                with lock:
                    done[0] += 1

    started = time.monotonic()
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return done[0] / (time.monotonic() - started)


def postgres_url() -> tuple[str, Callable[[], None]] | None:
    base = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
    try:
        import psycopg

        admin = psycopg.connect(base, connect_timeout=2, autocommit=True)
    except Exception as exc:  # noqa: BLE001 - unreachable: the rows say so
        print(f"postgresql at {base}: unreachable ({type(exc).__name__}); its rows are left out")
        return None
    schema = f"execauth_bench_{secrets.token_hex(4)}"
    sep = "&" if "?" in base else "?"

    def drop() -> None:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.close()

    return f"{base}{sep}schema={schema}", drop


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=300, help="round trips per latency figure")
    ap.add_argument("--calls", type=int, default=600, help="decisions per throughput figure")
    ap.add_argument("--seconds", type=float, default=15.0, help="time bound per throughput figure")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="execauth-bench-server-"))
    (work / "policy.yaml").write_text(POLICY)
    (work / "tools.yaml").write_text(TOOLS)
    doc = {"policy": str(work / "policy.yaml"), "manifests": str(work / "tools.yaml")}

    # In process: the same Court and key, no HTTP.
    config = parse_config({**doc, "data_dir": str(work / "inproc")})
    from execauth_core.stores.memory import MemoryStateStore

    authority = Authority(build_court(config, MemoryStateStore()), LocalSigner.generate(), issuer="i", audience="a")
    reqs = [AuthorizationRequest(**body(i)) for i in range(args.n + 100)]
    inproc = timed(
        lambda i: authority.decide(reqs[i], now=int(time.time()), token_id=secrets.token_urlsafe(18)), args.n
    )
    local = Guard.local(authority.decision_point)
    guarded_local = timed(
        lambda i: local.run(local.proposal("search_docs", {"q": str(i)}, principal="alice"), lambda: None), args.n
    )

    print(f"execauth-server bench (n={args.n}, 2-core shared machine; microseconds)")
    with running_server({**doc, "data_dir": str(work / "one")}, isolated=True) as srv:
        with httpx.Client(headers={"Authorization": f"Bearer {srv.credential}"}, timeout=10) as c:
            remote = timed(lambda i: c.post(srv.url + "/v1/decide", json=body(i)).raise_for_status(), args.n)
        guard = Guard.remote(srv.url, credential=srv.credential)
        guarded_remote = timed(
            lambda i: guard.run(guard.proposal("search_docs", {"q": str(i)}, principal="alice"), lambda: None), args.n
        )
        guard.close()
    print(f"  decide in process (Authority.decide):   p50 {inproc[0]:7.0f}  p99 {inproc[1]:7.0f}")
    print(
        f"  decide over loopback (POST /v1/decide): p50 {remote[0]:7.0f}  p99 {remote[1]:7.0f}"
        f"   (+{remote[0] - inproc[0]:.0f} us p50 for HTTP, auth, audit entry)"
    )
    print(f"  guarded call, Guard.local:              p50 {guarded_local[0]:7.0f}  p99 {guarded_local[1]:7.0f}")
    print(f"  guarded call, Guard.remote:             p50 {guarded_remote[0]:7.0f}  p99 {guarded_remote[1]:7.0f}")

    print(f"calls/s, 8 concurrent clients, up to {args.calls} decisions or {args.seconds:g} s each:")
    backends: list[tuple[str, str | None, Callable[[], None] | None]] = [("sqlite", None, None)]
    pg = postgres_url()
    if pg is not None:
        backends.append(("postgresql", pg[0], pg[1]))
    try:
        for name, url, _ in backends:
            for workers in (1, 2):
                cfg = {**doc, "data_dir": str(work / f"{name}-{workers}")}
                if url is not None:
                    cfg["stores"] = url
                with running_server(cfg, workers=workers, isolated=True) as srv:
                    throughput(srv.url, srv.credential, 80, 5.0)  # warm up every worker
                    rate = throughput(srv.url, srv.credential, args.calls, args.seconds)
                print(f"  {name:10s} {workers} worker{'s' if workers > 1 else ' '}: {rate:7.0f} calls/s")
    finally:
        for _, _, drop in backends:
            if drop is not None:
                drop()


if __name__ == "__main__":
    main()
