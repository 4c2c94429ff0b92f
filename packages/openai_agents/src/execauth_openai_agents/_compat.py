"""The supported floor of the OpenAI Agents SDK, checked once at import."""

from __future__ import annotations

import importlib.metadata
import re

from execauth_core import ConfigurationError

# needs_approval + RunState approve/reject(rejection_message=), ToolContext.agent,
# the public FunctionTool.__wrapped__ handle: see the README's version table.
MINIMUM = (0, 20, 0)


def _parse(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_minimum_version() -> None:
    """Raise :class:`~execauth_core.ConfigurationError` below the supported floor."""
    try:
        installed = importlib.metadata.version("openai-agents")
    except importlib.metadata.PackageNotFoundError:
        return  # a vendored or source checkout: trust it
    if _parse(installed) < MINIMUM:
        floor = ".".join(map(str, MINIMUM))
        raise ConfigurationError(
            f"execauth-openai-agents needs openai-agents>={floor}, found {installed}: "
            f"pip install 'openai-agents>={floor}'"
        )
