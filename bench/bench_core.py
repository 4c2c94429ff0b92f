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


BENCH_POLICY = {
    "id": "bench",
    "epoch": 1,
    "invariants": {"approval_at_or_above_tier": "E4", "forbidden_effects": ["permission.change", "code.deploy"]},
    "principals": [
        {
            "id": "user-1",
            "agents": ["bench", "billing-bot"],
            "allow_tools": ["search", "refund"],
            "allow_effects": ["data.read", "payment.refund"],
            "max_risk_tier": "E3",
            "amount_ceilings": {"USD": "500.00", "EUR": "400.00"},
            "budgets": [
                {"currency": "USD", "limit": "1000000.00", "window": 86400},
                {"currency": "USD", "limit": "9000000.00", "window": 604800},
            ],
            "rate_limits": [
                {"tool": "*", "limit": 1000000, "window": 60},
                {"tool": "refund", "limit": 1000000, "window": 3600},
            ],
            "time_windows": [{"start": "00:00", "end": "24:00"}],
            "require_approval_above": {"USD": "450.00"},
            "require_evidence_effects": [],
        }
    ],
}
BENCH_TOOLS = [
    {
        "name": "search",
        "version": "1",
        "effects": ["data.read"],
        "args_schema": {
            "type": "object",
            "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
            "required": ["query"],
            "additionalProperties": False,
        },
    },
    {
        "name": "refund",
        "version": "1",
        "effects": ["payment.refund"],
        "amount_arg": "amount",
        "currency_arg": "currency",
        "args_schema": {
            "type": "object",
            "properties": {"order": {"type": "string"}, "amount": {"type": "string"}, "currency": {"type": "string"}},
            "required": ["order", "amount", "currency"],
        },
    },
]


def court_figures(n: int) -> list[tuple[str, tuple[float, float], float | None]]:
    from execauth_core import Authority, Court, EvidenceGrade, LocalSigner, PreflightResult, ToolRegistry, parse_policy

    registry = ToolRegistry()
    registry.register(BENCH_TOOLS[0])
    registry.register(BENCH_TOOLS[1], preflight=lambda a: PreflightResult(True, EvidenceGrade.SIMULATED))
    policy = parse_policy(BENCH_POLICY)
    court = Court(policy, registry)
    guard = Guard.local(court)
    now = int(time.time())
    req = guard.proposal(
        "refund", {"order": "A-1", "amount": "12.50", "currency": "USD"}, principal="user-1", agent="bench"
    )
    assert court.evaluate(req, now=now, approved=False).outcome.value == "ALLOW"
    authority = Authority(court, LocalSigner.generate(), issuer="i", audience="a")
    print(f"bench policy: {policy.rule_count()} rules")
    return [
        (
            "Court.evaluate (decide, no debit)",
            measure(lambda i: court.evaluate(req, now=now, approved=False), n),
            100.0,
        ),
        (
            "Court.evaluate + debit",
            measure(lambda i: court.evaluate(req, now=now, approved=False, hold_id=f"h{i}"), n),
            None,
        ),
        (
            "Authority.decide (signed + token)",
            measure(lambda i: authority.decide(req, now=now, token_id=f"bench-token-{i:010d}"), n),
            None,
        ),
        ("guard.run with the Court", measure(lambda i: guard.run(req, lambda: None), n), None),
    ]


def enforcement_only(guard: Guard, n: int) -> tuple[float, float]:
    """guard.execute: verify the token, consume its id, record, call. Decisions are made
    beforehand (as an authority service would), outside the timed region."""
    reqs = [
        guard.proposal("search", {"query": f"q{i}", "limit": 10}, principal="user-1", agent="bench") for i in range(n)
    ]
    tokens = [guard.authorize(r).token for r in reqs]
    out = []
    for req, token in zip(reqs, tokens, strict=True):
        t = time.perf_counter_ns()
        guard.execute(req, token, lambda r=req: tool(**r.args))
        out.append((time.perf_counter_ns() - t) / 1000)
    return percentiles(out)


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


def profile(n: int, top: int = 20) -> None:
    """cProfile of guard.run on memory stores (allow-list, then the Court): where the time goes."""
    import cProfile
    import pstats

    from execauth_core import Court, EvidenceGrade, PreflightResult, ToolRegistry, parse_policy

    registry = ToolRegistry()
    registry.register(BENCH_TOOLS[0])
    registry.register(BENCH_TOOLS[1], preflight=lambda a: PreflightResult(True, EvidenceGrade.SIMULATED))
    court_guard = Guard.local(Court(parse_policy(BENCH_POLICY), registry))
    refund = court_guard.proposal(
        "refund", {"order": "A-1", "amount": "12.50", "currency": "USD"}, principal="user-1", agent="bench"
    )
    cases: list[tuple[str, Callable[[int], object]]] = [
        ("guard.run, allow-list, memory", guarded(Guard.local(AllowListPolicy(["search"])))),
        ("guard.run, Court, memory", lambda i: court_guard.run(refund, lambda: None)),
    ]
    for name, fn in cases:
        for i in range(200):
            fn(i)
        prof = cProfile.Profile()
        prof.enable()
        for i in range(n):
            fn(i)
        prof.disable()
        print(f"\n=== profile: {name}, {n} calls ===")
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of guard.run instead")
    args = parser.parse_args()
    if args.profile:
        profile(min(args.n, 3000))
        return
    policy = AllowListPolicy(["search"])
    rows = []
    bare = measure(lambda i: tool(f"q{i}", 10), args.n)
    rows.append(("bare tool call", bare, None))
    mem = measure(guarded(Guard.local(policy)), args.n)
    rows.append(("enforce (execute), memory", enforcement_only(Guard.local(policy), args.n), 200.0))
    rows.append(("decide+enforce (run), memory", mem, 200.0))
    with tempfile.TemporaryDirectory() as d:
        rows.append(("enforce (execute), SQLite", enforcement_only(Guard.local(policy, data_dir=d), args.n), 600.0))
    with tempfile.TemporaryDirectory() as d:
        sql = measure(guarded(Guard.local(policy, data_dir=d)), args.n)
    rows.append(("decide+enforce (run), SQLite", sql, 600.0))
    court_rows = court_figures(args.n)
    print(f"execauth-core guard latency, n={args.n} (microseconds; overhead = guarded - bare)")
    print(f"{'case':32} {'p50':>9} {'p99':>9} {'p50 overhead':>13}  target")
    for name, (p50, p99), target in rows:
        over = p50 - bare[0]
        verdict = "" if target is None else f"<= {target:.0f} us: {'MET' if over <= target else 'MISSED'}"
        print(f"{name:32} {p50:9.1f} {p99:9.1f} {over:13.1f}  {verdict}")
    print(f"\n{'Court (typical policy, memory state)':38} {'p50':>9} {'p99':>9}  target")
    for name, (p50, p99), target in court_rows:
        verdict = "" if target is None else f"<= {target:.0f} us: {'MET' if p50 <= target else 'MISSED'}"
        print(f"{name:38} {p50:9.1f} {p99:9.1f}  {verdict}")
    ms = import_time()
    print(f"import execauth_core: {ms:.0f} ms (target <= 150 ms: {'MET' if ms <= 150 else 'MISSED'})")


if __name__ == "__main__":
    main()
