"""The CrewAI features the adapter stands on, checked once at import.

The adapter needs three things that arrived in the 1.15 line: the context-scoped
hook registry (``crewai.hooks.dispatch.scoped_hooks``) and ``HookAborted`` (1.15.3),
and the structured ``ToolFailure`` a tool returns to report a failure (1.15.9). An older CrewAI
lacks one of them, and a half-working guard is worse than none: refuse to import.
"""

from __future__ import annotations

import importlib

from execauth_core import ConfigurationError

MINIMUM = "1.15.9"
_INSTALL = f'pip install "crewai>={MINIMUM},<1.16"'


def check_crewai() -> str:
    """Return the installed CrewAI version, or raise ConfigurationError saying what to install."""
    try:
        import crewai

        # Not ``from crewai.hooks import dispatch``: crewai.hooks re-exports a
        # *function* named dispatch that shadows the submodule.
        dispatch = importlib.import_module("crewai.hooks.dispatch")
        tool_failure = importlib.import_module("crewai.tools.tool_failure")
    except ImportError as exc:
        raise ConfigurationError(f"execauth-crewai needs CrewAI: {_INSTALL} ({exc})") from exc
    missing = [
        name
        for module, name in (
            (dispatch, "scoped_hooks"),
            (dispatch, "get_scoped_hooks"),
            (dispatch, "HookAborted"),
            (tool_failure, "ToolFailure"),
        )
        if not hasattr(module, name)
    ]
    version = str(getattr(crewai, "__version__", "unknown"))
    if missing:
        raise ConfigurationError(
            f"execauth-crewai needs CrewAI >= {MINIMUM}; the installed {version} lacks {', '.join(missing)}: {_INSTALL}"
        )
    return version
