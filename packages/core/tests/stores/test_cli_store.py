"""``execauth audit verify|checkpoint --store URL``: the shared log, on every backend
replicas can share, verified (and checkpointed) from the command line."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from execauth_core import AllowListPolicy, Authority, FixedClock, Guard, KeySet, LocalSigner, TokenVerifier
from execauth_core.audit import verify_chain
from execauth_core.cli import _verify_to_head
from execauth_core.cli import main as cli
from execauth_core.errors import AuditIntegrityError
from execauth_core.stores.urls import Stores

from .conftest import DATABASE_URL, Backend

T0 = 1_767_225_600


def guarded_calls(stores: Stores, n: int) -> None:
    signer = LocalSigner(bytes(range(32)))
    guard = Guard(
        authority=Authority(AllowListPolicy(["search"]), signer, issuer="iss", audience="aud"),
        verifier=TokenVerifier(keys=KeySet.of_signer(signer), issuer="iss", audience="aud"),
        replay_store=stores.replay,
        audit_log=stores.audit,
        clock=FixedClock(T0),
    )
    for i in range(n):
        req = guard.proposal("search", {"q": i}, principal="alice")
        guard.run(req, lambda: None)


def output(capsys: pytest.CaptureFixture[str]) -> Any:
    return json.loads(capsys.readouterr().out)


def test_verify_and_checkpoint_a_shared_log_by_url(
    shared_backend: Backend, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_calls(shared_backend.open(), 3)  # execution + result entries
    capsys.readouterr()
    assert cli(["audit", "verify", "--store", shared_backend.url]) == 0
    assert output(capsys)["records"] == 6
    assert cli(["keys", "generate", "--out", str(tmp_path / "k")]) == 0
    capsys.readouterr()
    cp = tmp_path / "cp.json"
    key = str(tmp_path / "k" / "authority.key")
    assert cli(["audit", "checkpoint", "--store", shared_backend.url, "--key", key, "--out", str(cp)]) == 0
    assert output(capsys)["seq"] == 6
    guarded_calls(shared_backend.open(), 1)
    jwks = str(tmp_path / "k" / "jwks.json")
    assert cli(["audit", "verify", "--store", shared_backend.url, "--checkpoint", str(cp), "--jwks", jwks]) == 0
    report = output(capsys)
    assert {k: report[k] for k in ("ok", "records", "head", "checkpoint_seq")} == {
        "ok": True,
        "records": 8,
        "head": shared_backend.open().audit.head()[1],
        "checkpoint_seq": 6,
    }
    assert report["unsigned_records"] == 2


def _tamper(backend: Backend, seq: int) -> None:
    """Change one byte of entry ``seq``'s stored body, behind the store's back."""
    if backend.name == "sqlite":
        with sqlite3.connect(backend.path) as conn:  # type: ignore[attr-defined]
            (body,) = conn.execute("SELECT body FROM audit_log WHERE seq = ?", (seq,)).fetchone()
            conn.execute("UPDATE audit_log SET body = ? WHERE seq = ?", (bytes(body).replace(b"alice", b"mallo"), seq))
    elif backend.name == "redis":
        key = backend.prefix + "{audit}:log"  # type: ignore[attr-defined]
        item = backend.admin.lindex(key, seq - 1)  # type: ignore[attr-defined]
        backend.admin.lset(key, seq - 1, item.replace(b"alice", b"mallo"))  # type: ignore[attr-defined]
    else:
        import psycopg

        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            (body,) = conn.execute(
                f'SELECT body FROM "{backend.schema}".audit_log WHERE seq = %s',  # type: ignore[attr-defined]
                (seq,),
            ).fetchone()  # type: ignore[misc]
            conn.execute(
                f'UPDATE "{backend.schema}".audit_log SET body = %s WHERE seq = %s',  # type: ignore[attr-defined]
                (bytes(body).replace(b"alice", b"mallo"), seq),
            )


def test_an_edited_entry_fails_verification_with_its_seq(
    shared_backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    guarded_calls(shared_backend.open(), 2)
    _tamper(shared_backend, 3)  # the second call's execution entry
    capsys.readouterr()
    assert cli(["audit", "verify", "--store", shared_backend.url]) == 1
    assert output(capsys) == {
        "ok": False,
        "first_bad_seq": 3,
        "message": "audit chain broken at seq 3: body does not match its digest (edited)",
    }


class _Live:
    """An audit log that other writers append to just after its head is read."""

    def __init__(self, stores: Stores) -> None:
        self._stores = stores

    def head(self) -> tuple[int, str]:
        head = self._stores.audit.head()
        guarded_calls(self._stores, 2)  # another replica goes on working
        return head

    def entries(self, start: int = 1) -> Any:
        return self._stores.audit.entries(start)


def test_a_log_still_being_written_verifies_up_to_the_head_read(shared_backend: Backend) -> None:
    stores = shared_backend.open()
    guarded_calls(stores, 2)
    assert _verify_to_head(_Live(stores))[0] == 4
    assert stores.audit.head()[0] == 8  # the appends made meanwhile are there, for the next run
    # Reading every entry against a head read earlier would call a healthy log broken.
    head = stores.audit.head()
    guarded_calls(stores, 1)
    with pytest.raises(AuditIntegrityError, match="head record does not match"):
        verify_chain(stores.audit.entries(), expected_head=head)


@pytest.mark.parametrize("url", ["memory://", "sqlite:{tmp}/nope.db"])
def test_a_store_url_with_no_log_behind_it_is_a_usage_error(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["audit", "verify", "--store", url.format(tmp=tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("execauth: error: ")
    assert not (tmp_path / "nope.db").exists()
