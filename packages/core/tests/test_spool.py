"""The audit spool: its chain, its verifier, exactly-once replay (also across a crash
mid-flush), several processes sharing it, and the guard spooling what the log refuses."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from execauth_core import (
    AllowListPolicy,
    ConfigurationError,
    ExecutionDenied,
    FixedClock,
    Guard,
    LocalSigner,
    Spool,
    SpoolIntegrityError,
    StoreUnavailable,
    verify_chain,
)
from execauth_core.stores import MemoryAuditLog
from execauth_core.stores.sqlite import SQLiteAuditLog

from .conftest import T0, Tool


def denial(n: int) -> dict[str, Any]:
    return {
        "event": "denial",
        "time": T0 + n,
        "executed": False,
        "tool": "search",
        "outcome": "DENY",
        "reason_codes": ["TOOL_NOT_ALLOWED"],
        "detail": {"n": n},
    }


def spooled(path: Path, count: int) -> Spool:
    spool = Spool(path, clock=lambda: T0 + 100)
    for n in range(1, count + 1):
        assert spool.append(denial(n)) == n
    return spool


def numbers(log: Any) -> list[int]:
    return [e.body["detail"]["n"] for e in log.entries() if e.body.get("spooled")]


class DeadAudit:
    """An audit log whose every write fails, as a store that is down."""

    def append(self, event: Any) -> Any:
        raise StoreUnavailable("audit log: connection refused")

    def head(self) -> Any:
        raise StoreUnavailable("audit log: connection refused")

    def entries(self, start: int = 1) -> Any:
        raise StoreUnavailable("audit log: connection refused")


def test_lines_are_chained_fsynced_json_and_verify(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 3)
    lines = [json.loads(x) for x in (tmp_path / "audit.spool").read_text().splitlines()]
    assert [x["seq"] for x in lines] == [1, 2, 3]
    assert lines[0]["prev"] == "sha256:" + "0" * 64
    assert [x["prev"] for x in lines[1:]] == [x["hash"] for x in lines[:-1]]
    assert lines[1]["record"] == denial(2)
    assert spool.verify() == 3
    status = spool.status()
    assert (status.pending, status.last_seq, status.replayed_seq, status.oldest_spooled_at) == (3, 3, 0, T0 + 100)
    assert status.bytes == (tmp_path / "audit.spool").stat().st_size
    assert oct((tmp_path / "audit.spool").stat().st_mode & 0o777) == "0o600"


def test_nothing_is_written_before_the_first_record(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "audit.spool")
    assert spool.status().pending == 0 and spool.verify() == 0
    assert spool.flush(MemoryAuditLog()).replayed == 0
    assert list(tmp_path.iterdir()) == []


def test_flush_replays_in_order_once_with_original_time_and_marker(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    log = MemoryAuditLog()
    log.append({"event": "denial", "time": T0 + 50, "executed": False, "detail": {}})
    result = spool.flush(log)
    assert (result.replayed, result.remaining, result.audit_seqs, result.error) == (5, 0, (2, 3, 4, 5, 6), None)
    entries = list(log.entries())
    assert numbers(log) == [1, 2, 3, 4, 5]
    assert [e.body["time"] for e in entries[1:]] == [T0 + n for n in range(1, 6)]
    assert entries[1].body["spool"]["seq"] == 1 and entries[1].body["spool"]["at"] == T0 + 100
    verify_chain(entries)
    # Compacted: the file is empty, and nothing is replayed twice.
    assert (tmp_path / "audit.spool").stat().st_size == 0
    assert spool.flush(log).replayed == 0 and len(list(log.entries())) == 6
    # The chain goes on from the base kept in the state file.
    assert spool.append(denial(6)) == 6
    line = json.loads((tmp_path / "audit.spool").read_text())
    assert line["prev"] == entries[-1].body["spool"]["hash"]
    assert spool.verify() == 1
    assert spool.flush(log).replayed == 1 and numbers(log) == [1, 2, 3, 4, 5, 6]


def test_flush_limit_and_status_count_down(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    log = MemoryAuditLog()
    assert spool.flush(log, limit=2).replayed == 2
    assert (spool.status().pending, spool.status().replayed_seq) == (3, 2)
    assert spool.flush(log).replayed == 3 and numbers(log) == [1, 2, 3, 4, 5]


def _edit(path: Path, index: int, change: Any) -> None:
    lines = path.read_text().splitlines()
    change(lines, index)
    path.write_text("".join(x + "\n" for x in lines))


@pytest.mark.parametrize(
    ("change", "line", "why"),
    [
        (lambda ls, i: ls.__setitem__(i, ls[i].replace("TOOL_NOT_ALLOWED", "TOOL_ALLOWED")), 3, "edited"),
        (lambda ls, i: ls.pop(i), 3, "deleted or reordered"),
        (lambda ls, i: ls.insert(i + 1, ls.pop(i)), 3, "deleted or reordered"),
        (lambda ls, i: ls.pop(0), 1, "missing"),
        (lambda ls, i: ls.__setitem__(i, "{garbage"), 3, "not JSON"),
    ],
    ids=["edit", "delete", "reorder", "drop-first", "garbage"],
)
def test_tampering_is_named_and_blocks_the_flush(tmp_path: Path, change: Any, line: int, why: str) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    _edit(tmp_path / "audit.spool", 2, change)
    with pytest.raises(SpoolIntegrityError) as broken:
        spool.verify()
    assert broken.value.line == line and why in str(broken.value)
    log = MemoryAuditLog()
    with pytest.raises(SpoolIntegrityError):
        spool.flush(log)
    assert list(log.entries()) == []  # nothing tampered reaches the log


def test_a_torn_last_line_is_dropped_not_replayed(tmp_path: Path) -> None:
    path = tmp_path / "audit.spool"
    spool = spooled(path, 2)
    with path.open("ab") as f:
        f.write(b'{"v":"execauth.spool/1","seq":3,"rec')  # a write cut off by a crash
    assert spool.status().torn_tail_bytes > 0 and spool.verify() == 2
    assert spool.append(denial(3)) == 3
    assert spool.verify() == 3 and spool.status().torn_tail_bytes == 0
    log = MemoryAuditLog()
    assert spool.flush(log).replayed == 3 and numbers(log) == [1, 2, 3]


def test_lost_state_file_is_rebuilt_from_the_spool(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 3)
    (tmp_path / "audit.spool.state").unlink()
    assert spool.verify() == 3
    log = MemoryAuditLog()
    assert spool.flush(log).replayed == 3 and numbers(log) == [1, 2, 3]


def test_lost_state_file_after_a_partial_flush_replays_nothing_twice(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    log = MemoryAuditLog()
    assert spool.flush(log, limit=2).replayed == 2
    (tmp_path / "audit.spool.state").unlink()
    assert spool.append(denial(6)) == 6  # the outage goes on: the state is rebuilt and kept
    assert (tmp_path / "audit.spool.state").exists()
    result = spool.flush(log)
    assert (result.recovered, result.replayed) == (2, 4)
    assert numbers(log) == [1, 2, 3, 4, 5, 6]


def test_a_failing_log_stops_the_flush_and_the_next_resumes(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 4)
    result = spool.flush(DeadAudit())
    assert result.replayed == 0 and result.remaining == 4 and "connection refused" in (result.error or "")
    log = MemoryAuditLog()
    assert spool.flush(log).replayed == 4 and numbers(log) == [1, 2, 3, 4]


class AnswerLost:
    """Writes the entry, then fails as if the reply had been lost (outcome unknown)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls = inner, fail_at, 0

    def append(self, event: Any) -> Any:
        self.calls += 1
        entry = self.inner.append(event)
        if self.calls == self.fail_at:
            raise StoreUnavailable("audit log: no answer within 2.0 s")
        return entry

    def head(self) -> Any:
        return self.inner.head()

    def entries(self, start: int = 1) -> Any:
        return self.inner.entries(start)


def test_an_append_whose_answer_was_lost_is_not_replayed_twice(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    log = MemoryAuditLog()
    first = spool.flush(AnswerLost(log, fail_at=3))
    assert first.replayed == 2 and first.error is not None
    again = spool.flush(log)
    assert (again.recovered, again.replayed) == (1, 2)
    assert numbers(log) == [1, 2, 3, 4, 5]
    verify_chain(log.entries())


CRASHING_FLUSH = textwrap.dedent(
    """
    import os, sys
    from execauth_core import Spool
    from execauth_core.stores.sqlite import SQLiteAuditLog

    class Crash:
        def __init__(self, inner, after):
            self.inner, self.after, self.calls = inner, after, 0
        def append(self, event):
            entry = self.inner.append(event)  # committed...
            self.calls += 1
            if self.calls == self.after:
                os._exit(9)  # ...and the process dies before the state file says so
            return entry
        def head(self):
            return self.inner.head()
        def entries(self, start=1):
            return self.inner.entries(start)

    spool = Spool(sys.argv[1], flush_batch=int(sys.argv[4]))
    spool.flush(Crash(SQLiteAuditLog(sys.argv[2]), int(sys.argv[3])))
    """
)


@pytest.mark.parametrize(("after", "batch"), [(1, 256), (4, 256), (6, 3), (3, 3)])
def test_a_crash_mid_flush_loses_nothing_and_duplicates_nothing(tmp_path: Path, after: int, batch: int) -> None:
    spool = spooled(tmp_path / "audit.spool", 8)
    db = tmp_path / "log.db"
    SQLiteAuditLog(db).append({"event": "denial", "time": T0, "executed": False, "detail": {"n": 0}})
    script = tmp_path / "crash.py"
    script.write_text(CRASHING_FLUSH)
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "audit.spool"), str(db), str(after), str(batch)],
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 9, proc.stderr.decode()
    log = SQLiteAuditLog(db)
    assert numbers(log) == list(range(1, after + 1))  # died after committing `after` records
    result = spool.flush(log)
    assert result.recovered + result.replayed == 8 - ((after - 1) // batch) * batch  # minus batches marked done
    assert numbers(log) == list(range(1, 9))
    verify_chain(log.entries())
    assert spool.status().pending == 0


def _append_many(path: str, worker: int, count: int) -> None:
    spool = Spool(path)
    for n in range(count):
        spool.append({**denial(n), "detail": {"worker": worker, "n": n}})


def test_processes_sharing_one_spool_keep_one_chain(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.spool")
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_many, args=(path, w, 40)) for w in range(4)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    spool = Spool(path)
    assert spool.verify() == 160
    log = MemoryAuditLog()
    assert spool.flush(log).replayed == 160
    per_worker: dict[int, list[int]] = {}
    for e in log.entries():
        per_worker.setdefault(e.body["detail"]["worker"], []).append(e.body["detail"]["n"])
    assert per_worker == {w: list(range(40)) for w in range(4)}  # each writer's order kept


def test_a_spool_that_cannot_be_written_raises_store_unavailable(tmp_path: Path) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    spool = Spool(folder / "audit.spool")
    folder.rmdir()  # the folder went away after start-up
    with pytest.raises(StoreUnavailable, match="audit spool"):
        spool.append(denial(1))


def test_a_record_the_log_would_refuse_is_not_spooled(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "audit.spool")
    with pytest.raises(ValueError, match="executed"):
        spool.append({"event": "denial", "time": 1})
    assert not (tmp_path / "audit.spool").exists()


def test_a_spool_folder_that_is_missing_at_start_up_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        Spool(tmp_path / "nowhere" / "audit.spool")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigurationError, match="does not exist"):
        Spool(tmp_path / "file" / "audit.spool")


# -- the guard ------------------------------------------------------------------


def guard_with(spool: Spool | None, clock: FixedClock, signer: LocalSigner) -> Guard:
    guard = Guard.local(AllowListPolicy(("search",)), clock=clock, signer=signer, spool=spool)
    return guard


def test_guard_spools_denials_and_never_runs_the_tool(
    tmp_path: Path, clock: FixedClock, signer: LocalSigner, tool: Tool
) -> None:
    spool = Spool(tmp_path / "audit.spool")
    guard = guard_with(spool, clock, signer)
    working = guard.audit_log
    guard.audit_log = DeadAudit()  # type: ignore[assignment]
    allowed = guard.proposal("search", {"q": "x"}, principal="alice")
    with pytest.raises(ExecutionDenied) as first:
        guard.run(allowed, lambda: tool(q="x"))  # ALLOW whose execution record cannot be written
    assert first.value.reason_codes == ("STORE_UNAVAILABLE", "AUDIT_SPOOLED")
    assert first.value.audit_seq is None
    refused = guard.proposal("transfer", {"to": "bob"}, principal="alice")
    with pytest.raises(ExecutionDenied) as second:
        guard.run(refused, lambda: tool(to="bob"))
    assert second.value.reason_codes[-1] == "AUDIT_SPOOLED" and second.value.audit_seq is None
    with pytest.raises(ExecutionDenied) as third:
        guard.authorize(allowed)  # the decision cannot be recorded: no token
    assert third.value.reason_codes == ("AUDIT_UNAVAILABLE", "AUDIT_SPOOLED")
    assert tool.calls == []
    pending = spool.pending()
    assert [(r.record["event"], r.record["executed"], r.record["tool"]) for r in pending] == [
        ("denial", False, "search"),
        ("denial", False, "transfer"),
        ("denial", False, "search"),
    ]
    assert pending[2].record["record_digest"] is not None  # names the decision it could not record
    # The log is back: the next successful append replays the spool behind it.
    guard.audit_log = working
    assert guard.run(allowed, lambda: tool(q="x")) == "done"
    entries = list(working.entries())
    assert [(e.event, bool(e.body.get("spooled"))) for e in entries] == [
        ("execution", False),
        ("result", False),
        ("denial", True),
        ("denial", True),
        ("denial", True),
    ]
    verify_chain(entries)
    assert spool.status().pending == 0


def test_a_spool_that_fails_too_means_audit_unavailable(
    tmp_path: Path, clock: FixedClock, signer: LocalSigner, tool: Tool, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "spool"
    folder.mkdir()
    guard = guard_with(Spool(folder / "audit.spool"), clock, signer)
    folder.rmdir()
    guard.audit_log = DeadAudit()  # type: ignore[assignment]
    req = guard.proposal("search", {}, principal="alice")
    with pytest.raises(ExecutionDenied) as info:
        guard.run(req, lambda: tool())
    assert info.value.reason_codes == ("STORE_UNAVAILABLE", "AUDIT_UNAVAILABLE") and tool.calls == []
    assert "could not spool" in caplog.text


class ResultsRefused:
    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def append(self, event: Any) -> Any:
        if event["event"] == "result":
            raise StoreUnavailable("audit log: connection reset")
        return self.inner.append(event)

    def head(self) -> Any:
        return self.inner.head()

    def entries(self, start: int = 1) -> Any:
        return self.inner.entries(start)


def test_a_result_record_the_log_refused_is_spooled(
    tmp_path: Path, clock: FixedClock, signer: LocalSigner, tool: Tool
) -> None:
    spool = Spool(tmp_path / "audit.spool")
    guard = guard_with(spool, clock, signer)
    working = guard.audit_log
    guard.audit_log = ResultsRefused(working)  # type: ignore[assignment]
    req = guard.proposal("search", {}, principal="alice")
    assert guard.run(req, lambda: tool()) == "done"  # it ran: its result is kept for the log
    assert [r.record["event"] for r in spool.pending()] == ["result"]
    assert spool.flush(working).replayed == 1
    assert [e.event for e in working.entries()] == ["execution", "result"]


def test_guard_local_spool_defaults(tmp_path: Path, signer: LocalSigner) -> None:
    policy = AllowListPolicy(("search",))
    with_dir = Guard.local(policy, data_dir=tmp_path, signer=signer)
    assert with_dir.spool is not None and with_dir.spool.path == tmp_path / "audit.spool"
    assert not (tmp_path / "audit.spool").exists()  # created only when needed
    with_dir.close()
    assert Guard.local(policy, data_dir=tmp_path, signer=signer, spool=False).spool is None
    assert Guard.local(policy, signer=signer).spool is None
    assert Guard.local(policy, signer=signer, spool=tmp_path / "x.spool").spool is not None
    with pytest.raises(ConfigurationError, match="data_dir"):
        Guard.local(policy, signer=signer, spool=True)
    with pytest.raises(ConfigurationError):
        Guard.local(policy, signer=signer, spool=3)  # type: ignore[arg-type]


def test_maybe_flush_skips_while_another_process_flushes(tmp_path: Path) -> None:
    import fcntl

    spool = spooled(tmp_path / "audit.spool", 2)
    fd = os.open(tmp_path / "audit.spool.flush-lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        other = Spool(tmp_path / "audit.spool")
        result = other.maybe_flush(MemoryAuditLog())
        assert result is not None and result.busy and result.replayed == 0
    finally:
        os.close(fd)
    assert spool.flush(MemoryAuditLog()).replayed == 2


def test_cli_status_flush_and_a_broken_spool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from execauth_core.cli import main

    path = tmp_path / "audit.spool"
    spooled(path, 3)
    db = tmp_path / "log.db"
    SQLiteAuditLog(db).close()
    assert main(["audit", "spool", "status", "--spool", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["pending"] == 3
    assert main(["audit", "spool", "verify", "--spool", str(path)]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "lines": 3}
    _edit(path, 1, lambda ls, i: ls.__setitem__(i, ls[i].replace('"n":2', '"n":20')))
    assert main(["audit", "spool", "status", "--spool", str(path)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and "line 2" in report["message"] and "edited" in report["message"]
    assert main(["audit", "spool", "verify", "--spool", str(path)]) == 1
    assert json.loads(capsys.readouterr().out)["first_bad_seq"] == 2
    assert main(["audit", "spool", "flush", "--spool", str(path), "--db", str(db)]) == 1
    capsys.readouterr()
    assert list(SQLiteAuditLog(db).entries()) == []
    assert main(["audit", "spool", "flush", "--spool", str(path), "--db", str(tmp_path / "none.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("execauth: error: ") and err.count("\n") == 1


def test_an_idle_spool_costs_no_flush(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 1)
    log = MemoryAuditLog()
    assert spool.maybe_flush(log) is not None  # something was waiting
    assert spool.maybe_flush(log) is None  # nothing left: no lock, no read
    assert numbers(log) == [1]


def test_a_break_after_a_partial_flush_names_the_line_in_the_whole_file(tmp_path: Path) -> None:
    spool = spooled(tmp_path / "audit.spool", 5)
    log = MemoryAuditLog()
    assert spool.flush(log, limit=2).replayed == 2
    _edit(tmp_path / "audit.spool", 3, lambda ls, i: ls.__setitem__(i, ls[i].replace('"n":4', '"n":40')))
    with pytest.raises(SpoolIntegrityError) as broken:
        spool.flush(log)
    assert (broken.value.line, broken.value.seq) == (4, 4) and "edited" in str(broken.value)
    assert numbers(log) == [1, 2]  # nothing after the broken line reached the log
    with pytest.raises(SpoolIntegrityError):
        spool.status()


def test_a_long_backlog_drains_a_bounded_batch_per_guarded_call(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "audit.spool", auto_batch=4)
    for n in range(1, 11):
        spool.append(denial(n))
    log = MemoryAuditLog()
    first = spool.maybe_flush(log)
    assert first is not None and (first.replayed, first.remaining) == (4, 6)
    while spool.maybe_flush(log) is not None:
        pass
    assert numbers(log) == list(range(1, 11)) and spool.status().pending == 0


def _append_slowly(path: str, worker: int, count: int) -> None:
    spool = Spool(path)
    for n in range(count):
        spool.append({**denial(n), "detail": {"worker": worker, "n": n}})
        time.sleep(0.001)


def test_flushing_while_other_processes_append_loses_and_repeats_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "audit.spool")
    Spool(path).append({**denial(0), "detail": {"worker": -1, "n": 0}})
    ctx = multiprocessing.get_context("fork")
    workers = [ctx.Process(target=_append_slowly, args=(path, w, 60)) for w in range(2)]
    for p in workers:
        p.start()
    spool, log = Spool(path, flush_batch=7), SQLiteAuditLog(tmp_path / "log.db")
    while any(p.is_alive() for p in workers):
        spool.flush(log, limit=11)  # partial flushes and compactions race the appenders
    for p in workers:
        p.join(60)
        assert p.exitcode == 0
    spool.flush(log)
    seen: dict[int, list[int]] = {}
    for e in log.entries():
        seen.setdefault(e.body["detail"]["worker"], []).append(e.body["detail"]["n"])
    assert seen == {-1: [0], 0: list(range(60)), 1: list(range(60))}
    assert [e.body["spool"]["seq"] for e in log.entries()] == list(range(1, 122))
    verify_chain(log.entries())
    assert spool.status().pending == 0


SLOW_FLUSH = textwrap.dedent(
    """
    import sys
    from execauth_core import Spool
    from execauth_core.stores.sqlite import SQLiteAuditLog

    print("ready", flush=True)
    Spool(sys.argv[1], flush_batch=5).flush(SQLiteAuditLog(sys.argv[2]))
    """
)


@pytest.mark.parametrize("delay", [0.05, 0.15, 0.3])
def test_sigkill_at_any_moment_of_a_flush_loses_and_repeats_nothing(tmp_path: Path, delay: float) -> None:
    import signal

    spool = spooled(tmp_path / "audit.spool", 300)
    db = tmp_path / "log.db"
    SQLiteAuditLog(db).close()
    script = tmp_path / "slow.py"
    script.write_text(SLOW_FLUSH)
    proc = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "audit.spool"), str(db)], stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(60)
        if proc.stdout is not None:
            proc.stdout.close()
    log = SQLiteAuditLog(db)
    done = len(numbers(log))
    assert numbers(log) == list(range(1, done + 1))  # a prefix, in order
    spool.flush(log)
    assert numbers(log) == list(range(1, 301))
    verify_chain(log.entries())
    print(f"\n[sigkill after {delay}s] {done} of 300 records were in the log")
