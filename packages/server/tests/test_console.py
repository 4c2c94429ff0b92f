"""The console without a browser: config, the password-hash command, sessions, sign-in
limits, the canonical layout of arguments, and sign-in over plain HTTP (httpx)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from execauth_core.canonical import canonicalize, loads_strict
from execauth_core.errors import ConfigurationError
from execauth_server.config import hash_secret, parse_config
from execauth_server.console import SESSION_COOKIE, LoginLimiter, Sessions, pretty_canonical
from execauth_server.testing import running_server

from .console_support import PASSWORDS, console_config, password_hash


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_config_takes_an_argon2_hash_and_refuses_what_is_not_one() -> None:
    config = parse_config({"approvers": [{"name": "carol", "password_argon2": password_hash("carol")}]})
    assert config.approvers[0].secret_sha256 is None and config.approvers[0].password_argon2
    both = parse_config(
        {"approvers": [{"name": "carol", "secret_sha256": hash_secret("s"), "password_argon2": password_hash("carol")}]}
    )
    assert both.approvers[0].secret_sha256 == hash_secret("s")
    for bad, match in (
        ({"name": "carol"}, "secret_sha256"),
        ({"name": "carol", "password_argon2": "hunter2"}, "argon2 hash"),
        ({"name": "carol", "password_argon2": "$argon2id$v=19$m=bad"}, "well-formed"),
        ({"name": "carol", "password": "x"}, "mapping of name"),
    ):
        with pytest.raises(ConfigurationError, match=match):
            parse_config({"approvers": [bad]})
    with pytest.raises(ConfigurationError, match="console takes only"):
        parse_config({"console": {"idle": 5}})
    with pytest.raises(ConfigurationError, match="idle_timeout"):
        parse_config({"console": {"idle_timeout": 5}})
    with pytest.raises(ConfigurationError, match="scheme://host"):
        parse_config({"console": {"origin": "approvals.example.com"}})
    ok = parse_config({"console": {"origin": "https://approvals.example.com/", "idle_timeout": 600}})
    assert ok.console.origin == "https://approvals.example.com" and ok.console.idle_timeout == 600


@pytest.mark.parametrize("command", [["-m", "execauth_server.cli"], ["-m", "execauth_core", "serve"]])
def test_hash_password_reads_stdin_never_argv(command: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, *command, "--hash-password"],
        input="a long enough password\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    phc = done.stdout.strip()
    assert phc.startswith("$argon2id$") and "a long enough password" not in done.stdout
    assert PasswordHasher().verify(phc, "a long enough password")
    parse_config({"approvers": [{"name": "carol", "password_argon2": phc}]})
    short = subprocess.run(
        [sys.executable, *command, "--hash-password"], input="short\n", capture_output=True, text=True, timeout=60
    )
    assert short.returncode == 2 and "at least 8" in short.stderr and short.stdout == ""


def test_sessions_end_when_idle_at_their_age_and_on_logout() -> None:
    clock = Clock()
    sessions = Sessions(idle=60, max_age=150, max_sessions=3, clock=clock)
    sid, session = sessions.create("carol")
    other, _ = sessions.create("carol")
    assert sid != other and len(sid) >= 40 and session.csrf != sessions.get(other).csrf  # type: ignore[union-attr]
    clock.now += 59
    assert sessions.get(sid) is session  # in use: the idle clock restarts
    clock.now += 59
    assert sessions.get(sid) is session
    assert sessions.get(other) is None  # idle for 118 s
    clock.now += 40
    assert sessions.get(sid) is None  # 158 s after sign-in: past max_age, however busy
    third, _ = sessions.create("dave")
    sessions.drop(third)
    assert sessions.get(third) is None and sessions.get("") is None and sessions.get("x" * 500) is None
    for _ in range(10):  # bounded: the least recently used go first
        sessions.create("eve")
    assert len(sessions) == 3


def test_login_limiter_window_and_bound() -> None:
    clock = Clock()
    limiter = LoginLimiter(limit=3, window=100, max_keys=50, clock=clock)
    for _ in range(3):
        assert limiter.blocked("account:carol") == 0
        limiter.failed("account:carol")
    assert limiter.blocked("account:carol") > 0
    clock.now += 101
    assert limiter.blocked("account:carol") == 0
    for i in range(500):
        limiter.failed(f"source:10.0.{i // 250}.{i % 250}")
    assert len(limiter._fails) <= 50


def test_pretty_canonical_differs_from_the_signed_bytes_only_in_layout() -> None:
    value = {
        "\U0001f600": "emoji key sorts by UTF-16 units",
        "\uffff": 2,
        "amount": "250.00",
        "nested": {"b": [1, 2.5, True, None, {}], "a": []},
        "html": "<b>&\"'</b>",
    }
    text = pretty_canonical(value)
    assert canonicalize(loads_strict(text.encode())) == canonicalize(value)
    # The keys appear in the canonical order (UTF-16 code units: the emoji before U+FFFF).
    canonical = canonicalize(value).decode()
    keys = re.findall(r'^\s*("(?:[^"\\]|\\.)*"):', text, flags=re.M)
    assert [k for k in keys if k in canonical] == keys
    assert canonical.index('"\U0001f600"') < canonical.index('"\uffff"') and text.index("\U0001f600") < text.index(
        "\uffff"
    )
    assert '"<b>&\\"\'</b>"' in text  # the canonical spelling; the template escapes it for HTML


def _login_form(client: httpx.Client) -> str:
    page = client.get("/console/login")
    assert page.status_code == 200
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def test_sign_in_needs_the_login_token_and_is_rate_limited(tmp_path: Path) -> None:
    config = console_config(tmp_path)
    config["approvers"].append({"name": "api-only", "secret_sha256": hash_secret("ea_api-only-approver-secret")})
    with running_server(config) as srv:
        with httpx.Client(base_url=srv.url) as client:
            token = _login_form(client)
            # Without the pre-session cookie the token proves nothing.
            bare = httpx.post(
                srv.url + "/console/login",
                data={"csrf": token, "username": "carol", "password": PASSWORDS["carol"]},
            )
            assert bare.status_code == 403 and SESSION_COOKIE not in bare.cookies
            # Another site's page posting the sign-in form.
            r = client.post(
                "/console/login",
                data={"csrf": token, "username": "carol", "password": PASSWORDS["carol"]},
                headers={"Origin": "http://evil.example"},
            )
            assert r.status_code == 403 and SESSION_COOKIE not in client.cookies
            # An approver without a console password cannot sign in with the API secret.
            r = client.post(
                "/console/login",
                data={"csrf": _login_form(client), "username": "api-only", "password": "ea_api-only-approver-secret"},
            )
            assert r.status_code == 401 and SESSION_COOKIE not in client.cookies
            for _ in range(5):
                r = client.post(
                    "/console/login", data={"csrf": _login_form(client), "username": "carol", "password": "wrong-one"}
                )
                assert r.status_code == 401
            # Locked for a while: even the right password opens no session now.
            r = client.post(
                "/console/login",
                data={"csrf": _login_form(client), "username": "carol", "password": PASSWORDS["carol"]},
            )
            assert r.status_code == 429 and "Too many failed sign-ins" in r.text
            assert SESSION_COOKIE not in client.cookies
            # Another account from the same address still may.
            r = client.post(
                "/console/login",
                data={"csrf": _login_form(client), "username": "dave", "password": PASSWORDS["dave"]},
            )
            assert r.status_code == 303 and r.headers["location"] == "/console/"
            assert SESSION_COOKIE in client.cookies
            # A JSON body is not a form.
            r = client.post("/console/logout", json={"csrf": "x"})
            assert r.status_code == 415


def test_cookie_is_secure_when_configured(tmp_path: Path) -> None:
    config = console_config(tmp_path, console={"secure_cookie": True})
    with running_server(config) as srv, httpx.Client(base_url=srv.url) as client:
        page = client.get("/console/login")
        assert "Secure" in page.headers["set-cookie"] and "SameSite=strict" in page.headers["set-cookie"]
        token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
        # httpx keeps Secure cookies for https only: send it by hand, as the browser would over https.
        r = client.post(
            "/console/login",
            data={"csrf": token, "username": "carol", "password": PASSWORDS["carol"]},
            headers={"Cookie": f"execauth_console_login={token}"},
        )
        assert r.status_code == 303
        session = r.headers.get_list("set-cookie")[0]
        assert session.startswith(SESSION_COOKIE + "=") and "Secure" in session and "HttpOnly" in session
        assert "Path=/console" in session


def test_unknown_request_and_signed_out_pages(tmp_path: Path) -> None:
    config: dict[str, Any] = console_config(tmp_path)
    with running_server(config) as srv, httpx.Client(base_url=srv.url) as client:
        r = client.get("/console/requests/apr_nothing")
        assert r.status_code == 303 and r.headers["location"] == "/console/login"
        r = client.post(
            "/console/login",
            data={"csrf": _login_form(client), "username": "carol", "password": PASSWORDS["carol"]},
        )
        assert r.status_code == 303
        r = client.get("/console/requests/apr_nothing")
        assert r.status_code == 404 and "APPROVAL_UNKNOWN" in r.text
        r = client.get("/console/requests/<script>")
        assert r.status_code == 404 and "<script>" not in r.text
        css = client.get("/console/static/console.css")
        assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


@pytest.mark.parametrize(("ci", "expected"), [("true", "1 error"), ("", "1 skipped")])
def test_browser_tests_fail_in_ci_without_chromium(ci: str, expected: str) -> None:
    """Without the browser the console tests skip on a laptop and fail under CI=true."""
    here = Path(__file__).resolve().parent
    env = {**os.environ, "CI": ci, "EXECAUTH_CHROMIUM": str(here / "no-such-chromium")}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            f"{here / 'test_console_browser.py'}::test_reject_never_runs",
        ],
        cwd=here.parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert expected in done.stdout, done.stdout[-2000:]
    assert done.returncode == (1 if ci == "true" else 0)
    assert ("CI=true: the browser tests must run" in done.stdout) is (ci == "true")


def test_a_keyed_approver_decides_nothing_in_the_console(tmp_path: Path) -> None:
    """An approver with their own key signs each decision where the key is (the CLI):
    the browser holds no key, so the console refuses their approve and the request stays
    pending; the waiting run is still waiting."""
    from execauth_core import LocalSigner
    from execauth_core.approver_keys import public_key_text

    from .console_support import WaitingRun, refund_args

    config = console_config(tmp_path)
    config["approvers"][0]["public_key"] = public_key_text(LocalSigner.generate().public_key)  # carol
    with running_server(config) as srv, httpx.Client(base_url=srv.url) as client:
        agent = WaitingRun(srv.url, srv.credential, refund_args(), deadline=3.0).start()
        r = client.post(
            "/console/login",
            data={"csrf": _login_form(client), "username": "carol", "password": PASSWORDS["carol"]},
        )
        assert r.status_code == 303
        page = client.get(f"/console/requests/{agent.request_id}")
        fields = dict(re.findall(r'name="(csrf|request_id|proposal_digest)" value="([^"]+)"', page.text))
        assert fields["request_id"] == agent.request_id
        r = client.post(f"/console/requests/{agent.request_id}/approve", data={**fields, "comment": "ok"})
        assert r.status_code == 403 and "APPROVER_SIGNATURE_REQUIRED" in r.text
        shown = httpx.get(
            f"{srv.url}/v1/approvals/{agent.request_id}", headers={"Authorization": f"Bearer {srv.credential}"}
        )
        assert shown.status_code == 200 and shown.json()["state"] == "pending"
        agent.join()
        assert agent.runs == [] and agent.outcome == "timed out"
