"""The non-bypassable example: an authority, a protected tool server and an agent.

    python examples/non_bypassable/run.py

Three processes on loopback ports:

* the authority service (``execauth serve``, two uvicorn workers): decides and signs;
  the only holder of the signing key;
* the upstream tool server (this file with ``--upstream``): a Starlette app behind
  ``ExecAuthMiddleware``, trusting only the authority's JWKS; its ``send_email``
  handler appends to an outbox file, so "did it run?" is a fact on disk;
* the agent (this process): a ``Guard.remote`` whose ``send_email`` tool forwards the
  verified call to the upstream with ``executor_headers``.

It prints one line per case (BYPASS, ALLOW, DENY, REPLAY), then stops all it started.
Exit status 0 only if every case came out as it must.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
AUDIENCE = "mail.tools.local"  # the token audience that names the upstream tool server
ROUTES = {("POST", "/tools/send_email"): "send_email", ("POST", "/tools/delete_mailbox"): "delete_mailbox"}


# -- the upstream tool server (its own process) -------------------------------------------


def upstream(jwks_url: str, issuer: str, outbox: Path) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from execauth_core.executor import Executor
    from execauth_core.remote import JWKSKeys
    from execauth_core.stores.urls import open_stores
    from execauth_server.executor import ExecAuthMiddleware, verified_call

    async def send_email(request: Request) -> JSONResponse:
        call = verified_call(request)
        with outbox.open("a", encoding="utf-8") as fh:  # the side effect
            fh.write(f"to={call.args['to']} subject={call.args['subject']}\n")
        return JSONResponse({"sent": True})

    async def delete_mailbox(request: Request) -> JSONResponse:
        with outbox.open("a", encoding="utf-8") as fh:
            fh.write(f"DELETED mailbox of {verified_call(request).args['owner']}\n")
        return JSONResponse({"deleted": True})

    stores = open_stores("memory://")  # its own replay store and audit log (redis:// to share replicas)
    executor = Executor(
        JWKSKeys(jwks_url),  # the authority's public keys, fetched and pinned by kid
        audience=AUDIENCE,
        issuer=issuer,
        replay_store=stores.replay,
        audit_log=stores.audit,
        routes=ROUTES,
    )
    app = Starlette(
        routes=[
            Route("/tools/send_email", send_email, methods=["POST"]),
            Route("/tools/delete_mailbox", delete_mailbox, methods=["POST"]),
        ],
        middleware=[Middleware(ExecAuthMiddleware, executor=executor)],
    )
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no 40 ms delayed-ACK stalls
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    print(sock.getsockname()[1], flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")).run(sockets=[sock])


@contextlib.contextmanager
def upstream_process(jwks_url: str, issuer: str, outbox: Path) -> Any:
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, this file
        [sys.executable, __file__, "--upstream", jwks_url, issuer, str(outbox)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError("the upstream tool server did not start")
        url = f"http://127.0.0.1:{int(line)}"
        deadline = time.monotonic() + 20
        while True:  # listening from the start; wait until uvicorn answers
            try:
                httpx.get(url + "/", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the upstream tool server did not answer") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# -- the agent (this process) -------------------------------------------------------------


def sent(outbox: Path) -> int:
    return len(outbox.read_text(encoding="utf-8").splitlines()) if outbox.exists() else 0


def main() -> int:
    from execauth_core import ExecutionDenied, Guard, LocalSigner, current_call
    from execauth_core.executor import executor_body, executor_headers
    from execauth_server.testing import running_server

    config = {
        "policy": str(HERE / "policy.yaml"),
        "manifests": str(HERE / "tools.yaml"),
        "tool_audiences": {"send_email": AUDIENCE, "delete_mailbox": AUDIENCE},
    }
    ok = True
    with contextlib.ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="execauth-non-bypassable-")))
        outbox = work / "outbox.txt"
        authority = stack.enter_context(running_server(config, workers=2))
        tools_url = stack.enter_context(upstream_process(authority.jwks_url, authority.config.issuer, outbox))
        http = stack.enter_context(httpx.Client(base_url=tools_url, timeout=10))
        guard = Guard.remote(
            authority.url, credential=authority.credential, audience=AUDIENCE, issuer=authority.config.issuer
        )
        stack.callback(guard.close)
        forwarded: list[tuple[dict[str, str], bytes]] = []

        def send_email(to: str, subject: str) -> dict[str, Any]:
            # The tool's implementation: forward what the guard just verified.
            call = current_call()
            headers, body = executor_headers(call.request, call.token), executor_body(call.request)
            forwarded.append((headers, body))
            answer = http.post("/tools/send_email", headers=headers, content=body)
            answer.raise_for_status()
            return dict(answer.json())

        # BYPASS: the agent's process skips its guard and calls the tool server itself.
        args = {"to": "mallory@example.com", "subject": "all the invoices"}
        before = sent(outbox)
        no_token = http.post("/tools/send_email", json=args)
        proposal = guard.proposal("send_email", args, principal="alice", agent="assistant")
        forged = LocalSigner.generate()  # the agent has no authority key: it can only make its own
        fake = _self_signed_token(proposal, forged, authority.config.issuer)
        self_signed = http.post(
            "/tools/send_email", headers=executor_headers(proposal, fake), content=executor_body(proposal)
        )
        bypass_ok = no_token.status_code == 401 and self_signed.status_code == 403 and sent(outbox) == before
        ok &= bypass_ok
        print(
            f"BYPASS  direct call {'refused' if bypass_ok else 'NOT REFUSED'}: no token {_said(no_token)},"
            f" self-signed token {_said(self_signed)}; executed: {'no' if sent(outbox) == before else 'YES'}"
        )

        # ALLOW: through the guard; the authority signs, the tool server verifies and runs.
        args = {"to": "bob@example.com", "subject": "minutes of Tuesday"}
        request = guard.proposal("send_email", args, principal="alice", agent="assistant")
        before = sent(outbox)
        result = guard.run(request, lambda: send_email(**request.args))
        allow_ok = result == {"sent": True} and sent(outbox) == before + 1
        ok &= allow_ok
        done = "executed" if allow_ok else "NOT EXECUTED"
        print(f"ALLOW   send_email to bob@example.com: {done} (outbox {before} -> {sent(outbox)} messages)")

        # DENY: the policy does not allow it; no token is issued, nothing reaches the server.
        request = guard.proposal("delete_mailbox", {"owner": "alice"}, principal="alice", agent="assistant")
        before = sent(outbox)
        try:
            guard.run(request, lambda: http.post("/tools/delete_mailbox", json=request.args))
            codes, deny_ok = "ALLOWED", False
        except ExecutionDenied as denied:
            codes, deny_ok = ", ".join(denied.reason_codes), sent(outbox) == before
        ok &= deny_ok
        done = "not executed" if sent(outbox) == before else "EXECUTED"
        print(f"DENY    delete_mailbox: {codes}; {done} (outbox still {sent(outbox)})")

        # REPLAY: the exact request of the ALLOW case, sent again.
        headers, body = forwarded[-1]
        before = sent(outbox)
        again = http.post("/tools/send_email", headers=headers, content=body)
        replay_ok = again.status_code == 409 and sent(outbox) == before
        ok &= replay_ok
        done = "not executed" if sent(outbox) == before else "EXECUTED"
        print(f"REPLAY  the same token again: {'refused' if replay_ok else 'NOT REFUSED'} {_said(again)}; {done}")
    return 0 if ok else 1


def _said(response: httpx.Response) -> str:
    try:
        code = response.json().get("reason_code", "")
    except ValueError:
        code = ""
    return f"{response.status_code} {code}".strip()


def _self_signed_token(proposal: Any, signer: Any, issuer: str) -> str:
    """What a compromised agent could make: a well-formed token under its own key."""
    from execauth_core import AllowListPolicy, Authority

    fake = Authority(AllowListPolicy(["send_email"]), signer, issuer=issuer, audience=AUDIENCE)
    token = fake.decide(proposal, now=int(time.time()), token_id=secrets.token_urlsafe(18)).token
    assert token is not None
    return token


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="execauth: the non-bypassable example")
    parser.add_argument("--upstream", nargs=3, metavar=("JWKS_URL", "ISSUER", "OUTBOX"), help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.upstream:
        upstream(options.upstream[0], options.upstream[1], Path(options.upstream[2]))
    else:
        sys.exit(main())
