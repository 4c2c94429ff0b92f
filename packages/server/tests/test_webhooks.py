"""Approval webhooks against real servers: the execauth server and a receiver app, both
uvicorn on 127.0.0.1 ephemeral ports. Signatures, retries with back-off, hanging,
failing and hostile receivers, a restart with deliveries pending, expiry."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from execauth_core.errors import ConfigurationError
from execauth_server.config import hash_secret, parse_config
from execauth_server.testing import running_server, serving
from execauth_server.webhooks import Delivery, Outbox, WebhookSignatureError, sign_payload, verify_signature

POLICY = """\
id: webhook-tests
epoch: 1
principals:
  - id: alice
    allow_tools: [refund]
    max_risk_tier: E3
    require_approval_effects: [data.write]
"""

TOOLS = """\
- name: refund
  version: "1.0"
  effects: [data.write]
  args_schema:
    type: object
    properties: {order: {type: string}, amount: {type: string}}
    required: [order, amount]
"""

APPROVER = "ea_webhook-approver-secret-0123456789"
SECRET = "whsec_test-secret-0123456789abcdef"
PUBLIC = "https://approvals.example.test"


def _proposal(order: str = "A1") -> dict[str, Any]:
    return {"tool": "refund", "args": {"order": order, "amount": "250.00"}, "principal": "alice"}


@dataclass
class Hit:
    at: float
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver: records every POST; ``script[path]`` says how to answer each
    (an int status, ``"hang"``, ``"redirect"``, ``"huge"``); after the script, 200."""

    url: str = ""
    hits: list[Hit] = field(default_factory=list)
    script: dict[str, list[Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def at(self, path: str) -> list[Hit]:
        with self.lock:
            return [h for h in self.hits if h.path == path]

    def wait_for(self, path: str, count: int, timeout: float = 10.0) -> list[Hit]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.at(path)
            if len(got) >= count:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{path}: {len(self.at(path))} deliveries, wanted {count}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()

    async def hook(request: Request) -> Response:
        body = await request.body()
        path = request.url.path
        with rec.lock:
            rec.hits.append(Hit(time.monotonic(), path, dict(request.headers), body))
            steps = rec.script.get(path) or []
            step = steps.pop(0) if steps else 200
        if step == "hang":
            await asyncio.sleep(1.5)
            return Response("late")
        if step == "redirect":
            return RedirectResponse(rec.url + "/redirected", status_code=302)
        if step == "huge":
            return Response(b"x" * (4 * 1024 * 1024))
        return Response(f"status {step}", status_code=int(step))

    app = Starlette(routes=[Route("/{name:path}", hook, methods=["POST"])])
    with serving(app) as url:
        rec.url = url
        yield rec


@pytest.fixture
def base(tmp_path: Path) -> dict[str, Any]:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "tools.yaml").write_text(TOOLS)
    (tmp_path / "hook.secret").write_text(SECRET + "\n")
    return {
        "policy": str(tmp_path / "policy.yaml"),
        "manifests": str(tmp_path / "tools.yaml"),
        "data_dir": str(tmp_path / "data"),
        "public_url": PUBLIC + "/",
        "approvers": [{"name": "carol", "secret_sha256": hash_secret(APPROVER)}],
    }


def _hook(url: str, tmp: Path, **extra: Any) -> dict[str, Any]:
    return {"name": extra.pop("name", "ops"), "url": url, "secret_file": str(tmp / "hook.secret"), **extra}


def _ask(srv: Any, order: str = "A1") -> tuple[str, float]:
    t0 = time.monotonic()
    r = httpx.post(srv.url + "/v1/decide", json=_proposal(order), headers={"Authorization": f"Bearer {srv.credential}"})
    elapsed = time.monotonic() - t0
    assert r.status_code == 200 and r.json()["outcome"] == "REQUIRE_APPROVAL", r.text
    return r.headers["x-execauth-approval-request"], elapsed


def _decide(srv: Any, rid: str, verb: str) -> httpx.Response:
    return httpx.post(f"{srv.url}/v1/approvals/{rid}/{verb}", headers={"Authorization": f"Bearer {APPROVER}"})


def _state(srv: Any, rid: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/v1/approvals/{rid}", headers={"Authorization": f"Bearer {APPROVER}"})
    assert r.status_code == 200
    data: dict[str, Any] = r.json()
    return data


def _rows(data_dir: str) -> list[Delivery]:
    box = Outbox(Path(data_dir) / "webhooks.db")
    try:
        return box.all()
    finally:
        box.close()


def _row_for(data_dir: str, rid: str) -> Delivery:
    (row,) = [r for r in _rows(data_dir) if json.loads(r.body)["request_id"] == rid]
    return row


def _wait(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_requested_approved_rejected_are_signed_posts_with_the_console_link(
    base: dict[str, Any], receiver: Receiver, tmp_path: Path
) -> None:
    config = {**base, "webhooks": [_hook(receiver.url + "/ops", tmp_path)]}
    with running_server(config) as srv:
        rid, _ = _ask(srv)
        (hit,) = receiver.wait_for("/ops", 1)
        verify_signature(SECRET, hit.body, hit.headers)
        payload = json.loads(hit.body)
        assert payload["event"] == "approval.requested" == hit.headers["x-execauth-event"]
        assert payload["request_id"] == rid and payload["state"] == "pending"
        assert payload["console_url"] == f"{PUBLIC}/console/requests/{rid}"
        assert payload["tool"] == "refund" and payload["principal"] == "alice" and payload["agent"] is None
        assert payload["proposal_digest"] == _state(srv, rid)["proposal_digest"]
        assert payload["reason_codes"] and payload["expires_at"] > payload["created_at"]
        assert "args" not in payload  # the arguments stay on the server: people open the console
        assert hit.headers["x-execauth-delivery"] == payload["delivery_id"]
        assert hit.headers["x-execauth-signature"].startswith("sha256=")

        # A tampered body, another secret, a stale timestamp, a missing header: refused.
        with pytest.raises(WebhookSignatureError):
            verify_signature(SECRET, hit.body.replace(b"refund", b"refunx"), hit.headers)
        with pytest.raises(WebhookSignatureError):
            verify_signature("whsec_another-secret-0123456789", hit.body, hit.headers)
        with pytest.raises(WebhookSignatureError):
            verify_signature(SECRET, hit.body, hit.headers, now=int(hit.headers["x-execauth-timestamp"]) + 301)
        with pytest.raises(WebhookSignatureError):
            verify_signature(SECRET, hit.body, {"X-Execauth-Timestamp": hit.headers["x-execauth-timestamp"]})
        # A signature moved to another timestamp does not verify either.
        moved = {**hit.headers, "x-execauth-timestamp": str(int(hit.headers["x-execauth-timestamp"]) + 1)}
        with pytest.raises(WebhookSignatureError):
            verify_signature(SECRET, hit.body, moved)

        assert _decide(srv, rid, "approve").status_code == 200
        approved = json.loads(receiver.wait_for("/ops", 2)[1].body)
        assert approved["event"] == "approval.approved" and approved["decided_by"] == "carol"
        assert approved["state"] == "approved" and approved["request_id"] == rid

        rid2, _ = _ask(srv, "A2")
        receiver.wait_for("/ops", 3)
        assert _decide(srv, rid2, "reject").status_code == 200
        hits = receiver.wait_for("/ops", 4)
        rejected = json.loads(hits[3].body)
        assert rejected["event"] == "approval.rejected" and rejected["request_id"] == rid2
        for h in hits:
            verify_signature(SECRET, h.body, h.headers)
        assert len({h.headers["x-execauth-delivery"] for h in hits}) == 4
    rows = _rows(base["data_dir"])
    assert [r.state for r in rows] == ["delivered"] * 4 and all(r.attempts == 1 for r in rows)


def test_500_twice_then_200_is_three_attempts_with_growing_delays(
    base: dict[str, Any], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script["/flaky"] = [500, 500, 200]
    hook = _hook(receiver.url + "/flaky", tmp_path, events=["approval.requested"], retry_delay=0.4, max_attempts=5)
    with running_server({**base, "webhooks": [hook]}) as srv:
        _ask(srv)
        hits = receiver.wait_for("/flaky", 3)
        time.sleep(0.3)
        assert len(receiver.at("/flaky")) == 3  # delivered on the third: no fourth
        _wait(lambda: _rows(base["data_dir"])[0].state == "delivered")
    gap1, gap2 = hits[1].at - hits[0].at, hits[2].at - hits[1].at
    # Back-off: each wait is drawn from the upper half of a cap that doubles (0.4, 0.8).
    assert gap1 >= 0.2 and gap2 >= 0.4, (gap1, gap2)
    assert len({h.headers["x-execauth-delivery"] for h in hits}) == 1  # one delivery, retried
    for h in hits:
        verify_signature(SECRET, h.body, h.headers)
    (row,) = _rows(base["data_dir"])
    assert row.attempts == 3 and row.last_status == 200


def test_a_hanging_receiver_times_out_is_retried_and_never_slows_decisions(
    base: dict[str, Any], receiver: Receiver, tmp_path: Path
) -> None:
    receiver.script["/slow"] = ["hang"] * 100
    hook = _hook(
        receiver.url + "/slow", tmp_path, events=["approval.requested"], timeout=1.0, retry_delay=0.1, max_attempts=2
    )
    with running_server({**base, "webhooks": [hook]}) as srv:
        rid, _ = _ask(srv)
        receiver.wait_for("/slow", 1)  # the first attempt is hanging now
        latencies = [_ask(srv, f"B{i}")[1] for i in range(3)]
        # Decisions answer while a delivery hangs (a hanging attempt lasts the full 1.0 s).
        assert max(latencies) < 1.0, latencies
        _wait(lambda: _row_for(base["data_dir"], rid).state == "failed", 15)
        assert _state(srv, rid)["state"] == "pending"
    first = _row_for(base["data_dir"], rid)
    assert first.attempts == 2 and first.last_error == "timeout"


def test_failing_and_hostile_receivers_approve_nothing(
    base: dict[str, Any], receiver: Receiver, tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{s.getsockname()[1]}/nobody"  # closed again before the server starts
    receiver.script.update({"/gone": [404], "/moved": ["redirect"], "/huge": ["huge"], "/busy": [429, 200]})
    fast = {"events": ["approval.requested"], "retry_delay": 0.1, "max_attempts": 3, "timeout": 2.0}
    hooks = [
        _hook(down, tmp_path, name="down", **fast),
        _hook(receiver.url + "/gone", tmp_path, name="gone", **fast),
        _hook(receiver.url + "/moved", tmp_path, name="moved", **fast),
        _hook(receiver.url + "/huge", tmp_path, name="huge", **fast),
        _hook(receiver.url + "/busy", tmp_path, name="busy", **fast),
    ]
    with running_server({**base, "webhooks": hooks}) as srv:
        rid, elapsed = _ask(srv)
        assert elapsed < 1.0

        def settled() -> bool:
            return all(r.state != "pending" for r in _rows(base["data_dir"]))

        _wait(settled, 15)
        rows = {r.webhook: r for r in _rows(base["data_dir"])}
        assert rows["down"].state == "failed" and rows["down"].attempts == 3  # connection refused: retried
        assert rows["gone"].state == "failed" and rows["gone"].attempts == 1  # 404: not retried
        assert rows["moved"].state == "failed" and rows["moved"].last_status == 302
        assert receiver.at("/redirected") == []  # the redirect was not followed
        assert rows["huge"].state == "delivered"  # 4 MiB answer: cut off, server fine
        assert rows["busy"].state == "delivered" and rows["busy"].attempts == 2  # 429 is retried
        # Nothing a receiver did approved anything; the server still decides.
        shown = _state(srv, rid)
        assert shown["state"] == "pending" and shown["grant"] is None
        assert httpx.get(srv.url + "/readyz").status_code == 200
        _ask(srv, "A9")


def test_pending_deliveries_are_sent_after_a_restart(base: dict[str, Any], receiver: Receiver, tmp_path: Path) -> None:
    receiver.script["/later"] = [503] * 1000
    hook = _hook(receiver.url + "/later", tmp_path, events=["approval.requested"], retry_delay=0.2, max_attempts=50)
    config = {**base, "webhooks": [hook]}
    with running_server(config) as srv:
        rid, _ = _ask(srv)
        receiver.wait_for("/later", 2)
    (row,) = _rows(base["data_dir"])
    assert row.state == "pending"
    receiver.script["/later"] = []  # the receiver recovers while the server is down
    n = len(receiver.at("/later"))
    with running_server(config):
        _wait(lambda: _rows(base["data_dir"])[0].state == "delivered")
    delivered = receiver.at("/later")[n:]
    assert delivered and delivered[-1].headers["x-execauth-delivery"] == row.id
    assert json.loads(delivered[-1].body)["request_id"] == rid


def test_expiry_is_announced_by_the_sweep(base: dict[str, Any], receiver: Receiver, tmp_path: Path) -> None:
    hook = _hook(receiver.url + "/exp", tmp_path, events=["approval.expired"])
    config = {**base, "webhooks": [hook], "approvals": {"request_ttl": 1, "sweep_interval": 1}}
    with running_server(config) as srv:
        rid, _ = _ask(srv)
        (hit,) = receiver.wait_for("/exp", 1, timeout=10)  # nobody reads the request: the sweep expires it
        payload = json.loads(hit.body)
        assert payload["event"] == "approval.expired" and payload["request_id"] == rid
        assert payload["state"] == "expired"
        verify_signature(SECRET, hit.body, hit.headers)
        time.sleep(1.5)
        assert len(receiver.at("/exp")) == 1  # once


def test_sign_payload_is_hmac_sha256_over_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"event":"approval.requested"}'
    want = hmac.new(SECRET.encode(), b"1764700000." + body, hashlib.sha256).hexdigest()
    assert sign_payload(SECRET, body, 1764700000) == "sha256=" + want
    verify_signature(
        SECRET, body, {"X-Execauth-Timestamp": "1764700000", "X-Execauth-Signature": "sha256=" + want}, now=1764700100
    )


@pytest.mark.parametrize(
    ("hook", "message"),
    [
        ({"url": "ftp://example.test/x"}, "http:// or https://"),
        ({"url": "https:///nohost"}, "with a host"),
        ({"url": "file:///etc/passwd"}, "http:// or https://"),
        ({"secret": "short"}, "at least 16"),
        ({"secret_env": "EXECAUTH_TEST_NO_SUCH_VARIABLE"}, "is not set"),
        ({"secret_file": "/nonexistent/secret"}, "secret_file"),
        ({"events": ["approval.maybe"]}, "events"),
        ({"timeout": 0}, "timeout"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"colour": "red"}, "unknown key"),
    ],
)
def test_bad_webhook_config_is_refused_at_load(hook: dict[str, Any], message: str) -> None:
    entry = {"name": "ops", "url": "https://hooks.example.test/x", "secret": SECRET, **hook}
    if any(k in hook for k in ("secret_env", "secret_file")):
        del entry["secret"]
    with pytest.raises(ConfigurationError, match=message):
        parse_config({"webhooks": [entry]})


def test_webhook_config_secret_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXECAUTH_TEST_HOOK_SECRET", SECRET)
    (tmp_path / "s").write_text(SECRET + "\n")
    config = parse_config(
        {
            "public_url": "https://a.example.test/base/",
            "webhooks": [
                {"name": "a", "url": "https://h.example.test/1", "secret_env": "EXECAUTH_TEST_HOOK_SECRET"},
                {"name": "b", "url": "http://h.example.test/2", "secret_file": "s", "events": ["approval.expired"]},
            ],
        },
        base=tmp_path,
    )
    assert config.public_url == "https://a.example.test/base"
    assert [w.secret for w in config.webhooks] == [SECRET.encode()] * 2
    assert config.webhooks[1].events == ("approval.expired",)
    assert SECRET not in repr(config)  # secrets stay out of logs and tracebacks
    with pytest.raises(ConfigurationError, match="exactly one"):
        parse_config(
            {"webhooks": [{"name": "a", "url": "https://h.example.test", "secret": SECRET, "secret_file": "s"}]}
        )
    with pytest.raises(ConfigurationError, match="public_url"):
        parse_config({"public_url": "javascript:alert(1)"})


def test_the_outbox_prunes_finished_rows_only(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "webhooks.db")
    try:
        for i, state in enumerate(("delivered", "failed", "pending")):
            box.add(f"whd_{i}", "ops", "approval.requested", b"{}", now=100.0)
            if state != "pending":
                box.attempted(f"whd_{i}", state=state, next_at=0, status=None, error=None)
        box.add("whd_new", "ops", "approval.requested", b"{}", now=1000.0)
        box.attempted("whd_new", state="delivered", next_at=0, status=200, error=None)
        assert box.prune(500.0) == 2
        assert [r.id for r in box.all()] == ["whd_2", "whd_new"]  # pending rows are never pruned
    finally:
        box.close()


def test_outcomes_are_counted_and_logged(receiver: Receiver, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from execauth_core import AllowListPolicy, ApprovalRequired, Guard
    from execauth_server.webhooks import WebhookDispatcher, WebhookTarget

    receiver.script.update({"/ok": [500, 200], "/no": [404]})
    fast = {"secret": SECRET.encode(), "retry_delay": 0.05, "max_attempts": 3}
    dispatcher = WebhookDispatcher(
        (
            WebhookTarget(name="ok", url=receiver.url + "/ok", **fast),
            WebhookTarget(name="no", url=receiver.url + "/no", **fast),
        ),
        tmp_path / "webhooks.db",
        public_url=PUBLIC,
        threads=2,
    )
    guard = Guard.local(AllowListPolicy(["refund"], require_approval=["refund"]), approvals=True)
    guard.approvals.listeners.append(dispatcher.notify)
    caplog.set_level(logging.INFO, logger="execauth.server.webhooks")
    try:
        with pytest.raises(ApprovalRequired):
            guard.run(guard.proposal("refund", {"order": "A1"}, principal="alice"), lambda: "ran")
        _wait(lambda: dispatcher.stats["delivered"] + dispatcher.stats["failed"] == 2)
        assert dispatcher.stats["retried:ok"] == 1 and dispatcher.stats["delivered:ok"] == 1
        assert dispatcher.stats["failed:no"] == 1 and dispatcher.stats["retried:no"] == 0
        messages = [r.getMessage() for r in caplog.records if r.name == "execauth.server.webhooks"]
        assert any("ok: approval.requested" in m and "delivered (HTTP 200, attempt 2)" in m for m in messages)
        assert any("no: approval.requested" in m and "refused (HTTP 404); not retried" in m for m in messages)
    finally:
        dispatcher.close()
        guard.close()


def test_two_workers_share_the_outbox_and_send_each_event_once(
    base: dict[str, Any], receiver: Receiver, tmp_path: Path
) -> None:
    hook = _hook(receiver.url + "/pair", tmp_path, events=["approval.requested"])
    with running_server({**base, "webhooks": [hook]}, workers=2) as srv:
        rids = {_ask(srv, f"W{i}")[0] for i in range(4)}
        hits = receiver.wait_for("/pair", 4, timeout=20)
        time.sleep(0.5)  # room for a duplicate to show up, if there were one
    got = [json.loads(h.body)["request_id"] for h in receiver.at("/pair")]
    assert len(hits) >= 4 and sorted(got) == sorted(rids)  # each request once, none twice
