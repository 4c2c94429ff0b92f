"""The approvers' web console, served under ``/console/``.

Pages (server-rendered HTML, Jinja2 with autoescaping on every template):

- ``GET /console/login``, ``POST /console/login``, ``POST /console/logout``
- ``GET /console/``: pending requests, and the ones decided most recently
- ``GET /console/requests/{id}``: one request, rendered from the stored canonical proposal
- ``POST /console/requests/{id}/approve`` / ``.../reject``: with a comment

Who may decide: the config's ``approvers`` that have a ``password_argon2``. Their
session is server-side (a random id from :mod:`secrets` in an ``HttpOnly``,
``SameSite=Strict`` cookie on ``Path=/console``, ``Secure`` over https) with an idle
and an absolute expiry; logout ends it on the server. Every POST carries the session's
synchronizer token (the sign-in form: a token bound to a pre-session cookie), compared
in constant time, and a POST whose ``Origin`` names another site is refused. The
console never reads an ``Authorization`` header: an agent's credential (or an
approver's API secret) cannot decide anything here.

A decision form names the request id and the proposal digest the approver was shown;
the server decides only when both are the stored record's, through the same
:class:`~execauth_core.approvals.Approvals` calls as the HTTP API (audited: who,
when, digest, comment).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from execauth_core.approvals import ApprovalError, ApprovalRequest
from execauth_core.canonical import canonicalize
from execauth_core.errors import StoreUnavailable
from execauth_core.reasons import ReasonCode as R

from .approvals_api import approvals_of
from .config import Approver, ServerConfig

log = logging.getLogger("execauth.server.console")

__all__ = ["LoginLimiter", "Sessions", "console_routes", "hash_password", "pretty_canonical"]

SESSION_COOKIE = "execauth_console"
LOGIN_COOKIE = "execauth_console_login"
COOKIE_PATH = "/console"
MAX_FORM_BYTES = 16_384
MAX_COMMENT = 2000
RECENT = 20

_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


# -- passwords ------------------------------------------------------------------------


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()  # argon2id with the library's current recommended parameters


def hash_password(password: str) -> str:
    """An argon2id PHC hash of ``password``, for an approver's ``password_argon2``."""
    if not password:
        raise ValueError("the password is empty")
    return str(_hasher().hash(password))


_DUMMY: list[str] = []


def _verify(approver: Approver | None, password: str) -> bool:
    """True if ``password`` is the approver's. An unknown account (or one without a
    console password) costs the same argon2 work, so timing does not tell which
    names exist."""
    from argon2.exceptions import InvalidHashError, VerificationError

    hasher = _hasher()
    target = approver.password_argon2 if approver is not None else None
    if target is None:
        if not _DUMMY:
            _DUMMY.append(hasher.hash(secrets.token_urlsafe(16)))
        target = _DUMMY[0]
    try:
        ok = bool(hasher.verify(target, password))
    except (VerificationError, InvalidHashError):
        ok = False
    return ok and approver is not None and approver.password_argon2 is not None


# -- sessions and sign-in limits -------------------------------------------------------


@dataclass
class Session:
    """A signed-in approver. ``csrf`` is the synchronizer token of its forms."""

    approver: str
    csrf: str
    created: float
    seen: float


class Sessions:
    """Server-side console sessions, keyed by the SHA-256 of the cookie's random id.

    Bounded: at most ``max_sessions`` live at once (the least recently used one goes
    first). A session ends ``idle`` seconds after its last request or ``max_age``
    seconds after sign-in, whichever comes first.
    """

    def __init__(
        self,
        *,
        idle: float,
        max_age: float,
        max_sessions: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle, self.max_age, self.max_sessions, self.clock = idle, max_age, max_sessions, clock
        self._rows: OrderedDict[bytes, Session] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _key(session_id: str) -> bytes:
        return hashlib.sha256(session_id.encode("utf-8", "replace")).digest()

    def create(self, approver: str) -> tuple[str, Session]:
        """A new session (a fresh id: never one the browser had before sign-in)."""
        sid = secrets.token_urlsafe(32)
        now = self.clock()
        session = Session(approver=approver, csrf=secrets.token_urlsafe(32), created=now, seen=now)
        with self._lock:
            self._sweep(now)
            while len(self._rows) >= self.max_sessions:
                self._rows.popitem(last=False)
            self._rows[self._key(sid)] = session
        return sid, session

    def get(self, session_id: str | None) -> Session | None:
        """The live session of this id (its idle clock restarted), or ``None``."""
        if not session_id or len(session_id) > 200:
            return None
        key = self._key(session_id)
        now = self.clock()
        with self._lock:
            session = self._rows.get(key)
            if session is None:
                return None
            if now - session.seen > self.idle or now - session.created > self.max_age:
                del self._rows[key]
                return None
            session.seen = now
            self._rows.move_to_end(key)
            return session

    def drop(self, session_id: str | None) -> None:
        if session_id:
            with self._lock:
                self._rows.pop(self._key(session_id), None)

    def _sweep(self, now: float) -> None:
        for key, s in list(self._rows.items()):
            if now - s.seen > self.idle or now - s.created > self.max_age:
                del self._rows[key]

    def __len__(self) -> int:
        return len(self._rows)


class LoginLimiter:
    """Failed sign-ins per key (an account name, a source address) in a sliding
    window; bounded memory (``max_keys``, the oldest key forgotten first)."""

    def __init__(
        self,
        *,
        limit: int,
        window: float,
        max_keys: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.max_keys, self.clock = limit, window, max_keys, clock
        self._fails: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def blocked(self, key: str) -> float:
        """Seconds until ``key`` may try again (0: now)."""
        now = self.clock()
        with self._lock:
            fails = self._fails.get(key)
            if fails is None:
                return 0.0
            while fails and now - fails[0] > self.window:
                fails.popleft()
            if len(fails) < self.limit:
                return 0.0
            return max(1.0, self.window - (now - fails[0]))

    def failed(self, key: str) -> None:
        now = self.clock()
        with self._lock:
            fails = self._fails.get(key)
            if fails is None:
                while len(self._fails) >= self.max_keys:
                    self._fails.popitem(last=False)
                fails = self._fails[key] = deque(maxlen=self.limit)
            fails.append(now)
            self._fails.move_to_end(key)

    def clear(self, key: str) -> None:
        with self._lock:
            self._fails.pop(key, None)


# -- rendering helpers -------------------------------------------------------------------


def pretty_canonical(value: Any, indent: int = 0) -> str:
    """JSON with the RFC 8785 canonical form's key order and scalar spelling, laid
    out on lines for people: only whitespace differs from the signed bytes."""
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        # JCS orders keys by their UTF-16 code units: canonicalize a dict of keys to learn it.
        order = _jcs_key_order(list(value))
        items = [f"{pad}{canonicalize(k).decode('utf-8')}: {pretty_canonical(value[k], indent + 1)}" for k in order]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = [pad + pretty_canonical(v, indent + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return canonicalize(value).decode("utf-8")


def _jcs_key_order(keys: list[str]) -> list[str]:
    return sorted(keys, key=lambda k: k.encode("utf-16-be"))


def _when(ts: int | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _left(ts: int, now: int) -> str:
    """``in 14 min`` / ``3 min ago``."""
    delta = ts - now
    span = abs(delta)
    text = f"{span} s" if span < 120 else f"{span // 60} min" if span < 7200 else f"{span // 3600} h"
    return f"in {text}" if delta >= 0 else f"{text} ago"


def _money(svc: Any, record: ApprovalRequest) -> str | None:
    """``250.00 USD`` when the tool's manifest names its amount (a decimal string)."""
    registry = getattr(getattr(svc, "court", None), "registry", None)
    registered = registry.get(record.tool) if registry is not None and hasattr(registry, "get") else None
    manifest = getattr(registered, "manifest", None)
    amount_arg = getattr(manifest, "amount_arg", None)
    if manifest is None or amount_arg is None:
        return None
    amount = record.proposal.args.get(amount_arg)
    if not isinstance(amount, str):
        return None
    currency_arg = getattr(manifest, "currency_arg", None)
    currency = record.proposal.args.get(currency_arg) if currency_arg else getattr(manifest, "currency", None)
    return f"{amount} {currency}" if isinstance(currency, str) else amount


# -- the routes --------------------------------------------------------------------------


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Console:
    """The console's state for one app: templates, sessions, sign-in limits."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        env = jinja2.Environment(
            loader=jinja2.PackageLoader("execauth_server", "templates"),
            autoescape=True,  # every template, whatever its name
            undefined=jinja2.StrictUndefined,
        )
        self.templates = Jinja2Templates(env=env)
        self.sessions = Sessions(idle=config.console.idle_timeout, max_age=config.console.max_age)
        self.per_account = LoginLimiter(limit=5, window=300.0)
        self.per_source = LoginLimiter(limit=30, window=300.0)
        self.approvers = {a.name: a for a in config.approvers}
        self.server_name = config.issuer

    # cookies and checks ------------------------------------------------------------

    def secure(self, request: Request) -> bool:
        s = self.config.console
        if s.secure_cookie is not None:
            return s.secure_cookie
        return request.url.scheme == "https" or bool(s.origin and s.origin.startswith("https://"))

    def set_cookie(self, response: Response, request: Request, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            path=COOKIE_PATH,
            httponly=True,
            samesite="strict",
            secure=self.secure(request),
        )

    def clear_cookie(self, response: Response, request: Request, name: str) -> None:
        response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=self.secure(request))

    def own_origin(self, request: Request) -> str:
        if self.config.console.origin:
            return self.config.console.origin
        host = request.headers.get("host", "")
        return f"{request.url.scheme}://{host}"

    def check_origin(self, request: Request) -> None:
        origin = request.headers.get("origin")
        if origin is None:
            return  # older browsers and non-browser clients: the CSRF token still has to match
        if not hmac.compare_digest(origin.encode("utf-8", "replace"), self.own_origin(request).encode("utf-8")):
            raise _Refused(403, R.CONSOLE_CSRF_INVALID.value, "this form was sent from another site")

    @staticmethod
    def check_token(expected: str, presented: str | None) -> None:
        if not presented or not hmac.compare_digest(expected.encode("utf-8"), presented.encode("utf-8", "replace")):
            raise _Refused(
                403,
                R.CONSOLE_CSRF_INVALID.value,
                "the form's security token is missing or wrong: reload the page and try again",
            )

    def session(self, request: Request) -> tuple[str | None, Session | None]:
        sid = request.cookies.get(SESSION_COOKIE)
        return sid, self.sessions.get(sid)

    # rendering ----------------------------------------------------------------------

    def page(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        *,
        status: int = 200,
        session: Session | None = None,
    ) -> Response:
        ctx = {"server_name": self.server_name, "user": session.approver if session else None, **context}
        ctx.setdefault("csrf", session.csrf if session else "")
        return self.templates.TemplateResponse(request, name, ctx, status_code=status, headers=_SECURITY_HEADERS)

    def error(self, request: Request, refused: _Refused, session: Session | None) -> Response:
        return self.page(
            request,
            "console/error.html",
            {"status": refused.status, "code": refused.code, "message": refused.message},
            status=refused.status,
            session=session,
        )


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (at most 16 KiB, 10 s), one value per field."""
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        raise _Refused(415, R.UNSUPPORTED_MEDIA_TYPE.value, "the console takes HTML form posts only")

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_FORM_BYTES:
                raise _Refused(413, R.REQUEST_TOO_LARGE.value, "the form is too large")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        body = await asyncio.wait_for(collect(), 10.0)
    except asyncio.TimeoutError:
        raise _Refused(408, R.REQUEST_TIMEOUT.value, "the form did not arrive in time") from None
    except ClientDisconnect:
        raise _Refused(400, R.REQUEST_INVALID.value, "the browser went away") from None
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise _Refused(400, R.REQUEST_INVALID.value, "the form is not well-formed") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise _Refused(400, R.REQUEST_INVALID.value, f"the form field {key[:40]!r} appears twice")
        fields[key] = value
    return fields


def console_routes(config: ServerConfig) -> list[BaseRoute]:
    """The console's routes, mounted by :func:`execauth_server.app.create_app`."""
    console = Console(config)

    def queue(request: Request) -> Any:
        return approvals_of(request.app.state.service)

    async def login_page(request: Request) -> Response:
        _, session = console.session(request)
        if session is not None:
            return RedirectResponse("/console/", status_code=303, headers=_SECURITY_HEADERS)
        return _login_form(request, None, 200)

    def _login_form(request: Request, message: str | None, status: int, username: str = "") -> Response:
        token = secrets.token_urlsafe(32)
        response = console.page(
            request, "console/login.html", {"csrf": token, "message": message, "username": username}, status=status
        )
        console.set_cookie(response, request, LOGIN_COOKIE, token, max_age=3600)
        return response

    async def login(request: Request) -> Response:
        source = request.client.host if request.client is not None else "(unknown)"
        try:
            console.check_origin(request)
            form = await _form(request)
            console.check_token(request.cookies.get(LOGIN_COOKIE) or "", form.get("csrf"))
        except _Refused as refused:
            # No valid pre-session token: a fresh form, with a fresh token.
            return _login_form(request, refused.message, refused.status)
        username = form.get("username", "")[:200]
        password = form.get("password", "")
        wait = max(console.per_account.blocked("account:" + username), console.per_source.blocked("source:" + source))
        if wait:
            return _login_form(
                request, f"Too many failed sign-ins. Try again in {int(wait // 60) + 1} min.", 429, username
            )
        approver = console.approvers.get(username)
        ok = await run_in_threadpool(_verify, approver, password[:1024])
        if not ok or approver is None:
            console.per_account.failed("account:" + username)
            console.per_source.failed("source:" + source)
            log.warning("execauth-server: console sign-in failed for %r from %s", username[:60], source)
            return _login_form(request, "Wrong name or password.", 401, username)
        console.per_account.clear("account:" + username)
        console.sessions.drop(request.cookies.get(SESSION_COOKIE))  # a sign-in never keeps an old id
        sid, _ = console.sessions.create(approver.name)
        log.info("execauth-server: console sign-in by %r from %s", approver.name, source)
        response = RedirectResponse("/console/", status_code=303, headers=_SECURITY_HEADERS)
        console.set_cookie(response, request, SESSION_COOKIE, sid, max_age=config.console.max_age)
        console.clear_cookie(response, request, LOGIN_COOKIE)
        return response

    async def logout(request: Request) -> Response:
        sid, session = console.session(request)
        if session is not None:
            try:
                console.check_origin(request)
                form = await _form(request)
                console.check_token(session.csrf, form.get("csrf"))
            except _Refused as refused:
                return console.error(request, refused, session)
            console.sessions.drop(sid)
        response = RedirectResponse("/console/login", status_code=303, headers=_SECURITY_HEADERS)
        console.clear_cookie(response, request, SESSION_COOKIE)
        return response

    async def index(request: Request) -> Response:
        _, session = console.session(request)
        if session is None:
            return RedirectResponse("/console/login", status_code=303, headers=_SECURITY_HEADERS)
        q = queue(request)
        try:
            pending = await run_in_threadpool(q.list, "pending")
            everything = await run_in_threadpool(q.list, None)
        except StoreUnavailable:
            refused = _Refused(503, R.STORE_UNAVAILABLE.value, "the approval store is unavailable")
            return console.error(request, refused, session)
        now = request.app.state.service.clock.now()
        decided = [r for r in everything if r.state != "pending"][:RECENT]
        rows = [_row(r, now) for r in pending]
        return console.page(
            request,
            "console/index.html",
            {"pending": rows, "decided": [_row(r, now) for r in decided]},
            session=session,
        )

    def _row(record: ApprovalRequest, now: int) -> dict[str, Any]:
        return {
            "id": record.id,
            "tool": record.tool,
            "principal": record.principal,
            "agent": record.agent or "-",
            "state": record.state,
            "created": _when(record.created_at),
            "expires": _left(record.expires_at, now),
            "decided_by": record.decided_by or "-",
            "decided": _when(record.decided_at),
            "consumed": record.consumed,
        }

    async def detail(request: Request) -> Response:
        _, session = console.session(request)
        if session is None:
            return RedirectResponse("/console/login", status_code=303, headers=_SECURITY_HEADERS)
        rid = str(request.path_params["request_id"])[:200]
        try:
            try:
                record = await run_in_threadpool(queue(request).get, rid)
            except ApprovalError as exc:
                raise _Refused(404, exc.reason_code, "No approval request has this id.") from None
            except StoreUnavailable:
                raise _Refused(503, R.STORE_UNAVAILABLE.value, "the approval store is unavailable") from None
        except _Refused as refused:
            return console.error(request, refused, session)
        svc = request.app.state.service
        now = svc.clock.now()
        p = record.proposal
        context = {
            "r": record,
            "args": pretty_canonical(p.args),
            "money": _money(svc, record),
            "created": _when(record.created_at),
            "expires": _when(record.expires_at),
            "expires_left": _left(record.expires_at, now),
            "decided": _when(record.decided_at),
            "grant_expires": _when(record.grant.expires_at) if record.grant else None,
            "consumed_at": _when(record.consumed_at),
        }
        return console.page(request, "console/detail.html", context, session=session)

    def decider(verb: str) -> Any:
        async def decide(request: Request) -> Response:
            _, session = console.session(request)
            rid = str(request.path_params["request_id"])[:200]
            if session is None:
                # No session, whatever else the request carries (an Authorization header is never read).
                refused = _Refused(403, R.CALLER_UNAUTHENTICATED.value, "Sign in to decide approval requests.")
                return console.error(request, refused, None)
            try:
                console.check_origin(request)
                form = await _form(request)
                console.check_token(session.csrf, form.get("csrf"))
                if not hmac.compare_digest(form.get("request_id", "").encode("utf-8"), rid.encode("utf-8")):
                    raise _Refused(
                        400, R.APPROVAL_MISMATCH.value, "The form names another request than this page: nothing done."
                    )
                q = queue(request)
                try:
                    record = await run_in_threadpool(q.get, rid)
                    shown = form.get("proposal_digest", "").encode("utf-8")
                    if not hmac.compare_digest(shown, record.proposal_digest.encode("utf-8")):
                        raise _Refused(
                            409,
                            R.APPROVAL_MISMATCH.value,
                            "The proposal you were shown is not the one stored for this request: nothing done.",
                        )
                    keyed = console.approvers.get(session.approver)
                    if keyed is not None and keyed.public_key is not None:
                        # A keyed approver's decision carries their own signature, made
                        # where their key is: the browser has no key, so the console
                        # decides nothing for them (the API would refuse it too).
                        raise _Refused(
                            403,
                            R.APPROVER_SIGNATURE_REQUIRED.value,
                            f"Your decisions are signed with your own key: run "
                            f"execauth approvals {verb} {rid} --url ... --key FILE --approver {session.approver}.",
                        )
                    comment = form.get("comment", "").strip()[:MAX_COMMENT] or None
                    act = q.approve if verb == "approve" else q.reject
                    # The proposal under an id never changes, so the digest checked above
                    # is the one decided; the state change itself is the store's CAS.
                    await run_in_threadpool(lambda: act(rid, approver=session.approver, comment=comment))
                except ApprovalError as exc:
                    status = 404 if exc.reason_code == R.APPROVAL_UNKNOWN.value else 409
                    raise _Refused(status, exc.reason_code, _plain(exc)) from None
                except StoreUnavailable:
                    raise _Refused(503, R.STORE_UNAVAILABLE.value, "The approval store is unavailable.") from None
            except _Refused as refused:
                await run_in_threadpool(_record_refusal, request, refused, rid, verb, session.approver)
                return console.error(request, refused, session)
            return RedirectResponse(f"/console/requests/{rid}", status_code=303, headers=_SECURITY_HEADERS)

        return decide

    async def root(request: Request) -> Response:
        return RedirectResponse("/console/", status_code=307)

    return [
        Route("/console", root, methods=["GET"]),
        Route("/console/", index, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/requests/{request_id}", detail, methods=["GET"]),
        Route("/console/requests/{request_id}/approve", decider("approve"), methods=["POST"]),
        Route("/console/requests/{request_id}/reject", decider("reject"), methods=["POST"]),
        Mount("/console/static", app=StaticFiles(packages=[("execauth_server", "static")]), name="console-static"),
    ]


def _plain(exc: ApprovalError) -> str:
    text = str(exc)
    prefix = exc.reason_code + ": "
    text = text[len(prefix) :] if text.startswith(prefix) else text
    return text[:1].upper() + text[1:] + "."


def _record_refusal(request: Request, refused: _Refused, rid: str, verb: str, approver: str) -> None:
    """A refused console decision of a signed-in approver, as a denial in the audit log."""
    svc = request.app.state.service
    svc.record(
        {
            "event": "denial",
            "time": svc.clock.now(),
            "executed": False,
            "tool": None,
            "principal": None,
            "agent": None,
            "call_id": None,
            "proposal_digest": None,
            "outcome": "DENY",
            "reason_codes": [refused.code],
            "record_digest": None,
            "policy_digest": None,
            "token_id": None,
            "detail": {
                "message": refused.message[:500],
                "approval_request": rid,
                "action": verb,
                "approver": approver,
                "via": "console",
            },
        }
    )
