"""The effect ledger: what it adds to one guarded call, on SQLite and PostgreSQL.

    python bench/bench_ledger.py [--n 1000]

Each row times a full guarded call (``guard.run``: decide, verify, take the key,
consume, record, call, record the outcome) with a fresh tool-call id, with the ledger
on and off, over the same stores; the overhead is the difference of the medians (two
ledger writes per call: ``started`` before, the outcome after). A last row times a
repeat of an already finished key (answered from the ledger, no decision). PostgreSQL
is DATABASE_URL (default: the local test server) in a throwaway schema, dropped
afterwards; unreachable, its rows say so. No target is set by the issue.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import pct  # bench/ is on sys.path: these run as scripts

from execauth_core import AllowListPolicy, ExecutionDenied, Guard
from execauth_core.ledger import Ledger, open_ledger

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def timed(n: int, fn: Any) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append((time.perf_counter() - t) * 1e6)
    return out


def guard(url: str, ledger: bool) -> Guard:
    led: Ledger | bool = Ledger(open_ledger(url)) if ledger else False
    return Guard.local(AllowListPolicy(["refund"]), stores=url, ledger=led)


def measure(g: Guard, n: int) -> list[float]:
    """n guarded calls, each with a fresh tool-call id (so a fresh key)."""
    tag = secrets.token_hex(4)
    calls = [
        g.proposal("refund", {"order": f"A-{i}", "amount": "5.00"}, principal="u", call_id=f"{tag}-{i}")
        for i in range(n)
    ]
    for i in range(min(50, n)):  # warm up the connection and the caches
        g.run(g.proposal("refund", {"order": "w"}, principal="u", call_id=f"{tag}-w{i}"), lambda: "ok")
    return timed(n, lambda i: g.run(calls[i], lambda: "ok"))


def repeat(g: Guard, n: int) -> list[float]:
    """n repeats of one finished call: answered from the ledger, recorded, not run."""
    again = g.proposal("refund", {"order": "again"}, principal="u", call_id=secrets.token_hex(4))
    g.run(again, lambda: "ok")

    def once(_: int) -> None:
        try:
            g.run(again, lambda: "ok")
        except ExecutionDenied:
            pass

    return timed(n, once)


def rows(name: str, url: str, n: int) -> None:
    figures: dict[object, list[float]] = {}
    for on in (False, True, False, True):  # interleaved: drift hits both alike
        g = guard(url, on)
        figures.setdefault(on, []).extend(measure(g, n))
        if on:
            figures["repeat"] = repeat(g, n)
        g.close()
    off, on_ = pct(figures[False]), pct(figures[True])
    rep = pct(figures["repeat"])
    print(f"{name}: guarded call without ledger p50 {off[0]:.0f} us p99 {off[1]:.0f} us")
    print(f"{name}: guarded call with ledger    p50 {on_[0]:.0f} us p99 {on_[1]:.0f} us")
    print(f"{name}: ledger overhead per call    p50 {on_[0] - off[0]:.0f} us")
    print(f"{name}: repeat of a finished key    p50 {rep[0]:.0f} us p99 {rep[1]:.0f} us (answered, not run)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=1000)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        rows("sqlite", f"sqlite:{Path(tmp) / 'execauth.db'}", n)
    schema = f"execauth_bench_ledger_{secrets.token_hex(4)}"
    try:
        import psycopg

        psycopg.connect(DATABASE_URL, connect_timeout=2).close()
    except Exception as exc:  # noqa: BLE001 - a bench without the server says so
        print(f"postgres: skipped ({type(exc).__name__}: {exc})")
        return
    sep = "&" if "?" in DATABASE_URL else "?"
    try:
        rows("postgres", f"{DATABASE_URL}{sep}schema={schema}", n)
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


if __name__ == "__main__":
    main()
