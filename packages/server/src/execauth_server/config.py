"""The server's configuration: one YAML (or JSON) file.

Relative paths in the file are read relative to the file's own folder. Every key is
optional; unknown keys are refused (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from execauth_core.canonical import CanonicalizationError, loads_strict
from execauth_core.errors import ConfigurationError

from .webhooks import WebhookTarget, parse_webhooks

DEFAULT_DATA_DIR = ".execauth-server"
DEFAULT_ISSUER = "execauth-server"
DEFAULT_AUDIENCE = "execauth-guard"

_KEYS = {
    "policy",
    "manifests",
    "stores",
    "data_dir",
    "key_file",
    "extra_keys",
    "issuer",
    "audience",
    "tool_audiences",
    "token_ttl",
    "callers",
    "limits",
    "host",
    "port",
    "workers",
    "approvers",
    "approvals",
    "checkpoints",
    "console",
    "webhooks",
    "public_url",
}
_CHECKPOINT_KEYS = {"every", "interval", "origin", "public"}
DEFAULT_ORIGIN = "execauth-server/audit"
_CALLER_KEYS = {"name", "secret_sha256", "principals", "agents"}
_LIMIT_KEYS = {"max_body_bytes", "read_timeout", "unauthenticated_per_minute"}


def hash_secret(secret: str) -> str:
    """The hex SHA-256 of a caller secret: what a config file stores."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_secret() -> str:
    """A fresh caller secret (256 bits, URL-safe)."""
    return "ea_" + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Caller:
    """An agent workload the server knows, and whom it may act for.

    ``principals`` / ``agents``: the principals and agents this credential may name in
    a request. ``"*"`` means any; an empty ``agents`` list means any agent (the
    principal is always checked).
    """

    name: str
    secret_sha256: str
    principals: tuple[str, ...]
    agents: tuple[str, ...] = ()

    def may_act_for(self, principal: str, agent: str | None) -> bool:
        if "*" not in self.principals and principal not in self.principals:
            return False
        if not self.agents or "*" in self.agents:
            return True
        return agent is not None and agent in self.agents

    def matches(self, presented_sha256: bytes) -> bool:
        return hmac.compare_digest(bytes.fromhex(self.secret_sha256), presented_sha256)


@dataclass(frozen=True)
class Approver:
    """A person who may decide approval requests: a name, the SHA-256 of their API
    secret (``None``: console only) and, to sign in to the web console, an argon2
    PHC hash of their password (``None``: API and CLI only).

    ``public_key``: the approver's own Ed25519 public key (32 bytes), if configured;
    then every decision they make must carry their signed statement.
    """

    name: str
    secret_sha256: str | None
    password_argon2: str | None = None
    public_key: bytes | None = None

    def matches(self, presented_sha256: bytes) -> bool:
        if self.secret_sha256 is None:
            hmac.compare_digest(presented_sha256, presented_sha256)  # the same work either way
            return False
        return hmac.compare_digest(bytes.fromhex(self.secret_sha256), presented_sha256)


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``execauth serve`` needs. See the package README for each key."""

    data_dir: Path
    policy: Path | None = None
    manifests: Path | None = None
    stores: str | None = None
    key_file: Path | None = None
    extra_keys: Path | None = None
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    tool_audiences: Mapping[str, str] = field(default_factory=dict)
    token_ttl: int = 60
    callers: tuple[Caller, ...] = ()
    max_body_bytes: int = 65_536
    read_timeout: float = 10.0
    unauthenticated_per_minute: int = 30
    """Refusals recorded per minute per source address for requests with no valid
    credential (a burst of as many); beyond that, 429 and one summary entry a minute."""
    host: str = "127.0.0.1"
    port: int = 8787
    workers: int = 1
    source: Path | None = None
    approvers: tuple[Approver, ...] = ()
    """People who may approve or reject approval requests (never an agent's credential)."""
    approval_request_ttl: int = 3600
    approval_grant_ttl: int = 900
    checkpoint_every: int | None = None
    checkpoint_interval: int | None = None
    checkpoint_origin: str = DEFAULT_ORIGIN
    checkpoints_public: bool = True
    console: ConsoleSettings = field(default_factory=lambda: ConsoleSettings())
    """The web console's sessions and cookies (``console:`` in the file)."""
    webhooks: tuple[WebhookTarget, ...] = ()
    """Where approval events are POSTed (see :mod:`execauth_server.webhooks`)."""
    public_url: str | None = None
    """The server's base URL as people reach it (``console_url`` in webhooks)."""
    approval_sweep_interval: float = 5.0
    """Seconds between sweeps that expire overdue requests (so ``approval.expired`` is sent)."""

    @property
    def store_url(self) -> str:
        """The configured store URL, or the embedded SQLite file in ``data_dir``."""
        return self.stores or f"sqlite:{(self.data_dir / 'execauth.db').resolve()}"

    @property
    def key_path(self) -> Path:
        return self.key_file or self.data_dir / "authority.key"

    def audience_for(self, tool: str) -> str:
        return self.tool_audiences.get(tool, self.audience)


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(f"{where} must be a non-empty string")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where} must be a list of names")
    return tuple(value)


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigurationError(f"{where} must be an integer within {lo}..{hi}")
    return value


def parse_config(data: Any, *, base: Path | None = None, source: Path | None = None) -> ServerConfig:
    """Validate a parsed config document. Relative paths are taken from ``base``.

    Raises:
        ConfigurationError: naming the first problem.
    """
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigurationError("the config file must hold a mapping")
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise ConfigurationError(f"unknown config key(s): {', '.join(map(str, unknown))}")
    root = base or Path.cwd()

    def path(key: str) -> Path | None:
        if data.get(key) is None:
            return None
        p = Path(_str(data[key], key))
        return p if p.is_absolute() else root / p

    callers: list[Caller] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("callers") or []):
        where = f"callers[{i}]"
        if not isinstance(raw, dict):
            raise ConfigurationError(f"{where} must be a mapping")
        extra = sorted(set(raw) - _CALLER_KEYS)
        if extra:
            raise ConfigurationError(f"{where}: unknown key(s): {', '.join(map(str, extra))}")
        name = _str(raw.get("name"), f"{where}.name")
        digest = _str(raw.get("secret_sha256"), f"{where}.secret_sha256").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ConfigurationError(f"{where}.secret_sha256 must be 64 hex digits (the SHA-256 of the secret)")
        if name in seen or digest in {c.secret_sha256 for c in callers}:
            raise ConfigurationError(f"{where}: duplicate caller name or secret")
        seen.add(name)
        principals = _names(raw.get("principals"), f"{where}.principals")
        if not principals:
            raise ConfigurationError(f"{where}.principals must name at least one principal (or '*')")
        callers.append(Caller(name, digest, principals, _names(raw.get("agents"), f"{where}.agents")))

    limits = data.get("limits") or {}
    if not isinstance(limits, dict) or set(limits) - _LIMIT_KEYS:
        raise ConfigurationError(f"limits takes only {', '.join(sorted(_LIMIT_KEYS))}")
    read_timeout = limits.get("read_timeout", 10.0)
    if not isinstance(read_timeout, (int, float)) or isinstance(read_timeout, bool) or not 0 < read_timeout <= 600:
        raise ConfigurationError("limits.read_timeout must be a number of seconds within (0, 600]")
    tool_audiences = data.get("tool_audiences") or {}
    if not isinstance(tool_audiences, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and k and v for k, v in tool_audiences.items()
    ):
        raise ConfigurationError("tool_audiences maps tool names to audience names")
    stores = data.get("stores")
    cps = data.get("checkpoints") or {}
    if not isinstance(cps, dict) or set(cps) - _CHECKPOINT_KEYS:
        raise ConfigurationError(f"checkpoints takes only {', '.join(sorted(_CHECKPOINT_KEYS))}")
    every = None if cps.get("every") is None else _int(cps["every"], "checkpoints.every", 1, 10**9)
    interval = None if cps.get("interval") is None else _int(cps["interval"], "checkpoints.interval", 1, 86_400 * 7)
    origin = _str(cps.get("origin", DEFAULT_ORIGIN), "checkpoints.origin")
    if any(c.isspace() or c == "+" for c in origin):
        raise ConfigurationError("checkpoints.origin is a name without spaces or '+' (like host/path)")
    public = cps.get("public", True)
    if not isinstance(public, bool):
        raise ConfigurationError("checkpoints.public must be true or false")
    return ServerConfig(
        data_dir=path("data_dir") or root / DEFAULT_DATA_DIR,
        policy=path("policy"),
        manifests=path("manifests"),
        stores=_str(stores, "stores") if stores is not None else None,
        key_file=path("key_file"),
        extra_keys=path("extra_keys"),
        issuer=_str(data.get("issuer", DEFAULT_ISSUER), "issuer"),
        audience=_str(data.get("audience", DEFAULT_AUDIENCE), "audience"),
        tool_audiences=dict(tool_audiences),
        token_ttl=_int(data.get("token_ttl", 60), "token_ttl", 1, 3600),
        callers=tuple(callers),
        max_body_bytes=_int(limits.get("max_body_bytes", 65_536), "limits.max_body_bytes", 256, 16 * 1024 * 1024),
        read_timeout=float(read_timeout),
        unauthenticated_per_minute=_int(
            limits.get("unauthenticated_per_minute", 30), "limits.unauthenticated_per_minute", 1, 100_000
        ),
        host=_str(data.get("host", "127.0.0.1"), "host"),
        port=_int(data.get("port", 8787), "port", 0, 65535),
        workers=_int(data.get("workers", 1), "workers", 1, 64),
        source=source,
        **parse_approvals(data, callers),
        **parse_console(data),
        checkpoint_every=every,
        checkpoint_interval=interval,
        checkpoint_origin=origin,
        checkpoints_public=public,
        **parse_webhooks(data, root),
    )


def read_document(path: str | os.PathLike[str]) -> Any:
    """Parse a config file: ``.json`` strictly, anything else as YAML (duplicate keys refused)."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{name}: no such file") from None
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read: {exc.strerror}") from None
    try:
        if name.endswith(".json"):
            return loads_strict(raw)
        from execauth_core.policyfile import _load_yaml

        return _load_yaml(raw)
    except (CanonicalizationError, ConfigurationError, ValueError) as exc:
        raise ConfigurationError(f"{name}: {exc}") from None


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and validate a config file."""
    p = Path(path).resolve()
    try:
        return parse_config(read_document(p), base=p.parent, source=p)
    except ConfigurationError as exc:
        if str(exc).startswith(str(p)):
            raise
        raise ConfigurationError(f"{p}: {exc}") from None


def default_config(data_dir: str | os.PathLike[str]) -> ServerConfig:
    """The no-config-file setup: loopback, embedded SQLite and a generated key in
    ``data_dir``, and one caller ``local`` (any principal) whose secret is kept in
    ``data_dir/caller.secret`` (mode 0600, created on first start)."""
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    secret_file = data / "caller.secret"
    if not secret_file.exists():
        try:
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another worker wrote it first
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(new_secret() + "\n")
    secret = secret_file.read_text(encoding="utf-8").strip()
    doc = {
        "data_dir": str(data),
        "callers": [{"name": "local", "secret_sha256": hash_secret(secret), "principals": ["*"]}],
    }
    return parse_config(doc, base=data)


_APPROVER_KEYS = {"name", "secret_sha256", "password_argon2", "public_key"}
_APPROVALS_KEYS = {"request_ttl", "grant_ttl", "sweep_interval"}


def parse_approvals(data: Mapping[str, Any], callers: list[Caller]) -> dict[str, Any]:
    """The ``approvers`` list and the ``approvals`` settings of a config document.

    An approver's secret may not be any caller's: an agent's credential can never approve.
    """
    approvers: list[Approver] = []
    raw_list = data.get("approvers") or []
    if not isinstance(raw_list, list):
        raise ConfigurationError("approvers must be a list of {name, secret_sha256}")
    caller_digests = {c.secret_sha256 for c in callers}
    for i, raw in enumerate(raw_list):
        where = f"approvers[{i}]"
        if not isinstance(raw, dict) or set(raw) - _APPROVER_KEYS:
            raise ConfigurationError(
                f"{where} must be a mapping of name, secret_sha256 and/or password_argon2, and public_key"
            )
        name = _str(raw.get("name"), f"{where}.name")
        password = _argon2_hash(raw.get("password_argon2"), f"{where}.password_argon2")
        digest: str | None = None
        if raw.get("secret_sha256") is not None or password is None:
            digest = _str(raw.get("secret_sha256"), f"{where}.secret_sha256").lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise ConfigurationError(f"{where}.secret_sha256 must be 64 hex digits (the SHA-256 of the secret)")
            if digest in caller_digests:
                raise ConfigurationError(f"{where}: an approver's secret may not be a caller's (agents never approve)")
        if name in {a.name for a in approvers} or (
            digest is not None and digest in {a.secret_sha256 for a in approvers}
        ):
            raise ConfigurationError(f"{where}: duplicate approver name or secret")
        key = None
        if raw.get("public_key") is not None:
            from execauth_core.approver_keys import parse_public_key

            try:
                key = parse_public_key(raw["public_key"])
            except ConfigurationError as exc:
                raise ConfigurationError(f"{where}.public_key: {exc}") from None
        approvers.append(Approver(name, digest, password, key))
    settings = data.get("approvals") or {}
    if not isinstance(settings, dict) or set(settings) - _APPROVALS_KEYS:
        raise ConfigurationError(f"approvals takes only {', '.join(sorted(_APPROVALS_KEYS))}")
    return {
        "approvers": tuple(approvers),
        "approval_request_ttl": _int(settings.get("request_ttl", 3600), "approvals.request_ttl", 1, 7 * 86_400),
        "approval_grant_ttl": _int(settings.get("grant_ttl", 900), "approvals.grant_ttl", 1, 86_400),
        "approval_sweep_interval": float(_int(settings.get("sweep_interval", 5), "approvals.sweep_interval", 1, 3600)),
    }


def _argon2_hash(value: Any, where: str) -> str | None:
    """An argon2 PHC string (``$argon2id$v=19$m=...``), checked to parse now so a
    pasted-wrong hash fails at start, not at the first sign-in."""
    if value is None:
        return None
    text = _str(value, where)
    if not text.startswith(("$argon2id$", "$argon2i$", "$argon2d$")):
        raise ConfigurationError(
            f"{where} must be an argon2 hash ($argon2id$...): make one with execauth serve --hash-password"
        )
    from argon2 import extract_parameters
    from argon2.exceptions import InvalidHashError

    try:
        extract_parameters(text)
    except (InvalidHashError, ValueError):
        raise ConfigurationError(f"{where} is not a well-formed argon2 hash") from None
    return text


@dataclass(frozen=True)
class ConsoleSettings:
    """The web console: session lifetimes and cookie settings.

    ``origin``: the console's public origin (``https://approvals.example.com``) when it
    is reached through a proxy; a POST whose ``Origin`` header names another origin is
    refused. ``secure_cookie``: ``None`` sets the cookie's ``Secure`` flag when the
    request came over https (or ``origin`` is https).
    """

    idle_timeout: int = 900
    max_age: int = 8 * 3600
    origin: str | None = None
    secure_cookie: bool | None = None


_CONSOLE_KEYS = {"idle_timeout", "max_age", "origin", "secure_cookie"}


def parse_console(data: Mapping[str, Any]) -> dict[str, Any]:
    """The ``console`` settings of a config document."""
    raw = data.get("console") or {}
    if not isinstance(raw, dict) or set(raw) - _CONSOLE_KEYS:
        raise ConfigurationError(f"console takes only {', '.join(sorted(_CONSOLE_KEYS))}")
    idle = _int(raw.get("idle_timeout", 900), "console.idle_timeout", 60, 86_400)
    max_age = _int(raw.get("max_age", 8 * 3600), "console.max_age", 60, 7 * 86_400)
    origin = raw.get("origin")
    if origin is not None:
        origin = _str(origin, "console.origin").rstrip("/")
        scheme, sep, rest = origin.partition("://")
        if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
            raise ConfigurationError("console.origin is scheme://host[:port], like https://approvals.example.com")
    secure = raw.get("secure_cookie")
    if secure is not None and not isinstance(secure, bool):
        raise ConfigurationError("console.secure_cookie must be true or false (or left out: automatic)")
    return {
        "console": ConsoleSettings(idle_timeout=idle, max_age=max(idle, max_age), origin=origin, secure_cookie=secure)
    }
