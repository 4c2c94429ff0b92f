"""ExecAuthMiddleware under FastAPI (real uvicorn), and routing details (TestClient)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from execauth_core import KeySet
from execauth_core.executor import VerifiedCall, executor_body, executor_headers
from execauth_core.stores.memory import MemoryAuditLog
from execauth_server.executor import ExecAuthMiddleware, verified_call

from .executor_support import Counter, make_executor, mint, proposal, serving, signer

fastapi = pytest.importorskip("fastapi")
from fastapi import Depends, FastAPI, Request  # noqa: E402 - only once fastapi is known to be there


def admitted(request: Request) -> VerifiedCall:
    return verified_call(request)


def fastapi_app(counter: Counter, audit: MemoryAuditLog) -> Any:
    app = FastAPI()
    app.add_middleware(ExecAuthMiddleware, executor=make_executor(KeySet.of_signer(signer()), audit=audit))

    @app.post("/tools/send")
    async def send(payload: dict[str, Any], call: VerifiedCall = Depends(admitted)) -> dict[str, Any]:  # noqa: B008
        assert payload == call.args
        counter.runs.append(call.args)
        return {"sent": call.args, "jti": call.claims.jti}

    return app


def test_fastapi_allows_then_refuses_replay_and_direct_calls() -> None:
    counter, audit = Counter(), MemoryAuditLog()
    req = proposal()
    token = mint(req, signer=signer())
    with serving(fastapi_app(counter, audit)) as url, httpx.Client(base_url=url, timeout=10) as http:
        ok = http.post("/tools/send", headers=executor_headers(req, token), content=executor_body(req))
        assert ok.status_code == 200, ok.text
        assert ok.json()["sent"] == req.args
        again = http.post("/tools/send", headers=executor_headers(req, token), content=executor_body(req))
        direct = http.post("/tools/send", json=req.args)
        docs = http.get("/openapi.json")  # not routed to a tool: refused like any other path
    assert (again.status_code, again.json()["reason_code"]) == (409, "TOKEN_REPLAYED")
    assert (direct.status_code, direct.json()["reason_code"]) == (401, "NO_TOKEN")
    assert (docs.status_code, docs.json()["reason_code"]) == (403, "UNKNOWN_TOOL")
    assert counter.runs == [req.args]


def test_verified_call_outside_the_middleware_raises() -> None:
    with pytest.raises(LookupError):
        verified_call({"type": "http", "state": {}})


def test_websockets_are_closed_and_lifespan_passes() -> None:
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    middleware = ExecAuthMiddleware(app, executor=make_executor(KeySet.of_signer(signer())))
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def main() -> None:
        await middleware({"type": "lifespan"}, receive, send)
        await middleware({"type": "websocket", "path": "/tools/send", "headers": []}, receive, send)

    asyncio.run(main())
    assert seen == ["lifespan"]  # the websocket never reached the app
    assert sent == [{"type": "websocket.close", "code": 1008}]


def test_middleware_needs_an_executor() -> None:
    with pytest.raises(TypeError):
        ExecAuthMiddleware(lambda s, r, w: None, executor=object())  # type: ignore[arg-type,return-value]
