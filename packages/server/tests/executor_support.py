"""Shared pieces of the executor tests: a real uvicorn on a loopback ephemeral port,
a protected Starlette tool server that counts its side effects, token minting, and
the Redis/PostgreSQL reachability rule (skip off CI, fail under CI=true)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from execauth_core import AllowListPolicy, Authority, AuthorizationRequest, KeySet, LocalSigner
from execauth_core.audit import AuditLog
from execauth_core.executor import Executor
from execauth_core.stores.base import ReplayStore
from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore
from execauth_server.executor import ExecAuthMiddleware, verified_call

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").strip().lower() == "true"

AUDIENCE = "tools.test"
ISSUER = "execauth-test"
ROUTES = {("POST", "/tools/send"): "send", ("POST", "/tools/search"): "search"}
SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")  # RFC 8032 test 1


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """Run ``app`` on uvicorn at 127.0.0.1:<ephemeral> in a thread; yields the base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Inherited by accepted sockets: otherwise a delayed ACK adds ~40 ms per response.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        if thread.is_alive():  # pragma: no cover - a hung server fails the test
            raise RuntimeError("uvicorn did not stop")


class Counter:
    """The protected tool's side effects: every call that really ran."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []


def tool_app(counter: Counter, executor: Executor, **middleware: Any) -> Starlette:
    async def send(request: Request) -> JSONResponse:
        verified = verified_call(request)
        body = await request.json()  # the replayed bytes the executor verified
        assert body == verified.args
        counter.runs.append(verified.args)
        return JSONResponse({"sent": verified.args, "principal": verified.request.principal})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[
            Route("/tools/send", send, methods=["POST", "PUT"]),
            Route("/tools/search", send, methods=["POST"]),
            Route("/health", health),
        ],
        middleware=[Middleware(ExecAuthMiddleware, executor=executor, public_paths=["/health"], **middleware)],
    )


def make_executor(
    keys: KeySet,
    *,
    replay: ReplayStore | None = None,
    audit: AuditLog | None = None,
    **kw: Any,
) -> Executor:
    return Executor(
        keys,
        audience=AUDIENCE,
        issuer=ISSUER,
        replay_store=replay if replay is not None else MemoryReplayStore(),
        audit_log=audit if audit is not None else MemoryAuditLog(),
        routes=ROUTES,
        **kw,
    )


def signer() -> LocalSigner:
    return LocalSigner(SEED)


def mint(
    request: AuthorizationRequest,
    *,
    signer: LocalSigner,
    audience: str = AUDIENCE,
    now: int | None = None,
    ttl: int = 60,
) -> str:
    authority = Authority(AllowListPolicy(["send", "search"]), signer, issuer=ISSUER, audience=audience, token_ttl=ttl)
    decision = authority.decide(request, now=now or int(time.time()), token_id=secrets.token_urlsafe(18))
    assert decision.token is not None
    return decision.token


def proposal(tool: str = "send", **args: Any) -> AuthorizationRequest:
    return AuthorizationRequest(tool=tool, args=args or {"to": "bob", "amount": "10.00"}, principal="alice")


def with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def require(kind: str) -> None:
    """Skip when the shared server is unreachable; under CI=true, fail instead."""
    try:
        if kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
            try:
                client.ping()
            finally:
                client.close()
        else:
            import psycopg

            psycopg.connect(DATABASE_URL, connect_timeout=2).close()
    except Exception as exc:
        reason = f"{kind} unreachable: {type(exc).__name__}: {exc}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: these tests must run, not skip)")
        pytest.skip(reason)


def free_port() -> int:
    """A loopback port nothing listens on (for a store that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
