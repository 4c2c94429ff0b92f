"""The tamper matrix: every attack on every backend's stored log, each detected by
the verifier with the right record named (and never reported as "ok")."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

import pytest

from execauth_core.audit import GENESIS, canonical_body, digest_bytes, make_body
from execauth_core.cli import main as cli
from execauth_core.keys import KeySet, LocalSigner
from execauth_core.tlog import Frontier, leaf_hash
from execauth_core.tlog_checkpoint import Checkpointer, sign_checkpoint
from execauth_core.tlog_verify import Report, verify_log

from .conftest import DATABASE_URL, Backend

ORIGIN = "test.example/audit"
Row = tuple[int, str, bytes]


class Raw:
    """Behind-the-store access, as an attacker with write access to the database has."""

    def __init__(self, backend: Backend, log: Any) -> None:
        self.b, self.log = backend, log

    def rows(self) -> list[Row]:
        return [(e.seq, e.digest, canonical_body(e.body)) for e in self.log.entries()]

    def write(self, rows: list[Row], head: tuple[int, str] | None = None) -> None:
        """Replace the whole log and its head record."""
        head = head or ((rows[-1][0], rows[-1][1]) if rows else (0, GENESIS))
        name = self.b.name
        if name == "memory":
            from execauth_core.audit import AuditEntry
            from execauth_core.canonical import loads_strict

            self.log._entries.clear()
            self.log._entries.extend(AuditEntry(s, d, loads_strict(r)) for s, d, r in rows)
            self.log._head = head
        elif name == "sqlite":
            with sqlite3.connect(self.b.path) as conn:  # type: ignore[attr-defined]
                conn.execute("DELETE FROM audit_log")
                conn.executemany("INSERT INTO audit_log (seq, digest, body) VALUES (?, ?, ?)", rows)
                conn.execute("UPDATE audit_head SET seq = ?, digest = ? WHERE id = 1", head)
        elif name == "redis":
            r, p = self.b.admin, self.b.prefix  # type: ignore[attr-defined]
            r.delete(p + "{audit}:log")
            if rows:
                r.rpush(p + "{audit}:log", *[d.encode() + b" " + raw for _, d, raw in rows])
            r.hset(p + "{audit}:head", mapping={"seq": head[0], "digest": head[1]})
        else:
            import psycopg

            s = self.b.schema  # type: ignore[attr-defined]
            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                conn.execute(f'DELETE FROM "{s}".audit_log')
                for row in rows:
                    conn.execute(f'INSERT INTO "{s}".audit_log (seq, digest, body) VALUES (%s, %s, %s)', row)
                conn.execute(f'UPDATE "{s}".audit_head SET seq = %s, digest = %s WHERE id = 1', head)

    def write_tree(self, rows: list[Row]) -> None:
        """Rebuild the store's Merkle tree over ``rows`` (the thorough attacker)."""
        f = Frontier()
        made = [n for _, _, raw in rows for n in f.append(leaf_hash(raw))]
        name = self.b.name
        if name == "memory":
            self.log._levels.clear()
            for level, idx, h in made:
                while len(self.log._levels) <= level:
                    self.log._levels.append({})
                self.log._levels[level][idx] = h
            self.log._frontier = f
        elif name == "sqlite":
            with sqlite3.connect(self.b.path) as conn:  # type: ignore[attr-defined]
                conn.execute("DELETE FROM audit_tree")
                conn.executemany("INSERT INTO audit_tree (level, idx, hash) VALUES (?, ?, ?)", made)
        elif name == "redis":
            import struct

            r, p = self.b.admin, self.b.prefix  # type: ignore[attr-defined]
            r.delete(p + "{audit}:tree")
            r.hset(p + "{audit}:tree", mapping={struct.pack(">BQ", lv, i): h for lv, i, h in made})
            r.hset(p + "{audit}:head", mapping={"tsize": f.size, "frontier": f.pack()})
        else:
            import psycopg

            s = self.b.schema  # type: ignore[attr-defined]
            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                conn.execute(f'DELETE FROM "{s}".audit_tree')
                for n in made:
                    conn.execute(f'INSERT INTO "{s}".audit_tree (level, idx, hash) VALUES (%s, %s, %s)', n)
                conn.execute(f'UPDATE "{s}".audit_head SET tsize = %s, frontier = %s', (f.size, f.pack()))


def drop_tree(backend: Backend) -> None:
    """Make the log look like one written before the tree existed."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.path) as conn:  # type: ignore[attr-defined]
            conn.execute("DROP TABLE audit_tree")
            conn.execute("DELETE FROM audit_checkpoints")
    elif backend.name == "redis":
        r, p = backend.admin, backend.prefix  # type: ignore[attr-defined]
        r.delete(p + "{audit}:tree", p + "{audit}:checkpoints")
        r.hdel(p + "{audit}:head", "tsize", "frontier")
    else:
        import psycopg

        s = backend.schema  # type: ignore[attr-defined]
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{s}".audit_tree, "{s}".audit_checkpoints')
            conn.execute(f'ALTER TABLE "{s}".audit_head DROP COLUMN tsize, DROP COLUMN frontier')


def rehash(rows: list[Row], start: int) -> list[Row]:
    """Renumber from ``start`` and recompute every digest and link after it."""
    from execauth_core.canonical import loads_strict

    out = rows[: start - 1]
    prev = out[-1][1] if out else GENESIS
    for i, (_, _, raw) in enumerate(rows[start - 1 :], start):
        body = loads_strict(raw)
        event = {k: v for k, v in body.items() if k not in ("v", "seq", "prev")}
        new = canonical_body(make_body(event, seq=i, prev=prev))
        prev = digest_bytes(new)
        out.append((i, prev, new))
    return out


def edited(raw: bytes) -> bytes:
    return raw.replace(b'"who":"alice"', b'"who":"mallo"')


@pytest.fixture
def signer() -> LocalSigner:
    return LocalSigner.generate()


def setup_log(backend: Backend, signer: LocalSigner, n: int = 8) -> tuple[Any, Raw, str]:
    log = backend.open().audit
    for i in range(n):
        log.append({"event": "denial", "executed": False, "time": 1000 + i, "who": "alice"})
    cp = Checkpointer(log, signer, origin=ORIGIN).checkpoint(now=2000)
    return log, Raw(backend, log), cp.note


def check(backend: Backend, log: Any, signer: LocalSigner, **kw: Any) -> Report:
    reopened = log if backend.name == "memory" else backend.open().audit
    return verify_log(reopened, keys=KeySet.of_signer(signer), origin=ORIGIN, now=2100, **kw)


def bad_at(report: Report, seq: int | None, *words: str) -> None:
    assert report.ok is False, report
    assert report.first_bad_seq == seq, report
    for w in words:
        assert w in report.message, report


def test_intact_log_verifies_with_nothing_unsigned(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, _ = setup_log(backend, signer)
    report = check(backend, log, signer)
    assert report.ok and report.records == 8 and report.checkpoint_seq == 8 and report.unsigned == 0
    assert report.checkpoint_age == 100


def test_edit(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    rows[2] = (3, rows[2][1], edited(rows[2][2]))
    raw.write(rows)
    bad_at(check(backend, log, signer), 3, "edited")


def test_delete(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    raw.write(rows[:2] + [(s - 1, d, r) for s, d, r in rows[3:]])
    bad_at(check(backend, log, signer), 3)


def test_reorder(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    rows[2], rows[3] = (3, rows[3][1], rows[3][2]), (4, rows[2][1], rows[2][2])
    raw.write(rows)
    bad_at(check(backend, log, signer), 3)


def test_truncated_tail_with_head_fixed(backend: Backend, signer: LocalSigner) -> None:
    log, raw, note = setup_log(backend, signer)
    raw.write(raw.rows()[:6])
    bad_at(check(backend, log, signer, checkpoints=[note]), 7, "truncated")


def test_rehash_after_edit(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    rows[2] = (3, rows[2][1], edited(rows[2][2]))
    raw.write(rehash(rows, 3))
    bad_at(check(backend, log, signer), 3, "signed checkpoint")


def test_rehash_after_delete(backend: Backend, signer: LocalSigner) -> None:
    log, raw, note = setup_log(backend, signer)
    rows = raw.rows()
    raw.write(rehash(rows[:4] + rows[5:], 5))
    bad_at(check(backend, log, signer, checkpoints=[note]), 5)


def test_rehash_with_the_tree_rebuilt_is_still_caught(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    rows[2] = (3, rows[2][1], edited(rows[2][2]))
    forged = rehash(rows, 3)
    raw.write(forged)
    raw.write_tree(forged)
    report = check(backend, log, signer)
    assert report.ok is False and report.first_bad_seq is not None and report.first_bad_seq <= 3, report
    assert "rewritten" in report.message


def test_forged_checkpoint_signature(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, note = setup_log(backend, signer)
    size, root = log.tree_head()
    mallory = LocalSigner.generate()
    forged = sign_checkpoint(ORIGIN, size, root, mallory, now=2000).note
    # a signature line under the real key's name and id, but made by another key
    real_line = note.rsplit("\n\n", 1)[1]
    fake_line = forged.rsplit("\n\n", 1)[1]
    spliced = note.rsplit("\n\n", 1)[0] + "\n\n" + real_line[:-10] + fake_line[-10:]
    report = check(backend, log, signer, checkpoints=[spliced])
    bad_at(report, None, "forged")


def test_checkpoint_by_an_untrusted_key_is_refused(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, _ = setup_log(backend, signer)
    size, root = log.tree_head()
    foreign = sign_checkpoint(ORIGIN, size, root, LocalSigner.generate(), now=2000).note
    bad_at(check(backend, log, signer, checkpoints=[foreign]), None, "not signed by a trusted key")


def test_forked_checkpoints_same_size(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, _ = setup_log(backend, signer)
    other = sign_checkpoint(ORIGIN, 8, leaf_hash(b"another history"), signer, now=2001).note
    bad_at(check(backend, log, signer, checkpoints=[other]), 8, "forked")


def test_newer_checkpoint_not_consistent_with_older(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, _ = setup_log(backend, signer)
    older = sign_checkpoint(ORIGIN, 4, leaf_hash(b"another history"), signer, now=1500).note
    bad_at(check(backend, log, signer, checkpoints=[older]), 4, "not consistent")


def test_head_moved_back(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer, n=8)
    rows = raw.rows()
    raw.write(rows, head=(5, rows[4][1]))
    report = check(backend, log, signer, stored_checkpoints=False)
    bad_at(report, 6, "beyond the head")


def test_unsigned_tail_and_limits(backend: Backend, signer: LocalSigner) -> None:
    log, _raw, _ = setup_log(backend, signer)
    for i in range(3):
        log.append({"event": "denial", "executed": False, "time": 3000 + i, "who": "bob"})
    report = check(backend, log, signer)
    assert report.ok and report.unsigned == 3 and report.checkpoint_seq == 8
    bad_at(check(backend, log, signer, max_unsigned=2), 9, "max-unsigned")
    assert check(backend, log, signer, max_unsigned=3).ok
    bad_at(check(backend, log, signer, max_age=50), 9, "max-age")
    assert check(backend, log, signer, max_age=100).ok


def test_no_checkpoint_means_all_unsigned(backend: Backend) -> None:
    log = backend.open().audit
    for i in range(4):
        log.append({"event": "denial", "executed": False, "time": i})
    report = verify_log(log if backend.name == "memory" else backend.open().audit, keys=None)
    assert report.ok and report.unsigned == 4 and report.checkpoint_seq is None
    assert not verify_log(log, keys=None, max_unsigned=3).ok


def test_inclusion_and_consistency_proofs_from_the_store(backend: Backend, signer: LocalSigner) -> None:
    from execauth_core import tlog

    log, _raw, _ = setup_log(backend, signer, n=13)
    size, root = log.tree_head()
    for e in log.entries():
        proof = log.inclusion_proof(e.seq - 1, size)
        tlog.verify_inclusion(leaf_hash(canonical_body(e.body)), e.seq - 1, size, proof, root)
    for old in range(0, size + 1):
        tlog.verify_consistency(old, size, log.root_at(old), root, log.consistency_proof(old, size))


def _garbage(backend: Backend) -> Callable[[], None] | None:
    if backend.name == "sqlite":

        def text_body() -> None:
            with sqlite3.connect(backend.path) as conn:  # type: ignore[attr-defined]
                conn.execute("UPDATE audit_log SET body = CAST(body AS TEXT) WHERE seq = 2")

        return text_body
    if backend.name == "redis":

        def junk() -> None:
            backend.admin.lset(backend.prefix + "{audit}:log", 1, b"garbage-without-a-space")  # type: ignore[attr-defined]

        return junk
    if backend.name == "postgres":

        def not_json() -> None:
            import psycopg

            with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
                conn.execute(
                    f'UPDATE "{backend.schema}".audit_log SET body = %s WHERE seq = 2',  # type: ignore[attr-defined]
                    (b"\xff\xfenot json",),
                )

        return not_json
    return None


def test_garbage_rows_name_the_record(
    backend: Backend, signer: LocalSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    spoil = _garbage(backend)
    if spoil is None:
        pytest.skip("the memory log holds Python objects, not stored rows")
    log, _raw, _ = setup_log(backend, signer)
    spoil()
    bad_at(check(backend, log, signer), 2)
    capsys.readouterr()
    assert cli(["audit", "verify", "--store", backend.url]) == 1
    out = capsys.readouterr()
    assert '"first_bad_seq": 2' in out.out and "Traceback" not in out.err


def test_concurrent_writers_keep_the_tree_exact(shared_backend: Backend) -> None:
    """Writers racing on one log (each its own client, as replicas are): the tree
    the store kept equals the tree recomputed from the entries, and proofs verify."""
    import threading

    from execauth_core import tlog

    logs = [shared_backend.open().audit for _ in range(4)]
    errors: list[BaseException] = []

    def write(log: Any, w: int) -> None:
        try:
            for i in range(40):
                log.append({"event": "denial", "executed": False, "time": i, "writer": w})
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(log, w)) for w, log in enumerate(logs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    log = shared_backend.open().audit
    size, root = log.tree_head()
    leaves = [leaf_hash(canonical_body(e.body)) for e in log.entries()]
    assert size == 160 == len(leaves) and root == tlog.root_from_leaves(leaves)
    for i in (0, 77, 159):
        tlog.verify_inclusion(leaves[i], i, size, log.inclusion_proof(i, size), root)
    assert verify_log(log, keys=None).ok


@pytest.mark.parametrize("then", ["append", "read"])
def test_a_log_from_before_the_tree_gets_its_tree(shared_backend: Backend, signer: LocalSigner, then: str) -> None:
    from execauth_core import tlog

    log = shared_backend.open().audit
    for i in range(11):
        log.append({"event": "denial", "executed": False, "time": i})
    log.close()
    drop_tree(shared_backend)
    log = shared_backend.open().audit
    if then == "append":
        log.append({"event": "denial", "executed": False, "time": 99})
    leaves = [leaf_hash(canonical_body(e.body)) for e in log.entries()]
    size, root = log.tree_head()
    assert size == len(leaves) and root == tlog.root_from_leaves(leaves)
    for i in range(size):
        tlog.verify_inclusion(leaves[i], i, size, log.inclusion_proof(i, size), root)
    Checkpointer(log, signer, origin=ORIGIN).checkpoint(now=5)
    assert verify_log(log, keys=KeySet.of_signer(signer), origin=ORIGIN).ok


def test_rehash_without_any_checkpoint_is_caught_by_the_stored_tree(backend: Backend, signer: LocalSigner) -> None:
    log, raw, _ = setup_log(backend, signer)
    rows = raw.rows()
    rows[4] = (5, rows[4][1], edited(rows[4][2]))
    raw.write(rehash(rows, 5))
    bad_at(check(backend, log, signer, stored_checkpoints=False), 5, "Merkle tree")
