"""A guard whose authority is a remote ``execauth serve``: :class:`RemoteAuthority`
and :class:`JWKSKeys`.

The agent's process then holds no signing key. It sends each proposal to the
service with its caller credential and checks what comes back before it uses it:
the decision must be for this exact proposal, its record signed by a key from the
service's JWKS, and an ALLOW's token must verify for this proposal. Anything else,
and every transport failure (refused connection, timeout, 5xx, a body that is not
a decision), raises :class:`~execauth_core.errors.AuthorityUnavailable`, which the
guard records as a denial (``AUTHORITY_UNAVAILABLE`` or ``AUTHORITY_ANSWER_INVALID``).

Needs the ``remote`` extra (httpx), imported on first use.
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pydantic

from ._b64 import b64url_decode
from ._log import log
from .canonical import CanonicalizationError, canonicalize, digest_bytes, loads_strict, signing_input_bytes
from .errors import AuthorityUnavailable, ConfigurationError, TokenError
from .keys import KeySet, KeyStatus, TrustedKey
from .messages import ApprovalGrant, AuthorizationDecision, AuthorizationRequest, Outcome, PolicyRef
from .reasons import ReasonCode as R
from .tokens import TokenVerifier, unverified_claims

__all__ = ["JWKSKeys", "RemoteAuthority"]

MAX_ANSWER_BYTES = 1_048_576
# Refusals the service names itself: passed on as the denial's reason code.
_APPROVAL_ID = re.compile(r"apr_[A-Za-z0-9_.-]{1,120}")
_PASSED_ON = {
    R.CALLER_UNAUTHENTICATED.value: R.CALLER_UNAUTHENTICATED,
    R.CALLER_NOT_BOUND.value: R.CALLER_NOT_BOUND,
    R.REQUEST_TOO_LARGE.value: R.REQUEST_TOO_LARGE,
    R.REQUEST_INVALID.value: R.REQUEST_INVALID,
    R.UNSUPPORTED_MEDIA_TYPE.value: R.UNSUPPORTED_MEDIA_TYPE,
    R.REQUEST_TIMEOUT.value: R.REQUEST_TIMEOUT,
    R.STORE_UNAVAILABLE.value: R.STORE_UNAVAILABLE,
    # The service's approval queue refusing a presented grant (used, not the stored one).
    R.APPROVAL_USED.value: R.APPROVAL_USED,
    R.APPROVAL_INVALID.value: R.APPROVAL_INVALID,
    R.APPROVAL_MISMATCH.value: R.APPROVAL_MISMATCH,
}


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:  # pragma: no cover - depends on the install
        raise ConfigurationError("a remote authority needs httpx: pip install 'execauth-core[remote]'") from None
    return httpx


class JWKSKeys(KeySet):
    """The trusted keys, fetched from an authority's JWKS URL.

    Keys are looked up by ``kid`` only, and a kid is the RFC 7638 thumbprint of its key,
    checked on every fetch: a kid always names the same key. An unknown kid triggers a
    refresh (at most once per ``min_refresh_interval`` seconds, so forged kids cannot
    make it hammer the service); the set is also refreshed when older than ``max_age``.
    A key carried in a token is never used (the verifier refuses such tokens).

    If the JWKS cannot be fetched, the keys already known are used until ``max_stale``
    seconds after the last fetch that worked; after that the set counts as empty and
    every verification fails with ``KEYSET_MISSING`` (a revoked or rotated key is not
    trusted indefinitely while the authority is unreachable). It serves keys again after
    the next fetch that works.

    Args:
        url: the JWKS URL (``https://authority/.well-known/jwks.json``).
        max_age: seconds a fetched set is used before it is fetched again.
        max_stale: seconds since the last successful fetch (a 304 counts) after which
            no key is trusted; ``None`` for no bound. At least ``max_age``.
        min_refresh_interval: least seconds between two fetches.
        pins: if given, only these kids are ever trusted, whatever the JWKS says.
        timeout: seconds for one fetch.
    """

    def __init__(
        self,
        url: str,
        *,
        max_age: float = 300.0,
        max_stale: float | None = 900.0,
        min_refresh_interval: float = 5.0,
        pins: set[str] | frozenset[str] | None = None,
        timeout: float = 5.0,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ConfigurationError("a JWKS URL starts with http:// or https://")
        self.url = url
        self.max_age = max_age
        if max_stale is not None and max_stale < max_age:
            raise ConfigurationError("max_stale must be at least max_age")
        self.max_stale = max_stale
        self.min_refresh_interval = min_refresh_interval
        self.pins = frozenset(pins) if pins is not None else None
        self.timeout = timeout
        self._headers = dict(headers or {})
        self._lock = threading.Lock()
        self._fetched_at: float | None = None
        self._tried_at: float | None = None
        self._etag: str | None = None
        self._stale_logged = False
        self.fetches = 0
        """How many times the JWKS was requested (for tests and monitoring)."""

    def refresh(self, *, force: bool = False) -> bool:
        """Fetch the JWKS now (unless one was fetched less than ``min_refresh_interval`` ago).

        Returns True if the set was replaced. Never raises: a failed fetch keeps the
        keys already known and is logged.
        """
        with self._lock:
            now = time.monotonic()
            if not force and self._tried_at is not None and now - self._tried_at < self.min_refresh_interval:
                return False
            self._tried_at = now
            self.fetches += 1
            try:
                keys = self._fetch()
            except Exception as exc:  # noqa: BLE001 - keep what we have; verification fails closed
                log.warning("execauth: JWKS fetch from %s failed: %s", self.url, type(exc).__name__)
                return False
            if keys is None:  # 304: unchanged
                self._fetched_at = now
                self._stale_logged = False
                return False
            self._keys = keys
            self._fetched_at = now
            self._stale_logged = False
            return True

    def _fetch(self) -> dict[str, TrustedKey] | None:
        httpx = _httpx()
        headers = dict(self._headers)
        if self._etag and self._keys:
            headers["If-None-Match"] = self._etag
        r = httpx.get(self.url, timeout=self.timeout, headers=headers, follow_redirects=False)
        if r.status_code == 304:
            return None
        if r.status_code != 200:
            raise ConfigurationError(f"JWKS answered HTTP {r.status_code}")
        if len(r.content) > MAX_ANSWER_BYTES:
            raise ConfigurationError("JWKS too large")
        fetched = KeySet.from_jwks(loads_strict(r.content))
        self._etag = r.headers.get("etag")
        return {k.kid: k for k in fetched if self.pins is None or k.kid in self.pins}

    def _ensure(self) -> bool:
        """Refresh if due; False if the set is too stale to trust (past ``max_stale``)."""
        fetched = self._fetched_at
        if fetched is None or time.monotonic() - fetched > self.max_age:
            self.refresh()
            fetched = self._fetched_at
        if self.max_stale is None or (fetched is not None and time.monotonic() - fetched <= self.max_stale):
            return True
        if self._keys and not self._stale_logged:
            self._stale_logged = True  # once per stale spell, not once per verification
            log.warning("execauth: the JWKS from %s is older than max_stale: no key is trusted", self.url)
        return False

    def get(self, kid: str) -> TrustedKey | None:
        if not self._ensure():
            return None
        key = self._keys.get(kid)
        if key is None and isinstance(kid, str) and (self.pins is None or kid in self.pins):
            # Perhaps the authority rotated its key: look again, rate-limited.
            self.refresh()
            key = self._keys.get(kid)
        return key

    def add(self, key: TrustedKey) -> None:
        if self.pins is not None and key.kid not in self.pins:
            raise ConfigurationError(f"kid {key.kid!r} is not pinned")
        super().add(key)

    def __iter__(self):  # type: ignore[no-untyped-def]
        if not self._ensure():
            return iter(())
        return super().__iter__()

    def __len__(self) -> int:
        if not self._ensure():
            return 0
        return super().__len__()


class _RemotePolicy:
    """What the guard asks of ``authority.decision_point``: ``policy_ref``, the policy in
    force (the one of this thread's last decision; otherwise asked of the service, and
    ``None``, so stale, if it does not answer), and no ``release`` (an ALLOW that does
    not run keeps its debit at the service until its window ends: over-counting, never
    under-counting). Either answer is at most ``max_age`` seconds old: a policy change
    at the service stops unused tokens at a remote guard within that time."""

    def __init__(self, authority: RemoteAuthority, max_age: float = 5.0) -> None:
        self._authority = authority
        self._local = threading.local()
        self._max_age = max_age
        self._fetched: tuple[float, PolicyRef] | None = None

    @property
    def policy_ref(self) -> PolicyRef | None:
        seen = getattr(self._local, "ref", None)
        if seen is not None:
            self._local.ref = None  # good for the decision it came with, once, and not for long
            if time.monotonic() - seen[0] < self._max_age:
                return seen[1]  # type: ignore[no-any-return]
        fetched = self._fetched
        if fetched is not None and time.monotonic() - fetched[0] < self._max_age:
            return fetched[1]
        ref = self._authority.current_policy()
        if ref is not None:
            self._fetched = (time.monotonic(), ref)
        return ref

    def _seen(self, ref: PolicyRef) -> None:
        self._local.ref = (time.monotonic(), ref)


class RemoteAuthority:
    """Decides through a remote ``execauth serve``; plugs into ``Guard(authority=...)``.

    ``decide`` keeps :meth:`Authority.decide`'s signature; ``now`` is used to check the
    answer's token, and ``token_id`` is ignored (the service picks token ids).

    Args:
        url: the service's base URL (``http://127.0.0.1:8787``).
        credential: this workload's caller secret (sent as ``Authorization: Bearer``).
        keys: the trusted keys; default :class:`JWKSKeys` on ``url``'s JWKS.
        timeout: seconds for one round trip (connect, send, answer).
    """

    def __init__(
        self,
        url: str,
        *,
        credential: str,
        keys: KeySet | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigurationError("a remote authority URL starts with http:// or https://")
        if not isinstance(credential, str) or not credential:
            raise ConfigurationError("a remote authority needs the caller credential (a secret string)")
        self.url = url.rstrip("/")
        self.keys = keys if keys is not None else JWKSKeys(self.url + "/.well-known/jwks.json", timeout=timeout)
        self.timeout = timeout
        self.decision_point = _RemotePolicy(self)
        self._credential = credential
        self._client: Any = None
        self._aclient: Any = None
        self._lock = threading.Lock()
        # Approval request ids the service named (X-Execauth-Approval-Request), by
        # proposal digest, until the guard picks them up for its ApprovalRequired.
        self._approval_requests: dict[str, str] = {}

    def __repr__(self) -> str:  # never the credential
        return f"RemoteAuthority({self.url!r})"

    # -- transport -----------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._credential}", "Content-Type": "application/json"}

    def _body(self, request: AuthorizationRequest, approval: ApprovalGrant | None, raw: bytes | None) -> bytes:
        if approval is None:
            return raw if raw is not None else request.canonical_bytes()
        return canonicalize({"request": request.model_dump(mode="json"), "approval": approval.model_dump(mode="json")})

    def _sync_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = _httpx().Client(timeout=self.timeout, follow_redirects=False)
            return self._client

    def close(self) -> None:
        """Close the HTTP connection pool (a later call opens a new one)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        client, self._aclient = self._aclient, None
        if client is not None:
            await client.aclose()

    # -- deciding ------------------------------------------------------------

    def decide(
        self,
        request: AuthorizationRequest,
        *,
        now: int,
        token_id: str | None = None,
        approval: ApprovalGrant | None = None,
        proposal_digest: str | None = None,
        request_bytes: bytes | None = None,
    ) -> AuthorizationDecision:
        """Ask the service; return its decision only if it checks out.

        Raises:
            AuthorityUnavailable: no usable answer (the guard records a denial).
        """
        httpx = _httpx()
        body = self._body(request, approval, request_bytes)
        try:
            r = self._sync_client().post(self.url + "/v1/decide", content=body, headers=self._headers())
        except httpx.TimeoutException:
            raise AuthorityUnavailable(f"the authority did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise AuthorityUnavailable(f"the authority is unreachable ({type(exc).__name__})") from None
        return self._note_request(
            r, self._check(request, r.status_code, r.content, now, proposal_digest, request_bytes)
        )

    async def adecide(
        self,
        request: AuthorizationRequest,
        *,
        now: int,
        token_id: str | None = None,
        approval: ApprovalGrant | None = None,
        proposal_digest: str | None = None,
        request_bytes: bytes | None = None,
    ) -> AuthorizationDecision:
        """Async :meth:`decide` (one ``httpx.AsyncClient`` per authority)."""
        httpx = _httpx()
        body = self._body(request, approval, request_bytes)
        if self._aclient is None:
            self._aclient = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        try:
            r = await self._aclient.post(self.url + "/v1/decide", content=body, headers=self._headers())
        except httpx.TimeoutException:
            raise AuthorityUnavailable(f"the authority did not answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise AuthorityUnavailable(f"the authority is unreachable ({type(exc).__name__})") from None
        return self._note_request(
            r, self._check(request, r.status_code, r.content, now, proposal_digest, request_bytes)
        )

    def _note_request(self, r: Any, decision: AuthorizationDecision) -> AuthorizationDecision:
        named = r.headers.get("x-execauth-approval-request")
        if decision.outcome is Outcome.REQUIRE_APPROVAL and isinstance(named, str) and _APPROVAL_ID.fullmatch(named):
            with self._lock:
                if len(self._approval_requests) >= 1024:
                    self._approval_requests.pop(next(iter(self._approval_requests)))
                self._approval_requests[decision.proposal_digest] = named
        return decision

    def approval_request_id(self, proposal_digest: str) -> str | None:
        """The approval request the service created for this proposal's last
        REQUIRE_APPROVAL, once (the guard puts it on ``ApprovalRequired``)."""
        with self._lock:
            return self._approval_requests.pop(proposal_digest, None)

    def approval_record(self, request_id: str) -> Any:
        """The approval request as the service keeps it (``GET /v1/approvals/{id}``
        with this caller's credential): an
        :class:`~execauth_core.approvals.ApprovalRequest`, expiry applied.

        Raises:
            ApprovalError: ``APPROVAL_UNKNOWN`` (no such request for this caller).
            AuthorityUnavailable: no usable answer.
        """
        from .approvals import ApprovalError, ApprovalRequest

        httpx = _httpx()
        if not isinstance(request_id, str) or not _APPROVAL_ID.fullmatch(request_id):
            raise ApprovalError(R.APPROVAL_UNKNOWN, "not an approval request id")
        try:
            r = self._sync_client().get(self.url + f"/v1/approvals/{request_id}", headers=self._headers())
        except httpx.HTTPError as exc:
            raise AuthorityUnavailable(f"the authority is unreachable ({type(exc).__name__})") from None
        if r.status_code == 404:
            raise ApprovalError(R.APPROVAL_UNKNOWN, f"no approval request {request_id!r} for this caller")
        if r.status_code != 200:
            raise AuthorityUnavailable(f"the authority answered HTTP {r.status_code} for the approval request")
        try:
            record = ApprovalRequest.model_validate(loads_strict(r.content[:MAX_ANSWER_BYTES]))
        except (CanonicalizationError, pydantic.ValidationError):
            raise AuthorityUnavailable(
                "the approval request is not readable", reason_code=R.AUTHORITY_ANSWER_INVALID
            ) from None
        if record.id != request_id:
            raise AuthorityUnavailable(
                "the authority answered for another request", reason_code=R.AUTHORITY_ANSWER_INVALID
            )
        return record

    def approval_grant(self, request_id: str, proposal_digest: str | None = None) -> ApprovalGrant:
        """The grant of an approved request, fetched from the service
        (``GET /v1/approvals/{id}`` with this caller's credential). The service
        consumes it when it is presented with the proposal, once.

        Raises:
            ApprovalError: not approved (pending, rejected, expired), already used,
                unknown, or for another proposal.
            AuthorityUnavailable: no usable answer.
        """
        from .approvals import ApprovalError

        httpx = _httpx()
        if not isinstance(request_id, str) or not _APPROVAL_ID.fullmatch(request_id):
            raise ApprovalError(R.APPROVAL_UNKNOWN, "not an approval request id")
        try:
            r = self._sync_client().get(self.url + f"/v1/approvals/{request_id}", headers=self._headers())
        except httpx.HTTPError as exc:
            raise AuthorityUnavailable(f"the authority is unreachable ({type(exc).__name__})") from None
        try:
            data = loads_strict(r.content[:MAX_ANSWER_BYTES])
        except CanonicalizationError:
            data = None
        if r.status_code == 404:
            raise ApprovalError(R.APPROVAL_UNKNOWN, f"no approval request {request_id!r} for this caller")
        if r.status_code != 200 or not isinstance(data, dict):
            raise AuthorityUnavailable(f"the authority answered HTTP {r.status_code} for the approval request")
        state, digest = data.get("state"), data.get("proposal_digest")
        if proposal_digest is not None and digest != proposal_digest:
            raise ApprovalError(R.APPROVAL_MISMATCH, "the approval request is for another proposal")
        if state == "pending":
            raise ApprovalError(R.APPROVAL_REQUIRED, "the approval request is still waiting for a person")
        if state == "rejected":
            raise ApprovalError(R.APPROVAL_REJECTED, f"rejected by {str(data.get('decided_by'))[:100]}")
        if state != "approved":
            raise ApprovalError(R.APPROVAL_EXPIRED, "the approval request expired before anyone decided")
        if data.get("consumed"):
            raise ApprovalError(R.APPROVAL_USED, "this approval was already used")
        try:
            grant = ApprovalGrant.model_validate(data.get("grant"), strict=True)
        except pydantic.ValidationError:
            raise AuthorityUnavailable(
                "the approval request carries no valid grant", reason_code=R.AUTHORITY_ANSWER_INVALID
            ) from None
        if grant.proposal_digest != digest:
            raise AuthorityUnavailable("the grant is for another proposal", reason_code=R.AUTHORITY_ANSWER_INVALID)
        return grant

    def grant_approval(self, *args: Any, **kwargs: Any) -> Any:
        """Approvals are granted at the authority service, not by an agent's guard.

        Raises:
            ConfigurationError: always.
        """
        raise ConfigurationError("a remote guard cannot grant approvals: a person approves at the authority service")

    def current_policy(self) -> PolicyRef | None:
        """The policy the service has in force now, or ``None`` if it cannot say."""
        httpx = _httpx()
        try:
            r = self._sync_client().get(self.url + "/v1/policy", headers=self._headers())
            if r.status_code != 200 or len(r.content) > 65_536:
                return None
            data = loads_strict(r.content)
            return PolicyRef.model_validate(data["policy"]) if isinstance(data, dict) and data.get("policy") else None
        except (httpx.HTTPError, CanonicalizationError, pydantic.ValidationError, KeyError, TypeError):
            return None

    def report_result(self, token_id: str, status: str, *, error: str | None = None) -> None:
        """Tell the service how an execution ended (``ok``, ``error`` or ``not_run``).
        Best effort: logs, never raises."""
        httpx = _httpx()
        try:
            payload = {"token_id": token_id, "status": status, "error": error}
            r = self._sync_client().post(
                self.url + "/v1/results", content=canonicalize(payload), headers=self._headers()
            )
            if r.status_code != 200:
                log.warning("execauth: the authority refused a result report (HTTP %s)", r.status_code)
        except httpx.HTTPError as exc:
            log.warning("execauth: could not report a result: %s", type(exc).__name__)

    # -- checking the answer ---------------------------------------------------

    def _check(
        self,
        request: AuthorizationRequest,
        status: int,
        content: bytes,
        now: int,
        proposal_digest: str | None,
        request_bytes: bytes | None,
    ) -> AuthorizationDecision:
        if status != 200:
            code = R.AUTHORITY_UNAVAILABLE
            message = f"the authority answered HTTP {status}"
            try:
                data = loads_strict(content[:65_536])
                named = data.get("reason_code") if isinstance(data, dict) else None
            except (CanonicalizationError, AttributeError):
                data, named = None, None
            if isinstance(named, str) and named.isupper() and len(named) < 64 and isinstance(data, dict):
                text = data.get("message")
                if 400 <= status < 500 and named in _PASSED_ON:
                    code = _PASSED_ON[named]
                    message = f"the authority refused the call: {text if isinstance(text, str) else named}"[:300]
                else:
                    message = f"{message} ({named})"
            raise AuthorityUnavailable(message, reason_code=code)
        invalid = R.AUTHORITY_ANSWER_INVALID
        if len(content) > MAX_ANSWER_BYTES:
            raise AuthorityUnavailable("the authority's answer is too large", reason_code=invalid)
        try:
            loads_strict(content)
            decision = AuthorizationDecision.model_validate_json(content, strict=True)
        except (CanonicalizationError, pydantic.ValidationError):
            raise AuthorityUnavailable("the authority's answer is not a decision", reason_code=invalid) from None
        pd = digest_bytes(request_bytes) if request_bytes is not None else (proposal_digest or request.content_digest())
        if (
            decision.proposal_digest != pd
            or decision.record.proposal_digest != pd
            or decision.record.request != request
        ):
            raise AuthorityUnavailable("the decision is for another proposal", reason_code=invalid)
        if decision.outcome is not decision.record.outcome or tuple(decision.reason_codes) != tuple(
            decision.record.reason_codes
        ):
            raise AuthorityUnavailable("the decision contradicts its own record", reason_code=invalid)
        record_raw = decision.record.canonical_bytes()
        key = self.keys.get(decision.record_kid)
        try:
            signature = b64url_decode(decision.record_signature)
        except ValueError:
            signature = b""
        if (
            key is None
            or key.status is KeyStatus.REVOKED
            or digest_bytes(record_raw) != decision.record_digest
            or not key.verify(signing_input_bytes("decision_record", record_raw), signature)
        ):
            raise AuthorityUnavailable("the decision record is not signed by a trusted key", reason_code=invalid)
        if decision.outcome is Outcome.ALLOW:
            if not decision.token:
                raise AuthorityUnavailable("an ALLOW without a token", reason_code=invalid)
            try:
                claims = unverified_claims(decision.token)
                verifier = TokenVerifier(
                    keys=self.keys, issuer=str(claims.get("iss")), audience=str(claims.get("aud")), max_ttl=3600
                )
                verified = verifier.verify(decision.token, request=request, now=now, proposal_digest=pd)
            except (TokenError, ConfigurationError) as exc:
                raise AuthorityUnavailable(
                    f"the token in the answer does not verify for this proposal ({getattr(exc, 'reason_code', '')})",
                    reason_code=invalid,
                ) from None
            if verified.record_digest != decision.record_digest or verified.jti != decision.record.token_id:
                raise AuthorityUnavailable("the token is not the one the record names", reason_code=invalid)
        elif decision.token is not None:
            raise AuthorityUnavailable("a token on a decision that is not ALLOW", reason_code=invalid)
        self.decision_point._seen(decision.record.policy)
        return decision
