"""The proxy's configuration file (YAML or JSON).

```yaml
server: files              # the upstream's identity: its tools are proposed as files.<tool>
principal: alice           # on whose behalf the MCP client acts
agent: desktop-client      # optional
policy: policy.yaml        # a policy file (path relative to this file) or the policy inline
manifests: manifests.yaml  # ToolManifest list (names are <server>.<tool>), path or inline
data_dir: .execauth        # optional: signing key, JWKS and SQLite stores; default in memory
call_timeout: 30           # seconds an upstream tools/call may take
max_message_bytes: 1048576 # larger client messages are refused
hide_denied_tools: false   # drop from tools/list what the principal can never call
forward_token: false       # pass the token and its proposal upstream in _meta (see server.py)
tools: {}                  # optional: upstream tool name -> manifest name (default <server>.<tool>)
```

Or decide with a remote authority (an ``execauth serve``) instead of a local policy; the
policy and manifests then live in the server (``policy``/``manifests`` are refused here):

```yaml
authority:
  url: http://127.0.0.1:8700
  credential_env: EXECAUTH_CREDENTIAL  # the environment variable holding the caller secret
  audience: execauth-guard             # optional, the token audience this proxy accepts
  issuer: execauth-server              # optional
  timeout: 5                           # optional, seconds per request to the service
```

Unknown keys are refused, so a typo cannot silently disable a setting.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError

from execauth_core import ConfigurationError, loads_strict
from execauth_core.mcp_names import SERVER_NAME_PATTERN, mcp_tool_name

TOKEN_META_KEY = "execauth/token"
"""The ``_meta`` key that carries an authority token on a ``tools/call``."""

REQUEST_META_KEY = "execauth/request"
"""The ``_meta`` key that carries the AuthorizationRequest the token was issued for."""


class RemoteAuthorityConfig(BaseModel):
    """Decide with an ``execauth serve`` (:meth:`execauth_core.Guard.remote`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: StrictStr = Field(pattern=r"^https?://")
    credential_env: StrictStr = Field(default="EXECAUTH_CREDENTIAL", min_length=1, max_length=256)
    """The environment variable that holds the caller secret (never the secret itself:
    a config file is often shared or committed)."""
    audience: StrictStr = "execauth-guard"
    issuer: StrictStr = "execauth-server"
    jwks_url: StrictStr | None = Field(default=None, pattern=r"^https?://")
    timeout: float = Field(default=5.0, gt=0, le=300)


class ProxyConfig(BaseModel):
    """A validated proxy configuration. Build with :func:`load_config` or :func:`parse_config`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    server: StrictStr = Field(min_length=1, max_length=64, pattern=SERVER_NAME_PATTERN)
    principal: StrictStr = Field(min_length=1, max_length=256)
    agent: StrictStr | None = Field(default=None, min_length=1, max_length=256)
    policy: StrictStr | dict[str, Any] | None = None
    manifests: StrictStr | list[dict[str, Any]] = Field(default_factory=list)
    data_dir: StrictStr | None = None
    call_timeout: float = Field(default=30.0, gt=0, le=3600)
    max_message_bytes: StrictInt = Field(default=1_048_576, ge=1024, le=64 * 1_048_576)
    hide_denied_tools: StrictBool = False
    forward_token: StrictBool = False
    authority: RemoteAuthorityConfig | None = None
    tools: dict[StrictStr, StrictStr] = Field(
        default_factory=dict, description="Upstream tool name -> manifest name, instead of <server>.<tool>."
    )
    base_dir: StrictStr = Field(default=".", description="Where relative paths are resolved (the config's folder).")

    def tool_name(self, mcp_tool: str) -> str:
        """The proposal's tool name for an upstream tool: the ``tools`` mapping, else ``<server>.<tool>``."""
        return mcp_tool_name(self.server, mcp_tool, self.tools)

    def path(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else Path(self.base_dir) / p


def parse_config(data: Any, *, base_dir: str | os.PathLike[str] = ".") -> ProxyConfig:
    """Validate a parsed configuration mapping.

    Raises:
        ConfigurationError: the first problem and where it is.
    """
    if not isinstance(data, dict):
        raise ConfigurationError("the proxy configuration is a mapping (server, principal, policy, manifests, ...)")
    try:
        return ProxyConfig.model_validate({**data, "base_dir": os.fspath(base_dir)})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ConfigurationError(f"proxy config invalid at {loc}: {err['msg']}") from None


def load_config(path: str | os.PathLike[str]) -> ProxyConfig:
    """Read a proxy configuration file (``.json`` strictly, anything else as YAML)."""
    from execauth_core.policyfile import _load_yaml

    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read: {exc.strerror}") from None
    try:
        data = loads_strict(raw) if name.endswith(".json") else _load_yaml(raw)
    except Exception as exc:  # noqa: BLE001 - any unreadable config is one clear error
        raise ConfigurationError(f"{name}: {exc}") from None
    try:
        return parse_config(data, base_dir=Path(name).resolve().parent)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from None
