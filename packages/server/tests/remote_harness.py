"""The ``remote`` conformance harness: the shared vectors through ``Guard.remote``.

Each call goes over HTTP to a real uvicorn server that serves the vector's own
authority (its decision point, key, clock and token ids): the guard keeps its replay
store and audit log and verifies tokens against the served JWKS. The decisions and
the guard's audit entries must come out byte-identical to the in-process run, so the
cross-adapter comparison (``conformance/tools/compare_results.py``) covers the wire.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from execauth_conformance import AdapterHarness, CallOutcome, ReferenceHarness, ToolCallCase
from execauth_core import Guard, TokenVerifier
from execauth_core.remote import JWKSKeys, RemoteAuthority
from execauth_server.app import AuthorityService
from execauth_server.config import ServerConfig


class RemoteHarness(AdapterHarness):
    """Wraps another harness (the reference one, or a framework's) so that the guard it
    is given decides through the authority service at ``url``."""

    def __init__(
        self, app: Starlette, url: str, credential: str, config: ServerConfig, inner: AdapterHarness | None = None
    ) -> None:
        self.app, self.url, self.credential, self.config = app, url, credential, config
        self.inner = inner or ReferenceHarness()
        self.name = "remote" if isinstance(self.inner, ReferenceHarness) else f"remote-{self.inner.name}"

    def run_tool_call(
        self, guard: Guard, case: ToolCallCase, tool_fn: Callable[..., Any], *, token_provider: Any = None
    ) -> CallOutcome:
        local, verifier, ids = guard.authority, guard.verifier, guard.id_factory
        assert local is not None
        # The service decides with the vector's authority, clock and token ids...
        self.app.state.service = AuthorityService(self.config, authority=local, clock=guard.clock, id_factory=ids)
        keys = JWKSKeys(self.url + "/.well-known/jwks.json")
        remote = RemoteAuthority(self.url, credential=self.credential, keys=keys)
        # ...and the guard holds no key: it asks over HTTP and verifies from the JWKS.
        guard.authority = remote  # type: ignore[assignment]
        guard.verifier = TokenVerifier(
            keys=keys,
            issuer=verifier.issuer,
            audience=verifier.audience,
            max_ttl=verifier.max_ttl,
            clock_skew=verifier.clock_skew,
        )
        guard.id_factory = lambda: "chosen-by-the-service"  # the guard's own id is not sent
        try:
            return self.inner.run_tool_call(guard, case, tool_fn, token_provider=token_provider)
        finally:
            guard.authority, guard.verifier, guard.id_factory = local, verifier, ids
            remote.close()
