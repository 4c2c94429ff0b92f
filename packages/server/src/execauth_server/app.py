"""The authority as an HTTP service (Starlette).

Endpoints (JSON; see ``GET /openapi.json``):

- ``POST /v1/decide``: an AuthorizationRequest in (or ``{"request": ..., "approval": ...}``),
  the signed AuthorizationDecision out, with the token only on ALLOW.
- ``POST /v1/results``: a guard reports the outcome of an execution.
- ``GET /v1/audit/head``: the audit log's head (sequence number and digest).
- ``GET /v1/audit/checkpoint``: the newest signed checkpoint (C2SP signed note, text);
  ``GET /v1/audit/proof?seq=I&size=N`` and ``GET /v1/audit/consistency?from=M&to=N``:
  Merkle inclusion and consistency proofs (JSON). Hashes only: served without a caller
  credential unless ``checkpoints.public`` is false.
- ``GET /.well-known/jwks.json``: the trusted keys, with Cache-Control and ETag.
- ``GET /healthz``, ``GET /readyz`` (readiness checks the stores).

Every refusal is a JSON answer ``{"reason_code", "message", "audit_seq"}`` and, where
the audit log can be written, a recorded denial (``executed: false``). No stack trace
ever reaches a client; the caller secret is never logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pydantic
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from execauth_core.authority import Authority
from execauth_core.canonical import CanonicalizationError, canonicalize, loads_strict
from execauth_core.clock import Clock, SystemClock
from execauth_core.errors import ConfigurationError, KeyFileError, StoreUnavailable
from execauth_core.guard import new_id
from execauth_core.keys import KeySet, LocalSigner, Signer
from execauth_core.messages import ApprovalGrant, AuthorizationDecision, AuthorizationRequest
from execauth_core.reasons import ReasonCode as R
from execauth_core.stores.base import Debit
from execauth_core.stores.urls import Stores, open_stores
from execauth_core.tlog import ProofError
from execauth_core.tlog_checkpoint import Checkpointer, CheckpointError, SignedCheckpoint, open_checkpoint

from ._version import __version__
from .approvals_api import ApprovalError, approval_openapi, approval_routes, decide_with_approvals, start_webhooks
from .config import Caller, ServerConfig
from .console import console_routes

log = logging.getLogger("execauth.server")

JWKS_MAX_AGE = 300
_RESULT_STATUSES = {"ok", "error", "not_run"}
RESULT_GRACE = 3600
"""Seconds after a token's expiry during which its caller may still report its result
(a tool may run long after the token was consumed)."""


class _Refusal(Exception):
    def __init__(self, status: int, code: R, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


@dataclass
class _Subject:
    """What is known of a refused request, for its denial record."""

    tool: str | None = None
    principal: str | None = None
    agent: str | None = None
    call_id: str | None = None
    proposal_digest: str | None = None


def load_signer(config: ServerConfig) -> Signer:
    """The signing key named by the config, created (mode 0600) on first start."""
    path = config.key_path
    if path.exists():
        return LocalSigner.load(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signer = LocalSigner.generate()
    try:
        signer.save(path)
    except KeyFileError:
        # Another worker created it first: use that one.
        return LocalSigner.load(path)
    return signer


def build_court(config: ServerConfig, state: Any) -> Any:
    """The Court of the configured policy and manifests, on the shared state store
    (the same construction as ``execauth decide``)."""
    from execauth_core.court import Court
    from execauth_core.manifest import ToolRegistry, load_registry
    from execauth_core.policyfile import load_policy

    registry = load_registry(str(config.manifests)) if config.manifests else ToolRegistry()
    policy = load_policy(config.policy) if config.policy else None
    return Court(policy, registry, state=state)


class AuthorityService:
    """The state behind the app: signer, stores, Court, one Authority per audience."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        stores: Stores | None = None,
        signer: Signer | None = None,
        authority: Authority | None = None,
        clock: Clock | None = None,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        """Args:
        stores, signer: instead of the configured ones.
        authority: serve exactly this authority (its decision point, signer, issuer and
            audience) instead of building one from the config: for conformance runs.
        clock, id_factory: the time source and token ids (fixed in conformance runs).
        """
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.id_factory = id_factory
        self._authorities: dict[str, Authority] = {}
        if authority is not None:
            self.signer = authority.signer
            self.stores = stores or open_stores("memory://")
            self.court = authority.decision_point
            self._authorities[authority.audience] = authority
            self._fixed: Authority | None = authority
        else:
            config.data_dir.mkdir(parents=True, exist_ok=True)
            self.signer = signer or load_signer(config)
            self.stores = stores or open_stores(config.store_url)
            self.court = build_court(config, self.stores.state)
            self._fixed = None
            for audience in {config.audience, *config.tool_audiences.values()}:
                self._authorities[audience] = Authority(
                    self.court,
                    self.signer,
                    issuer=config.issuer,
                    audience=audience,
                    token_ttl=config.token_ttl,
                    trusted_keys=KeySet.of_signer(self.signer),
                )
        self.keys = KeySet.of_signer(self.signer)
        if authority is None and config.extra_keys is not None:
            # Published beside the signing key: a previous key (retired, with its
            # not_after) whose tokens may still be presented, or the next one.
            for key in KeySet.load(config.extra_keys):
                if key.kid != self.signer.kid:
                    self.keys.add(key)
        body = canonicalize(self.keys.to_jwks())
        self.jwks_body = body
        self.jwks_etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        self._callers = {bytes.fromhex(c.secret_sha256): c for c in config.callers}
        self.unauthenticated = _UnauthenticatedLimit(config.unauthenticated_per_minute)
        self.checkpointer: Checkpointer | None = None
        self._stop = threading.Event()
        if config.checkpoint_every is not None or config.checkpoint_interval is not None:
            self.checkpointer = Checkpointer(
                self.stores.audit,  # type: ignore[arg-type]  # every execauth backend keeps a Merkle tree
                self.signer,
                origin=config.checkpoint_origin,
                every=config.checkpoint_every,
                interval=config.checkpoint_interval,
                clock=self.clock,
                shared=True,  # the workers of one service append to one log
            )
            if config.checkpoint_interval is not None:
                # An idle service still signs its tail within about 1.5 intervals.
                period = max(1.0, config.checkpoint_interval / 2)
                threading.Thread(target=self._tick, args=(period,), daemon=True, name="execauth-checkpoints").start()

        # Approval notifications: delivered from background threads, never on the request path.
        self.webhooks = start_webhooks(self) if config.webhooks and self._fixed is None else None

    def _tick(self, period: float) -> None:
        while not self._stop.wait(period):
            self._checkpoint(None)

    def _checkpoint(self, size: int | None) -> None:
        """Sign a checkpoint if the cadence says so; never raises (the next append or
        tick tries again, and the verifier reports the unsigned tail meanwhile)."""
        if self.checkpointer is None:
            return
        try:
            self.checkpointer.maybe(size=size)
        except Exception as exc:  # noqa: BLE001 - a checkpoint must not fail a decision
            log.error("execauth-server: could not sign a checkpoint: %s", type(exc).__name__)

    def append(self, event: dict[str, Any]) -> Any:
        """Append to the audit log, then drive the checkpoint cadence."""
        entry = self.stores.audit.append(event)
        self._checkpoint(entry.seq)
        return entry

    def newest_checkpoint(self) -> SignedCheckpoint | None:
        """The stored checkpoint of the largest size (the latest signed, of that size)
        that verifies under this service's keys and origin; notes that do not verify
        are passed over (and logged), never served."""
        best: SignedCheckpoint | None = None
        for note in reversed(self.stores.audit.checkpoints()):  # type: ignore[attr-defined]
            try:
                cp = open_checkpoint(note, self.keys, origin=self.config.checkpoint_origin)
            except CheckpointError as exc:
                log.warning("execauth-server: a stored checkpoint does not verify: %s", exc)
                continue
            if best is not None and cp.size < best.size:
                break
            if best is None or cp.time > best.time:
                best = cp
        return best

    def authority_for(self, tool: str) -> Authority:
        if self._fixed is not None:
            return self._fixed
        return self._authorities[self.config.audience_for(tool)]

    def policy_ref(self) -> Any:
        return self.court.policy_ref

    def authenticate(self, header: str | None) -> Caller:
        if not header:
            raise _Refusal(
                401,
                R.CALLER_UNAUTHENTICATED,
                "no credential: send Authorization: Bearer <secret>",
                headers={"WWW-Authenticate": "Bearer"},
            )
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise _Refusal(
                401,
                R.CALLER_UNAUTHENTICATED,
                "the credential is not a Bearer secret",
                headers={"WWW-Authenticate": "Bearer"},
            )
        presented = hashlib.sha256(secret.strip().encode("utf-8")).digest()
        found = None
        # Compare against every caller, in constant time each, so timing says nothing.
        for caller in self._callers.values():
            if caller.matches(presented):
                found = caller
        if found is None:
            raise _Refusal(401, R.CALLER_UNAUTHENTICATED, "unknown credential", headers={"WWW-Authenticate": "Bearer"})
        return found

    def record(self, event: dict[str, Any]) -> int | None:
        try:
            return int(self.append(event).seq)
        except Exception as exc:  # noqa: BLE001 - the refusal stands even if unrecorded
            log.error("execauth-server: could not record an entry: %s", type(exc).__name__)
            return None

    def denial(self, subject: _Subject, code: str, message: str, caller: Caller | None) -> int | None:
        return self.record(
            {
                "event": "denial",
                "time": self.clock.now(),
                "executed": False,
                "tool": subject.tool,
                "principal": subject.principal,
                "agent": subject.agent,
                "call_id": subject.call_id,
                "proposal_digest": subject.proposal_digest,
                "outcome": "DENY",
                "reason_codes": [code],
                "record_digest": None,
                "policy_digest": None,
                "token_id": None,
                "detail": {"message": message[:500], "caller": caller.name if caller else None, "via": "server"},
            }
        )

    def decide(
        self, request: AuthorizationRequest, approval: ApprovalGrant | None, caller: Caller
    ) -> AuthorizationDecision:
        raw = request.canonical_bytes()
        authority = self.authority_for(request.tool)
        decision = authority.decide(
            request, now=self.clock.now(), token_id=self.id_factory(), approval=approval, request_bytes=raw
        )
        event = {
            "event": "decision",
            "time": decision.record.decided_at,
            "executed": False,
            "tool": request.tool,
            "principal": request.principal,
            "agent": request.agent,
            "call_id": request.call_id,
            "proposal_digest": decision.proposal_digest,
            "outcome": decision.outcome.value,
            "reason_codes": list(decision.reason_codes),
            "record_digest": decision.record_digest,
            "policy_digest": decision.record.policy.digest,
            "token_id": decision.record.token_id,
            "detail": {"caller": caller.name, "audience": authority.audience},
        }
        try:
            if decision.record.token_id is not None and approval is not None:
                self._consume_approval(decision, approval)
            if decision.record.token_id is not None:
                self._mark_issued(decision.record.token_id, caller)
            self.append(event)
        except Exception:
            # An unrecorded decision issues no token, and gives back what it debited.
            if decision.record.token_id is not None:
                try:
                    release = getattr(self.court, "release", None)
                    if release is not None:
                        release(decision.record.token_id)
                except Exception as exc:  # noqa: BLE001 - over-counting is safe
                    log.error("execauth-server: could not release a hold: %s", type(exc).__name__)
            raise
        return decision

    def _consume_approval(self, decision: AuthorizationDecision, approval: ApprovalGrant) -> None:
        """One approval buys one token: the first ALLOW it funds consumes its id in the
        service's replay store (namespace ``authority-approval:``, apart from the ids a
        guard or an executor consumes); a second presentation is refused, so an executor
        that checks tokens itself never sees two tokens for one person's decision."""
        approval_id = decision.record.approval_id or approval.grant_id
        fresh = self.stores.replay.consume(
            f"authority-approval:{approval_id}", expires_at=approval.expires_at, now=self.clock.now()
        )
        if not fresh:
            raise _Refusal(
                409, R.APPROVAL_USED, "this approval was already used: one approval authorizes one execution"
            )

    # -- results: only for a token this service issued, to this caller, once ------
    #
    # The mark is a counter in the shared state store, so every worker sees it. Its
    # window is longer than the time since the epoch, so the window started at 0 and
    # ends when the report period does (a state store forgets a counter when its
    # window ends): any later moment looks the counter up under the same (key, 0).

    def _issued_key(self, token_id: str, caller: Caller) -> str:
        return f"execauth-server/issued/{hashlib.sha256(caller.name.encode()).hexdigest()[:16]}/{token_id}"

    def _mark_issued(self, token_id: str, caller: Caller) -> None:
        """Remember until the token's expiry plus :data:`RESULT_GRACE` that
        ``token_id`` went to ``caller`` (count 1)."""
        now = self.clock.now()
        ends = now + self._token_ttl() + RESULT_GRACE
        self.stores.state.debit(f"issued:{token_id}", [Debit(self._issued_key(token_id, caller), 1, 1, ends)], now=now)

    def accept_result(self, token_id: str, caller: Caller) -> str:
        """Admit one result report, or raise the refusal: 403 ``CALLER_NOT_BOUND`` for a
        token this service did not issue to this caller (unknown, another caller's, or
        past its report period: the answer does not say which), 409 ``TOKEN_REPLAYED``
        for a second report of the same token. A refusal writes nothing to the stores
        but its denial record. Returns the hold to refund if the report is not recorded."""
        now = self.clock.now()
        key = self._issued_key(token_id, caller)
        ends = now + self._token_ttl() + RESULT_GRACE
        try:
            if self.stores.state.usage(key, ends, now=now) < 1:
                raise _Refusal(403, R.CALLER_NOT_BOUND, "no token with this id was issued to this caller lately")
            # Count 1 -> 2, atomically: of two reports at once, one gets through.
            hold = f"result:{token_id}:{new_id()}"
            if self.stores.state.debit(hold, [Debit(key, 1, 2, ends)], now=now):
                raise _Refusal(409, R.TOKEN_REPLAYED, "a result for this token was already reported")
            return hold
        except StoreUnavailable:
            raise _Refusal(503, R.STORE_UNAVAILABLE, "a store is unavailable; nothing was recorded") from None

    def _token_ttl(self) -> int:
        return max(a.token_ttl for a in self._authorities.values())

    def _size(self, size: int | None) -> tuple[int, int]:
        """``(size, head)``: the tree size asked for (default: the newest checkpoint's)
        and the log's current size."""
        head = int(self.stores.audit.tree_head()[0])  # type: ignore[attr-defined]
        if size is None:
            cp = self.newest_checkpoint()
            if cp is None:
                raise _Refusal(404, R.CHECKPOINT_MISSING, "no signed checkpoint exists yet: name a size")
            size = cp.size
        if size > head:
            raise _Refusal(400, R.REQUEST_INVALID, f"the log holds {head} entries, not {size}")
        return size, head

    def inclusion(self, seq: int, size: int | None) -> dict[str, Any]:
        """The inclusion proof of entry ``seq`` in the tree of ``size`` entries."""
        from execauth_core.audit import canonical_body
        from execauth_core.tlog import leaf_hash

        size, _ = self._size(size)
        if seq > size:
            raise _Refusal(400, R.REQUEST_INVALID, f"no entry {seq} in a tree of size {size}")
        log_ = self.stores.audit
        entry = next(iter(log_.entries(seq)), None)
        if entry is None or entry.seq != seq:
            raise StoreUnavailable(f"audit log: entry {seq} is missing")
        proof = log_.inclusion_proof(seq - 1, size)  # type: ignore[attr-defined]
        return {
            "seq": seq,
            "leaf_index": seq - 1,
            "size": size,
            "root": _b64(log_.root_at(size)),  # type: ignore[attr-defined]
            "leaf_hash": _b64(leaf_hash(canonical_body(entry.body))),
            "proof": [_b64(h) for h in proof],
        }

    def consistency(self, old: int, size: int | None) -> dict[str, Any]:
        """The proof that the tree of ``size`` entries extends the tree of ``old``."""
        size, _ = self._size(size)
        if old > size:
            raise _Refusal(400, R.REQUEST_INVALID, f"no consistency proof from size {old} to {size}")
        log_ = self.stores.audit
        proof = log_.consistency_proof(old, size)  # type: ignore[attr-defined]
        return {
            "from": old,
            "to": size,
            "from_root": _b64(log_.root_at(old)),  # type: ignore[attr-defined]
            "to_root": _b64(log_.root_at(size)),  # type: ignore[attr-defined]
            "proof": [_b64(h) for h in proof],
        }

    def ready(self) -> None:
        self.stores.audit.head()
        self.stores.state.usage("execauth-server/readyz", 60, now=self.clock.now())

    def refused(
        self, subject: _Subject, refusal: _Refusal, caller: Caller | None, source: str, authorization: str | None
    ) -> JSONResponse:
        """Record a refusal and answer it; a request without a valid credential goes
        through :class:`_UnauthenticatedLimit` first (429 past its limit)."""
        if caller is None and refusal.code is not R.CALLER_UNAUTHENTICATED and authorization:
            # Refused before its credential was looked at (a bad body): name the caller.
            with contextlib.suppress(_Refusal):
                caller = self.authenticate(authorization)
        if caller is None and not self.unauthenticated.admit(source, time.monotonic()):
            self._summarize()
            limited = _Refusal(
                429,
                R.RATE_LIMITED,
                "too many requests without a valid credential from this address; try again later",
                headers={"Retry-After": str(self.unauthenticated.retry_after())},
            )
            return _error(limited, None)
        if caller is None:
            self._summarize()
        return _error(refusal, self.denial(subject, refusal.code.value, refusal.message, caller))

    def _summarize(self, *, force: bool = False) -> None:
        summary = self.unauthenticated.take_summary(time.monotonic(), force=force)
        if summary is None:
            return
        counts, since = summary
        total = sum(counts.values())
        self.record(
            {
                "event": "denial",
                "time": self.clock.now(),
                "executed": False,
                "tool": None,
                "principal": None,
                "agent": None,
                "call_id": None,
                "proposal_digest": None,
                "outcome": "DENY",
                "reason_codes": [R.RATE_LIMITED.value],
                "record_digest": None,
                "policy_digest": None,
                "token_id": None,
                "detail": {
                    "message": f"suppressed {total} refusals of requests without a valid credential",
                    "suppressed": total,
                    "by_source": dict(sorted(counts.items(), key=lambda kv: -kv[1])[:20]),
                    "seconds": round(time.monotonic() - since, 3),
                    "via": "server",
                },
            }
        )

    def close(self) -> None:
        self._summarize(force=True)
        self._stop.set()
        if self.webhooks is not None:
            self.webhooks.close()
        self.stores.close()
        queue = getattr(self, "_approval_queue", None)
        if queue is not None:
            queue.store.close()


class _UnauthenticatedLimit:
    """A token bucket per source address for refusals of requests without a valid
    credential, so that nobody without a secret can grow the audit log without bound.

    Each address may have ``per_minute`` such refusals recorded per minute (and a burst
    of as many). Past that it gets 429 ``RATE_LIMITED``, unrecorded one by one: instead,
    at most one summary entry per ``interval`` seconds counts what was suppressed, by
    address. Per process: with several workers each keeps its own buckets. At most
    ``max_sources`` addresses are tracked; when full, the new ones share one bucket.
    """

    def __init__(self, per_minute: int, *, interval: float = 60.0, max_sources: int = 4096) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(per_minute)
        self.interval = interval
        self.max_sources = max_sources
        self._buckets: dict[str, tuple[float, float]] = {}  # source -> (tokens, at)
        self._suppressed: dict[str, int] = {}
        self._since: float | None = None
        self._flushed_at = float("-inf")
        self._lock = threading.Lock()

    def admit(self, source: str, now: float) -> bool:
        """Take a token for ``source``; False if it has none left (then count it)."""
        with self._lock:
            if source not in self._buckets and len(self._buckets) >= self.max_sources:
                # Forget the addresses whose buckets have refilled: they cost nothing to rebuild.
                for s, (tokens, at) in list(self._buckets.items()):
                    if tokens + (now - at) * self.rate >= self.burst:
                        del self._buckets[s]
                if len(self._buckets) >= self.max_sources:
                    source = "(other)"
            tokens, at = self._buckets.get(source, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[source] = (tokens - 1.0, now)
                return True
            self._buckets[source] = (tokens, now)
            if len(self._suppressed) < 100 or source in self._suppressed:
                self._suppressed[source] = self._suppressed.get(source, 0) + 1
            else:
                self._suppressed["(other)"] = self._suppressed.get("(other)", 0) + 1
            if self._since is None:
                self._since = now
            return False

    def retry_after(self) -> int:
        return max(1, int(1.0 / self.rate + 0.999))

    def take_summary(self, now: float, *, force: bool = False) -> tuple[dict[str, int], float] | None:
        """What was suppressed since the last summary, if one is due (or ``force``)."""
        with self._lock:
            if not self._suppressed or (not force and now - self._flushed_at < self.interval):
                return None
            counts, since = self._suppressed, self._since
            self._suppressed, self._since, self._flushed_at = {}, None, now
            return counts, since if since is not None else now


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


def _query_int(request: Request, name: str, *, required: bool = True) -> int | None:
    values = request.query_params.getlist(name)
    if not values:
        if required:
            raise _Refusal(400, R.REQUEST_INVALID, f"the query parameter {name} is missing")
        return None
    if len(values) > 1 or not values[0].isascii() or not values[0].isdigit() or len(values[0]) > 18:
        raise _Refusal(400, R.REQUEST_INVALID, f"the query parameter {name} is a decimal number, given once")
    return int(values[0])


async def _store_call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return await run_in_threadpool(fn, *args)
    except StoreUnavailable:
        raise _Refusal(503, R.STORE_UNAVAILABLE, "the audit log is unavailable") from None
    except ProofError as exc:
        raise _Refusal(400, R.REQUEST_INVALID, str(exc)) from None


def _error(refusal: _Refusal, seq: int | None) -> JSONResponse:
    return JSONResponse(
        {"reason_code": refusal.code.value, "message": refusal.message, "audit_seq": seq},
        status_code=refusal.status,
        headers=refusal.headers,
    )


async def _read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The body, refused as soon as it passes ``limit`` bytes, or if it takes longer
    than ``timeout`` seconds to arrive."""
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != "application/json":
        raise _Refusal(415, R.UNSUPPORTED_MEDIA_TYPE, "send the body as Content-Type: application/json")
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            if int(declared) > limit:
                raise _Refusal(413, R.REQUEST_TOO_LARGE, f"the body is larger than {limit} bytes")
        except ValueError:
            raise _Refusal(400, R.REQUEST_INVALID, "malformed Content-Length") from None

    async def collect() -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _Refusal(413, R.REQUEST_TOO_LARGE, f"the body is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise _Refusal(408, R.REQUEST_TIMEOUT, f"the body did not arrive within {timeout:g} s") from None
    except ClientDisconnect:
        raise _Refusal(400, R.REQUEST_INVALID, "the client went away before sending the body") from None


def _parse(body: bytes) -> tuple[AuthorizationRequest, ApprovalGrant | None, _Subject]:
    try:
        data = loads_strict(body)
    except CanonicalizationError as exc:
        raise _Refusal(400, R.REQUEST_INVALID, f"the body is not strict JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _Refusal(400, R.REQUEST_INVALID, "the body must be a JSON object")
    envelope = "request" in data and isinstance(data.get("request"), dict)
    req_obj = data["request"] if envelope else data
    subject = _Subject(
        **{
            k: (v[:200] if isinstance(v, str) else None)
            for k in ("tool", "principal", "agent", "call_id")
            for v in [req_obj.get(k)]
        }
    )
    if envelope and set(data) - {"request", "approval"}:
        raise _Refusal(400, R.REQUEST_INVALID, "the envelope holds only 'request' and 'approval'")
    try:
        request = AuthorizationRequest.model_validate_json(canonicalize(req_obj), strict=True)
        approval = None
        if envelope and data.get("approval") is not None:
            approval = ApprovalGrant.model_validate_json(canonicalize(data["approval"]), strict=True)
    except (pydantic.ValidationError, CanonicalizationError) as exc:
        first = str(exc).splitlines()
        raise _Refusal(400, R.REQUEST_INVALID, f"not an AuthorizationRequest: {' '.join(first[:3])[:300]}") from None
    subject.proposal_digest = request.content_digest()
    return request, approval, subject


def _source(request: Request) -> str:
    """The peer address (behind a proxy, the proxy's)."""
    return request.client.host if request.client is not None else "(unknown)"


Handler = Callable[[Request], Awaitable[Response]]


def create_app(config: ServerConfig, *, service: AuthorityService | None = None) -> Starlette:
    """The Starlette application for ``config``."""
    limit, timeout = config.max_body_bytes, config.read_timeout

    async def decide(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        subject = _Subject()
        caller: Caller | None = None
        try:
            body = await _read_body(request, limit, timeout)
            caller = svc.authenticate(request.headers.get("authorization"))
            proposal, approval, subject = _parse(body)
            if not caller.may_act_for(proposal.principal, proposal.agent):
                raise _Refusal(
                    403,
                    R.CALLER_NOT_BOUND,
                    f"caller {caller.name!r} may not act for principal {proposal.principal!r}"
                    + (f" / agent {proposal.agent!r}" if proposal.agent else ""),
                )
            try:
                decision, extra = await run_in_threadpool(decide_with_approvals, svc, proposal, approval, caller)
            except _Refusal:
                raise
            except ApprovalError as exc:
                raise _Refusal(409, R(exc.reason_code), str(exc)) from None
            except StoreUnavailable:
                raise _Refusal(503, R.STORE_UNAVAILABLE, "a store is unavailable; nothing was decided") from None
            except Exception as exc:  # noqa: BLE001 - a bug decides nothing, and says so without details
                log.error("execauth-server: internal error while deciding (%s)", type(exc).__name__)
                raise _Refusal(500, R.GUARD_ERROR, "internal error; nothing was decided") from None
            return Response(decision.canonical_bytes(), media_type="application/json", headers=extra)
        except _Refusal as refusal:
            return await run_in_threadpool(
                svc.refused, subject, refusal, caller, _source(request), request.headers.get("authorization")
            )

    async def results(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        caller: Caller | None = None
        try:
            body = await _read_body(request, limit, timeout)
            caller = svc.authenticate(request.headers.get("authorization"))
            try:
                data = loads_strict(body)
            except CanonicalizationError as exc:
                raise _Refusal(400, R.REQUEST_INVALID, f"the body is not strict JSON: {exc}") from None
            if (
                not isinstance(data, dict)
                or set(data) - {"token_id", "status", "error", "execution_seq"}
                or not isinstance(data.get("token_id"), str)
                or not 16 <= len(data["token_id"]) <= 128
                or data.get("status") not in _RESULT_STATUSES
                or not isinstance(data.get("error"), (str, type(None)))
                or not isinstance(data.get("execution_seq"), (int, type(None)))
            ):
                raise _Refusal(
                    400,
                    R.REQUEST_INVALID,
                    "a result is {token_id, status: ok|error|not_run, error?, execution_seq?}",
                )
            detail: dict[str, Any] = {"status": data["status"], "caller": caller.name}
            if data.get("error"):
                detail["error"] = data["error"][:200]
            if data.get("execution_seq") is not None:
                detail["execution_seq"] = data["execution_seq"]
            hold = await run_in_threadpool(svc.accept_result, data["token_id"], caller)
            event = {
                "event": "result",
                "time": svc.clock.now(),
                "executed": data["status"] != "not_run",
                "token_id": data["token_id"],
                "detail": detail,
            }
            try:
                entry = await run_in_threadpool(svc.append, event)
            except StoreUnavailable:
                # Not recorded: the report may be sent again.
                with contextlib.suppress(Exception):
                    await run_in_threadpool(svc.stores.state.refund, hold)
                raise _Refusal(503, R.STORE_UNAVAILABLE, "the audit log is unavailable") from None
            return JSONResponse({"recorded": True, "audit_seq": entry.seq})
        except _Refusal as refusal:
            return await run_in_threadpool(
                svc.refused, _Subject(), refusal, caller, _source(request), request.headers.get("authorization")
            )

    async def audit_head(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        try:
            svc.authenticate(request.headers.get("authorization"))
            try:
                seq, head = await run_in_threadpool(svc.stores.audit.head)
            except StoreUnavailable:
                raise _Refusal(503, R.STORE_UNAVAILABLE, "the audit log is unavailable") from None
        except _Refusal as refusal:
            return _error(refusal, None)
        return JSONResponse({"seq": seq, "head": head})

    def audit_reader(request: Request) -> AuthorityService:
        svc: AuthorityService = request.app.state.service
        if not config.checkpoints_public:
            svc.authenticate(request.headers.get("authorization"))
        return svc

    async def audit_checkpoint(request: Request) -> Response:
        try:
            svc = audit_reader(request)
            cp = await _store_call(svc.newest_checkpoint)
            if cp is None:
                raise _Refusal(404, R.CHECKPOINT_MISSING, "no signed checkpoint of the audit log exists yet")
        except _Refusal as refusal:
            return _error(refusal, None)
        return Response(cp.note, media_type="text/plain; charset=utf-8", headers={"Cache-Control": "no-cache"})

    async def audit_proof(request: Request) -> Response:
        try:
            svc = audit_reader(request)
            seq = _query_int(request, "seq")
            size = _query_int(request, "size", required=False)
            if seq is None or seq < 1:
                raise _Refusal(400, R.REQUEST_INVALID, "seq is an entry's audit_seq (1 or more)")
            out = await _store_call(svc.inclusion, seq, size)
        except _Refusal as refusal:
            return _error(refusal, None)
        return JSONResponse(out)

    async def audit_consistency(request: Request) -> Response:
        try:
            svc = audit_reader(request)
            old = _query_int(request, "from")
            size = _query_int(request, "to", required=False)
            if old is None:
                raise _Refusal(400, R.REQUEST_INVALID, "from is the older tree size")
            out = await _store_call(svc.consistency, old, size)
        except _Refusal as refusal:
            return _error(refusal, None)
        return JSONResponse(out)

    async def policy(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        try:
            svc.authenticate(request.headers.get("authorization"))
        except _Refusal as refusal:
            return _error(refusal, None)
        ref = svc.policy_ref()
        return Response(
            canonicalize({"policy": ref.model_dump(mode="json") if ref is not None else None}),
            media_type="application/json",
        )

    async def jwks(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE}", "ETag": svc.jwks_etag}
        inm = request.headers.get("if-none-match")
        if inm is not None and svc.jwks_etag in [t.strip() for t in inm.split(",")]:
            return Response(status_code=304, headers=headers)
        return Response(svc.jwks_body, media_type="application/jwk-set+json", headers=headers)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "version": __version__})

    async def readyz(request: Request) -> Response:
        svc: AuthorityService = request.app.state.service
        try:
            await run_in_threadpool(svc.ready)
        except Exception as exc:  # noqa: BLE001 - not ready, whatever the cause
            log.error("execauth-server: not ready: %s", type(exc).__name__)
            return JSONResponse({"status": "unavailable", "reason_code": R.STORE_UNAVAILABLE.value}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def openapi(request: Request) -> Response:
        return JSONResponse(openapi_document())

    async def on_error(request: Request, exc: Exception) -> Response:
        # Logged by type only: a message may carry request data.
        log.error("execauth-server: internal error (%s) on %s", type(exc).__name__, request.url.path)
        return JSONResponse(
            {"reason_code": R.GUARD_ERROR.value, "message": "internal error; nothing was decided", "audit_seq": None},
            status_code=500,
        )

    routes = [
        Route("/v1/decide", decide, methods=["POST"]),
        Route("/v1/results", results, methods=["POST"]),
        Route("/v1/audit/head", audit_head, methods=["GET"]),
        Route("/v1/audit/checkpoint", audit_checkpoint, methods=["GET"]),
        Route("/v1/audit/proof", audit_proof, methods=["GET"]),
        Route("/v1/audit/consistency", audit_consistency, methods=["GET"]),
        Route("/v1/policy", policy, methods=["GET"]),
        Route("/.well-known/jwks.json", jwks, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        *approval_routes(),
        *console_routes(config),
    ]
    app = Starlette(routes=routes, exception_handlers={Exception: on_error})
    app.state.service = service or AuthorityService(config)
    return app


def app_from_env() -> Starlette:
    """uvicorn factory for worker processes: the config file named by
    ``EXECAUTH_SERVER_CONFIG`` (or the no-config defaults in ``EXECAUTH_SERVER_DATA``)."""

    from .config import DEFAULT_DATA_DIR, default_config, load_config

    source = os.environ.get("EXECAUTH_SERVER_CONFIG")
    config = load_config(source) if source else default_config(os.environ.get("EXECAUTH_SERVER_DATA", DEFAULT_DATA_DIR))
    return create_app(config)


def openapi_document() -> dict[str, Any]:
    """The OpenAPI 3.1 description of the service (written by hand, kept next to the routes)."""
    err = {"$ref": "#/components/schemas/Error"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        body = {"content": {"application/json": {"schema": schema or err}}}
        return {"description": description, **body}

    refusals = {
        "400": answer("Malformed JSON, duplicate keys, or not an AuthorizationRequest (REQUEST_INVALID)"),
        "401": answer("No or unknown credential (CALLER_UNAUTHENTICATED)"),
        "408": answer("The body did not arrive in time (REQUEST_TIMEOUT)"),
        "413": answer("The body is over the configured limit (REQUEST_TOO_LARGE)"),
        "415": answer("Not application/json (UNSUPPORTED_MEDIA_TYPE)"),
        "429": answer("Too many requests without a valid credential from this address (RATE_LIMITED)"),
        "503": answer("A store is unavailable (STORE_UNAVAILABLE)"),
    }
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "execauth authority", "version": __version__},
        "paths": {
            "/v1/decide": {
                "post": {
                    "summary": "Decide a proposal; the token comes only with ALLOW",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "oneOf": [
                                        {"$ref": "#/components/schemas/AuthorizationRequest"},
                                        {
                                            "type": "object",
                                            "required": ["request"],
                                            "additionalProperties": False,
                                            "properties": {
                                                "request": {"$ref": "#/components/schemas/AuthorizationRequest"},
                                                "approval": {"type": ["object", "null"]},
                                            },
                                        },
                                    ]
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer(
                            "The signed decision (any outcome)", {"$ref": "#/components/schemas/AuthorizationDecision"}
                        ),
                        **refusals,
                        "403": answer("The credential may not act for this principal/agent (CALLER_NOT_BOUND)"),
                        "409": answer("The approval presented already funded a token (APPROVAL_USED)"),
                    },
                }
            },
            "/v1/results": {
                "post": {
                    "summary": "Record the outcome of an execution",
                    "security": bearer,
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["token_id", "status"],
                                    "additionalProperties": False,
                                    "properties": {
                                        "token_id": {"type": "string"},
                                        "status": {"enum": sorted(_RESULT_STATUSES)},
                                        "error": {"type": ["string", "null"]},
                                        "execution_seq": {"type": ["integer", "null"]},
                                    },
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer("Recorded", {"type": "object"}),
                        **refusals,
                        "403": answer("No token with this id was issued to this caller lately (CALLER_NOT_BOUND)"),
                        "409": answer("A result for this token was already reported (TOKEN_REPLAYED)"),
                    },
                }
            },
            "/v1/audit/head": {
                "get": {
                    "summary": "The audit log head",
                    "security": bearer,
                    "responses": {
                        "200": answer(
                            "seq and head digest",
                            {"type": "object", "properties": {"seq": {"type": "integer"}, "head": {"type": "string"}}},
                        ),
                        "401": refusals["401"],
                        "503": refusals["503"],
                    },
                }
            },
            "/v1/audit/checkpoint": {
                "get": {
                    "summary": "The newest signed checkpoint of the audit log (C2SP tlog-checkpoint signed note)",
                    "description": "Verify it with a key of /.well-known/jwks.json. No credential is needed "
                    "unless checkpoints.public is false: it holds a size, a root hash and a time.",
                    "responses": {
                        "200": {
                            "description": "The signed note",
                            "content": {"text/plain; charset=utf-8": {"schema": {"type": "string"}}},
                        },
                        "401": refusals["401"],
                        "404": answer("No checkpoint signed yet (CHECKPOINT_MISSING)"),
                        "503": refusals["503"],
                    },
                }
            },
            "/v1/audit/proof": {
                "get": {
                    "summary": "RFC 9162 inclusion proof of an audit entry",
                    "parameters": [
                        {"name": "seq", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1}},
                        {
                            "name": "size",
                            "in": "query",
                            "required": False,
                            "description": "tree size (default: the newest checkpoint's)",
                            "schema": {"type": "integer", "minimum": 1},
                        },
                    ],
                    "responses": {
                        "200": answer("The proof (hashes in standard base64)", {"$ref": "#/components/schemas/Proof"}),
                        "400": answer("Bad or out-of-range seq/size (REQUEST_INVALID)"),
                        "401": refusals["401"],
                        "404": answer("No size given and no checkpoint yet (CHECKPOINT_MISSING)"),
                        "503": refusals["503"],
                    },
                }
            },
            "/v1/audit/consistency": {
                "get": {
                    "summary": "RFC 9162 consistency proof between two tree sizes",
                    "parameters": [
                        {"name": "from", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 0}},
                        {
                            "name": "to",
                            "in": "query",
                            "required": False,
                            "description": "newer tree size (default: the newest checkpoint's)",
                            "schema": {"type": "integer", "minimum": 0},
                        },
                    ],
                    "responses": {
                        "200": answer(
                            "The proof (hashes in standard base64)", {"$ref": "#/components/schemas/Consistency"}
                        ),
                        "400": answer("Bad or out-of-range sizes (REQUEST_INVALID)"),
                        "401": refusals["401"],
                        "404": answer("No size given and no checkpoint yet (CHECKPOINT_MISSING)"),
                        "503": refusals["503"],
                    },
                }
            },
            "/.well-known/jwks.json": {
                "get": {
                    "summary": "Trusted verification keys (Ed25519 OKP JWKS)",
                    "responses": {"200": {"description": "JWKS"}, "304": {"description": "Not modified"}},
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness (the stores answer)",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "a store is unavailable"}},
                }
            },
            **approval_openapi(),
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["reason_code", "message"],
                    "properties": {
                        "reason_code": {"type": "string"},
                        "message": {"type": "string"},
                        "audit_seq": {"type": ["integer", "null"]},
                    },
                },
                "AuthorizationRequest": AuthorizationRequest.model_json_schema(),
                "AuthorizationDecision": {"type": "object", "description": "execauth.decision/1"},
                "Proof": {
                    "type": "object",
                    "required": ["seq", "leaf_index", "size", "root", "leaf_hash", "proof"],
                    "properties": {
                        "seq": {"type": "integer"},
                        "leaf_index": {"type": "integer", "description": "seq - 1"},
                        "size": {"type": "integer"},
                        "root": {"type": "string"},
                        "leaf_hash": {"type": "string", "description": "SHA-256(0x00 || canonical entry body)"},
                        "proof": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "Consistency": {
                    "type": "object",
                    "required": ["from", "to", "from_root", "to_root", "proof"],
                    "properties": {
                        "from": {"type": "integer"},
                        "to": {"type": "integer"},
                        "from_root": {"type": "string"},
                        "to_root": {"type": "string"},
                        "proof": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    }


__all__ = ["AuthorityService", "ConfigurationError", "app_from_env", "create_app", "openapi_document"]
