"""The audit log as a Merkle tree: what the tree costs and what proofs cost.

    python bench/bench_tlog.py [--appends 2000] [--leaves 1000000] [--log-n 1000000]
                               [--backends sqlite,redis,postgres] [--budget 240]

Prints:

* appends/s with the Merkle update, one writer, on SQLite (a temp file, WAL),
  Redis and PostgreSQL (REDIS_URL / DATABASE_URL, defaults: the local test servers,
  in a throwaway key prefix / schema removed afterwards; skipped when unreachable);
* inclusion and consistency proof generation and verification at ``--leaves``
  leaves (the tree is built in memory for this); target: verify <= 50 us;
* checkpoint signing and verification (C2SP signed note, Ed25519);
* verification of a ``--log-n`` entry log (a SQLite file written straight from the
  chain and tree functions, so only the verification is timed), in records/s. The
  log is cut short if writing it would outlast ``--budget`` seconds.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from execauth_core import tlog
from execauth_core.audit import GENESIS, body_digest, body_template
from execauth_core.keys import KeySet, LocalSigner
from execauth_core.stores.sqlite import SQLiteAuditLog
from execauth_core.tlog import Frontier, leaf_hash
from execauth_core.tlog_checkpoint import open_checkpoint, sign_checkpoint
from execauth_core.tlog_verify import verify_log

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def per_call(fn: Callable[[], object], n: int) -> float:
    """Median of 5 batches, seconds per call."""
    runs = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n)
    return statistics.median(runs)


def event(i: int) -> dict[str, object]:
    return {"event": "denial", "executed": False, "time": 1_700_000_000 + i, "reason_codes": ["POLICY_DENIED"]}


def _open(name: str) -> tuple[object, Callable[[], None]]:
    """A fresh audit log on backend ``name`` and what removes it afterwards."""
    if name == "sqlite":
        return SQLiteAuditLog(Path(tempfile.mkdtemp()) / "a.db"), lambda: None
    if name == "redis":
        import redis

        from execauth_core.stores.redis import RedisAuditLog

        prefix = f"execauth-bench:{secrets.token_hex(6)}:"
        admin = redis.Redis.from_url(REDIS_URL, socket_timeout=5)
        admin.ping()

        def drop_keys() -> None:
            for key in admin.scan_iter(match=prefix + "*"):
                admin.delete(key)

        return RedisAuditLog(REDIS_URL, prefix=prefix), drop_keys
    import psycopg

    from execauth_core.stores.postgres import PostgresAuditLog

    schema = f"execauth_bench_{secrets.token_hex(6)}"

    def drop_schema() -> None:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    return PostgresAuditLog(DATABASE_URL, schema=schema), drop_schema


def bench_appends(backends: list[str], n: int) -> None:
    print(f"\nappends with the Merkle update ({n} appends, one writer)")
    for name in backends:
        try:
            log, cleanup = _open(name)
        except Exception as exc:  # noqa: BLE001 - any failure means: this backend is not here
            print(f"  {name:<9} skipped: {type(exc).__name__}: {exc}")
            continue
        try:
            append = log.append  # type: ignore[attr-defined]
            for i in range(50):  # warm up (connections, scripts, tables)
                append(event(i))
            t = time.perf_counter()
            for i in range(n):
                append(event(i))
            dt = time.perf_counter() - t
            size, _ = log.tree_head()  # type: ignore[attr-defined]
            t2 = time.perf_counter()
            for i in range(200):
                log.inclusion_proof((i * 7919) % size, size)  # type: ignore[attr-defined]
            proof_ms = (time.perf_counter() - t2) / 200 * 1000
            print(
                f"  {name:<9} {n / dt:8.0f} appends/s   {dt / n * 1000:.3f} ms/append   "
                f"inclusion proof from the store {proof_ms:.3f} ms"
            )
        except Exception as exc:  # noqa: BLE001 - reported, the other backends still run
            print(f"  {name:<9} failed: {type(exc).__name__}: {exc}")
        finally:
            log.close()  # type: ignore[attr-defined]
            cleanup()


def bench_proofs(leaves_n: int) -> None:
    print(f"\nproofs at {leaves_n} leaves (tree built in memory)")
    t = time.perf_counter()
    frontier = Frontier()
    nodes: dict[tuple[int, int], bytes] = {}
    leaves = [leaf_hash(i.to_bytes(8, "big")) for i in range(leaves_n)]
    for leaf in leaves:
        for level, index, h in frontier.append(leaf):
            nodes[(level, index)] = h
    root = frontier.root()
    print(f"  build: {time.perf_counter() - t:.1f} s ({len(nodes)} stored subtrees)")

    def fetch(keys: object) -> dict[tuple[int, int], bytes]:
        return {k: nodes[k] for k in keys}  # type: ignore[attr-defined]

    step = 2_147_483_647
    idx = [(i * step) % leaves_n for i in range(1, 1001)]
    proofs = [tlog.inclusion_proof(i, leaves_n, fetch) for i in idx]
    k = iter(range(10**9))

    def gen() -> None:
        tlog.inclusion_proof(idx[next(k) % 1000], leaves_n, fetch)

    def ver() -> None:
        j = next(k) % 1000
        tlog.verify_inclusion(leaves[idx[j]], idx[j], leaves_n, proofs[j], root)

    g, v = per_call(gen, 2000), per_call(ver, 2000)
    print(f"  inclusion proof: generate {g * 1e6:.1f} us, verify {v * 1e6:.1f} us ({len(proofs[0])} hashes)")
    print(f"    target verify <= 50 us: {'met' if v * 1e6 <= 50 else 'MISSED'}")
    old = leaves_n * 2 // 3
    old_root = Frontier(old, [nodes[key] for key in Frontier.keys(old)]).root()
    cproof = tlog.consistency_proof(old, leaves_n, fetch)
    cg = per_call(lambda: tlog.consistency_proof(old, leaves_n, fetch), 500)
    cv = per_call(lambda: tlog.verify_consistency(old, leaves_n, old_root, root, cproof), 2000)
    print(f"  consistency proof {old}->{leaves_n}: generate {cg * 1e6:.1f} us, verify {cv * 1e6:.1f} us")


def bench_checkpoints() -> None:
    print("\ncheckpoints (C2SP signed note, Ed25519)")
    signer = LocalSigner.generate()
    keys = KeySet.of_signer(signer)
    root = leaf_hash(b"root")
    note = sign_checkpoint("bench.example/audit", 10**6, root, signer, now=1).note
    s = per_call(lambda: sign_checkpoint("bench.example/audit", 10**6, root, signer, now=1), 500)
    v = per_call(lambda: open_checkpoint(note, keys), 500)
    print(f"  sign {s * 1e6:.1f} us, parse + verify {v * 1e6:.1f} us")


def bench_verify_log(n: int, budget: float) -> None:
    print(f"\nverification of a {n}-entry log (SQLite file)")
    folder = tempfile.mkdtemp()
    path = Path(folder) / "log.db"
    SQLiteAuditLog(path).close()  # the tables
    conn = sqlite3.connect(path)
    a, b, c = body_template(event(0))
    frontier = Frontier()
    prev, rows, made = GENESIS, [], []
    t = time.perf_counter()
    written = 0
    for seq in range(1, n + 1):
        raw = a + prev.encode() + b + str(seq).encode() + c  # same time field: only seq/prev vary
        prev = body_digest(raw)
        rows.append((seq, prev, raw))
        made += frontier.append(leaf_hash(raw))
        written = seq
        if len(rows) >= 50_000:
            conn.executemany("INSERT INTO audit_log (seq, digest, body) VALUES (?, ?, ?)", rows)
            conn.executemany("INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)", made)
            rows, made = [], []
            if time.perf_counter() - t > budget / 3:
                break
    conn.executemany("INSERT INTO audit_log (seq, digest, body) VALUES (?, ?, ?)", rows)
    conn.executemany("INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)", made)
    conn.execute("UPDATE audit_head SET seq = ?, digest = ? WHERE id = 1", (written, prev))
    conn.commit()
    conn.close()
    print(
        f"  wrote {written} entries in {time.perf_counter() - t:.1f} s" + (" (cut by --budget)" if written < n else "")
    )
    log = SQLiteAuditLog(path)
    signer = LocalSigner.generate()
    size, root = log.tree_head()
    note = sign_checkpoint("bench.example/audit", size, root, signer, now=1).note
    t = time.perf_counter()
    report = verify_log(log, keys=KeySet.of_signer(signer), checkpoints=[note], now=2)
    dt = time.perf_counter() - t
    log.close()
    os.remove(path)
    print(f"  verified ok={report.ok} {report.records} records in {dt:.1f} s: {report.records / dt:,.0f} records/s")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--appends", type=int, default=2000)
    p.add_argument("--leaves", type=int, default=1_000_000)
    p.add_argument("--log-n", type=int, default=1_000_000)
    p.add_argument("--backends", default="sqlite,redis,postgres")
    p.add_argument("--budget", type=float, default=240.0, help="seconds allowed for writing the verified log")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}")
    bench_appends([b for b in args.backends.split(",") if b], args.appends)
    bench_proofs(args.leaves)
    bench_checkpoints()
    bench_verify_log(args.log_n, args.budget)
    return 0


if __name__ == "__main__":
    sys.exit(main())
