"""What the console tests share: a policy that asks a person above 200 USD, approvers
with console passwords, a waiting agent run in a thread, and a real Chromium."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from execauth_core import ApprovalRequired, Guard
from execauth_core.approvals import ApprovalError
from execauth_core.errors import AuthorityUnavailable
from execauth_core.messages import AuthorizationRequest

CHROMIUM = os.environ.get("EXECAUTH_CHROMIUM", "/usr/bin/chromium")
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

POLICY = """\
id: console-tests
epoch: 3
currencies: {USD: 2}
principals:
  - id: alice
    agents: [billing-bot]
    allow_tools: [refund]
    max_risk_tier: E3
    amount_ceilings: {USD: "5000.00"}
    require_approval_above: {USD: "200.00"}
"""

TOOLS = """\
- name: refund
  version: "1.0"
  effects: [data.write]
  amount_arg: amount
  currency_arg: currency
  args_schema:
    type: object
    properties:
      order: {type: string}
      amount: {type: string}
      currency: {type: string}
      note: {type: string}
    required: [order, amount, currency]
"""

PASSWORDS = {"carol": "carol-console-pass-1", "dave": "dave-console-pass-2"}
_HASHES: dict[str, str] = {}


def password_hash(name: str) -> str:
    """A real argon2id hash, with light parameters: each sign-in costs milliseconds, not
    the default's 64 MiB (verification reads the parameters from the hash itself)."""
    if name not in _HASHES:
        from argon2 import PasswordHasher

        _HASHES[name] = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1).hash(PASSWORDS[name])
    return _HASHES[name]


def console_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "data"),
        "approvers": [{"name": n, "password_argon2": password_hash(n)} for n in PASSWORDS],
        **extra,
    }


def refund_args(order: str = "A-1182", amount: str = "250.00", **more: str) -> dict[str, str]:
    return {"order": order, "amount": amount, "currency": "USD", **more}


@dataclass
class WaitingRun:
    """An agent run in a thread: it proposes, gets REQUIRE_APPROVAL with a request
    id, polls the authority for the grant, and runs the tool once it has it."""

    url: str
    credential: str
    args: dict[str, str]
    runs: list[dict[str, Any]] = field(default_factory=list)
    request_id: str | None = None
    outcome: str | None = None
    error: BaseException | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    deadline: float = 30.0

    def start(self) -> WaitingRun:
        self.thread = threading.Thread(target=self._run, daemon=True, name="execauth-waiting-agent")
        self.thread.start()
        assert self.ready.wait(15), "the agent run never got its approval request"
        assert self.request_id is not None, f"no request id: {self.outcome} {self.error!r}"
        return self

    def tool(self) -> str:
        self.runs.append(dict(self.args))  # a real execution, counted
        return f"refunded {self.args['amount']} {self.args['currency']}"

    def _run(self) -> None:
        guard = Guard.remote(self.url, credential=self.credential)
        try:
            request: AuthorizationRequest = guard.proposal("refund", self.args, principal="alice", agent="billing-bot")
            try:
                guard.run(request, self.tool)
                self.outcome = "ran without approval"
                return
            except ApprovalRequired as exc:
                self.request_id = exc.request_id
            finally:
                self.ready.set()
            end = time.monotonic() + self.deadline
            while time.monotonic() < end:
                try:
                    grant = guard.approval_for(self.request_id or "", request)
                except ApprovalError as exc:
                    if exc.reason_code == "APPROVAL_REQUIRED":
                        time.sleep(0.1)
                        continue
                    self.outcome = exc.reason_code  # rejected, expired, ...: never runs
                    return
                except AuthorityUnavailable:
                    time.sleep(0.1)  # the server is restarting: keep waiting
                    continue
                self.outcome = guard.run(request, self.tool, approval=grant)
                return
            self.outcome = "timed out"
        except BaseException as exc:  # reported to the test
            self.error = exc
        finally:
            self.ready.set()
            guard.close()

    def join(self, timeout: float = 30.0) -> WaitingRun:
        assert self.thread is not None
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the agent run is still waiting"
        if self.error is not None:
            raise self.error
        return self


def launch_browser() -> Iterator[Any]:
    """One headless Chromium (the system's, never a downloaded build) for a module."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if IN_CI:
            pytest.fail("playwright is not installed (CI=true: the browser tests must run)")
        pytest.skip("playwright is not installed")
    if not os.access(CHROMIUM, os.X_OK):
        if IN_CI:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (CI=true: the browser tests must run)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y --no-install-recommends chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser
        finally:
            browser.close()


def sign_in(page: Any, url: str, name: str, password: str | None = None) -> None:
    page.goto(url + "/console/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password if password is not None else PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_load_state()
