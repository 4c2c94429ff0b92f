"""execauth-autogen: gate every AutoGen tool call with execauth, for both AutoGen APIs.

* AgentChat (autogen-agentchat / autogen-core 0.6.2+):
  ``AssistantAgent(workbench=ExecAuthWorkbench(tools, guard, principal=...))``.
* Classic (module ``autogen`` from ag2 < 1.0): ``ExecAuthFunctionGate(guard,
  principal=...).protect(executor)``, with ``ExecAuthExecutorMixin`` on the executing
  agent's class to bind tool-call ids.

Each framework is imported only when its names are first used
(``execauth_autogen.agentchat`` / ``execauth_autogen.classic``), so the package works
with whichever AutoGen is installed; the two cannot share one environment anyway.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._common import APPROVE_WORDS, approval_prompt, input_approver
from ._version import __version__

if TYPE_CHECKING:  # the lazy names, for type checkers and IDEs
    from .agentchat import ExecAuthWorkbench
    from .classic import ExecAuthExecutorMixin, ExecAuthFunctionGate, ToolCallDenied, human_input_approver

_LAZY = {
    "ExecAuthWorkbench": "agentchat",
    "ExecAuthExecutorMixin": "classic",
    "ExecAuthFunctionGate": "classic",
    "ToolCallDenied": "classic",
    "human_input_approver": "classic",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'execauth_autogen' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "APPROVE_WORDS",
    "ExecAuthExecutorMixin",
    "ExecAuthFunctionGate",
    "ExecAuthWorkbench",
    "ToolCallDenied",
    "__version__",
    "approval_prompt",
    "human_input_approver",
    "input_approver",
]
