"""Guarded-call latency and throughput on each store backend, 1 and 4 processes.

    python bench/bench_stores.py [--n 2000] [--backends memory,sqlite,redis,redis-aof,postgres,...]

Each process runs its own guard (decide -> token -> verify -> consume the id ->
audit "execution" -> call -> audit "result") on the backend under test; with 4
processes they share one backend, as replicas would (memory stores cannot be
shared: each process then has its own). Redis and PostgreSQL come from
REDIS_URL / DATABASE_URL (defaults: the local test servers), in a throwaway
key prefix / schema removed afterwards. Two rows show what durability costs:
``redis-aof`` is a throwaway redis-server with ``appendfsync always`` (the setting
docs/deploying.md asks for; the shared test Redis keeps nothing on disk), and
``postgres-nosync`` runs with ``synchronous_commit=off`` (NOT durable: a server
crash can forget the last consumed ids; for comparison only). ``postgres-asyncres``
is ``?result_commit=async``: only result entries (written after the tool ran)
commit asynchronously, everything else stays durable. ``redis+pg`` is the split
docs/deploying.md suggests for many replicas: replay on Redis, audit log on
PostgreSQL (two stores, so the guard consumes and appends in two calls).

The ``memory`` row with 4 processes (4 separate stores, nothing shared) is this
machine's ceiling for the 4-process figure: no shared backend can scale better.
A pure-Python calibration loop is printed first, to compare machines.

Targets (issue 9, loopback): Redis and PostgreSQL guarded-call p50 <= 1.5 ms;
4 processes give >= 2.5x the throughput of 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
P50_TARGET_MS = 1.5
SCALE_TARGET = 2.5


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode([*parse_qsl(parts.query), *params.items()], quote_via=quote)))


def worker(url: str, n: int, warmup: int) -> None:
    """One replica: build a guard on ``url``, wait for "go", time ``n`` guarded calls.

    ``url`` may be ``REPLAY_URL|AUDIT_URL`` for stores on two backends."""
    from execauth_core import AllowListPolicy, Authority, Guard, KeySet, LocalSigner, TokenVerifier
    from execauth_core.stores.urls import open_stores

    replay_url, _, audit_url = url.partition("|")
    stores = open_stores(replay_url)
    audit = open_stores(audit_url) if audit_url else stores
    signer = LocalSigner.generate()
    guard = Guard(
        authority=Authority(AllowListPolicy(["search"]), signer, issuer="bench", audience="bench"),
        verifier=TokenVerifier(keys=KeySet.of_signer(signer), issuer="bench", audience="bench", max_ttl=60),
        replay_store=stores.replay,
        audit_log=audit.audit,
    )

    def call(i: int) -> None:
        req = guard.proposal("search", {"query": f"q{i}", "limit": 10}, principal="user-1", agent="bench")
        guard.run(req, lambda: len(req.args["query"]))

    for i in range(warmup):
        call(-i - 1)
    print("ready", flush=True)
    sys.stdin.readline()
    samples = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter_ns()
        call(i)
        samples.append((time.perf_counter_ns() - t) / 1e6)
    elapsed = time.perf_counter() - start
    stores.close()
    audit.close()
    print(json.dumps({"samples": samples, "elapsed": elapsed}))  # noqa: TID251 - timings for the parent, never signed


def calibrate() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 3): how fast this machine is."""
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        total = 0
        for i in range(5_000_000):
            total += i
        best = min(best, time.perf_counter() - t)
    return best * 1000


def cpu_steal() -> tuple[int, int] | None:
    """(steal, total) CPU ticks since boot from /proc/stat, or None off Linux.

    Steal is time the hypervisor ran something else while this VM wanted the CPU:
    a run with much of it measured the neighbours as much as execauth."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (ticks[7] if len(ticks) > 7 else 0), sum(ticks[:8])


def run(url: str, processes: int, n: int, warmup: int) -> dict[str, float]:
    procs = [
        subprocess.Popen(
            [sys.executable, __file__, "--worker", url, "--n", str(n), "--warmup", str(warmup)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a worker on {url} failed to start")
    before = cpu_steal()
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.communicate(timeout=600)[0]) for p in procs]
    after = cpu_steal()
    samples = sorted(s for r in results for s in r["samples"])
    wall = max(r["elapsed"] for r in results)
    steal = -1.0
    if before is not None and after is not None and after[1] > before[1]:
        steal = 100.0 * (after[0] - before[0]) / (after[1] - before[1])
    return {
        "p50": statistics.median(samples),
        "p99": samples[min(len(samples) - 1, int(len(samples) * 0.99))],
        "throughput": len(samples) / wall,
        "steal": steal,
    }


@contextlib.contextmanager
def redis_with_aof(tmp: str) -> Iterator[str]:
    """A throwaway redis-server that fsyncs its append-only file before every reply."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not on PATH")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = ["--port", str(port), "--bind", "127.0.0.1", "--dir", tmp, "--save", ""]
    args += ["--appendonly", "yes", "--appendfsync", "always"]
    proc = subprocess.Popen([binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    break
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cleanup(name: str, url: str) -> None:
    if name == "redis+pg":
        replay_url, _, audit_url = url.partition("|")
        cleanup("redis", replay_url)
        cleanup("postgres", audit_url)
    elif name == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        prefix = dict(parse_qsl(urlsplit(url).query))["prefix"]
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
        client.close()
    elif name.startswith("postgres"):
        import psycopg

        schema = dict(parse_qsl(urlsplit(url).query))["schema"]
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000, help="timed guarded calls per process")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument(
        "--backends", default="memory,sqlite,redis,redis-aof,postgres,postgres-asyncres,postgres-nosync,redis+pg"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per backend, taking turns; medians reported")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.n, args.warmup)
        return
    names = args.backends.split(",")
    print(f"execauth guarded call (decide + enforce, AllowListPolicy) per backend; n={args.n} per process")
    print(f"machine: {os.cpu_count()} CPUs; calibration: {calibrate():.0f} ms for 5M pure-Python loop steps")
    if args.repeat > 1:
        print(f"each row: the median of {args.repeat} runs, the backends taking turns (p50 range in brackets)")
    print("latencies in ms, throughput in guarded calls/s; steal: CPU the hypervisor gave to others during the run")
    print("(more than a few % of steal and the row measures the host's load as much as execauth)\n")
    runs: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {name: [] for name in names}
    failed: dict[str, str] = {}
    for _ in range(args.repeat):
        for name in names:
            if name in failed:
                continue
            try:
                runs[name].append(measure(name, args.n, args.warmup))
            except Exception as exc:  # noqa: BLE001 - report a backend that cannot run, go on with the rest
                failed[name] = str(exc)
    # The machine may have changed speed meanwhile (a VM's host can slow it down
    # without showing steal): a second calibration shows the drift.
    print(f"calibration after the runs: {calibrate():.0f} ms\n")
    print(f"{'backend':17} {'procs':>5} {'p50':>7} {'p99':>7} {'calls/s':>9} {'steal':>6}  target")
    for name in names:
        if name in failed:
            print(f"{name:17} unavailable: {failed[name]}")
            continue
        one, four = (median_of([r[k] for r in runs[name]]) for k in (0, 1))
        spread = (
            f" [{min(r[0]['p50'] for r in runs[name]):.2f}-{max(r[0]['p50'] for r in runs[name]):.2f}]"
            if args.repeat > 1
            else ""
        )
        wants_p50 = name in ("redis", "redis-aof", "postgres", "postgres-asyncres", "redis+pg")
        verdict = (
            f"p50 <= {P50_TARGET_MS} ms: {'MET' if one['p50'] <= P50_TARGET_MS else 'MISSED'}" if wants_p50 else ""
        )
        print(
            f"{name:17} {1:5} {one['p50']:7.3f} {one['p99']:7.3f} {one['throughput']:9.0f} {steal(one)}  "
            f"{verdict}{spread}"
        )
        scale = four["throughput"] / one["throughput"]
        shared = " (4 separate memory stores: this machine's ceiling)" if name == "memory" else ""
        print(
            f"{name:17} {4:5} {four['p50']:7.3f} {four['p99']:7.3f} {four['throughput']:9.0f} {steal(four)}  "
            f"x{scale:.2f} of 1 process, >= {SCALE_TARGET}x: {'MET' if scale >= SCALE_TARGET else 'MISSED'}{shared}"
        )


def steal(result: dict[str, float]) -> str:
    return f"{result['steal']:5.1f}%" if result["steal"] >= 0 else "     -"


def median_of(results: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def measure(name: str, n: int, warmup: int) -> tuple[dict[str, float], dict[str, float]]:
    """One run of ``name`` with 1, then 4 processes, on a fresh namespace (removed after)."""
    tag = secrets.token_hex(4)
    url = ""
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        try:
            url = {
                "memory": lambda: "memory://",
                "sqlite": lambda: f"sqlite://{tmp}/bench.db",
                "redis": lambda: with_query(REDIS_URL, prefix=f"execauth-bench:{tag}:"),
                "redis-aof": lambda: stack.enter_context(redis_with_aof(tmp)),
                "postgres": lambda: with_query(DATABASE_URL, schema=f"execauth_bench_{tag}"),
                "postgres-asyncres": lambda: with_query(
                    DATABASE_URL, schema=f"execauth_bench_{tag}_asyncres", result_commit="async"
                ),
                "postgres-nosync": lambda: with_query(
                    DATABASE_URL, schema=f"execauth_bench_{tag}_nosync", options="-c synchronous_commit=off"
                ),
                "redis+pg": lambda: (
                    with_query(REDIS_URL, prefix=f"execauth-bench:{tag}:split:")
                    + "|"
                    + with_query(DATABASE_URL, schema=f"execauth_bench_{tag}_split")
                ),
            }[name]()
            return run(url, 1, n, warmup), run(url, 4, n, warmup)
        finally:
            if url and name in ("redis", "postgres", "postgres-asyncres", "postgres-nosync", "redis+pg"):
                try:
                    cleanup(name, url)
                except Exception as exc:  # noqa: BLE001 - cleanup is best effort
                    print(f"  (cleanup of {name} failed: {exc})")


if __name__ == "__main__":
    main()
