"""Latency of execauth-core's guard. Prints p50/p99 next to the issue's targets.

    nox -s bench            # or: python bench/bench_core.py [--n 5000]

Targets (issue 2, 2-core machine): guarded-call overhead p50 <= 200 us with
memory stores, <= 600 us with SQLite; `import execauth_core` <= 150 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from execauth_core import AllowListPolicy, Guard


def percentiles(samples: list[float]) -> tuple[float, float]:
    samples = sorted(samples)
    p50 = statistics.median(samples)
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    return p50, p99


def measure(fn: Callable[[int], object], n: int, warmup: int = 200) -> tuple[float, float]:
    for i in range(warmup):
        fn(i)
    out = []
    for i in range(n):
        t = time.perf_counter_ns()
        fn(i)
        out.append((time.perf_counter_ns() - t) / 1000)
    return percentiles(out)


def tool(query: str, limit: int) -> int:
    return len(query) + limit


def guarded(guard: Guard) -> Callable[[int], object]:
    def call(i: int) -> object:
        req = guard.proposal("search", {"query": f"q{i}", "limit": 10}, principal="user-1", agent="bench")
        return guard.run(req, lambda: tool(**req.args))

    return call


def import_time(runs: int = 7) -> float:
    best = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import execauth_core"], check=True)
        total = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best.append(total - (time.perf_counter() - t))
    return statistics.median(best) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    args = parser.parse_args()
    policy = AllowListPolicy(["search"])
    rows = []
    bare = measure(lambda i: tool(f"q{i}", 10), args.n)
    rows.append(("bare tool call", bare, None))
    mem = measure(guarded(Guard.local(policy)), args.n)
    rows.append(("guarded call, memory stores", mem, 200.0))
    with tempfile.TemporaryDirectory() as d:
        sql = measure(guarded(Guard.local(policy, data_dir=d)), args.n)
    rows.append(("guarded call, SQLite stores", sql, 600.0))
    print(f"execauth-core guard latency, n={args.n} (microseconds; overhead = guarded - bare)")
    print(f"{'case':32} {'p50':>9} {'p99':>9} {'p50 overhead':>13}  target")
    for name, (p50, p99), target in rows:
        over = p50 - bare[0]
        verdict = "" if target is None else f"<= {target:.0f} us: {'MET' if over <= target else 'MISSED'}"
        print(f"{name:32} {p50:9.1f} {p99:9.1f} {over:13.1f}  {verdict}")
    ms = import_time()
    print(f"import execauth_core: {ms:.0f} ms (target <= 150 ms: {'MET' if ms <= 150 else 'MISSED'})")


if __name__ == "__main__":
    main()
