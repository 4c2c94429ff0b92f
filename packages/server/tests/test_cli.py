"""execauth serve: the hand-off from the core CLI, --add-caller, the no-config start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from execauth_core.cli import main as execauth
from execauth_server.config import hash_secret, load_config
from execauth_server.testing import _free_port, running_server

# the `execauth` command if it is on PATH (tox puts it there), else the same entry point
EXECAUTH = [shutil.which("execauth") or ""] if shutil.which("execauth") else [sys.executable, "-m", "execauth_core.cli"]


def test_add_caller_prints_the_secret_once_and_stores_its_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], server_config: dict[str, Any]
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump({k: v for k, v in server_config.items() if k != "limits"}))
    rc = execauth(
        ["serve", "--add-caller", "billing", "--principal", "alice", "--agent", "helper", "--config", str(config)]
    )
    out = capsys.readouterr().out
    assert rc == 0
    secret = out.strip().splitlines()[-1].rsplit(" ", 1)[1]
    text = config.read_text()
    assert secret not in text and hash_secret(secret) in text
    (caller,) = load_config(config).callers
    assert (caller.name, caller.principals, caller.agents) == ("billing", ("alice",), ("helper",))
    with running_server(config) as srv:  # the new secret works against a real server
        r = httpx.post(
            srv.url + "/v1/decide",
            headers={"Authorization": f"Bearer {secret}"},
            json={"tool": "search_docs", "args": {"q": "x"}, "principal": "alice", "agent": "helper"},
        )
        assert r.json()["outcome"] == "ALLOW"
    assert execauth(["serve", "--add-caller", "billing", "--principal", "a", "--config", str(config)]) == 2
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("doc", "fragment"),
    [
        ("surprise: 1\n", "unknown config key"),
        ("callers: [{name: a, secret_sha256: abc, principals: [p]}]\n", "64 hex digits"),
        ("policy: missing.yaml\n", "missing.yaml"),
        ("a: 1\na: 2\n", "duplicate key"),
        ("token_ttl: 0\n", "token_ttl"),
    ],
)
def test_bad_config_is_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], doc: str, fragment: str
) -> None:
    config = tmp_path / "server.yaml"
    config.write_text(doc)
    assert execauth(["serve", "--config", str(config), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("execauth: error: ") and fragment in err and err.count("\n") == 1


def test_serve_without_the_server_package_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "execauth_server.cli", None)  # as if not installed
    assert execauth(["serve"]) == 2
    assert capsys.readouterr().err == (
        "execauth: error: 'serve' needs the execauth-server package: pip install ./packages/server\n"
    )


def test_no_config_starts_on_loopback_and_says_where_things_are(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*EXECAUTH, "serve", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        ready = False
        while time.monotonic() < deadline and not ready:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                time.sleep(0.1)
        assert ready, "execauth serve did not come up"
        data = tmp_path / ".execauth-server"
        assert (data / "authority.key").stat().st_mode & 0o777 == 0o600
        assert (data / "caller.secret").stat().st_mode & 0o777 == 0o600
        assert (data / "execauth.db").exists()
        secret = (data / "caller.secret").read_text().strip()
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/decide",
            headers={"Authorization": f"Bearer {secret}"},
            json={"tool": "t", "args": {}, "principal": "p"},
        )
        assert r.json()["reason_codes"] == ["POLICY_EMPTY"]  # no policy: nothing is allowed
    finally:
        os.killpg(proc.pid, 15)
        out, err = proc.communicate(timeout=10)
    text = out.decode()
    assert f"http://127.0.0.1:{port}" in text
    for line in ("data:", "key:", "console: no approver has a password_argon2 yet", str(data)):
        assert line in text
    assert secret not in text + err.decode()


@pytest.mark.parametrize("workers", [2, 1])
def test_serve_on_port_0_prints_the_port_it_listens_on(
    tmp_path: Path, server_config: dict[str, Any], workers: int
) -> None:
    from execauth_server.testing import stop

    config = tmp_path / "server.yaml"
    config.write_text(yaml.safe_dump(server_config))
    proc = subprocess.Popen(
        [*EXECAUTH, "serve", "--config", str(config), "--workers", str(workers), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().decode()
        assert first.startswith("execauth serve: http://127.0.0.1:"), first
        port = int(first.split("http://127.0.0.1:", 1)[1].split(" ", 1)[0])
        assert port != 0, first
        deadline = time.monotonic() + 30
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if r.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "the printed URL never answered"
            time.sleep(0.2)
        assert r.json() == {"status": "ready"}
    finally:
        stop(proc)
        if proc.stdout is not None:
            proc.stdout.close()
