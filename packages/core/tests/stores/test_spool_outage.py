"""The spool on real outages: Redis and PostgreSQL on a closed port, a read-only SQLite
file, a full disk. Denials are spooled, the tool never runs; once the store answers
(the shared servers on 127.0.0.1), a flush replays every record once, in order, and
``execauth audit verify`` accepts the log."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from execauth_core import AllowListPolicy, ExecutionDenied, Guard, LocalSigner, Spool, StoreUnavailable, verify_chain
from execauth_core.cli import main
from execauth_core.stores.sqlite import SQLiteAuditLog
from execauth_core.stores.urls import open_stores

from ..conftest import RFC8032_SEED_1, Tool
from ._servers import free_port
from .conftest import Backend, make_backend, with_query

POLICY = AllowListPolicy(("search",))


def closed_port(url: str) -> str:
    """The same URL (prefix, schema) on a loopback port nothing listens on."""
    parts = urlsplit(url)
    auth = parts.netloc.rpartition("@")[0]
    netloc = f"{auth}@127.0.0.1:{free_port()}" if auth else f"127.0.0.1:{free_port()}"
    return with_query(urlunsplit(parts._replace(netloc=netloc)), timeout="0.5")


def guard_on(stores: Any, spool: Spool) -> Guard:
    return Guard.local(POLICY, stores=stores, signer=LocalSigner(RFC8032_SEED_1), spool=spool)


def outage_calls(guard: Guard, tool: Tool) -> list[ExecutionDenied]:
    """Two allowed calls and one refused call while the log is down."""
    denied = []
    for name, args in (("search", {"q": "a"}), ("transfer", {"to": "bob"}), ("search", {"q": "b"})):
        req = guard.proposal(name, args, principal="alice")
        with pytest.raises(ExecutionDenied) as info:
            guard.run(req, lambda args=args: tool(**args))
        denied.append(info.value)
    assert tool.calls == []  # nothing ran unrecorded
    for d in denied:
        assert d.reason_codes[-1] == "AUDIT_SPOOLED" and d.audit_seq is None
    return denied


def cli(*argv: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else None


def check_replayed(log: Any, denied: list[ExecutionDenied], url: str, capsys: pytest.CaptureFixture[str]) -> None:
    spooled = [e for e in log.entries() if e.body.get("spooled")]
    assert [e.body["proposal_digest"] for e in spooled] == [d.proposal_digest for d in denied]
    assert [(e.event, e.executed) for e in spooled] == [("denial", False)] * len(denied)
    assert len({e.body["spool"]["seq"] for e in spooled}) == len(denied)  # each once
    verify_chain(log.entries())
    code, report = cli("audit", "verify", "--store", url, capsys=capsys)
    assert code == 0 and report["ok"] is True


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def server_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = make_backend(request.param, tmp_path)
    try:
        yield b
    finally:
        b.close()


def test_unreachable_server_spools_then_flush_replays(
    server_backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spool, tool = Spool(tmp_path / "audit.spool"), Tool()
    down = open_stores(closed_port(server_backend.url))
    with pytest.raises(StoreUnavailable):  # the outage is real
        down.audit.append({"event": "denial", "time": 1, "executed": False})
    denied = outage_calls(guard_on(down, spool), tool)
    down.close()
    code, status = cli("audit", "spool", "status", "--spool", str(spool.path), capsys=capsys)
    assert code == 0 and status["pending"] == 3
    # While still down, a flush keeps everything and says why.
    code, result = cli(
        "audit", "spool", "flush", "--spool", str(spool.path), "--store", closed_port(server_backend.url), capsys=capsys
    )
    assert code == 1 and result["replayed"] == 0 and result["remaining"] == 3
    # The server answers again.
    code, result = cli(
        "audit", "spool", "flush", "--spool", str(spool.path), "--store", server_backend.url, capsys=capsys
    )
    assert code == 0 and (result["replayed"], result["remaining"]) == (3, 0)
    up = server_backend.open()
    check_replayed(up.audit, denied, server_backend.url, capsys)
    # Flushing again adds nothing.
    code, result = cli(
        "audit", "spool", "flush", "--spool", str(spool.path), "--store", server_backend.url, capsys=capsys
    )
    assert code == 0 and result["replayed"] == 0 and len(list(up.audit.entries())) == 3


def test_the_guard_replays_on_its_next_successful_append(server_backend: Backend, tmp_path: Path) -> None:
    spool, tool = Spool(tmp_path / "audit.spool"), Tool()
    down = open_stores(closed_port(server_backend.url))
    denied = outage_calls(guard_on(down, spool), tool)
    down.close()
    up = server_backend.open()
    guard = guard_on(up, Spool(tmp_path / "audit.spool"))  # a restarted process, same spool
    req = guard.proposal("search", {"q": "c"}, principal="alice")
    assert guard.run(req, lambda: tool(q="c")) == "done"
    events = [(e.event, bool(e.body.get("spooled"))) for e in up.audit.entries()]
    # The execution came first; the spool drained after the first successful append.
    assert events[0] == ("execution", False)
    assert sorted(events[1:]) == sorted([("result", False)] + [("denial", True)] * 3)
    spooled = [e.body["proposal_digest"] for e in up.audit.entries() if e.body.get("spooled")]
    assert spooled == [d.proposal_digest for d in denied]
    verify_chain(up.audit.entries())
    assert spool.status().pending == 0


@contextlib.contextmanager
def read_only(log: SQLiteAuditLog) -> Iterator[None]:
    """Swap the log's connection for one SQLite opened read-only (``mode=ro``)."""
    rw = log._conn
    log._conn = sqlite3.connect(f"file:{log.path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    try:
        yield
    finally:
        log._conn.close()
        log._conn = rw


def test_read_only_sqlite_file_spools_then_flush_replays(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "execauth.db"
    url = f"sqlite://{db}"
    stores = open_stores(url)
    spool, tool = Spool(tmp_path / "audit.spool"), Tool()
    guard = guard_on(stores, spool)
    log = stores.audit
    assert isinstance(log, SQLiteAuditLog)
    with read_only(log):
        with pytest.raises(StoreUnavailable, match="readonly"):  # the write really fails
            log.append({"event": "denial", "time": 1, "executed": False})
        denied = outage_calls(guard, tool)
    assert list(log.entries()) == []
    code, result = cli("audit", "spool", "flush", "--spool", str(spool.path), "--db", str(db), capsys=capsys)
    assert code == 0 and result["replayed"] == 3
    check_replayed(log, denied, url, capsys)
    stores.close()


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("a full disk needs a small tmpfs, and mounting one needs root")
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            for size in (65536, 4096, 512, 1):
                while os.write(fd, b"\0" * size) == size:
                    pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_under_the_log_spools_elsewhere(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with small_tmpfs(tmp_path / "disk", "1m") as disk:
        db = disk / "execauth.db"
        url = f"sqlite://{db}"
        stores = open_stores(url)
        spool, tool = Spool(tmp_path / "audit.spool"), Tool()
        guard = guard_on(stores, spool)
        filler = fill(disk)
        with pytest.raises(StoreUnavailable):  # the disk really is full
            for _ in range(50):
                stores.audit.append({"event": "denial", "time": 1, "executed": False, "detail": {"x": "y" * 2000}})
        before = len(list(stores.audit.entries()))
        denied = outage_calls(guard, tool)
        filler.unlink()
        code, result = cli("audit", "spool", "flush", "--spool", str(spool.path), "--db", str(db), capsys=capsys)
        assert code == 0 and result["replayed"] == 3
        assert len(list(stores.audit.entries())) == before + 3
        check_replayed(stores.audit, denied, url, capsys)
        stores.close()


def test_spool_on_a_full_disk_means_audit_unavailable(tmp_path: Path) -> None:
    with small_tmpfs(tmp_path / "disk", "64k") as disk:
        spool, tool = Spool(disk / "audit.spool"), Tool()
        assert spool.append({"event": "denial", "time": 1, "executed": False}) == 1
        filler = fill(disk)
        with pytest.raises(StoreUnavailable, match="No space left"):  # the spool's last page fills up too
            for n in range(2, 100):
                spool.append({"event": "denial", "time": n, "executed": False})
        size, lines = spool.path.stat().st_size, spool.verify()
        down = open_stores(f"sqlite://{tmp_path / 'x.db'}")
        guard = guard_on(down, spool)
        guard.audit_log = _Down()  # type: ignore[assignment]
        req = guard.proposal("search", {"q": "x" * 3000}, principal="alice")
        with pytest.raises(ExecutionDenied) as info:
            guard.run(req, lambda: tool(q="x"))
        assert info.value.reason_codes == ("STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE") and tool.calls == []
        assert spool.path.stat().st_size == size and spool.verify() == lines  # nothing partial left
        filler.unlink()
        assert spool.append({"event": "denial", "time": 2, "executed": False}) == lines + 1
        down.close()


class _Down:
    def append(self, event: Any) -> Any:
        raise StoreUnavailable("audit log: disk I/O error")

    def head(self) -> Any:
        raise StoreUnavailable("audit log: disk I/O error")

    def entries(self, start: int = 1) -> Any:
        raise StoreUnavailable("audit log: disk I/O error")
