"""Guard.local signs audit checkpoints at a cadence, and keeps the joint one-step admission."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from execauth_core import AllowListPolicy, ConfigurationError, ExecutionDenied, FixedClock, Guard, LocalSigner
from execauth_core.keys import KeySet
from execauth_core.stores import sqlite as sqlite_store
from execauth_core.stores._tree import entry_bytes, leaf_of
from execauth_core.tlog import root_from_leaves
from execauth_core.tlog_checkpoint import Checkpointer, open_checkpoint
from execauth_core.tlog_verify import verify_log

from .conftest import Tool

ORIGIN = "execauth.local/audit"


def _run(guard: Guard, tool: Tool, n: int) -> None:
    for i in range(n):
        req = guard.proposal("search", {"q": str(i)}, principal="alice")
        guard.run(req, lambda req=req: tool(**req.args))  # type: ignore[misc]


def _checkpoints(guard: Guard, signer: LocalSigner) -> list[Any]:
    keys = KeySet.of_signer(signer)
    return [open_checkpoint(n, keys, origin=ORIGIN) for n in guard.audit_log.checkpoints()]  # type: ignore[attr-defined]


def test_every_n_appends_signs_a_checkpoint_that_verifies_and_keeps_joint_admission(
    tmp_path: Path, clock: FixedClock, signer: LocalSigner, tool: Tool, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"joint": 0, "consume": 0}
    joint_cls = sqlite_store._SQLiteJoint
    real_joint = joint_cls.consume_and_append
    real_consume = sqlite_store.SQLiteReplayStore.consume

    def counted_joint(self: Any, *a: Any, **kw: Any) -> Any:
        calls["joint"] += 1
        return real_joint(self, *a, **kw)

    def counted_consume(self: Any, *a: Any, **kw: Any) -> Any:
        calls["consume"] += 1
        return real_consume(self, *a, **kw)

    monkeypatch.setattr(joint_cls, "consume_and_append", counted_joint)
    monkeypatch.setattr(sqlite_store.SQLiteReplayStore, "consume", counted_consume)

    guard = Guard.local(AllowListPolicy(["search"]), data_dir=tmp_path, clock=clock, signer=signer, checkpoint_every=4)
    assert guard._joint_admission() is not None
    _run(guard, tool, 5)  # an execution and a result each: 10 entries
    assert len(tool.calls) == 5
    # Every execution went through the one-step consume-and-append, none through the two-step path.
    assert calls == {"joint": 5, "consume": 0}

    cps = _checkpoints(guard, signer)
    assert [cp.size for cp in cps] == [4, 8]
    entries = list(guard.audit_log.entries())
    assert len(entries) == 10
    for cp in cps:
        assert cp.root == root_from_leaves([leaf_of(entry_bytes(e)) for e in entries[: cp.size]])
    report = verify_log(guard.audit_log, keys=KeySet.of_signer(signer), origin=ORIGIN)
    assert report.ok, report.message
    assert (report.checkpoints, report.checkpoint_seq, report.unsigned) == (2, 8, 2)


def test_interval_signs_once_enough_time_passed(clock: FixedClock, signer: LocalSigner, tool: Tool) -> None:
    guard = Guard.local(AllowListPolicy(["search"]), clock=clock, signer=signer, checkpoint_interval=30)
    _run(guard, tool, 2)
    assert _checkpoints(guard, signer) == []
    clock.advance(30)
    _run(guard, tool, 1)  # the execution entry (seq 5) is the first append past the interval
    assert [cp.size for cp in _checkpoints(guard, signer)] == [5]
    _run(guard, tool, 3)
    assert len(_checkpoints(guard, signer)) == 1
    clock.advance(31)
    with pytest.raises(ExecutionDenied):  # a denial is an append too
        guard.run(guard.proposal("drop", {}, principal="alice"), lambda: tool())
    cps = _checkpoints(guard, signer)
    assert [cp.size for cp in cps] == [5, 13]  # 6 runs (12 entries), then the denial
    assert cps[-1].time == clock.now()
    report = verify_log(guard.audit_log, keys=KeySet.of_signer(signer), origin=ORIGIN)
    assert report.ok and report.unsigned == 0, report.message


def test_shared_store_guards_do_not_each_sign(
    tmp_path: Path, clock: FixedClock, signer: LocalSigner, tool: Tool
) -> None:
    url = f"sqlite:{tmp_path / 'shared.db'}"
    a = Guard.local(AllowListPolicy(["search"]), stores=url, clock=clock, signer=signer, checkpoint_every=4)
    b = Guard.local(AllowListPolicy(["search"]), stores=url, clock=clock, signer=signer, checkpoint_every=4)
    assert a.checkpointer is not None and a.checkpointer.shared
    for _ in range(3):
        _run(a, tool, 1)
        _run(b, tool, 1)
    sizes = [cp.size for cp in _checkpoints(a, signer)]
    # 12 entries: without the shared re-read each guard would sign its own stretch too.
    assert sizes == [4, 8, 12]
    assert verify_log(a.audit_log, keys=KeySet.of_signer(signer), origin=ORIGIN).ok


@pytest.mark.parametrize(
    "kwargs",
    [
        {"checkpoint_every": 0},
        {"checkpoint_every": -3},
        {"checkpoint_every": True},
        {"checkpoint_every": 2.5},
        {"checkpoint_interval": 0},
        {"checkpoint_interval": "60"},
        {"checkpoint_every": 5, "checkpoint_origin": "has space"},
        {"checkpoint_every": 5, "checkpoint_origin": "a+b"},
        {"checkpoint_every": 5, "checkpoint_origin": ""},
    ],
)
def test_bad_cadence_is_a_configuration_error(tmp_path: Path, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Guard.local(AllowListPolicy(["search"]), data_dir=tmp_path / "d", **kwargs)
    assert not (tmp_path / "d").exists()  # refused before anything was opened


def test_no_cadence_no_checkpointer(make_guard: Callable[..., Guard]) -> None:
    assert make_guard().checkpointer is None


def test_a_failing_checkpoint_never_fails_the_call(clock: FixedClock, signer: LocalSigner, tool: Tool) -> None:
    guard = Guard.local(AllowListPolicy(["search"]), clock=clock, signer=signer)

    class Broken(LocalSigner):
        def sign(self, data: bytes) -> bytes:
            raise RuntimeError("the HSM is away")

    guard.checkpointer = Checkpointer(guard.audit_log, Broken(bytes(32)), origin=ORIGIN, every=1)  # type: ignore[arg-type]
    _run(guard, tool, 2)
    assert len(tool.calls) == 2
    assert [e.event for e in guard.audit_log.entries()] == ["execution", "result"] * 2
    assert guard.audit_log.checkpoints() == []  # type: ignore[attr-defined]


def test_guard_refuses_a_non_checkpointer() -> None:
    from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore
    from execauth_core.tokens import TokenVerifier

    with pytest.raises(ConfigurationError):
        Guard(
            authority=None,
            verifier=TokenVerifier(keys=KeySet.of_signer(LocalSigner.generate()), issuer="i", audience="a"),
            replay_store=MemoryReplayStore(),
            audit_log=MemoryAuditLog(),
            checkpointer=object(),  # type: ignore[arg-type]
        )
