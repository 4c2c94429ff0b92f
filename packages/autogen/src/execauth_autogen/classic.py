"""Gate the classic AutoGen function map (module ``autogen`` from ``ag2`` 0.9.1 to < 1.0, or
``pyautogen`` 0.9; ``pyautogen`` 0.2.x has no tool-call ids and is refused).

Classic agents run a model's ``function_call`` / ``tool_calls`` by looking the name up
in the executing agent's ``function_map`` and calling the entry with the model's
JSON arguments, inside ``execute_function`` / ``a_execute_function``, which turn an
exception into a failed function result (``is_exec_success=False``,
``"Error: ..."``) that goes back to the model.

Two layers, both public extension points:

* :meth:`ExecAuthFunctionGate.protect` re-registers every function-map entry
  (``register_function``) as a guarded function. Whatever path looks the function
  up (``execute_function``, group-chat tool executors) meets the guard; a refusal
  raises :class:`ToolCallDenied`, which the agent reports as a failed result.
* :class:`ExecAuthExecutorMixin` overrides ``execute_function`` /
  ``a_execute_function`` ("override this function to modify the way to execute
  function and tool calls", as the framework documents) to bind the model's tool-call
  id into the proposal and to guard functions registered after ``protect``.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import warnings
from collections.abc import Callable
from typing import Any

try:
    import autogen as _autogen
except ImportError as exc:  # pragma: no cover - exercised in the agentchat env
    raise ImportError(
        "execauth_autogen.classic needs classic AutoGen (module `autogen`; ag2 >= 1.0 and pyautogen >= 0.10 "
        "do not ship it): pip install 'execauth-autogen[classic]'"
    ) from exc

from execauth_core import (
    AuthorizationRequest,
    ConfigurationError,
    ExecutionDenied,
    Guard,
    PendingApproval,
    bind_arguments,
)
from execauth_core.approval_flow import ApprovalGate

from ._common import (
    APPROVE_WORDS,
    Approver,
    Gate,
    Resolver,
    TokenProvider,
    approval_prompt,
    authorized_args,
    model_text,
)

log = logging.getLogger("execauth.autogen")

__all__ = ["ExecAuthExecutorMixin", "ExecAuthFunctionGate", "ToolCallDenied", "human_input_approver"]


def _check_framework() -> None:
    agent_cls = getattr(_autogen, "ConversableAgent", None)
    needed = ("execute_function", "a_execute_function", "register_function", "function_map")
    if agent_cls is None or not all(hasattr(agent_cls, n) for n in needed):
        # e.g. `pyautogen` >= 0.4, which is Microsoft's AgentChat under the old name.
        raise ConfigurationError(
            "the installed `autogen` module is not classic AutoGen (no ConversableAgent.function_map): "
            "pip install 'execauth-autogen[classic]' (ag2<1.0), or use execauth_autogen.agentchat"
        )


_check_framework()


def _check_call_ids() -> None:
    """Refuse a classic AutoGen whose ``execute_function`` gets no tool-call id.

    ``pyautogen`` 0.2.x calls ``execute_function(func_call, verbose)``: no agent there
    can learn which tool call it runs, so every proposal would carry ``call_id: null``
    and two identical calls in one turn could not be told apart in the audit log.
    Refused when a gate is built, rather than guarding half-way.
    """
    execute = getattr(_autogen.ConversableAgent, "execute_function", None)
    names: set[str] = set()
    if callable(execute):
        try:
            names = set(inspect.signature(execute).parameters)
        except (TypeError, ValueError):
            pass  # no readable signature: treated as no call id
    if "call_id" not in names:
        version = getattr(_autogen, "__version__", "unknown")
        raise ConfigurationError(
            f"the installed classic AutoGen (module `autogen` {version}, e.g. pyautogen 0.2.x) passes no "
            "tool-call id to ConversableAgent.execute_function, so execauth cannot bind calls to the model's "
            "call ids: pip uninstall pyautogen, then pip install 'execauth-autogen[classic]' (ag2>=0.9.1,<1.0)"
        )


# The model's tool-call id of the call being executed, set by ExecAuthExecutorMixin.
# A contextvar, so parallel async tool calls (asyncio.gather) each see their own.
_CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("execauth_autogen_call_id", default=None)

_GATE_ATTR = "__execauth_gate__"


class ToolCallDenied(Exception):
    """Raised by a guarded function instead of running it. Its text is what the model
    sees (``execute_function`` reports ``"Error: <text>"``)."""

    def __init__(self, denial: ExecutionDenied) -> None:
        self.denial = denial
        super().__init__(model_text(denial))


def _call_id_from(
    method: Callable[..., Any], func_call: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> str | None:
    """The ``call_id`` argument of an ``execute_function`` call, whatever the version's
    signature (ag2: ``(func_call, call_id=None, verbose=False)``; pyautogen 0.2:
    ``(func_call, verbose=False)`` with no call id at all)."""
    try:
        bound = inspect.signature(method).bind(func_call, *args, **kwargs)
    except (TypeError, ValueError):
        return None
    value = bound.arguments.get("call_id")
    return value if isinstance(value, str) else None


def _rebuild(sig: inspect.Signature | None, authorized: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    """Turn the authorized argument dict back into a call: positional-only parameters
    and ``*args`` (bound under its name as a list) positionally, the rest by name."""
    if sig is None:
        return [], dict(authorized)
    remaining = dict(authorized)
    positional: list[Any] = []
    params = list(sig.parameters.values())
    has_var_positional = any(p.kind is p.VAR_POSITIONAL for p in params)
    for p in params:
        if p.name not in remaining:
            continue
        if p.kind is p.POSITIONAL_ONLY or (p.kind is p.POSITIONAL_OR_KEYWORD and has_var_positional):
            positional.append(remaining.pop(p.name))
        elif p.kind is p.VAR_POSITIONAL:
            value = remaining.pop(p.name)
            positional.extend(value if isinstance(value, list) else [value])
    return positional, remaining


def _is_async(fn: Callable[..., Any]) -> bool:
    """Async functions and objects with an async ``__call__`` (as ag2 counts them)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        return None


class ExecAuthFunctionGate(ApprovalGate):
    """Guards the functions of classic AutoGen agents.

    Args:
        guard: the execauth guard.
        principal: on whose behalf calls are made (string, or a zero-argument callable).
        agent: the agent name recorded in proposals (string, callable, or None).
        token_provider: verify tokens issued elsewhere instead of deciding here.
        approver: asked on REQUIRE_APPROVAL, e.g. :func:`human_input_approver`;
            returns who approved, or None to reject. Without one, the model is told the
            call awaits approval and :meth:`approve_and_run` runs it once approved.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        principal: Resolver,
        agent: Resolver = None,
        token_provider: TokenProvider | None = None,
        approver: Approver | None = None,
    ) -> None:
        _check_call_ids()
        self._gate = Gate(guard, principal=principal, agent=agent, token_provider=token_provider, approver=approver)
        self._approval_flow = self._gate.flow

    @property
    def guard(self) -> Guard:
        """The guard every call goes through."""
        return self._gate.guard

    # -- wiring -----------------------------------------------------------------

    def protect(self, agent: Any) -> Any:
        """Guard every function in ``agent.function_map`` (call again after registering
        more, or use :class:`ExecAuthExecutorMixin`, which does it on each execution).
        Returns the agent.

        Build group chats after protecting their agents: a group's tool executor
        copies the function maps it is given.
        """
        unguarded = {name: self.wrap(name, fn) for name, fn in agent.function_map.items() if not self.guards(fn)}
        if unguarded:
            _register(agent, unguarded)
        if isinstance(agent, ExecAuthExecutorMixin):
            agent.execauth_gate = self
        return agent

    def guards(self, fn: Any) -> bool:
        """Whether ``fn`` is a function this gate wrapped."""
        return getattr(fn, _GATE_ATTR, None) is self

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` guarded under the tool name ``name``: async stays async (AutoGen picks
        the execution path by ``iscoroutinefunction``), and the signature is kept
        (``functools.wraps``) for AutoGen's introspection."""
        if self.guards(fn):
            return fn
        sig = _signature(fn)
        gated: Callable[..., Any]
        if _is_async(fn):

            @functools.wraps(fn)
            async def gated_async(*args: Any, **kwargs: Any) -> Any:
                return await self._acall(name, fn, sig, args, kwargs)

            gated = gated_async
        else:

            @functools.wraps(fn)
            def gated_sync(*args: Any, **kwargs: Any) -> Any:
                return self._call(name, fn, sig, args, kwargs)

            gated = gated_sync
        setattr(gated, _GATE_ATTR, self)
        return gated

    # -- the guarded call ---------------------------------------------------------

    def _prepare(
        self,
        name: str,
        fn: Callable[..., Any],
        sig: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> tuple[AuthorizationRequest, list[Any], dict[str, Any]]:
        proposal = self._gate.propose(name, _bind(fn, sig, args, kwargs), call_id=_CALL_ID.get())
        call_args, call_kwargs = _rebuild(sig, authorized_args(proposal))
        return proposal, call_args, call_kwargs

    def _call(
        self,
        name: str,
        fn: Callable[..., Any],
        sig: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        proposal: AuthorizationRequest | None = None
        ran = False
        try:
            proposal, call_args, call_kwargs = self._prepare(name, fn, sig, args, kwargs)

            def call() -> Any:
                nonlocal ran
                ran = True
                return fn(*call_args, **call_kwargs)

            return self._gate.run(proposal, call)
        except ExecutionDenied as exc:
            raise ToolCallDenied(exc) from None
        except Exception as exc:
            if ran:
                raise  # the function's own error: AutoGen reports it as a failed result
            raise ToolCallDenied(self._gate.failed(proposal, name, exc)) from None

    async def _acall(
        self,
        name: str,
        fn: Callable[..., Any],
        sig: inspect.Signature | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        proposal: AuthorizationRequest | None = None
        ran = False
        try:
            proposal, call_args, call_kwargs = self._prepare(name, fn, sig, args, kwargs)

            def call() -> Any:
                nonlocal ran
                ran = True
                return fn(*call_args, **call_kwargs)

            return await self._gate.arun(proposal, call)
        except ExecutionDenied as exc:
            raise ToolCallDenied(exc) from None
        except Exception as exc:
            if ran:
                raise
            raise ToolCallDenied(self._gate.failed(proposal, name, exc)) from None

    # -- approvals ------------------------------------------------------------------
    # pending_approvals(), approval_status(), approve(), reject(), wait_for_approval()
    # and await_approval() come from ApprovalGate: the same on every execauth adapter.

    def resume(self, request_id: str) -> Any:
        """Run the paused call of ``request_id`` (same arguments, same call id) once its
        approval request is approved at the authority; returns the function's result,
        to hand back to the agents.

        Raises:
            KeyError: no call of this gate paused under that request.
            TypeError: the function is async (use :meth:`aresume`).
            ExecutionDenied: not approved (pending, rejected, expired), already used,
                or the guard still refused (recorded; nothing ran).
        """
        return self._gate.resume(request_id)

    async def aresume(self, request_id: str) -> Any:
        """Async :meth:`resume`."""
        return await self._gate.aresume(request_id)

    def approve_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """Approve (in the guard's own queue) the newest paused request for
        ``proposal_digest`` and run it: :meth:`approve` then :meth:`resume`.

        Raises:
            KeyError: nothing waits under that digest.
            TypeError: the function is async (use :meth:`aapprove_and_run`).
            ExecutionDenied: the guard still refused.
        """
        return self._gate.approve_and_run(proposal_digest, approver=approver)

    async def aapprove_and_run(self, proposal_digest: str, *, approver: str) -> Any:
        """Async :meth:`approve_and_run`."""
        return await self._gate.aapprove_and_run(proposal_digest, approver=approver)


def _bind(
    fn: Callable[..., Any], sig: inspect.Signature | None, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> dict[str, Any]:
    """Every argument by parameter name, defaults applied, so ``f(5000, "bob")`` and
    ``f(amount=5000, to="bob")`` make the same proposal."""
    if sig is not None:
        try:
            return bind_arguments(fn, args, kwargs)
        except TypeError:
            if args:
                raise  # positional arguments that do not fit: refuse (GUARD_ERROR)
    elif args:
        raise TypeError("positional arguments to a function without a signature")
    # Keyword arguments only (how AutoGen calls functions: func(**model_arguments))
    # that do not fit the signature, e.g. parameters AutoGen injects itself. They are
    # proposed as given; nothing positional can hide.
    return dict(kwargs)


def _register(agent: Any, entries: dict[str, Callable[..., Any]]) -> None:
    # ag2 has `silent_override`; pyautogen 0.2 warns on every override instead.
    if "silent_override" in inspect.signature(agent.register_function).parameters:
        agent.register_function(entries, silent_override=True)
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Function '.*' is being overridden", category=UserWarning)
        agent.register_function(entries)


def _failed_result(func_call: Any, text: str) -> tuple[bool, dict[str, Any]]:
    name = func_call.get("name", "") if isinstance(func_call, dict) else ""
    return False, {"name": name, "role": "function", "content": f"Error: {text}"}


class ExecAuthExecutorMixin:
    """Mix into the executing agent's class, before the AutoGen class::

        class GuardedExecutor(ExecAuthExecutorMixin, autogen.UserProxyAgent): ...

        executor = GuardedExecutor("executor", ...)
        gate.protect(executor)   # sets executor.execauth_gate

    Adds the model's tool-call id to each proposal and guards functions registered
    after ``protect``. Without a gate every call is refused (fail closed).
    """

    execauth_gate: ExecAuthFunctionGate | None = None

    def execute_function(self, func_call: Any, *args: Any, **kwargs: Any) -> Any:
        parent = super().execute_function  # type: ignore[misc]
        refused = self._execauth_prepare(func_call)
        if refused is not None:
            return refused
        token = _CALL_ID.set(_call_id_from(parent, func_call, args, kwargs))
        try:
            return parent(func_call, *args, **kwargs)
        finally:
            _CALL_ID.reset(token)

    async def a_execute_function(self, func_call: Any, *args: Any, **kwargs: Any) -> Any:
        parent = super().a_execute_function  # type: ignore[misc]
        refused = self._execauth_prepare(func_call)
        if refused is not None:
            return refused
        token = _CALL_ID.set(_call_id_from(parent, func_call, args, kwargs))
        try:
            return await parent(func_call, *args, **kwargs)
        finally:
            _CALL_ID.reset(token)

    def _execauth_prepare(self, func_call: Any) -> tuple[bool, dict[str, Any]] | None:
        """Guard late-registered functions; a failed result if that is impossible."""
        gate = self.execauth_gate
        if gate is None:
            return _failed_result(func_call, "execauth: no gate configured on this agent; nothing runs")
        try:
            gate.protect(self)
        except Exception as exc:  # noqa: BLE001 - a function that cannot be guarded does not run
            name = func_call.get("name", "") if isinstance(func_call, dict) else ""
            denial = gate._gate.failed(None, str(name) or "unknown", exc)
            return _failed_result(func_call, model_text(denial))
        return None


def human_input_approver(agent: Any, *, approver: str | None = None) -> Approver:
    """An :data:`Approver` that asks through the agent's own human-input path
    (``agent.get_human_input``, i.e. the console or the IOStream of a
    ``UserProxyAgent``). ``approve`` / ``yes`` grants in the name of ``approver``
    (default: the agent's name); anything else rejects."""
    who = approver or str(agent.name)

    def ask(pending: PendingApproval) -> str | None:
        answer = agent.get_human_input(approval_prompt(pending))
        return who if isinstance(answer, str) and answer.strip().lower() in APPROVE_WORDS else None

    return ask
