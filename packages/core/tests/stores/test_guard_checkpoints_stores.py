"""Guard replicas on one store URL sign checkpoints of their shared log at a cadence, on
every shareable backend, and keep the joint one-step admission."""

from __future__ import annotations

from execauth_core import AllowListPolicy, FixedClock, Guard, LocalSigner
from execauth_core.keys import KeySet
from execauth_core.tlog_checkpoint import open_checkpoint
from execauth_core.tlog_verify import verify_log

from .conftest import Backend

T0 = 1_767_225_600
ORIGIN = "execauth.local/audit"


def test_replicas_checkpoint_one_log_without_duplicates(shared_backend: Backend) -> None:
    signer = LocalSigner(bytes(range(32)))  # one authority key, as replicas of one service have
    a, b = (
        Guard.local(
            AllowListPolicy(["search"]),
            stores=shared_backend.url,
            signer=signer,
            clock=FixedClock(T0),
            checkpoint_every=4,
        )
        for _ in range(2)
    )
    try:
        assert a._joint_admission() is not None and b._joint_admission() is not None
        for i in range(6):
            guard = a if i % 2 == 0 else b
            guard.run(guard.proposal("search", {"q": str(i)}, principal="alice"), lambda: None)
    finally:
        a.close()
        b.close()
    log = shared_backend.open().audit
    keys = KeySet.of_signer(signer)
    sizes = [open_checkpoint(n, keys, origin=ORIGIN).size for n in log.checkpoints()]  # type: ignore[attr-defined]
    assert sizes == [4, 8, 12]  # without the shared re-read, replica a would also sign at 5 and 9
    report = verify_log(log, keys=keys, origin=ORIGIN)
    assert report.ok and report.records == 12 and report.unsigned == 0, report.message
