"""execauth-crewai: authorize every CrewAI tool call before it runs.

Wrap the tools (:meth:`CrewGuard.tool`), run the crew inside
:meth:`CrewGuard.guarding`: a context-scoped before-tool-call hook admits each
call with its full proposal, and the guarded tool makes the single guard
decision (signed, single-use token; audited) before the real tool runs. Every
failure path ends with the tool not run; the model is told the reason code.
"""

from ._compat import check_crewai as _check_crewai

CREWAI_VERSION = _check_crewai()

from ._version import __version__  # noqa: E402 - after the CrewAI check, on purpose
from .adapter import (  # noqa: E402
    CREWAI_BLOCKED_PREFIX,
    Approver,
    CrewGuard,
    TokenProvider,
    agent_role,
    native_call_id,
)
from .approval import console_approver  # noqa: E402
from .tools import GuardedTool  # noqa: E402

__all__ = [
    "Approver",
    "CrewGuard",
    "GuardedTool",
    "TokenProvider",
    "CREWAI_BLOCKED_PREFIX",
    "CREWAI_VERSION",
    "__version__",
    "agent_role",
    "console_approver",
    "native_call_id",
]
