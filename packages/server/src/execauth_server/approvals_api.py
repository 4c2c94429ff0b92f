"""The approval queue over HTTP.

- ``GET /v1/approvals?state=pending``: requests (approvers only), newest first.
- ``GET /v1/approvals/{id}``: one request, with its grant once approved (approvers,
  and callers that may act for its principal and agent).
- ``POST /v1/approvals/{id}/approve`` / ``.../reject``: body ``{"comment": "..."}``
  (optional); approvers only. Two decisions at once: one wins, the other gets
  409 ``APPROVAL_DECIDED``.

Approvers authenticate with ``Authorization: Bearer <secret>`` against the config's
``approvers`` list; an agent's (caller's) credential is refused with 403. A decision
of REQUIRE_APPROVAL on ``/v1/decide`` creates a request; its id comes back in the
``X-Execauth-Approval-Request`` header. A grant presented to ``/v1/decide`` is
consumed there, once (409 ``APPROVAL_USED`` the second time).
"""

from __future__ import annotations

import hashlib
import logging
import threading
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execauth_core.approvals import STATES, ApprovalError, Approvals, open_approvals
from execauth_core.canonical import CanonicalizationError, loads_strict
from execauth_core.errors import StoreUnavailable
from execauth_core.messages import ApprovalGrant, AuthorizationDecision, AuthorizationRequest, Outcome
from execauth_core.reasons import ReasonCode as R

from .config import Caller

log = logging.getLogger("execauth.server")

REQUEST_ID_HEADER = "X-Execauth-Approval-Request"
_STATUS = {
    R.APPROVAL_UNKNOWN.value: 404,
    R.APPROVAL_INVALID.value: 400,
    R.APPROVER_SIGNATURE_INVALID.value: 403,
}
_LOCK = threading.Lock()

__all__ = [
    "REQUEST_ID_HEADER",
    "ApprovalError",
    "approval_routes",
    "approvals_of",
    "decide_with_approvals",
    "start_webhooks",
    "verified_decision",
]


def approvals_of(svc: Any) -> Approvals:
    """The service's approval queue, opened on first use beside its other stores."""
    queue: Approvals | None = getattr(svc, "_approval_queue", None)
    if queue is not None:
        return queue
    with _LOCK:
        queue = getattr(svc, "_approval_queue", None)
        if queue is None:
            url = "memory://" if getattr(svc, "_fixed", None) is not None else svc.config.store_url
            authority = next(iter(svc._authorities.values()))
            queue = Approvals(
                open_approvals(url),
                svc.stores.audit,
                authority=authority,
                clock=svc.clock,
                request_ttl=svc.config.approval_request_ttl,
                grant_ttl=svc.config.approval_grant_ttl,
            )
            dispatcher = getattr(svc, "webhooks", None)
            if dispatcher is not None:
                queue.listeners.append(dispatcher.notify)
            svc._approval_queue = queue
    return queue


def start_webhooks(svc: Any) -> Any:
    """The service's webhook dispatcher: an outbox in ``data_dir/webhooks.db``, delivery
    threads, and a sweep that expires overdue requests (so ``approval.expired`` is sent)."""
    from .webhooks import WebhookDispatcher

    def sweep() -> None:
        approvals_of(svc).list("expired")

    config = svc.config
    if config.public_url is None:
        log.warning("execauth-server: webhooks are configured without public_url; console_url will be null")
    return WebhookDispatcher(
        config.webhooks,
        config.data_dir / "webhooks.db",
        public_url=config.public_url,
        sweep=sweep,
        sweep_interval=config.approval_sweep_interval,
    )


def decide_with_approvals(
    svc: Any, proposal: AuthorizationRequest, approval: ApprovalGrant | None, caller: Caller
) -> tuple[AuthorizationDecision, dict[str, str]]:
    """``svc.decide`` with the queue: a presented grant this server issued is consumed
    first (once); a REQUIRE_APPROVAL creates a request, named in the answer's header.

    Raises:
        ApprovalError: the grant was already used, or is not the one stored.
    """
    queue = approvals_of(svc)
    if approval is not None:
        queue.consume_grant(approval, proposal_digest=proposal.content_digest())
    decision: AuthorizationDecision = svc.decide(proposal, approval, caller)
    headers: dict[str, str] = {}
    if decision.outcome is Outcome.REQUIRE_APPROVAL:
        try:
            record = queue.create(
                proposal,
                reason_codes=decision.reason_codes,
                policy=decision.record.policy,
                proposal_digest=decision.proposal_digest,
            )
            headers[REQUEST_ID_HEADER] = record.id
        except Exception as exc:  # noqa: BLE001 - the decision (no token) stands without a request
            log.error("execauth-server: could not create an approval request (%s)", type(exc).__name__)
    return decision, headers


class _Refused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _answer(refused: _Refused, seq: int | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if refused.status == 401 else None
    return JSONResponse(
        {"reason_code": refused.code, "message": refused.message, "audit_seq": seq},
        status_code=refused.status,
        headers=headers,
    )


def _presented(header: str | None) -> bytes:
    scheme, _, secret = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise _Refused(401, R.CALLER_UNAUTHENTICATED.value, "send Authorization: Bearer <approver secret>")
    return hashlib.sha256(secret.strip().encode("utf-8")).digest()


def _who(svc: Any, header: str | None) -> tuple[str | None, Caller | None]:
    """(approver name, None) or (None, caller); refuses unknown credentials."""
    presented = _presented(header)
    approver = None
    for a in svc.config.approvers:  # every one compared, in constant time each
        if a.matches(presented):
            approver = a.name
    caller = None
    for c in svc._callers.values():
        if c.matches(presented):
            caller = c
    if approver is not None:
        return approver, None
    if caller is not None:
        return None, caller
    raise _Refused(401, R.CALLER_UNAUTHENTICATED.value, "unknown credential")


def _approver(svc: Any, header: str | None) -> str:
    name, caller = _who(svc, header)
    if name is None:
        raise _Refused(
            403,
            R.CALLER_NOT_BOUND.value,
            f"{caller.name if caller else 'this credential'!r} is an agent's credential: agents never approve",
        )
    return name


def _from_error(exc: ApprovalError) -> _Refused:
    return _Refused(_STATUS.get(exc.reason_code, 409), exc.reason_code, str(exc))


async def _comment(request: Request) -> tuple[str | None, Any]:
    """The decision body: ``(comment, approver_signature)``, either may be ``None``."""
    from .app import _read_body, _Refusal

    if request.headers.get("content-length") in (None, "0") and "transfer-encoding" not in request.headers:
        return None, None
    svc = request.app.state.service
    try:
        body = await _read_body(request, svc.config.max_body_bytes, svc.config.read_timeout)
    except _Refusal as refusal:
        raise _Refused(refusal.status, refusal.code.value, refusal.message) from None
    try:
        data = loads_strict(body) if body else {}
    except CanonicalizationError as exc:
        raise _Refused(400, R.REQUEST_INVALID.value, f"the body is not strict JSON: {exc}") from None
    if (
        not isinstance(data, dict)
        or set(data) - {"comment", "approver_signature"}
        or not isinstance(data.get("comment"), (str, type(None)))
    ):
        raise _Refused(
            400, R.REQUEST_INVALID.value, 'the body is {"comment": "...", "approver_signature": {...}} (both optional)'
        )
    comment = data.get("comment")
    return (comment[:2000] if isinstance(comment, str) else None), data.get("approver_signature")


def verified_decision(svc: Any, queue: Approvals, rid: str, verb: str, who: str, signed: Any) -> Any:
    """The approver's verified statement, required where the approver has a key.

    Every route that decides on an approver's behalf calls this first (the console
    too): a keyed approver's decision without their valid statement decides nothing.

    Raises:
        _Refused: 403 ``APPROVER_SIGNATURE_REQUIRED`` / ``APPROVER_SIGNATURE_INVALID``.
    """
    from execauth_core.approver_keys import verify_decision

    entry = next((a for a in svc.config.approvers if a.name == who), None)
    key = getattr(entry, "public_key", None)
    if key is None:
        if signed is not None:
            raise _Refused(
                400, R.APPROVER_SIGNATURE_INVALID.value, f"approver {who!r} has no public_key configured to verify it"
            )
        return None
    if signed is None:
        raise _Refused(
            403,
            R.APPROVER_SIGNATURE_REQUIRED.value,
            f"approver {who!r} has a key: sign the decision (execauth approvals {verb} ID --key FILE)",
        )
    record = queue.get(rid)
    try:
        return verify_decision(
            signed,
            key,
            request_id=rid,
            proposal_digest=record.proposal_digest,
            decision=verb,
            approver=who,
            now=svc.clock.now(),
        )
    except ApprovalError as exc:
        raise _Refused(403, exc.reason_code, str(exc)) from None


def approval_routes() -> list[Route]:
    """The routes, mounted by :func:`execauth_server.app.create_app`."""

    async def list_requests(request: Request) -> Response:
        svc = request.app.state.service
        try:
            _approver(svc, request.headers.get("authorization"))
            state = request.query_params.get("state")
            if state is not None and state not in STATES:
                raise _Refused(400, R.REQUEST_INVALID.value, f"state is one of {', '.join(STATES)}")
            queue = approvals_of(svc)
            try:
                rows = await run_in_threadpool(queue.list, state)
            except StoreUnavailable:
                raise _Refused(503, R.STORE_UNAVAILABLE.value, "the approval store is unavailable") from None
        except _Refused as refused:
            return _answer(refused)
        return JSONResponse({"approvals": [r.summary() for r in rows]})

    async def show(request: Request) -> Response:
        svc = request.app.state.service
        try:
            name, caller = _who(svc, request.headers.get("authorization"))
            queue = approvals_of(svc)
            try:
                record = await run_in_threadpool(queue.get, request.path_params["request_id"])
            except ApprovalError as exc:
                raise _from_error(exc) from None
            except StoreUnavailable:
                raise _Refused(503, R.STORE_UNAVAILABLE.value, "the approval store is unavailable") from None
            if name is None and (caller is None or not caller.may_act_for(record.principal, record.agent)):
                # Said as "unknown": a caller learns nothing of others' requests.
                raise _Refused(404, R.APPROVAL_UNKNOWN.value, "no such approval request")
        except _Refused as refused:
            return _answer(refused)
        return JSONResponse(record.summary())

    def decider(verb: str) -> Any:
        async def decide(request: Request) -> Response:
            svc = request.app.state.service
            rid = str(request.path_params["request_id"])[:200]
            who: str | None = None
            try:
                who = _approver(svc, request.headers.get("authorization"))
                comment, signed = await _comment(request)
                queue = approvals_of(svc)
                act = queue.approve if verb == "approve" else queue.reject

                def decide_now() -> Any:
                    verified = verified_decision(svc, queue, rid, verb, who or "", signed)
                    return act(rid, approver=who or "", comment=comment, approver_signature=verified)

                try:
                    record = await run_in_threadpool(decide_now)
                except ApprovalError as exc:
                    raise _from_error(exc) from None
                except StoreUnavailable:
                    raise _Refused(503, R.STORE_UNAVAILABLE.value, "the approval store is unavailable") from None
            except _Refused as refused:
                seq = await run_in_threadpool(
                    svc.record,
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
                            "approver": who,
                            "via": "server",
                        },
                    },
                )
                return _answer(refused, seq)
            return JSONResponse(record.summary())

        return decide

    return [
        Route("/v1/approvals", list_requests, methods=["GET"]),
        Route("/v1/approvals/{request_id}", show, methods=["GET"]),
        Route("/v1/approvals/{request_id}/approve", decider("approve"), methods=["POST"]),
        Route("/v1/approvals/{request_id}/reject", decider("reject"), methods=["POST"]),
    ]


def approval_openapi() -> dict[str, Any]:
    """The OpenAPI paths of these routes (merged into ``/openapi.json``)."""
    err = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    record = {"content": {"application/json": {"schema": {"type": "object", "description": "an approval request"}}}}
    rid = [{"name": "request_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    refusals = {
        "401": {"description": "No or unknown credential (CALLER_UNAUTHENTICATED)", **err},
        "403": {
            "description": "An agent's credential: agents never approve (CALLER_NOT_BOUND); a keyed approver's "
            "decision unsigned or badly signed (APPROVER_SIGNATURE_REQUIRED, APPROVER_SIGNATURE_INVALID)",
            **err,
        },
        "404": {"description": "No such request (APPROVAL_UNKNOWN)", **err},
        "503": {"description": "The approval store is unavailable (STORE_UNAVAILABLE)", **err},
    }
    decision_body = {
        "required": False,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "comment": {"type": ["string", "null"]},
                        "approver_signature": {
                            "type": ["object", "null"],
                            "description": "the approver's signed statement (required where the approver has a key)",
                        },
                    },
                }
            }
        },
    }

    def decide(summary: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "security": bearer,
                "parameters": rid,
                "requestBody": decision_body,
                "responses": {
                    "200": {"description": "The decided request", **record},
                    **refusals,
                    "409": {"description": "Already decided or expired (APPROVAL_DECIDED, APPROVAL_EXPIRED)", **err},
                },
            }
        }

    return {
        "/v1/approvals": {
            "get": {
                "summary": "Approval requests, newest first (approvers)",
                "security": bearer,
                "parameters": [{"name": "state", "in": "query", "schema": {"enum": list(STATES)}}],
                "responses": {
                    "200": {"description": "{approvals: [...]}", **record},
                    **{k: v for k, v in refusals.items() if k != "404"},
                },
            }
        },
        "/v1/approvals/{request_id}": {
            "get": {
                "summary": "One approval request, with its grant once approved",
                "security": bearer,
                "parameters": rid,
                "responses": {"200": {"description": "The request", **record}, **refusals},
            }
        },
        "/v1/approvals/{request_id}/approve": decide("Approve: the authority signs a grant over the proposal digest"),
        "/v1/approvals/{request_id}/reject": decide("Reject: the proposal does not run under this request"),
    }
