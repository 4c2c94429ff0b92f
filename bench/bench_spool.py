"""The audit spool: what an outage costs a denial, and how fast a flush drains.

    python bench/bench_spool.py [--n 2000]

Rows: one spool append (canonical line, hash, write, fsync); a denial while the audit
log is down (decide -> the log refuses -> spool -> ExecutionDenied with
AUDIT_SPOOLED); a guarded call on SQLite with and without a spool configured (the
idle check after each append); a flush of n records into a SQLite log (records/s).
No target is set by the issue; the figures say what to expect from the disk here.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from _report import pct  # bench/ is on sys.path: these run as scripts

from execauth_core import AllowListPolicy, ExecutionDenied, Guard, Spool, StoreUnavailable
from execauth_core.stores.sqlite import SQLiteAuditLog


class Down:
    def append(self, event: Any) -> Any:
        raise StoreUnavailable("audit log: connection refused")

    def head(self) -> Any:
        raise StoreUnavailable("audit log: connection refused")

    def entries(self, start: int = 1) -> Any:
        raise StoreUnavailable("audit log: connection refused")


def timed(n: int, fn: Any) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1e6)
    return out


def line(name: str, us: list[float]) -> None:
    p50, p99 = pct(us)
    print(f"{name}: p50 {p50:.0f} us p99 {p99:.0f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        spool = Spool(folder / "a.spool")
        event = {"event": "denial", "time": 1, "executed": False, "tool": "search", "reason_codes": ["X"]}
        line("spool append (fsync)", timed(n, lambda: spool.append(event)))

        guard = Guard.local(AllowListPolicy(("search",)), spool=folder / "b.spool")
        guard.audit_log = Down()  # type: ignore[assignment]
        req = guard.proposal("delete", {}, principal="u")

        def spooled_denial() -> None:
            try:
                guard.run(req, lambda: None)
            except ExecutionDenied as exc:
                assert exc.reason_codes[-1] == "AUDIT_SPOOLED"

        line("denial with the log down (spooled)", timed(n, spooled_denial))

        for label, spool_arg in (("without spool", False), ("with idle spool", True)):
            g = Guard.local(AllowListPolicy(("search",)), data_dir=folder / label, spool=spool_arg)
            r = g.proposal("search", {}, principal="u")
            line(f"guarded call on SQLite {label}", timed(n, lambda g=g, r=r: g.run(r, lambda: None)))
            g.close()

        log = SQLiteAuditLog(folder / "log.db")
        t = time.perf_counter()
        result = Spool(folder / "b.spool").flush(log)
        took = time.perf_counter() - t
        print(f"flush into SQLite: {result.replayed} records in {took:.2f} s ({result.replayed / took:.0f} records/s)")
        log.close()


if __name__ == "__main__":
    main()
