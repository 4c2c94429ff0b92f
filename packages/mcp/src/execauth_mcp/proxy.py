"""The gating proxy: an MCP server for the client, an MCP client of the upstream.

Every ``tools/call`` becomes a proposal (``<server>.<tool>``, the arguments, the
principal of the configuration), checked against the tool's input schema as the
upstream lists it, then decided by the guard. Only ALLOW reaches the upstream, once;
every other outcome, and every fault (the upstream hangs, crashes, answers with an
error), comes back as a ``CallToolResult`` with ``isError: true`` naming the outcome
and reason codes, after the guard recorded it. Other methods are forwarded as they
are; methods the upstream does not offer are answered "Method not found".
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.lowlevel
import mcp_types as types
from mcp.client.session import ClientSession
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import NotificationOptions, Server
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPError

from execauth_core import (
    ApprovalRequired,
    AuthorizationRequest,
    ConfigurationError,
    ExecutionDenied,
    Guard,
    Outcome,
    denial_message,
)
from execauth_core.reasons import ReasonCode as R

from ._version import __version__
from .config import REQUEST_META_KEY, TOKEN_META_KEY, ProxyConfig

log = logging.getLogger("execauth.mcp")

Ctx = ServerRequestContext[Any, Any]


def build_guard(config: ProxyConfig) -> Guard:
    """The local guard the configuration describes (policy, manifests, stores).

    With an ``authority`` section, a :meth:`Guard.remote` guard: decisions come from
    that service, tokens are verified against its JWKS, token ids consumed and
    executions recorded here (``data_dir``, or memory).

    Raises:
        ConfigurationError: the policy or manifests are invalid, or a manifest is not
            named ``<server>.<tool>``; with a remote authority, a local policy or
            manifests are given, ``hide_denied_tools`` is set, or the credential
            variable is unset.
    """
    from execauth_core import Court, ToolRegistry, load_policy, load_registry, parse_policy

    data_dir = config.path(config.data_dir) if config.data_dir else None
    if config.authority is not None:
        return _remote_guard(config, data_dir)
    registry = (
        load_registry(str(config.path(config.manifests)))
        if isinstance(config.manifests, str)
        else (ToolRegistry(config.manifests))
    )
    prefix = f"{config.server}."
    mapped = set(config.tools.values())
    stray = [n for n in registry.names() if not n.startswith(prefix) and n not in mapped]
    if stray:
        raise ConfigurationError(
            f"manifests {stray} do not start with {prefix!r}: MCP tools are named <server>.<tool> "
            "(or mapped in 'tools')"
        )
    if config.policy is None:
        policy = None  # no policy: the Court denies everything (POLICY_EMPTY)
    elif isinstance(config.policy, str):
        policy = load_policy(config.path(config.policy))
    else:
        policy = parse_policy(config.policy)
    # No effect ledger: a JSON-RPC request id is a per-session counter, not a tool-call
    # id, so the same id with the same arguments in another session is another call.
    return Guard.local(Court(policy, registry), data_dir=data_dir, ledger=False)


def _remote_guard(config: ProxyConfig, data_dir: Any) -> Guard:
    import os

    remote = config.authority
    assert remote is not None
    given = [k for k in ("policy", "manifests") if getattr(config, k)]
    if given:
        raise ConfigurationError(
            f"with a remote authority the policy and manifests live in the server: remove {', '.join(given)}"
        )
    if config.hide_denied_tools:
        raise ConfigurationError(
            "hide_denied_tools needs the policy, which a remote authority keeps to itself: remove it"
        )
    credential = os.environ.get(remote.credential_env)
    if not credential:
        raise ConfigurationError(
            f"the remote authority's caller secret is read from ${remote.credential_env}, which is not set"
        )
    return Guard.remote(
        remote.url,
        credential=credential,
        audience=remote.audience,
        issuer=remote.issuer,
        jwks_url=remote.jwks_url,
        timeout=remote.timeout,
        data_dir=data_dir,
    )


def _text_result(text: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


def denial_result(exc: ExecutionDenied) -> types.CallToolResult:
    """The tool result a model sees for a call that did not run."""
    if isinstance(exc, ApprovalRequired) or exc.outcome == Outcome.REQUIRE_APPROVAL.value:
        return _text_result(
            f"{denial_message(exc).rstrip('.')}. An approval is required before this call can run "
            f"(proposal {exc.proposal_digest}); it did not run."
        )
    return _text_result(f"{denial_message(exc).rstrip('.')}. The call did not run.")


@dataclass
class GatingProxy:
    """Gates one upstream session. Build the MCP server with :meth:`server`."""

    config: ProxyConfig
    guard: Guard
    upstream: ClientSession
    capabilities: types.ServerCapabilities | None = None
    _tools: dict[str, types.Tool] = field(default_factory=dict)
    _validators: dict[str, Any] = field(default_factory=dict)
    _downstream: ServerSession | None = None
    token_provider: Callable[[AuthorizationRequest], str | None] | None = None
    """Verify tokens obtained elsewhere instead of deciding (a verify-only guard)."""

    # -- tools -----------------------------------------------------------------

    def _absorb(self, tools: list[types.Tool]) -> None:
        for tool in tools:
            if self._tools.get(tool.name) != tool:
                self._tools[tool.name] = tool
                self._validators.pop(tool.name, None)

    def may_ever_call(self, mcp_tool: str) -> bool:
        """Whether the policy could ever allow the principal this tool (for hiding)."""
        court = getattr(self.guard.authority, "decision_point", None)
        policy = getattr(court, "policy", None)
        if policy is None or policy.kill_switch:
            return False
        p = policy.principal(self.config.principal)
        if p is None or (p.agents and self.config.agent not in p.agents):
            return False
        return self.config.tool_name(mcp_tool) in p.allow_tools

    async def list_tools(self, ctx: Ctx, params: types.PaginatedRequestParams | None) -> types.ListToolsResult:
        self._downstream = ctx.session
        result = await self.upstream.send_request(types.ListToolsRequest(params=params), types.ListToolsResult)
        self._absorb(result.tools)
        if self.config.hide_denied_tools:
            result = result.model_copy(update={"tools": [t for t in result.tools if self.may_ever_call(t.name)]})
        return result

    async def _input_schema(self, name: str) -> dict[str, Any] | None:
        if name not in self._tools:
            try:
                cursor: str | None = None
                for _ in range(100):  # bounded: a server that pages forever is not followed forever
                    page = await self.upstream.send_request(
                        types.ListToolsRequest(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None),
                        types.ListToolsResult,
                    )
                    self._absorb(page.tools)
                    cursor = page.next_cursor
                    if not cursor or name in self._tools:
                        break
            except Exception as exc:  # noqa: BLE001 - no listing: the call is refused below
                log.warning("execauth-mcp: could not list upstream tools: %s", exc)
        tool = self._tools.get(name)
        return None if tool is None else dict(tool.input_schema)

    def _schema_errors(self, name: str, schema: dict[str, Any], args: dict[str, Any]) -> str | None:
        import jsonschema

        validator = self._validators.get(name)
        if validator is None:
            try:
                cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
                cls.check_schema(schema)
                validator = cls(schema)
            except jsonschema.SchemaError as exc:
                return f"the upstream's input schema is invalid: {exc.message}"
            self._validators[name] = validator
        error = next(iter(validator.iter_errors(args)), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        return f"arguments do not match the tool's input schema at {where}: {error.message}"[:400]

    async def call_tool(self, ctx: Ctx, params: types.CallToolRequestParams) -> types.CallToolResult:
        """Gate one ``tools/call``. Never raises: every failure is an error result."""
        self._downstream = ctx.session
        guard, cfg = self.guard, self.config
        tool = cfg.tool_name(params.name)
        args: dict[str, Any] = dict(params.arguments or {})
        try:
            request = guard.proposal(
                tool,
                args,
                principal=cfg.principal,
                agent=cfg.agent,
                call_id=None if ctx.request_id is None else str(ctx.request_id)[:256],
            )
        except ExecutionDenied as exc:
            return denial_result(exc)
        try:
            schema = await self._input_schema(params.name)
            if schema is None:
                return denial_result(
                    guard.deny(
                        request, [R.UNKNOWN_TOOL.value], f"the upstream {cfg.server!r} offers no tool {params.name!r}"
                    )
                )
            problem = self._schema_errors(params.name, schema, args)
            if problem is not None:
                return denial_result(guard.deny(request, [R.ARGS_SCHEMA_VIOLATION.value], problem))
            token: str | None = None
            meta: dict[str, Any] = {}
            if self.token_provider is not None:
                token = self.token_provider(request)
            elif cfg.forward_token:
                # Decide first: the token travels upstream with the call.
                decision = guard.authorize(request)
                if decision.outcome is not Outcome.ALLOW or decision.token is None:
                    return denial_result(
                        guard.deny(
                            request,
                            decision.reason_codes,
                            " ".join(decision.explanation),
                            outcome=decision.outcome.value,
                        )
                    )
                token = decision.token
                meta[TOKEN_META_KEY] = token
                meta[REQUEST_META_KEY] = request.model_dump(mode="json")
        except ExecutionDenied as exc:
            return denial_result(exc)
        except Exception as exc:
            log.exception("execauth-mcp: error before the decision")
            return denial_result(guard.deny(request, [R.GUARD_ERROR.value], f"proxy error ({type(exc).__name__})"))

        # Read from the wire form: the client's own _meta is not forwarded (a token or a
        # proposal it carries is never trusted), only its progress token, as progress.
        wire = ctx.params if isinstance(ctx.params, dict) else {}
        raw_meta = wire.get("_meta")
        wire_meta: dict[str, Any] = raw_meta if isinstance(raw_meta, dict) else {}
        progress_token = wire_meta.get("progressToken")
        if not isinstance(progress_token, (str, int)) or isinstance(progress_token, bool):
            progress_token = None
        progress: Callable[..., Any] | None = None
        downstream = ctx.session
        if progress_token is not None:

            async def progress(value: float, total: float | None, message: str | None) -> None:
                await downstream.send_progress_notification(progress_token, value, total, message)

        async def forward() -> types.CallToolResult:
            with anyio.fail_after(cfg.call_timeout):
                # Forward the proposal's own copy: what runs is exactly what was decided.
                result = await self.upstream.call_tool(
                    params.name,
                    dict(request.args),
                    progress_callback=progress,
                    meta=meta or None,  # type: ignore[arg-type]
                )
            if not isinstance(result, types.CallToolResult):
                raise MCPError(code=-32603, message="the upstream answered with a result the proxy cannot relay")
            return result

        try:
            if self.token_provider is not None or cfg.forward_token:
                return await guard.aexecute(request, token, forward)
            # Decide, verify, consume, record, forward: the guard's one path.
            return await guard.arun(request, forward)
        except ExecutionDenied as exc:
            return denial_result(exc)
        except TimeoutError:
            return _text_result(
                f"execauth-mcp: the upstream {cfg.server!r} did not answer '{params.name}' within "
                f"{cfg.call_timeout:g} s ({R.REQUEST_TIMEOUT.value}); the call was authorized and may have run."
            )
        except MCPError as exc:
            return _text_result(
                f"execauth-mcp: the upstream {cfg.server!r} failed on '{params.name}': {str(exc)[:300]}; "
                "the call was authorized and may have run."
            )
        except Exception as exc:  # noqa: BLE001 - the proxy keeps serving
            return _text_result(
                f"execauth-mcp: the upstream {cfg.server!r} failed on '{params.name}' ({type(exc).__name__}); "
                "the call was authorized and may have run."
            )

    # -- everything else, forwarded --------------------------------------------

    def _forward(self, request_type: Any, result_type: Any) -> Any:
        async def handler(ctx: Ctx, params: Any) -> Any:
            self._downstream = ctx.session
            return await self.upstream.send_request(request_type(params=params), result_type)

        return handler

    async def on_upstream_message(self, message: Any) -> None:
        """Relay the upstream's notifications to the client (tool list changes reset the schema cache)."""
        if isinstance(message, Exception):
            log.warning("execauth-mcp: upstream transport error: %s", message)
            return
        if isinstance(message, types.ToolListChangedNotification):
            self._tools.clear()
            self._validators.clear()
        downstream = self._downstream
        if downstream is not None:
            try:
                await downstream.send_notification(message)
            except Exception as exc:  # noqa: BLE001 - a lost notification must not stop the proxy
                log.warning("execauth-mcp: could not relay %s: %s", type(message).__name__, exc)

    def server(self) -> Server[Any]:
        """The low-level MCP server the client talks to."""
        caps = self.capabilities or types.ServerCapabilities(tools=types.ToolsCapability())
        handlers: dict[str, Any] = {
            "on_list_tools": self.list_tools,
            "on_call_tool": self.call_tool,
            "on_ping": self._forward(types.PingRequest, types.EmptyResult),
        }
        if caps.prompts is not None:
            handlers["on_list_prompts"] = self._forward(types.ListPromptsRequest, types.ListPromptsResult)
            handlers["on_get_prompt"] = self._forward(types.GetPromptRequest, types.GetPromptResult)
        if caps.resources is not None:
            handlers["on_list_resources"] = self._forward(types.ListResourcesRequest, types.ListResourcesResult)
            handlers["on_list_resource_templates"] = self._forward(
                types.ListResourceTemplatesRequest, types.ListResourceTemplatesResult
            )
            handlers["on_read_resource"] = self._forward(types.ReadResourceRequest, types.ReadResourceResult)
            if caps.resources.subscribe:
                handlers["on_subscribe_resource"] = self._forward(types.SubscribeRequest, types.EmptyResult)
                handlers["on_unsubscribe_resource"] = self._forward(types.UnsubscribeRequest, types.EmptyResult)
        if caps.completions is not None:
            handlers["on_completion"] = self._forward(types.CompleteRequest, types.CompleteResult)
        info = self.upstream.server_info
        name = f"execauth-mcp({info.name})" if info is not None else f"execauth-mcp({self.config.server})"
        return Server(name, version=__version__, instructions=self.upstream.instructions, **handlers)

    def initialization_options(self, server: Server[Any]) -> Any:
        caps = self.capabilities
        changed = NotificationOptions(
            tools_changed=bool(caps and caps.tools and caps.tools.list_changed),
            prompts_changed=bool(caps and caps.prompts and caps.prompts.list_changed),
            resources_changed=bool(caps and caps.resources and caps.resources.list_changed),
        )
        return server.create_initialization_options(changed)


class _Relay:
    """Forwards upstream notifications to the proxy once it exists."""

    def __init__(self) -> None:
        self.target: GatingProxy | None = None

    async def __call__(self, message: Any) -> None:
        if self.target is not None:
            await self.target.on_upstream_message(message)
        else:
            await anyio.lowlevel.checkpoint()


@asynccontextmanager
async def connect_upstream(
    *,
    command: list[str] | None = None,
    url: str | None = None,
    on_message: Any = None,
    env: dict[str, str] | None = None,
) -> AsyncIterator[ClientSession]:
    """An initialized client session to the upstream: a stdio subprocess or a streamable-HTTP URL."""
    if (command is None) == (url is None):
        raise ConfigurationError("give the upstream as a command (stdio) or a URL (streamable HTTP), not both")
    async with AsyncExitStack() as stack:
        if command is not None:
            from mcp.client.stdio import StdioServerParameters, stdio_client

            if not command or not command[0]:
                raise ConfigurationError("the upstream command is empty")
            params = StdioServerParameters(command=command[0], args=command[1:], env=env)
            read, write = await stack.enter_async_context(stdio_client(params))
        else:
            from mcp.client.streamable_http import streamable_http_client

            assert url is not None
            if not url.startswith(("http://", "https://")):
                raise ConfigurationError(f"the upstream URL must be http:// or https://, not {url[:60]!r}")
            read, write = await stack.enter_async_context(streamable_http_client(url))
        session = await stack.enter_async_context(ClientSession(read, write, message_handler=on_message))
        await session.initialize()
        yield session
