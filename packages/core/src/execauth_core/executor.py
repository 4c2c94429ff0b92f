"""Executor-side verification: the tool's own side checks the authority token.

An executor is whatever really runs a tool (an HTTP tool server). It trusts neither
the agent nor the agent's guard: it verifies the token itself against the
authority's keys, checks that the token is bound to the very request it received,
and consumes the token id in its own replay store, so a call that did not pass the
authority is refused by the tool's side. Nothing here imports a web framework;
``execauth_server.executor.ExecAuthMiddleware`` is the ASGI wrapper around it.

How an HTTP tool call maps to a proposal:

* ``Authorization: ExecAuth <compact JWS>``: the authority token.
* ``ExecAuth-Proposal: <base64url(JCS(proposal without "args"))>``: every other field
  of the :class:`~execauth_core.messages.AuthorizationRequest` (``v``, ``tool``,
  ``principal``, ``agent``, ``call_id``, ``manifest_digest``, ``context_refs``).
* The body, ``Content-Type: application/json``: the arguments, one JSON object,
  parsed strictly (duplicate keys, NaN, integers beyond 2^53 refused). An empty body
  means ``{}``.
* The method and path: looked up in the executor's :class:`RouteTable`, which names
  exactly one tool per ``(method, path)`` and one ``(method, path)`` per tool, so the
  signed tool name pins the method and the path. A query string is refused: it is not
  part of the signed proposal.

The executor rebuilds the proposal (header fields + body arguments), computes its
canonical digest (``sha256(JCS(proposal))``) and requires the token to be bound to
that digest, signed by a trusted key, for this executor's audience, unexpired, and
for the routed tool; then it consumes ``executor:<jti>`` once and records the
admission. Every refusal is recorded (``executed: false``) and raised as
:class:`ExecutorDenied` with the HTTP status to answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ._b64 import b64url_decode, b64url_encode
from ._log import log
from .audit import AuditEntry
from .canonical import CanonicalizationError, canonicalize, digest_bytes, loads_strict
from .clock import Clock, SystemClock
from .errors import ConfigurationError, ExecutionDenied, StoreUnavailable, TokenError
from .keys import KeySet
from .messages import AuthorizationRequest, TokenClaims
from .reasons import ReasonCode as R
from .stores.base import AuditLog, JointAdmission, JointCache, ReplayStore, joint_admission_of
from .tokens import TokenVerifier

__all__ = [
    "AUTH_SCHEME",
    "DEFAULT_MAX_BODY_BYTES",
    "PROPOSAL_HEADER",
    "STATUS",
    "ExecutorDenied",
    "Executor",
    "HTTPCall",
    "RouteTable",
    "VerifiedCall",
    "executor_body",
    "executor_headers",
    "proposal_header",
]


AUTH_SCHEME = "ExecAuth"
PROPOSAL_HEADER = "ExecAuth-Proposal"
DEFAULT_MAX_BODY_BYTES = 1_000_000
MAX_PROPOSAL_HEADER = 8_192
REPLAY_PREFIX = "executor:"
_STORE_DOWN = "the executor's replay store is unavailable; nothing ran"
_AUDIT_DOWN = "the executor's audit log is unavailable; nothing ran"

STATUS: Mapping[str, int] = {
    R.NO_TOKEN.value: 401,
    R.REQUEST_INVALID.value: 400,
    R.REQUEST_TIMEOUT.value: 408,
    R.TOKEN_REPLAYED.value: 409,
    R.REQUEST_TOO_LARGE.value: 413,
    R.UNSUPPORTED_MEDIA_TYPE.value: 415,
    R.GUARD_ERROR.value: 500,
    R.STORE_UNAVAILABLE.value: 503,
    R.AUDIT_UNAVAILABLE.value: 503,
    R.KEYSET_MISSING.value: 503,
}
"""HTTP status per reason code; every other code (a token that does not verify, a
route with no tool, a proposal for another tool) is 403."""


def status_for(code: str) -> int:
    """The HTTP status an executor answers for a refusal with this reason code."""
    return STATUS.get(code, 403)


class ExecutorDenied(ExecutionDenied):
    """The executor refused a call; nothing ran.

    Attributes:
        status: the HTTP status to answer (401, 400, 403, 408, 409, 413, 415, 500, 503).
        reason_code: the first reason code (what the JSON error body names).
    """

    def __init__(self, *, status: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.status = status

    def to_json(self) -> dict[str, str]:
        """The error body: ``{"error": message, "reason_code": code}``. No secrets, no trace."""
        return {"error": self.message, "reason_code": self.reason_code}


class RouteTable:
    """Which tool each ``(method, path)`` runs: exact paths, one route per tool.

    Args:
        routes: ``{("POST", "/tools/send_email"): "send_email", ...}``.

    Raises:
        ConfigurationError: a malformed route, or two routes naming one tool (the
            signed tool name must pin one method and one path).
    """

    def __init__(self, routes: Mapping[tuple[str, str], str] | Iterable[tuple[tuple[str, str], str]] = ()) -> None:
        self._tools: dict[tuple[str, str], str] = {}
        self._routes: dict[str, tuple[str, str]] = {}
        items = routes.items() if isinstance(routes, Mapping) else routes
        for (method, path), tool in items:
            self.add(method, path, tool)

    def add(self, method: str, path: str, tool: str) -> None:
        """Map ``method path`` to ``tool``."""
        if not (isinstance(method, str) and method.isalpha() and method.isascii()):
            raise ConfigurationError(f"route method {method!r} is not an HTTP method")
        if not (isinstance(path, str) and path.startswith("/")) or "?" in path or "#" in path:
            raise ConfigurationError(f"route path {path!r} must be an absolute path without query or fragment")
        if not isinstance(tool, str) or not tool:
            raise ConfigurationError("a route needs a tool name")
        key = (method.upper(), path)
        if key in self._tools:
            raise ConfigurationError(f"route {key[0]} {path} is mapped twice")
        if tool in self._routes:
            raise ConfigurationError(f"tool {tool!r} already has a route: one (method, path) per tool")
        self._tools[key] = tool
        self._routes[tool] = key

    def tool(self, method: str, path: str) -> str | None:
        """The tool routed at ``method path``, or ``None``."""
        return self._tools.get((method.upper(), path))

    def route(self, tool: str) -> tuple[str, str] | None:
        """``(method, path)`` of ``tool``, or ``None``."""
        return self._routes.get(tool)

    def paths(self) -> frozenset[str]:
        """Every routed path."""
        return frozenset(path for _, path in self._tools)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, tuple) and len(key) == 2 and self.tool(*key) is not None

    def __len__(self) -> int:
        return len(self._tools)


@dataclass(frozen=True)
class HTTPCall:
    """What an executor received: method, path, query string, headers, body.

    ``headers`` are ``(name, value)`` pairs as received (any case; repeated names
    kept, so a repeated ``Authorization`` is refused rather than guessed at).
    """

    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    query: str = ""

    @classmethod
    def of(
        cls,
        method: str,
        path: str,
        headers: Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] = (),
        body: bytes = b"",
        *,
        query: str | bytes = "",
    ) -> HTTPCall:
        """Build from a mapping or from ASGI-style byte pairs (latin-1, as HTTP sends them)."""
        pairs = headers.items() if isinstance(headers, Mapping) else headers
        norm = tuple((_text(k).lower(), _text(v)) for k, v in pairs)
        return cls(method=method, path=path, headers=norm, body=bytes(body), query=_text(query))

    def header(self, name: str) -> list[str]:
        """Every value of header ``name`` (case-insensitive)."""
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, (bytes, bytearray)) else str(value)


@dataclass(frozen=True)
class VerifiedCall:
    """A call the executor admitted: verified, consumed once, recorded.

    Attributes:
        request: the proposal rebuilt from the HTTP call; its ``args`` are the body.
        claims: the verified token claims.
        proposal_digest: ``sha256:<hex>`` the token is bound to.
        audit_seq: the admission record in the executor's audit log.
        method, path: the route that was called.
    """

    request: AuthorizationRequest
    claims: TokenClaims
    proposal_digest: str
    audit_seq: int
    method: str
    path: str
    body: bytes = field(repr=False, default=b"")

    @property
    def tool(self) -> str:
        return self.request.tool

    @property
    def args(self) -> dict[str, Any]:
        return self.request.args


class _Refusal(Exception):
    def __init__(
        self, code: R | str, message: str, *, tool: str | None = None, pd: str | None = None, detail: str = ""
    ) -> None:
        super().__init__(message)
        self.code = code.value if isinstance(code, R) else code
        self.message = message
        self.tool = tool
        self.pd = pd
        self.detail = detail  # for the audit record only, never for the client


class Executor:
    """Verifies, consumes and records HTTP tool calls on the tool's side.

    Args:
        keys: the authority's public keys (a :class:`~execauth_core.keys.KeySet`,
            e.g. one fetched from its JWKS). A key carried in a token is never used.
        audience: the token audience that names this executor; tokens for any other
            audience are refused.
        issuer: the authority's issuer name.
        replay_store: where token ids are consumed, as ``executor:<jti>``. Give all
            replicas of one executor the same store (Redis, PostgreSQL) and a token
            runs on at most one of them, once.
        audit_log: receives every admission and refusal.
        routes: the :class:`RouteTable` (or a mapping to build one).
        max_body_bytes: larger bodies are refused (413).
        max_ttl, clock_skew: as for :class:`~execauth_core.tokens.TokenVerifier`.
        clock: the time source.
    """

    def __init__(
        self,
        keys: KeySet | None,
        *,
        audience: str,
        issuer: str,
        replay_store: ReplayStore,
        audit_log: AuditLog,
        routes: RouteTable | Mapping[tuple[str, str], str],
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_ttl: int = 300,
        clock_skew: int = 30,
        clock: Clock | None = None,
    ) -> None:
        if max_body_bytes < 2:
            raise ConfigurationError("max_body_bytes must allow at least '{}'")
        self.verifier = TokenVerifier(
            keys=keys, issuer=issuer, audience=audience, max_ttl=max_ttl, clock_skew=clock_skew
        )
        self.audience = audience
        self.replay_store = replay_store
        self.audit_log = audit_log
        self.routes = routes if isinstance(routes, RouteTable) else RouteTable(routes)
        self.max_body_bytes = max_body_bytes
        self.clock: Clock = clock if clock is not None else SystemClock()
        self._joint: JointCache | None = None

    # -- the checks ------------------------------------------------------------

    def check_head(self, call: HTTPCall) -> str:
        """The checks that need no body: route, query string, token presence, media
        type, declared length. Returns the routed tool.

        Raises:
            ExecutorDenied: after recording the refusal.
        """
        try:
            return self._head(call)
        except _Refusal as r:
            raise self.refuse(r.code, r.message, call=call, tool=r.tool) from None
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            raise self.refuse(*_internal(exc), call=call) from None

    def head_problem(self, call: HTTPCall) -> tuple[str, str, str | None] | None:
        """What :meth:`check_head` would refuse, as ``(reason code, message, tool)``,
        without recording it (no I/O: a server can run it on its event loop, then
        record with :meth:`refuse`). ``None`` when the head passes."""
        try:
            self._head(call)
        except _Refusal as r:
            return r.code, r.message, r.tool
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            code, message = _internal(exc)
            return code.value, message, None
        return None

    def admit(self, call: HTTPCall) -> VerifiedCall:
        """Every check, then consume the token id once and record the admission.

        Run the tool only with what this returns.

        Raises:
            ExecutorDenied: after recording the refusal (``executed: false``).
        """
        try:
            request, claims, pd = self._verify(call)
            entry = self._consume_and_record(call, request, claims, pd)
            return VerifiedCall(
                request=request,
                claims=claims,
                proposal_digest=pd,
                audit_seq=entry.seq,
                method=call.method.upper(),
                path=call.path,
                body=call.body,
            )
        except _Refusal as r:
            raise self.refuse(
                r.code, r.message, call=call, tool=r.tool, proposal_digest=r.pd, detail=r.detail
            ) from None
        except BaseException as exc:
            if not isinstance(exc, Exception):
                self.refuse(R.GUARD_ERROR, f"interrupted ({type(exc).__name__})", call=call)
                raise
            raise self.refuse(*_internal(exc), call=call) from None

    def verify(self, call: HTTPCall) -> TokenClaims:
        """The checks of :meth:`admit` without consuming the token or recording an
        admission (a refusal is recorded). A call that passes may still be a replay:
        never run a tool on ``verify`` alone.

        Raises:
            ExecutorDenied: after recording the refusal.
        """
        try:
            return self._verify(call)[1]
        except _Refusal as r:
            raise self.refuse(r.code, r.message, call=call, tool=r.tool, proposal_digest=r.pd) from None
        except Exception as exc:  # noqa: BLE001 - fail closed on anything
            raise self.refuse(*_internal(exc), call=call) from None

    def _head(self, call: HTTPCall) -> str:
        tool = self.routes.tool(call.method, call.path)
        if tool is None:
            raise _Refusal(R.UNKNOWN_TOOL, f"no tool is routed at {_short(call.method, 16)} {_short(call.path)}")
        if call.query:
            raise _Refusal(
                R.REQUEST_INVALID,
                "a query string is not part of the signed proposal; send every argument in the JSON body",
                tool=tool,
            )
        auth = call.header("authorization")
        if not auth:
            raise _Refusal(R.NO_TOKEN, f"no authority token: send 'Authorization: {AUTH_SCHEME} <token>'", tool=tool)
        if len(auth) > 1:
            raise _Refusal(R.REQUEST_INVALID, "more than one Authorization header", tool=tool)
        scheme, _, _ = auth[0].strip().partition(" ")
        if scheme.lower() != AUTH_SCHEME.lower():
            raise _Refusal(R.NO_TOKEN, f"no authority token: the Authorization scheme must be {AUTH_SCHEME}", tool=tool)
        types = call.header("content-type")
        if len(types) > 1:
            raise _Refusal(R.REQUEST_INVALID, "more than one Content-Type header", tool=tool)
        if types and not _is_json(types[0]):
            raise _Refusal(R.UNSUPPORTED_MEDIA_TYPE, "the body must be application/json (UTF-8)", tool=tool)
        lengths = call.header("content-length")
        if lengths:
            try:
                declared = int(lengths[0])
            except ValueError:
                raise _Refusal(R.REQUEST_INVALID, "Content-Length is not a number", tool=tool) from None
            if declared > self.max_body_bytes:
                raise _Refusal(R.REQUEST_TOO_LARGE, f"the body is larger than {self.max_body_bytes} bytes", tool=tool)
        return tool

    def _verify(self, call: HTTPCall) -> tuple[AuthorizationRequest, TokenClaims, str]:
        tool = self._head(call)
        if len(call.body) > self.max_body_bytes:
            raise _Refusal(R.REQUEST_TOO_LARGE, f"the body is larger than {self.max_body_bytes} bytes", tool=tool)
        if call.body and not call.header("content-type"):
            raise _Refusal(R.UNSUPPORTED_MEDIA_TYPE, "the body must be application/json (UTF-8)", tool=tool)
        token = call.header("authorization")[0].strip().partition(" ")[2].strip()
        if not token:
            raise _Refusal(R.NO_TOKEN, f"no authority token after '{AUTH_SCHEME}'", tool=tool)
        fields = _proposal_fields(call, tool)
        args = _body_args(call.body, tool)
        try:
            request = AuthorizationRequest.model_validate({**fields, "args": args})
        except Exception as exc:  # noqa: BLE001 - any malformed proposal is a refusal
            raise _Refusal(R.REQUEST_INVALID, f"malformed proposal: {_first_line(exc)}", tool=tool) from None
        pd = digest_bytes(request.canonical_bytes())
        try:
            claims = self.verifier.verify(token, request=request, now=self.clock.now(), proposal_digest=pd)
        except TokenError as exc:
            raise _Refusal(exc.reason_code, exc.message, tool=request.tool, pd=pd) from None
        if request.tool != tool:
            # The token is good, for another route: the signed tool pins the route.
            raise _Refusal(
                R.TOKEN_SCOPE_MISMATCH,
                f"the token authorizes tool {_short(request.tool)!r}, not the one routed here",
                tool=tool,
                pd=pd,
            )
        return request, claims, pd

    # -- consuming and recording -------------------------------------------------

    def _consume_and_record(
        self, call: HTTPCall, request: AuthorizationRequest, claims: TokenClaims, pd: str
    ) -> AuditEntry:
        now = self.clock.now()
        spend = [(REPLAY_PREFIX + claims.jti, claims.exp + self.verifier.clock_skew)]
        event = self._event(
            "execution",
            call,
            tool=request.tool,
            request=request,
            pd=pd,
            outcome="ALLOW",
            codes=(R.TOOL_ALLOWED.value,),
            executed=True,
            token_id=claims.jti,
            record_digest=claims.record_digest,
            policy_digest=claims.policy.digest,
        )
        try:
            joint = self._joint_admission()
            if joint is not None:
                outcome = joint.consume_and_append(spend, event, now=now)
                if isinstance(outcome, AuditEntry):
                    return outcome
                raise _Refusal(R.TOKEN_REPLAYED, "this token was already used", tool=request.tool, pd=pd)
            if self.replay_store.consume(spend[0][0], expires_at=spend[0][1], now=now) is not True:
                raise _Refusal(R.TOKEN_REPLAYED, "this token was already used", tool=request.tool, pd=pd)
        except StoreUnavailable as exc:
            # Store errors name hosts and ports: the record keeps them, the client does not get them.
            raise _Refusal(
                R.STORE_UNAVAILABLE, _STORE_DOWN, tool=request.tool, pd=pd, detail=_first_line(exc)
            ) from None
        try:
            return self.audit_log.append(event)
        except Exception as exc:  # noqa: BLE001 - nothing runs unrecorded
            raise _Refusal(
                R.AUDIT_UNAVAILABLE, _AUDIT_DOWN, tool=request.tool, pd=pd, detail=_first_line(exc)
            ) from None

    def _joint_admission(self) -> JointAdmission | None:
        self._joint, joint = joint_admission_of(self._joint, self.replay_store, self.audit_log)
        return joint

    def refuse(
        self,
        code: R | str,
        message: str,
        *,
        call: HTTPCall | None = None,
        tool: str | None = None,
        proposal_digest: str | None = None,
        detail: str = "",
    ) -> ExecutorDenied:
        """Record a refusal (``executed: false``) and return the exception to raise.

        For refusals decided outside :meth:`admit` (a body too large or too slow,
        seen while streaming). ``message`` is what the client is told; ``detail``
        goes only into the audit record. Never raises.
        """
        code_text = code.value if isinstance(code, R) else str(code)
        codes: tuple[str, ...] = (code_text,)
        seq: int | None = None
        try:
            tool = tool if tool is not None else (self.routes.tool(call.method, call.path) if call else None)
            entry = self.audit_log.append(
                self._event(
                    "denial",
                    call,
                    tool=tool,
                    request=None,
                    pd=proposal_digest,
                    outcome="DENY",
                    codes=codes,
                    detail={"message": _short(message, 500), **({"cause": _short(detail, 500)} if detail else {})},
                )
            )
            seq = entry.seq
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if unrecorded
            log.error("execauth: executor could not record a refusal: %s", _first_line(exc))
            codes = (*codes, R.AUDIT_UNAVAILABLE.value)
        return ExecutorDenied(
            status=status_for(code_text),
            outcome="DENY",
            reason_codes=codes,
            message=message,
            tool=tool,
            proposal_digest=proposal_digest,
            audit_seq=seq,
        )

    def record_result(self, verified: VerifiedCall, *, status: str, http_status: int | None = None) -> None:
        """Record how the admitted call ended (``ok`` or ``error``). Never raises."""
        try:
            detail: dict[str, Any] = {"status": status, "execution_seq": verified.audit_seq}
            if http_status is not None:
                detail["http_status"] = http_status
            self.audit_log.append(
                {
                    "event": "result",
                    "time": self.clock.now(),
                    "executed": True,
                    "token_id": verified.claims.jti,
                    "detail": detail,
                }
            )
        except Exception as exc:  # noqa: BLE001 - the call already ran; its answer stands
            log.error("execauth: executor could not record a result: %s", _first_line(exc))

    def _event(
        self,
        kind: str,
        call: HTTPCall | None,
        *,
        tool: str | None,
        request: AuthorizationRequest | None,
        pd: str | None,
        outcome: str,
        codes: tuple[str, ...],
        executed: bool = False,
        token_id: str | None = None,
        record_digest: str | None = None,
        policy_digest: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        where = {"executor": self.audience}
        if call is not None:
            where.update(method=_short(call.method, 16), path=_short(call.path))
        return {
            "event": kind,
            "time": self.clock.now(),
            "executed": executed,
            "tool": tool,
            "principal": request.principal if request else None,
            "agent": request.agent if request else None,
            "call_id": request.call_id if request else None,
            "proposal_digest": pd,
            "outcome": outcome,
            "reason_codes": list(codes),
            "record_digest": record_digest,
            "policy_digest": policy_digest,
            "token_id": token_id,
            "detail": {**where, **(detail or {})},
        }


# -- the wire --------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    media, _, params = content_type.partition(";")
    if media.strip().lower() != "application/json":
        return False
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


def _proposal_fields(call: HTTPCall, tool: str) -> dict[str, Any]:
    values = call.header(PROPOSAL_HEADER)
    if not values:
        raise _Refusal(R.REQUEST_INVALID, f"no {PROPOSAL_HEADER} header", tool=tool)
    if len(values) > 1:
        raise _Refusal(R.REQUEST_INVALID, f"more than one {PROPOSAL_HEADER} header", tool=tool)
    raw = values[0].strip()
    if len(raw) > MAX_PROPOSAL_HEADER:
        raise _Refusal(R.REQUEST_INVALID, f"{PROPOSAL_HEADER} is longer than {MAX_PROPOSAL_HEADER}", tool=tool)
    try:
        fields = loads_strict(b64url_decode(raw))
    except (ValueError, CanonicalizationError) as exc:
        raise _Refusal(
            R.REQUEST_INVALID, f"{PROPOSAL_HEADER} is not base64url JSON: {_first_line(exc)}", tool=tool
        ) from None
    if not isinstance(fields, dict):
        raise _Refusal(R.REQUEST_INVALID, f"{PROPOSAL_HEADER} is not a JSON object", tool=tool)
    if "args" in fields:
        raise _Refusal(R.REQUEST_INVALID, f"{PROPOSAL_HEADER} carries args; the arguments are the body", tool=tool)
    return fields


def _body_args(body: bytes, tool: str) -> dict[str, Any]:
    if not body:
        return {}
    try:
        args = loads_strict(body)
    except CanonicalizationError as exc:
        raise _Refusal(R.REQUEST_INVALID, f"the body is not strict JSON: {_first_line(exc)}", tool=tool) from None
    if not isinstance(args, dict):
        raise _Refusal(R.REQUEST_INVALID, "the body must be a JSON object of arguments", tool=tool)
    return args


def proposal_header(request: AuthorizationRequest) -> str:
    """The ``ExecAuth-Proposal`` value for ``request``: base64url(JCS(request without args))."""
    fields = request.model_dump(mode="json")
    del fields["args"]
    return b64url_encode(canonicalize(fields))


def executor_headers(request: AuthorizationRequest, token: str) -> dict[str, str]:
    """Headers that present ``token`` for ``request`` to an executor.

    Send them with :func:`executor_body` as the body, to the route of ``request.tool``.
    """
    if not isinstance(token, str) or not token:
        raise ConfigurationError("executor_headers needs the compact token the guard verified")
    return {
        "Authorization": f"{AUTH_SCHEME} {token}",
        PROPOSAL_HEADER: proposal_header(request),
        "Content-Type": "application/json",
    }


def executor_body(request: AuthorizationRequest) -> bytes:
    """The request body for ``request``: its arguments, as JCS bytes."""
    return canonicalize(request.args)


def _short(value: object, limit: int = 200) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:300]


def _internal(exc: Exception) -> tuple[R, str]:
    log.error("execauth: error inside the executor; refusing (%s)", type(exc).__name__)
    return R.GUARD_ERROR, f"internal error ({type(exc).__name__}); refused"
