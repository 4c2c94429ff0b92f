"""execauth-openai-agents: gate every OpenAI Agents SDK function tool call with execauth.

``ExecAuth(guard, principal=...)`` is the gate. ``gate.protect(agent)`` gates every
function tool of an agent graph (handoffs and agents used as tools included);
``gate.wrap(tool)`` / ``@gate.wrap`` gates one tool. Each call is decided, its
Ed25519 token verified and consumed once, and audited inside ``on_invoke_tool``,
right where the tool runs. REQUIRE_APPROVAL pauses the run through the SDK's
``needs_approval`` interruptions; ``gate.pending(result)``, ``gate.approve(...)`` and
``gate.reject(...)`` bind the answer to the proposal digest. ``gate.hooks()`` adds
run hooks that stop any tool the gate does not cover.
"""

from ._compat import check_minimum_version as _check_minimum_version

_check_minimum_version()

from ._version import __version__  # noqa: E402 - after the version check on purpose
from .errors import ToolCallDenied, UngatedToolError  # noqa: E402
from .gate import AUTO, ApprovalRequest, ExecAuth  # noqa: E402
from .hooks import ExecAuthRunHooks  # noqa: E402

__all__ = [
    "ApprovalRequest",
    "ExecAuth",
    "ExecAuthRunHooks",
    "ToolCallDenied",
    "UngatedToolError",
    "AUTO",
    "__version__",
]
