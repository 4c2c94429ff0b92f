"""GuardedTool: the second line of defence, a CrewAI ``BaseTool`` around the real tool.

Every CrewAI path that executes a tool ends in the tool's ``run``/``_run`` (native
function calling calls ``BaseTool.run``; the ReAct path calls
``CrewStructuredTool.invoke``, whose ``func`` is ``BaseTool._run``; an LLM that
executes ``available_functions`` itself calls ``run`` too, without any hook). The
real tool is only reachable through :meth:`GuardedTool._run`, which hands the call
to :class:`~execauth_crewai.CrewGuard`: no admission from the hook, no execution.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from crewai.tools import BaseTool
from crewai.tools.tool_failure import ToolFailure, ToolFailureReason
from pydantic import PrivateAttr

from execauth_core import bind_arguments

if TYPE_CHECKING:
    from .adapter import CrewGuard

UNCONFIGURED = "GUARD_ERROR"


def _never_cache(_args: Any = None, _result: Any = None) -> bool:
    """Guarded results never enter CrewAI's tool cache.

    A cache hit answers a call without running the tool, so it would also skip
    the guard: a later identical call must be authorized (and audited) again.
    """
    return False


class GuardedTool(BaseTool):
    """A tool whose every execution is authorized by execauth first.

    Build one with :meth:`CrewGuard.tool`; it copies the wrapped tool's name,
    description, argument schema and ``result_as_answer``. Executing it without
    the :class:`CrewGuard` hook having admitted this exact call (for example when
    the crew runs outside ``CrewGuard.guarding()``, or a CrewAI path skips the
    hooks) is refused and recorded. A GuardedTool rebuilt from a checkpoint has
    no guard and refuses every call.
    """

    _inner: BaseTool | None = PrivateAttr(default=None)
    _owner: CrewGuard | None = PrivateAttr(default=None)
    _uid: str = PrivateAttr(default_factory=lambda: secrets.token_hex(12))
    _proposal_name: str | None = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, inner: BaseTool, owner: CrewGuard, *, proposal_name: str | None = None) -> GuardedTool:
        """Wrap ``inner`` so that only ``owner`` can let it run.

        ``proposal_name``: the tool name in proposals when it is not the tool's own
        name (an MCP server's tool is proposed as ``<server>.<tool>``)."""
        if isinstance(inner, GuardedTool):
            raise TypeError(f"tool {inner.name!r} is already guarded")
        guarded = cls(
            name=inner.name,
            description=inner.description,
            args_schema=inner.args_schema,
            result_schema=inner.result_schema,
            result_as_answer=inner.result_as_answer,
            tool_failure_policy=inner.tool_failure_policy,
            cache_function=_never_cache,
        )
        # model_post_init composed a description from the schema; keep the original.
        guarded.description = inner.description
        guarded._inner = inner
        guarded._owner = owner
        guarded._proposal_name = proposal_name
        return guarded

    @property
    def proposal_name(self) -> str:
        """The tool name proposals carry: the tool's name unless set at wrapping."""
        return self._proposal_name or self.name

    @property
    def inner(self) -> BaseTool | None:
        """The real tool (``None`` on a GuardedTool that was never bound to a guard)."""
        return self._inner

    @property
    def owner(self) -> CrewGuard | None:
        """The :class:`CrewGuard` that admits and authorizes this tool's calls."""
        return self._owner

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner
        if owner is None or self._inner is None:
            return _unconfigured(self.name)
        return owner._execute(self, args, kwargs)

    async def _arun(self, *args: Any, **kwargs: Any) -> Any:
        owner = self._owner
        if owner is None or self._inner is None:
            return _unconfigured(self.name)
        return await owner._aexecute(self, args, kwargs)

    def format_output_for_agent(self, raw_result: Any) -> str:
        if self._inner is not None and not isinstance(raw_result, ToolFailure):
            return self._inner.format_output_for_agent(raw_result)
        return super().format_output_for_agent(raw_result)

    # -- helpers for CrewGuard ----------------------------------------------

    def _bound_inner(self) -> BaseTool:
        if self._inner is None:
            raise RuntimeError(f"guarded tool {self.name!r} is not bound to a guard")
        return self._inner

    def _signature_target(self) -> Callable[..., Any]:
        """The callable whose signature names the tool's arguments."""
        inner = self._bound_inner()
        func = getattr(inner, "func", None)  # crewai.tools.Tool and @tool functions
        return func if callable(func) else inner._run

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Every argument the real tool receives, by name, defaults applied."""
        return bind_arguments(self._signature_target(), args, kwargs)

    def _expected_args(self, tool_input: dict[str, Any]) -> dict[str, Any]:
        """The arguments this tool will receive for a hook's ``tool_input``.

        Mirrors what CrewAI does between the hook and the tool: the ReAct path keeps
        only schema fields, both paths validate with the tool's ``args_schema`` and
        pass on ``model_dump()``. A schema without fields yields no arguments.
        """
        schema = self.args_schema
        fields = schema.model_fields
        if fields:
            kept = {k: v for k, v in tool_input.items() if k in fields}
            validated: dict[str, Any] = dict(schema.model_validate(kept).model_dump())
        else:
            validated = {}
        return self._bind((), validated)

    def _call_inner(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return self._bound_inner().run(*args, **kwargs)

    async def _acall_inner(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return await self._bound_inner().arun(*args, **kwargs)


def _unconfigured(name: str) -> ToolFailure:
    return ToolFailure(
        message=f"execauth denied {name!r} (DENY): {UNCONFIGURED}: this guarded tool is not bound to a guard",
        reason=ToolFailureReason.TOOL_REPORTED,
        code=UNCONFIGURED,
    )
