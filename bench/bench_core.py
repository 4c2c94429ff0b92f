"""Latency of execauth-core's guard. Prints p50/p99 next to the issue's targets.

    nox -s bench            # or: python bench/bench_core.py [--n 5000]

Targets (issue 2, 2-core machine): guarded-call overhead p50 <= 200 us with
memory stores, <= 600 us with SQLite. Issue 20, as ratios measured in the same
rounds (a shared machine's load moves absolute figures, not ratios): the full path on
memory stores <= 1.6x the crypto floor (one RFC 8785 canonicalization of the proposal,
one Ed25519 sign, one verify), with the Court and an 18-rule policy <= 2.2x;
`import execauth_core` <= 100 ms.

    python bench/bench_core.py --profile    # where the time of a guarded call goes
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


def crypto_floor(canon: Callable[[object], bytes]) -> Callable[[int], object]:
    """The floor of a signed, verified call: canonicalize the proposal once, sign it
    once, verify it once (what no design that signs and checks every call avoids)."""
    from execauth_core import LocalSigner
    from execauth_core.keys import KeySet

    signer = LocalSigner.generate()
    key = KeySet.of_signer(signer).get(signer.kid)
    assert key is not None

    def call(i: int) -> object:
        proposal = {
            "v": "execauth.request/1",
            "tool": "search",
            "args": {"query": f"q{i}", "limit": 10},
            "principal": "user-1",
            "agent": "bench",
            "call_id": None,
            "manifest_digest": None,
            "context_refs": [],
        }
        raw = canon(proposal)
        return key.verify(raw, signer.sign(raw))

    return call


def court_guard() -> tuple[Guard, int]:
    from execauth_core import Court, EvidenceGrade, PreflightResult, ToolRegistry, parse_policy

    registry = ToolRegistry()
    registry.register(BENCH_TOOLS[0])
    registry.register(BENCH_TOOLS[1], preflight=lambda a: PreflightResult(True, EvidenceGrade.SIMULATED))
    policy = parse_policy(BENCH_POLICY)
    return Guard.local(Court(policy, registry)), policy.rule_count()


def rounds(cases: dict[str, Callable[[int], object]], n: int, k: int) -> dict[str, list[float]]:
    """``k`` rounds; in each, every case runs ``n // k`` calls back to back (so load
    on a shared machine hits all of them alike). Returns each case's round p50s."""
    out: dict[str, list[float]] = {name: [] for name in cases}
    per = max(50, n // k)
    for r in range(k):
        for name, fn in cases.items():
            out[name].append(measure(lambda i, fn=fn, r=r: fn(r * 1_000_000 + i), per, warmup=50)[0])
    return out


def ratio_figures(n: int, k: int = 15) -> None:
    """Issue 20 target 1: the full guarded path as a multiple of the crypto floor,
    measured in the same rounds; medians of the per-round p50s and ratios."""
    import rfc8785

    from execauth_core.canonical import canonicalize

    court, rules = court_guard()
    refund = court.proposal(
        "refund", {"order": "A-1", "amount": "12.50", "currency": "USD"}, principal="user-1", agent="bench"
    )
    memory = Guard.local(AllowListPolicy(["search"]))
    cases: dict[str, Callable[[int], object]] = {
        "floor (rfc8785 lib + sign + verify)": crypto_floor(rfc8785.dumps),
        "floor (execauth canonicalize)": crypto_floor(canonicalize),
        "run, allow-list, memory": guarded(memory),
        f"run, Court {rules} rules, memory": lambda i: court.run(refund, lambda: None),
    }
    got = rounds(cases, n, k)
    floor = got["floor (rfc8785 lib + sign + verify)"]
    fast_floor = got["floor (execauth canonicalize)"]
    print(f"\nfull path vs the crypto floor, {k} rounds (median of round p50s, us; ratio = median of round ratios)")
    print(f"{'case':40} {'p50':>8} {'/floor':>7} {'/floor(fast)':>12}  target")
    targets = {"run, allow-list, memory": 1.6, f"run, Court {rules} rules, memory": 2.2}
    for name, p50s in got.items():
        ratio = statistics.median(p / f for p, f in zip(p50s, floor, strict=True))
        fast = statistics.median(p / f for p, f in zip(p50s, fast_floor, strict=True))
        target = targets.get(name)
        verdict = "" if target is None else f"<= {target}x floor: {'MET' if ratio <= target else 'MISSED'}"
        print(f"{name:40} {statistics.median(p50s):8.1f} {ratio:7.2f} {fast:12.2f}  {verdict}")


def import_time(stmt: str = "import execauth_core", runs: int = 7) -> float:
    """Median of ``runs`` (a fresh interpreter running ``stmt``) minus (one running ``pass``), ms."""
    best = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", stmt], check=True)
        total = time.perf_counter() - t
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        best.append(total - (time.perf_counter() - t))
    return statistics.median(best) * 1000


def importtime_top(stmt: str, top: int = 8) -> list[str]:
    """The slowest modules (cumulative) that ``python -X importtime -c stmt`` reports."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", stmt], capture_output=True, text=True, check=True)
    rows = []
    for line in proc.stderr.splitlines():
        parts = line.removeprefix("import time:").split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    return [f"  {us / 1000:7.1f} ms  {name}" for us, name in sorted(rows, reverse=True)[:top]]


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
    ratio_figures(args.n)
    ms = import_time()
    print(f"\nimport execauth_core: {ms:.0f} ms (issue 20 target <= 100 ms: {'MET' if ms <= 100 else 'MISSED'})")
    print(*importtime_top("import execauth_core", 4), sep="\n")
    guard_ms = import_time("from execauth_core import Guard")
    print(f"from execauth_core import Guard (loads pydantic, PyNaCl, the stores): {guard_ms:.0f} ms; slowest:")
    print(*importtime_top("from execauth_core import Guard"), sep="\n")


if __name__ == "__main__":
    main()
