"""Tool manifests: what a tool is, what its arguments look like, what it does.

Registering a tool without declared effects, with an unknown effect type, with an
invalid JSON Schema, or naming an amount/currency/target argument the schema does
not have fails with :class:`~execauth_core.errors.ConfigurationError`. A manifest is
pinned by its digest: a proposal that carries a different ``manifest_digest`` is
denied (MANIFEST_PIN_MISMATCH).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from .effects import EFFECTS, EvidenceGrade
from .errors import ConfigurationError
from .messages import Name, _Wire


class ToolManifest(_Wire):
    """A tool's contract (v1)."""

    v: Literal["execauth.tool_manifest/1"] = "execauth.tool_manifest/1"
    name: Name = Field(description="The tool name agents call.")
    version: Name = Field(description="The tool's version; part of the pinned digest.")
    description: str = Field(default="", max_length=2000)
    args_schema: dict[str, Any] = Field(description="JSON Schema (2020-12) of the arguments object.")
    effects: tuple[Name, ...] = Field(min_length=1, description="Declared effect types (see effects.py).")
    amount_arg: Name | None = Field(default=None, description="Argument carrying a money amount (decimal string).")
    currency_arg: Name | None = Field(default=None, description="Argument carrying the ISO 4217 currency code.")
    currency: Name | None = Field(default=None, description="Fixed currency when there is no currency argument.")
    target_arg: Name | None = Field(default=None, description="Argument naming the counterparty or resource.")

    @field_validator("effects")
    @classmethod
    def _known_effects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [e for e in value if e not in EFFECTS]
        if unknown:
            raise ValueError(f"unknown effect types {unknown}; known: {sorted(EFFECTS)}")
        if len(set(value)) != len(value):
            raise ValueError("effects listed twice")
        return value


@dataclass(frozen=True)
class PreflightResult:
    """What a preflight simulation concluded.

    Attributes:
        ok: False denies the call (PREFLIGHT_FAILED).
        grade: the strength of the evidence the preflight produced.
        detail: a short human-readable note, recorded in the decision.
    """

    ok: bool
    grade: EvidenceGrade = EvidenceGrade.SELF_REPORTED
    detail: str = ""


Preflight = Callable[[Mapping[str, Any]], PreflightResult]


@dataclass(frozen=True)
class RegisteredTool:
    manifest: ToolManifest
    digest: str
    validator: Any  # jsonschema validator
    preflight: Preflight | None


class ToolRegistry:
    """The tools the Court knows, by name, each pinned by its manifest digest."""

    def __init__(self, manifests: Iterable[ToolManifest | Mapping[str, Any]] = ()) -> None:
        self._tools: dict[str, RegisteredTool] = {}
        for m in manifests:
            self.register(m)

    def register(self, manifest: ToolManifest | Mapping[str, Any], *, preflight: Preflight | None = None) -> str:
        """Register a tool; returns its manifest digest.

        Raises:
            ConfigurationError: the manifest is invalid (see module docstring).
        """
        import jsonschema  # deferred: ~80 ms to import, only needed by the Court

        if not isinstance(manifest, ToolManifest):
            try:
                manifest = ToolManifest.model_validate(manifest)
            except ValidationError as exc:
                raise ConfigurationError(f"invalid tool manifest: {_first_error(exc)}") from exc
        if manifest.name in self._tools:
            raise ConfigurationError(f"tool {manifest.name!r} is registered twice")
        try:
            jsonschema.Draft202012Validator.check_schema(manifest.args_schema)
        except jsonschema.SchemaError as exc:
            raise ConfigurationError(f"tool {manifest.name!r}: invalid args_schema: {exc.message}") from exc
        if manifest.args_schema.get("type") != "object":
            raise ConfigurationError(f"tool {manifest.name!r}: args_schema must describe an object")
        props = manifest.args_schema.get("properties", {})
        for role in ("amount_arg", "currency_arg", "target_arg"):
            arg = getattr(manifest, role)
            if arg is not None and arg not in props:
                raise ConfigurationError(f"tool {manifest.name!r}: {role} {arg!r} is not in args_schema.properties")
        if manifest.amount_arg and not (manifest.currency_arg or manifest.currency):
            raise ConfigurationError(f"tool {manifest.name!r}: an amount needs currency_arg or currency")
        if manifest.currency_arg and manifest.currency:
            raise ConfigurationError(f"tool {manifest.name!r}: give currency_arg or a fixed currency, not both")
        if preflight is not None and not callable(preflight):
            raise ConfigurationError(f"tool {manifest.name!r}: preflight must be callable")
        digest = manifest.content_digest()
        self._tools[manifest.name] = RegisteredTool(
            manifest, digest, jsonschema.Draft202012Validator(manifest.args_schema), preflight
        )
        return digest

    def get(self, name: str) -> RegisteredTool | None:
        return self._tools.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def digest(self) -> str:
        """Digest over every registered manifest digest (part of the Court's identity)."""
        from .canonical import digest

        return digest({name: tool.digest for name, tool in sorted(self._tools.items())})


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err["loc"]) or "(root)"
    return f"{loc}: {err['msg']}"


def load_registry(path: str) -> ToolRegistry:
    """Read manifests from a JSON or YAML file holding a list of ToolManifest objects.

    Preflight callables are code, not data: register them with
    :meth:`ToolRegistry.register` in Python.
    """
    from pathlib import Path

    from .canonical import CanonicalizationError, loads_strict
    from .policyfile import _load_yaml

    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from exc
    try:
        data = loads_strict(raw) if str(path).endswith(".json") else _load_yaml(raw)
    except (CanonicalizationError, ValueError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
    if not isinstance(data, list):
        raise ConfigurationError(f"{path}: a manifests file is a list of tool manifests")
    try:
        return ToolRegistry(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from exc
