"""ExecAuthMiddleware: a tool server that refuses every call the authority did not sign.

Pure ASGI, so it wraps any ASGI application (Starlette, FastAPI, a bare callable)::

    app.add_middleware(ExecAuthMiddleware, executor=executor)      # Starlette / FastAPI

For each HTTP request to a routed path it checks the head (route, token present,
media type, declared length), streams the body up to the executor's
``max_body_bytes`` within ``read_timeout`` seconds, and hands the call to
:meth:`execauth_core.executor.Executor.admit` (token signature, audience, expiry,
proposal digest, route; then the token id is consumed once in the executor's own
replay store and the admission recorded). Only then does the application run, with
the body replayed to it byte for byte and the :class:`~execauth_core.executor.VerifiedCall`
in ``scope["state"]["execauth"]`` (``request.state.execauth`` in Starlette and
FastAPI; :func:`verified_call` reads it).

A refusal is answered with its status and the JSON body
``{"error": "...", "reason_code": "..."}``; the application never sees the request.
Nothing about the token or the body goes to the logs, and no stack trace to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from functools import partial
from typing import Any

import anyio
import anyio.to_thread
from starlette.requests import HTTPConnection

from execauth_core.canonical import canonicalize
from execauth_core.errors import ConfigurationError
from execauth_core.executor import AUTH_SCHEME, Executor, ExecutorDenied, HTTPCall, VerifiedCall
from execauth_core.reasons import ReasonCode as R

__all__ = ["ExecAuthMiddleware", "verified_call"]

log = logging.getLogger("execauth")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

STATE_KEY = "execauth"


class _Disconnected(Exception):
    pass


class ExecAuthMiddleware:
    """Refuse, before the application sees it, every call without a valid token.

    Args:
        app: the protected ASGI application.
        executor: checks, consumes and records (its routes say which tool each
            ``(method, path)`` runs; every other path is refused).
        public_paths: exact paths passed through unchecked (health checks). Keep
            this short: whatever is here is not protected.
        read_timeout: seconds the client has to send its whole body (408 after).
        offload: run the executor's store calls in a worker thread, so a slow
            Redis or PostgreSQL never stalls the event loop (default). Turn off only
            for in-memory stores.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        executor: Executor,
        public_paths: Iterable[str] = (),
        read_timeout: float = 10.0,
        offload: bool = True,
    ) -> None:
        if not isinstance(executor, Executor):
            raise TypeError("ExecAuthMiddleware needs an execauth_core.executor.Executor")
        if not read_timeout > 0:
            raise ValueError("read_timeout must be positive")
        self.app = app
        self.executor = executor
        self.public_paths = frozenset(public_paths)
        guarded = self.public_paths & executor.routes.paths()
        if guarded:
            # A public path skips the token check for every method: it must never be a tool's.
            raise ConfigurationError(f"public_paths name routed tool paths: {', '.join(sorted(guarded))}")
        self.read_timeout = read_timeout
        self.offload = offload

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.offload:
            return await anyio.to_thread.run_sync(partial(fn, *args))
        return fn(*args)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan" or (kind in ("http", "websocket") and scope.get("path") in self.public_paths):
            await self.app(scope, receive, send)
            return
        if kind != "http":
            # A websocket (or anything else) is not a tool call this middleware can
            # check, so it does not reach the application.
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            return
        head = HTTPCall.of(
            str(scope.get("method", "")),
            str(scope.get("path", "")),
            scope.get("headers") or (),
            b"",
            query=scope.get("query_string", b""),
        )
        try:
            # The head checks do no I/O: run them here; only a refusal's record is a store call.
            problem = self.executor.head_problem(head)
            if problem is not None:
                code, message, tool = problem
                raise await self._run(partial(self.executor.refuse, call=head, tool=tool), code, message)
            body = await self._read_body(receive, head)
            call = HTTPCall(method=head.method, path=head.path, headers=head.headers, body=body, query=head.query)
            verified: VerifiedCall = await self._run(self.executor.admit, call)
        except ExecutorDenied as denied:
            await _refuse(send, denied)
            return
        except _Disconnected:
            return
        await self._call_app(scope, receive, send, verified)

    async def _read_body(self, receive: Receive, head: HTTPCall) -> bytes:
        limit = self.executor.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            with anyio.fail_after(self.read_timeout):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        await self._run(
                            partial(self.executor.refuse, call=head),
                            R.REQUEST_INVALID,
                            "the client went away before its body arrived",
                        )
                        raise _Disconnected
                    if message["type"] != "http.request":
                        continue
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > limit:
                        raise await self._run(
                            partial(self.executor.refuse, call=head),
                            R.REQUEST_TOO_LARGE,
                            f"the body is larger than {limit} bytes",
                        )
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        return b"".join(chunks)
        except TimeoutError:
            raise await self._run(
                partial(self.executor.refuse, call=head),
                R.REQUEST_TIMEOUT,
                f"the body did not arrive within {self.read_timeout:g} s",
            ) from None

    async def _call_app(self, scope: Scope, upstream: Receive, send: Send, verified: VerifiedCall) -> None:
        # A fresh scope and state: nothing of this call leaks into another request's.
        inner = dict(scope)
        inner["state"] = {**(scope.get("state") or {}), STATE_KEY: verified}
        replayed = False

        async def receive() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": verified.body, "more_body": False}
            # After the body, what the server says next (the client leaving).
            return await upstream()

        status: list[int] = []

        async def watch(message: Message) -> None:
            if message.get("type") == "http.response.start":
                status.append(int(message.get("status", 0)))
            await send(message)

        try:
            await self.app(inner, receive, watch)
        except BaseException:
            # Shielded: a cancelled request still gets its result recorded.
            with anyio.CancelScope(shield=True):
                await self._run(partial(self.executor.record_result, verified, status="error"))
            raise
        code = status[0] if status else None
        ok = code is not None and code < 500
        await self._run(
            partial(self.executor.record_result, verified, status="ok" if ok else "error", http_status=code)
        )


async def _refuse(send: Send, denied: ExecutorDenied) -> None:
    body = canonicalize(denied.to_json())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    if denied.status == 401:
        headers.append((b"www-authenticate", AUTH_SCHEME.encode("ascii")))
    await send({"type": "http.response.start", "status": denied.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def verified_call(request: HTTPConnection) -> VerifiedCall:
    """The :class:`VerifiedCall` the middleware admitted, from a Starlette/FastAPI
    ``Request`` (or an ASGI scope). Usable as a FastAPI dependency:
    ``call: VerifiedCall = Depends(verified_call)``.

    Raises:
        LookupError: the request did not pass through :class:`ExecAuthMiddleware`.
    """
    scope = getattr(request, "scope", request)
    state = scope.get("state") if isinstance(scope, MutableMapping) else None
    verified = state.get(STATE_KEY) if isinstance(state, MutableMapping) else None
    if not isinstance(verified, VerifiedCall):
        raise LookupError("this request was not admitted by ExecAuthMiddleware")
    return verified
