"""The call the guard is running right now, for the tool's own code.

While the guard runs a tool (after verification and consumption), it sets a context
variable holding the verified :class:`~execauth_core.messages.AuthorizationRequest`
and the compact token it verified. A tool that forwards the call to a protected
upstream (an executor behind :class:`~execauth_server.executor.ExecAuthMiddleware`)
reads them with :func:`current_call` and sends them on
(:func:`execauth_core.executor.executor_headers`).

It is a :class:`contextvars.ContextVar`: nested guarded calls each see their own, and
concurrent async calls never see each other's. Work the tool hands to a thread pool
through ``loop.run_in_executor`` does not inherit it (``asyncio.to_thread`` does).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from .messages import AuthorizationRequest

__all__ = ["CurrentCall", "current_call"]


@dataclass(frozen=True)
class CurrentCall:
    """The verified proposal the guard is running, the token it verified, and the
    call's idempotency key (``None`` when it has none: no call id and no key given).
    A tool that calls a payment API passes the key on, so the API dedupes too."""

    request: AuthorizationRequest
    token: str
    idempotency_key: str | None = None


_CURRENT: ContextVar[CurrentCall] = ContextVar("execauth_current_call")


def current_call() -> CurrentCall:
    """The guarded call running in this context.

    Raises:
        LookupError: outside a call the guard is running.
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise LookupError("no execauth-guarded call is running in this context") from None
