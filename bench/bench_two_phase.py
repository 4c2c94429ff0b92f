"""Two-phase commit vs one phase, per call, in the same run.

    python bench/bench_two_phase.py [--n 2000]

Two tools of the same shape under one Court and one policy (a rate limit, so the
commit has counters to compare): ``post`` (``message.chat``, irreversible: guard.run
takes preflight -> commit -> execute) and ``note`` (``memory.write``, reversible: one
decision). Rows on memory stores and on the SQLite default (``data_dir``); then the
explicit ``preflight`` + ``commit`` pair, and a one-phase call with a signed receipt.
No target is set by the issue; the figures say what the second phase costs here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

from _report import pct  # bench/ is on sys.path: these run as scripts

from execauth_core import Court, Guard, ToolRegistry, parse_policy


def court() -> Court:
    registry = ToolRegistry()
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    registry.register({"name": "post", "version": "1", "effects": ["message.chat"], "args_schema": schema})
    registry.register({"name": "note", "version": "1", "effects": ["memory.write"], "args_schema": schema})
    policy = parse_policy(
        {
            "id": "bench",
            "epoch": 1,
            "principals": [
                {
                    "id": "user-42",
                    "allow_tools": ["post", "note"],
                    "max_risk_tier": "E1",
                    "rate_limits": [{"tool": "*", "limit": 10**9, "window": 3600}],
                }
            ],
        }
    )
    return Court(policy, registry)


def timed(n: int, fn: Any) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def rows(label: str, guard: Guard, n: int) -> None:
    post = guard.proposal("post", {"text": "hello"}, principal="user-42")
    note = guard.proposal("note", {"text": "hello"}, principal="user-42")
    for _ in range(min(n, 200)):  # warm up both paths
        guard.run(post, lambda: None)
        guard.run(note, lambda: None)
    one = timed(n, lambda: guard.run(note, lambda: None))
    two = timed(n, lambda: guard.run(post, lambda: None))
    explicit = timed(n, lambda: guard.commit(guard.preflight(post), lambda: None))
    receipt = timed(n, lambda: guard.run(note, lambda: None, receipt=True))
    (o50, o99), (t50, t99) = pct(one), pct(two)
    print(
        f"{label}: one-phase p50 {o50:.0f} us p99 {o99:.0f} | two-phase p50 {t50:.0f} us p99 {t99:.0f}"
        f" | second phase costs p50 {t50 - o50:.0f} us ({t50 / o50:.2f}x)"
    )
    e50, e99 = pct(explicit)
    r50, r99 = pct(receipt)
    print(
        f"{label}: preflight()+commit() p50 {e50:.0f} us p99 {e99:.0f} | one-phase with receipt p50 {r50:.0f} us"
        f" p99 {r99:.0f} (receipt costs p50 {r50 - o50:.0f} us)"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    memory = Guard.local(court())
    rows("memory", memory, n)
    memory.close()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = Guard.local(court(), data_dir=tmp)
        rows("sqlite", sqlite, n)
        sqlite.close()


if __name__ == "__main__":
    main()
