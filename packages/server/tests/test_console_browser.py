"""The approval console in a real headless Chromium (Playwright driving the system's
chromium) against real uvicorn servers: an approver signs in, sees the exact
arguments, decides, and a waiting agent run resumes (or never runs)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from execauth_core.stores.urls import open_stores
from execauth_server.console import SESSION_COOKIE, pretty_canonical
from execauth_server.testing import running_server

from .console_support import PASSWORDS, WaitingRun, console_config, launch_browser, refund_args, sign_in


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch_browser()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        yield ctx
    finally:
        ctx.close()


def _approval_events(config: dict[str, Any]) -> list[dict[str, Any]]:
    stores = open_stores(f"sqlite:{Path(config['data_dir']) / 'execauth.db'}")
    try:
        return [e.body for e in stores.audit.entries() if e.body["event"] in ("approval", "denial")]
    finally:
        stores.close()


def _state(srv: Any, rid: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v1/approvals/{rid}", headers={"Authorization": f"Bearer {srv.credential}"})
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def test_sign_in_see_exact_arguments_approve_and_the_run_resumes_once(
    tmp_path: Path, context: Any, request: pytest.FixtureRequest
) -> None:
    config = console_config(tmp_path)
    args = refund_args(note='<img src=x onerror="alert(1)"> & "quotes"')
    with running_server(config) as srv:
        agent = WaitingRun(srv.url, srv.credential, args).start()
        rid = agent.request_id
        assert rid is not None and agent.runs == []
        page = context.new_page()
        sign_in(page, srv.url, "carol")
        assert page.url == srv.url + "/console/"
        assert page.text_content("[data-testid=signed-in-user]") == "carol"
        row = page.locator("[data-testid=pending] tbody tr")
        assert row.count() == 1
        assert rid in row.inner_text() and "refund" in row.inner_text() and "alice" in row.inner_text()
        page.click(f"a[href='/console/requests/{rid}']")
        page.wait_for_load_state()
        assert page.url == f"{srv.url}/console/requests/{rid}"
        # The arguments exactly as they will run: the canonical proposal, laid out; the
        # markup inside a value is text on the page, never HTML.
        assert page.text_content("[data-testid=arguments]") == pretty_canonical(args)
        assert page.locator("img").count() == 0
        assert page.text_content("[data-testid=money]") == "250.00 USD"
        shown_digest = page.text_content("[data-testid=digest]")
        assert shown_digest == _state(srv, rid)["proposal_digest"]
        assert page.text_content("[data-testid=state]") == "pending"
        body = page.inner_text("main")
        assert "console-tests" in body and "epoch 3" in body and "APPROVAL_REQUIRED" in body
        assert "billing-bot" in body
        shot = tmp_path / "approval-console.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        target = os.environ.get("EXECAUTH_CONSOLE_SCREENSHOT")
        if target:  # how docs/img/approval-console.png is made
            shutil.copyfile(shot, target)

        page.fill("textarea[name=comment]", "invoice 1182 checked")
        page.click("button:has-text('Approve')")
        page.wait_for_load_state()
        assert page.url == f"{srv.url}/console/requests/{rid}"
        assert page.text_content("[data-testid=state]") == "approved"
        assert "carol" in page.inner_text("main") and "invoice 1182 checked" in page.inner_text("main")

        agent.join()
        assert agent.outcome == "refunded 250.00 USD"
        assert agent.runs == [args]  # exactly once, with exactly these arguments
        page.goto(srv.url + "/console/")
        assert "Nothing waits for a decision." in page.inner_text("main")
        assert rid in page.inner_text("[data-testid=decided]")
    events = [e for e in _approval_events(config) if e["event"] == "approval"]
    assert [e["detail"]["transition"] for e in events] == ["created", "approved", "consumed"]
    approved = events[1]
    assert approved["detail"]["by"] == "carol" and approved["detail"]["comment"] == "invoice 1182 checked"
    assert approved["proposal_digest"] == shown_digest and isinstance(approved["time"], int)


def test_reject_never_runs(tmp_path: Path, context: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        agent = WaitingRun(srv.url, srv.credential, refund_args(amount="900.00")).start()
        page = context.new_page()
        sign_in(page, srv.url, "dave")
        page.goto(f"{srv.url}/console/requests/{agent.request_id}")
        page.fill("textarea[name=comment]", "wrong customer")
        page.click("button:has-text('Reject')")
        page.wait_for_load_state()
        assert page.text_content("[data-testid=state]") == "rejected"
        agent.join()
        assert agent.outcome == "APPROVAL_REJECTED" and agent.runs == []
        # No approve form is left on a decided request; a forged one is refused.
        assert page.locator("[data-testid=decision]").count() == 0


def test_expired_request_shows_expired_and_cannot_be_approved(tmp_path: Path, context: Any) -> None:
    config = console_config(tmp_path, approvals={"request_ttl": 6})
    with running_server(config) as srv:
        agent = WaitingRun(srv.url, srv.credential, refund_args()).start()
        rid = agent.request_id
        page = context.new_page()
        sign_in(page, srv.url, "carol")
        page.goto(f"{srv.url}/console/requests/{rid}")
        assert page.text_content("[data-testid=state]") == "pending"
        # Wait until the form on the page is older than the request's expiry.
        time.sleep(max(0.0, _state(srv, rid)["expires_at"] + 1.1 - time.time()))
        page.click("button:has-text('Approve')")
        page.wait_for_load_state()
        assert page.text_content("[data-testid=reason-code]") == "APPROVAL_EXPIRED"
        page.goto(f"{srv.url}/console/requests/{rid}")
        assert page.text_content("[data-testid=state]") == "expired"
        assert page.locator("[data-testid=decision]").count() == 0
        assert "can no longer be approved" in page.inner_text("main")
        agent.join()
        assert agent.outcome == "APPROVAL_EXPIRED" and agent.runs == []
        assert _state(srv, rid)["grant"] is None


def test_post_without_csrf_token_is_refused(tmp_path: Path, context: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        agent = WaitingRun(srv.url, srv.credential, refund_args(), deadline=10).start()
        rid = agent.request_id
        page = context.new_page()
        sign_in(page, srv.url, "carol")
        page.goto(f"{srv.url}/console/requests/{rid}")
        digest = page.get_attribute("input[name=proposal_digest]", "value")
        csrf = page.get_attribute("input[name=csrf]", "value")
        assert digest and csrf
        url = f"{srv.url}/console/requests/{rid}/approve"
        # The browser context's own request API: it sends the session cookie.
        for form in (
            {"request_id": rid, "proposal_digest": digest},  # no token
            {"request_id": rid, "proposal_digest": digest, "csrf": csrf[:-2] + "xx"},  # a wrong one
        ):
            r = context.request.post(url, form=form)
            assert r.status == 403 and "CONSOLE_CSRF_INVALID" in r.text()
        # The right token from another site's page: refused by its Origin.
        r = context.request.post(
            url,
            form={"request_id": rid, "proposal_digest": digest, "csrf": csrf},
            headers={"Origin": "https://evil.example"},
        )
        assert r.status == 403 and "CONSOLE_CSRF_INVALID" in r.text()
        # An agent's credential (or any Authorization header) never stands in for a session.
        r = httpx.post(
            url,
            data={"request_id": rid, "proposal_digest": digest, "csrf": csrf},
            headers={"Authorization": f"Bearer {srv.credential}"},
        )
        assert r.status_code == 403 and "Sign in" in r.text
        assert _state(srv, rid)["state"] == "pending"
        # The same form with its token and the session: that one decides.
        r = context.request.post(url, form={"request_id": rid, "proposal_digest": digest, "csrf": csrf})
        assert r.status == 200 and r.url == f"{srv.url}/console/requests/{rid}"
        assert _state(srv, rid)["decided_by"] == "carol"
        agent.join()
        assert len(agent.runs) == 1
    refusals = [e for e in _approval_events(config) if e["event"] == "denial"]
    assert [e["reason_codes"] for e in refusals] == [["CONSOLE_CSRF_INVALID"]] * 3
    assert all(e["detail"]["via"] == "console" and e["executed"] is False for e in refusals)


def test_tampered_form_approves_nothing(tmp_path: Path, context: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        first = WaitingRun(srv.url, srv.credential, refund_args(order="A-1"), deadline=3).start()
        second = WaitingRun(srv.url, srv.credential, refund_args(order="A-2", amount="4000.00"), deadline=3).start()
        a, b = first.request_id, second.request_id
        page = context.new_page()
        sign_in(page, srv.url, "carol")
        other_digest = _state(srv, b)["proposal_digest"]
        for field, value in (("proposal_digest", other_digest), ("request_id", b)):
            page.goto(f"{srv.url}/console/requests/{a}")
            page.locator(f"input[name={field}]").evaluate("(el, v) => { el.value = v; }", value)
            page.click("button:has-text('Approve')")
            page.wait_for_load_state()
            assert page.text_content("[data-testid=reason-code]") == "APPROVAL_MISMATCH"
            assert "nothing done" in page.text_content("[data-testid=error]")
        # The form of A posted to B's address: refused as well.
        page.goto(f"{srv.url}/console/requests/{a}")
        page.locator("button:has-text('Approve')").evaluate(
            "(el, url) => el.setAttribute('formaction', url)", f"/console/requests/{b}/approve"
        )
        page.click("button:has-text('Approve')")
        page.wait_for_load_state()
        assert page.text_content("[data-testid=reason-code]") == "APPROVAL_MISMATCH"
        assert _state(srv, a)["state"] == "pending" and _state(srv, b)["state"] == "pending"
        first.join()
        second.join()
        assert first.outcome == second.outcome == "timed out"
        assert first.runs == second.runs == []


def test_two_approvers_at_once_give_one_decision(tmp_path: Path, browser: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        agent = WaitingRun(srv.url, srv.credential, refund_args()).start()
        rid = agent.request_id
        contexts = [browser.new_context(), browser.new_context()]
        try:
            pages = []
            for ctx, name in zip(contexts, ("carol", "dave"), strict=True):
                page = ctx.new_page()
                sign_in(page, srv.url, name)
                page.goto(f"{srv.url}/console/requests/{rid}")
                pages.append(page)
            # Both forms are filled on pages that show "pending"; both are sent before
            # either answer comes back.
            with pages[0].expect_navigation(), pages[1].expect_navigation():
                pages[0].click("button:has-text('Approve')", no_wait_after=True)
                pages[1].click("button:has-text('Reject')", no_wait_after=True)
            outcomes = []
            for page in pages:
                if page.locator("[data-testid=reason-code]").count():
                    outcomes.append(page.text_content("[data-testid=reason-code]"))
                else:
                    outcomes.append(page.text_content("[data-testid=state]"))
            assert sorted(outcomes, key=lambda o: o == "APPROVAL_DECIDED") in (
                ["approved", "APPROVAL_DECIDED"],
                ["rejected", "APPROVAL_DECIDED"],
            ), outcomes
            stored = _state(srv, rid)
            winner = "carol" if outcomes[0] != "APPROVAL_DECIDED" else "dave"
            assert stored["decided_by"] == winner
        finally:
            for ctx in contexts:
                ctx.close()
        agent.join()
        assert len(agent.runs) == (1 if stored["state"] == "approved" else 0)
    decisions = [
        e
        for e in _approval_events(config)
        if e["event"] == "approval" and e["detail"]["transition"] in ("approved", "rejected")
    ]
    assert len(decisions) == 1 and decisions[0]["detail"]["by"] == winner


def test_request_survives_a_server_restart_and_the_run_resumes(tmp_path: Path, context: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        port = srv.port
        # The agent keeps polling the same address through the restart.
        agent = WaitingRun(srv.url, srv.credential, refund_args(order="R-7"), deadline=40).start()
        rid = agent.request_id
    time.sleep(0.3)  # the agent meets a server that is down, and keeps waiting
    config["callers"] = [{"name": "agent", "secret_sha256": _caller_digest(agent.credential), "principals": ["*"]}]
    with running_server(config, port=port) as srv:
        assert srv.url.endswith(f":{port}")
        page = context.new_page()
        sign_in(page, srv.url, "carol")
        assert rid in page.inner_text("[data-testid=pending]")
        page.goto(f"{srv.url}/console/requests/{rid}")
        assert "R-7" in page.text_content("[data-testid=arguments]")
        page.click("button:has-text('Approve')")
        page.wait_for_load_state()
        assert page.text_content("[data-testid=state]") == "approved"
        agent.join()
        assert agent.outcome == "refunded 250.00 USD" and len(agent.runs) == 1


def _caller_digest(secret: str) -> str:
    from execauth_server.config import hash_secret

    return hash_secret(secret)


def test_wrong_password_gives_no_session_and_logout_ends_it(tmp_path: Path, browser: Any) -> None:
    config = console_config(tmp_path)
    with running_server(config) as srv:
        ctx = browser.new_context()
        try:
            page = ctx.new_page()
            sign_in(page, srv.url, "carol", "not-the-password")
            assert page.url == srv.url + "/console/login"
            assert "Wrong name or password." in page.inner_text("main")
            assert SESSION_COOKIE not in {c["name"] for c in ctx.cookies()}
            page.goto(srv.url + "/console/")
            assert page.url == srv.url + "/console/login"

            sign_in(page, srv.url, "carol", PASSWORDS["carol"])
            assert page.url == srv.url + "/console/"
            cookie = next(c for c in ctx.cookies() if c["name"] == SESSION_COOKIE)
            assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"
            old = cookie["value"]
            csrf = page.get_attribute("input[name=csrf]", "value")
            page.click("button:has-text('Sign out')")
            page.wait_for_load_state()
            assert page.url == srv.url + "/console/login"
        finally:
            ctx.close()
        # The old cookie, replayed by anyone, no longer opens anything.
        replay = browser.new_context()
        try:
            replay.add_cookies([{"name": SESSION_COOKIE, "value": old, "url": srv.url + "/console/"}])
            page = replay.new_page()
            page.goto(srv.url + "/console/")
            assert page.url == srv.url + "/console/login"
            r = replay.request.post(
                srv.url + "/console/requests/apr_x/approve",
                form={"csrf": csrf or "", "request_id": "apr_x", "proposal_digest": "sha256:00"},
            )
            assert r.status == 403 and "Sign in" in r.text()
        finally:
            replay.close()


def test_the_console_looks_after_its_pages(tmp_path: Path, context: Any) -> None:
    """Every page sends a CSP without scripts, no-store and frame denial; the stylesheet
    comes from the package (it is in the wheel)."""
    config = console_config(tmp_path)
    with running_server(config) as srv:
        page = context.new_page()
        answer = page.goto(srv.url + "/console/login")
        headers = answer.headers
        assert "script-src" not in headers["content-security-policy"]
        assert "default-src 'none'" in headers["content-security-policy"]
        assert headers["cache-control"] == "no-store" and headers["x-frame-options"] == "DENY"
        css = page.evaluate("getComputedStyle(document.querySelector('header')).backgroundColor")
        assert css == "rgb(36, 50, 74)"  # console.css was served and applied
