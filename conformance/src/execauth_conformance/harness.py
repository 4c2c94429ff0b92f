"""What an adapter supplies to the shared suite: a harness that runs one tool call
through its framework's real agent loop, with a given guard."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from execauth_core import AuthorizationRequest, ExecutionDenied, Guard, denial_message

TokenProvider = Callable[[AuthorizationRequest], "str | None"]


@dataclass(frozen=True)
class ToolCallCase:
    """One tool call the scripted model must make.

    The harness drives its framework so that the adapter builds exactly the proposal
    ``(tool, args, principal, agent, call_id)``: then every adapter's decision, record
    and audit digests are byte-identical.
    """

    tool: str
    args: dict[str, Any]
    principal: str
    agent: str | None
    call_id: str


@dataclass(frozen=True)
class CallOutcome:
    """What happened.

    Attributes:
        executed: whether the real tool function ran (the suite also counts this itself).
        model_saw: the text the framework handed back to the model (a result, or the
            denial with its reason code).
    """

    executed: bool
    model_saw: str


class AdapterHarness(abc.ABC):
    """Runs one tool call through a framework with a given guard."""

    name: str = ""

    @abc.abstractmethod
    def run_tool_call(
        self,
        guard: Guard,
        case: ToolCallCase,
        tool_fn: Callable[..., Any],
        *,
        token_provider: TokenProvider | None = None,
    ) -> CallOutcome:
        """Make the framework's agent loop call ``case.tool`` with ``case.args``.

        ``tool_fn(**args)`` is the real tool: expose it to the framework under
        ``case.tool`` with parameters named like the keys of ``case.args``. With a
        ``token_provider`` the adapter must verify that provider's token instead of
        deciding itself. Must return normally whatever the guard decides.
        """


class ReferenceHarness(AdapterHarness):
    """No framework: calls the guard directly, as an adapter would. Core's own run."""

    name = "reference"

    def run_tool_call(
        self,
        guard: Guard,
        case: ToolCallCase,
        tool_fn: Callable[..., Any],
        *,
        token_provider: TokenProvider | None = None,
    ) -> CallOutcome:
        ran: list[bool] = []

        def call() -> Any:
            ran.append(True)
            return tool_fn(**case.args)

        try:
            request = guard.proposal(
                case.tool, case.args, principal=case.principal, agent=case.agent, call_id=case.call_id
            )
            if token_provider is not None:
                result = guard.execute(request, token_provider(request), call)
            else:
                result = guard.run(request, call)
        except ExecutionDenied as exc:
            return CallOutcome(executed=bool(ran), model_saw=denial_message(exc))
        return CallOutcome(executed=bool(ran), model_saw=str(result))
