"""The server side: an MCP server that refuses tool calls the authority did not allow.

:func:`require_execauth` returns SDK middleware (``MCPServer(middleware=[...])`` or
``Server.middleware.append(...)``) that, for every ``tools/call``, reads from the
request's ``_meta`` the authority token (``execauth/token``) and the proposal it was
issued for (``execauth/request``), checks that the proposal is this call (tool
``<server>.<tool>``, the same arguments, canonically compared), verifies the token
against the configured trusted keys only, consumes its id in the replay store,
records the execution, and only then lets the handler run. Anything else is refused
with an error result and a recorded denial (``executed: false``). Other methods pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import mcp_types as types
from mcp.server.context import CallNext, ServerRequestContext

from execauth_core import (
    AuthorizationRequest,
    Clock,
    ExecutionDenied,
    Guard,
    KeySet,
    TokenVerifier,
    canonicalize,
    denial_message,
)
from execauth_core.reasons import ReasonCode as R
from execauth_core.stores.base import AuditLog, ReplayStore
from execauth_core.stores.memory import MemoryAuditLog, MemoryReplayStore

from .config import REQUEST_META_KEY, TOKEN_META_KEY


def _refusal(exc: ExecutionDenied) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=f"{denial_message(exc).rstrip('.')}. The call did not run.")],
        is_error=True,
    )


class ExecauthMiddleware:
    """The ``tools/call`` check. Build with :func:`require_execauth`."""

    def __init__(self, *, server: str, guard: Guard) -> None:
        self.server = server
        self.guard = guard

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> Any:
        if ctx.method != "tools/call" or ctx.request_id is None:
            return await call_next(ctx)
        guard = self.guard
        params = ctx.params if isinstance(ctx.params, dict) else {}
        name = params.get("name")
        tool = f"{self.server}.{name}" if isinstance(name, str) and name else f"{self.server}.?"
        raw_meta = params.get("_meta")
        meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        token = meta.get(TOKEN_META_KEY)
        carried = meta.get(REQUEST_META_KEY)
        if not isinstance(token, str) or not token:
            return _refusal(
                guard.deny(None, [R.NO_TOKEN.value], f"no authority token in _meta[{TOKEN_META_KEY!r}]", tool=tool)
            )
        try:
            request = AuthorizationRequest.model_validate(carried)
        except Exception:  # noqa: BLE001 - an unreadable proposal is a refusal
            return _refusal(
                guard.deny(
                    None, [R.REQUEST_INVALID.value], f"no valid proposal in _meta[{REQUEST_META_KEY!r}]", tool=tool
                )
            )
        arguments = params.get("arguments") or {}
        try:
            same = request.tool == tool and canonicalize(request.args) == canonicalize(arguments)
        except Exception:  # noqa: BLE001 - arguments that cannot be canonicalized do not match
            same = False
        if not same:
            return _refusal(
                guard.deny(request, [R.TOKEN_PROPOSAL_MISMATCH.value], "the token's proposal is not this call")
            )
        # The handler sees the call without the execauth members.
        rest = {k: v for k, v in meta.items() if k not in (TOKEN_META_KEY, REQUEST_META_KEY)}
        inner = dict(params)
        if rest:
            inner["_meta"] = rest
        else:
            inner.pop("_meta", None)
        try:
            return await guard.aexecute(request, token, lambda: call_next(dataclasses.replace(ctx, params=inner)))
        except ExecutionDenied as exc:
            return _refusal(exc)


def require_execauth(
    *,
    server: str,
    keys: KeySet,
    issuer: str,
    audience: str,
    replay_store: ReplayStore | None = None,
    audit_log: AuditLog | None = None,
    max_ttl: int = 300,
    clock: Clock | None = None,
) -> ExecauthMiddleware:
    """Middleware that makes an MCP server refuse tool calls without a valid execauth token.

    Args:
        server: this server's identity, as the authority names its tools (``<server>.<tool>``).
        keys: the authority's trusted public keys (e.g. ``KeySet.from_jwks(...)``); never a
            key carried in the token.
        issuer: the only accepted token issuer.
        audience: the only accepted token audience.
        replay_store: where token ids are consumed once (default: in memory, this process).
        audit_log: where executions and refusals are recorded (default: in memory).
    """
    verifier = TokenVerifier(keys=keys, issuer=issuer, audience=audience, max_ttl=max_ttl)
    guard = Guard(
        authority=None,
        verifier=verifier,
        replay_store=replay_store if replay_store is not None else MemoryReplayStore(),
        audit_log=audit_log if audit_log is not None else MemoryAuditLog(),
        clock=clock,
    )
    return ExecauthMiddleware(server=server, guard=guard)
