"""The declarative policy file (YAML or JSON), validated by pydantic.

Unknown keys are rejected, comparisons are typed at load time (money is a decimal
string in a declared currency, tiers are E0-E4, effects come from the taxonomy), and
a policy that names tools the registry does not know fails when the Court is built.
An empty policy (no principals) denies everything.

See ``docs/court.md`` for the format with an example.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .canonical import CanonicalizationError, digest, loads_strict
from .effects import EFFECTS, RiskTier
from .errors import ConfigurationError
from .messages import PolicyRef
from .money import format_amount, is_currency, parse_amount

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DecimalString = StrictStr
SName = Annotated[StrictStr, StringConstraints(min_length=1, max_length=256)]


class _Strict(BaseModel):
    # Not strict=True: that would refuse YAML lists for tuple fields. Scalars are
    # typed strictly one by one instead (no "5" -> 5, no "yes" -> True coercion).
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Budget(_Strict):
    """Spend at most ``limit`` of ``currency`` per fixed ``window`` (seconds)."""

    currency: StrictStr
    limit: DecimalString
    window: StrictInt = Field(ge=60, le=31 * 86400)


class RateLimit(_Strict):
    """At most ``limit`` calls of ``tool`` (``"*"``: any tool) per ``window`` seconds."""

    tool: SName = "*"
    limit: StrictInt = Field(ge=1, le=10**9)
    window: StrictInt = Field(ge=1, le=31 * 86400)


class TimeWindow(_Strict):
    """Calls allowed on ``days`` between ``start`` and ``end`` (``HH:MM``, UTC, end exclusive)."""

    days: tuple[Weekday, ...] = WEEKDAYS
    start: StrictStr = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: StrictStr = Field(pattern=r"^([01][0-9]|2[0-4]):[0-5][0-9]$")

    @model_validator(mode="after")
    def _ordered(self) -> TimeWindow:
        if self.minutes(self.start) >= self.minutes(self.end) or self.minutes(self.end) > 1440:
            raise ValueError("a time window needs start < end within one day (UTC)")
        return self

    @staticmethod
    def minutes(hhmm: str) -> int:
        h, m = hhmm.split(":")
        return int(h) * 60 + int(m)

    def contains(self, now: int) -> bool:
        day = WEEKDAYS[(now // 86400 + 3) % 7]  # 1970-01-01 was a Thursday
        minute = (now % 86400) // 60
        return day in self.days and self.minutes(self.start) <= minute < self.minutes(self.end)


class PrincipalPolicy(_Strict):
    """The ceilings of one principal (a user, tenant or service on whose behalf agents act)."""

    id: SName
    agents: tuple[SName, ...] = Field(default=(), description="Agents that may act for it; empty: any.")
    allow_tools: tuple[SName, ...] = ()
    allow_effects: tuple[SName, ...] = Field(default=(), description="If set, every effect of the tool must be listed.")
    max_risk_tier: RiskTier = RiskTier.E0
    amount_ceilings: dict[StrictStr, DecimalString] = Field(default_factory=dict, description="Per call, by currency.")
    budgets: tuple[Budget, ...] = ()
    rate_limits: tuple[RateLimit, ...] = ()
    time_windows: tuple[TimeWindow, ...] = ()
    require_approval_effects: tuple[SName, ...] = ()
    require_approval_above: dict[StrictStr, DecimalString] = Field(default_factory=dict)
    require_evidence_effects: tuple[SName, ...] = ()

    @field_validator("max_risk_tier", mode="before")
    @classmethod
    def _tier(cls, value: Any) -> Any:
        return RiskTier(value) if isinstance(value, str) else value


class Invariants(_Strict):
    """Policy-wide rules that hold for every principal."""

    approval_at_or_above_tier: RiskTier | None = Field(
        default=RiskTier.E4, description="Effects at or above this tier always need approval."
    )
    forbidden_effects: tuple[SName, ...] = ()
    require_manifest_pin: StrictBool = False

    @field_validator("approval_at_or_above_tier", mode="before")
    @classmethod
    def _tier(cls, value: Any) -> Any:
        return RiskTier(value) if isinstance(value, str) else value


class PolicyDocument(_Strict):
    """A whole policy (v1)."""

    v: Literal["execauth.policy/1"] = "execauth.policy/1"
    id: SName
    epoch: StrictInt = Field(ge=0)
    mode: Literal["enforce", "shadow"] = "enforce"
    kill_switch: StrictBool = False
    currencies: dict[StrictStr, StrictInt] = Field(default_factory=lambda: {"USD": 2, "EUR": 2, "GBP": 2, "JPY": 0})
    invariants: Invariants = Field(default_factory=Invariants)
    principals: tuple[PrincipalPolicy, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> PolicyDocument:
        for code, exp in self.currencies.items():
            if not is_currency(code) or not 0 <= exp <= 9:
                raise ValueError(f"currency {code!r}: need a 3-letter code and 0..9 minor digits")
        for name in self.invariants.forbidden_effects:
            _known_effect(name, "invariants.forbidden_effects")
        seen: set[str] = set()
        for p in self.principals:
            where = f"principal {p.id!r}"
            if p.id in seen:
                raise ValueError(f"{where} is defined twice")
            seen.add(p.id)
            for field in ("allow_effects", "require_approval_effects", "require_evidence_effects"):
                for name in getattr(p, field):
                    _known_effect(name, f"{where}.{field}")
            for field in ("amount_ceilings", "require_approval_above"):
                for code, amount in getattr(p, field).items():
                    self.minor(code, amount, f"{where}.{field}")
            for b in p.budgets:
                self.minor(b.currency, b.limit, f"{where}.budgets")
        return self

    def minor(self, currency: str, amount: str, where: str = "amount") -> int:
        if currency not in self.currencies:
            raise ValueError(f"{where}: currency {currency!r} is not declared in currencies")
        try:
            return parse_amount(amount, self.currencies[currency])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def show(self, currency: str, minor: int) -> str:
        return f"{format_amount(minor, self.currencies[currency])} {currency}"

    def principal(self, principal_id: str) -> PrincipalPolicy | None:
        for p in self.principals:
            if p.id == principal_id:
                return p
        return None

    def ref(self) -> PolicyRef:
        return PolicyRef(id=self.id, epoch=self.epoch, digest=digest(self.model_dump(mode="json")))

    def rule_count(self) -> int:
        """How many individual rules the policy states (for benchmarks and `policy check`)."""
        n = int(self.kill_switch) + len(self.invariants.forbidden_effects) + 1
        for p in self.principals:
            n += len(p.agents) + len(p.allow_tools) + len(p.allow_effects) + 1 + len(p.amount_ceilings)
            n += len(p.budgets) + len(p.rate_limits) + len(p.time_windows) + len(p.require_approval_effects)
            n += len(p.require_approval_above) + len(p.require_evidence_effects)
        return n


def _known_effect(name: str, where: str) -> None:
    if name not in EFFECTS:
        raise ValueError(f"{where}: unknown effect type {name!r}")


def parse_policy(data: Any) -> PolicyDocument:
    """Validate a parsed policy document.

    Raises:
        ConfigurationError: with the first problem and where it is.
    """
    if data is None or data == {}:
        raise ConfigurationError("the policy is empty; an empty policy would deny everything")
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(root)"
        raise ConfigurationError(f"policy invalid at {loc}: {err['msg']}") from exc


def load_policy(path: str | os.PathLike[str]) -> PolicyDocument:
    """Read a policy file: ``.json`` through the strict JSON reader, anything else as YAML
    (safe loader, duplicate keys refused)."""
    name = os.fspath(path)
    try:
        raw = Path(name).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigurationError(f"{name}: no such file") from exc
    except OSError as exc:
        raise ConfigurationError(f"{name}: cannot read: {exc.strerror}") from exc
    try:
        data = loads_strict(raw) if name.endswith(".json") else _load_yaml(raw)
    except (CanonicalizationError, ValueError) as exc:
        raise ConfigurationError(f"{name}: {exc}") from exc
    try:
        return parse_policy(data)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{name}: {exc}") from exc


def _load_yaml(raw: bytes) -> Any:
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently)."""

    def mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                raise ValueError(f"duplicate key {key!r} (line {key_node.start_mark.line + 1})")
            result[key] = loader.construct_object(value_node, deep=True)
        return result

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    try:
        return yaml.load(raw.decode("utf-8"), Loader=StrictLoader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as exc:
        raise ValueError(f"invalid YAML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ValueError("not UTF-8") from exc
