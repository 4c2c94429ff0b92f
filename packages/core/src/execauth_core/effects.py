"""The effect taxonomy: what a tool call can do to the world.

23 canonical effect types. Each carries a risk tier (E0 harmless ... E4 severe),
whether it can be undone, how far it reaches, whether a preflight simulation is
required before it may run, and the minimum grade of evidence that preflight must
produce. A tool declares its effects in its :class:`~execauth_core.manifest.ToolManifest`;
the Court reasons about effects, not tool names.

The table is rendered in ``docs/court.md``; a test keeps the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class RiskTier(str, Enum):
    E0 = "E0"
    """No side effect outside the agent (reads of non-sensitive data)."""
    E1 = "E1"
    """Small, contained, easily undone."""
    E2 = "E2"
    """Visible to others or costly to undo."""
    E3 = "E3"
    """Destructive, external or sensitive."""
    E4 = "E4"
    """Severe: money leaves, production changes, privileges change."""

    @property
    def rank(self) -> int:
        return int(self.value[1])


class Reversibility(str, Enum):
    REVERSIBLE = "reversible"
    """Can be undone exactly."""
    COMPENSABLE = "compensable"
    """Cannot be undone, but a compensating action exists (refund, rollback)."""
    IRREVERSIBLE = "irreversible"
    """Once done, done."""


class BlastRadius(str, Enum):
    SELF = "self"
    """Only the agent's own workspace."""
    SINGLE = "single"
    """One record, file or counterparty."""
    TEAM = "team"
    """A team or a shared resource."""
    ORG = "org"
    """The whole organisation's systems."""
    PUBLIC = "public"
    """Anyone outside."""


class EvidenceGrade(str, Enum):
    NONE = "none"
    SELF_REPORTED = "self_reported"
    """The tool's own preflight says it is fine."""
    SIMULATED = "simulated"
    """A dry run against the real system succeeded."""
    VERIFIED = "verified"
    """An independent system confirmed the outcome in advance."""

    @property
    def rank(self) -> int:
        return _GRADES.index(self)


_GRADES = list(EvidenceGrade)


@dataclass(frozen=True)
class EffectSpec:
    """The properties of one effect type."""

    name: str
    tier: RiskTier
    reversibility: Reversibility
    blast_radius: BlastRadius
    preflight_required: bool
    min_evidence: EvidenceGrade
    description: str


def _e(name: str, tier: str, rev: str, blast: str, preflight: bool, evidence: str, description: str) -> EffectSpec:
    return EffectSpec(
        name, RiskTier(tier), Reversibility(rev), BlastRadius(blast), preflight, EvidenceGrade(evidence), description
    )


EFFECTS: dict[str, EffectSpec] = {
    spec.name: spec
    for spec in [
        # data
        _e("data.read", "E0", "reversible", "self", False, "none", "Read records from a data store."),
        _e("data.write", "E2", "compensable", "single", False, "none", "Create or update records."),
        _e("data.delete", "E3", "irreversible", "team", True, "simulated", "Delete records or tables."),
        # files
        _e("file.read", "E0", "reversible", "self", False, "none", "Read files."),
        _e("file.write", "E1", "reversible", "single", False, "none", "Create or overwrite files."),
        _e("file.delete", "E3", "irreversible", "single", True, "self_reported", "Delete files."),
        # agent-side
        _e("memory.write", "E1", "reversible", "self", False, "none", "Write to the agent's long-term memory."),
        _e(
            "network.fetch", "E1", "reversible", "self", False, "none", "Fetch from the network (exfiltration channel)."
        ),
        _e("credential.access", "E3", "irreversible", "org", False, "none", "Read secrets, keys or tokens."),
        # money
        _e("payment.transfer", "E4", "irreversible", "single", True, "simulated", "Send money to a counterparty."),
        _e("payment.refund", "E3", "compensable", "single", True, "self_reported", "Refund money to a customer."),
        _e("commerce.purchase", "E3", "compensable", "single", True, "self_reported", "Buy goods or services."),
        # communication
        _e("message.email", "E2", "irreversible", "single", False, "none", "Send an email."),
        _e("message.chat", "E1", "irreversible", "team", False, "none", "Post in a chat channel."),
        _e("message.public_post", "E3", "irreversible", "public", False, "none", "Publish to the public."),
        # infrastructure
        _e("infra.provision", "E2", "reversible", "org", True, "self_reported", "Create machines or services."),
        _e("infra.deprovision", "E4", "irreversible", "org", True, "simulated", "Destroy machines or services."),
        _e("infra.config_change", "E3", "compensable", "org", True, "simulated", "Change infrastructure settings."),
        _e("code.execute", "E3", "irreversible", "self", False, "none", "Run code the agent wrote."),
        _e("code.deploy", "E4", "compensable", "public", True, "simulated", "Deploy to production."),
        # identity
        _e("identity.create", "E2", "reversible", "org", False, "none", "Create users or service accounts."),
        _e("permission.change", "E4", "compensable", "org", True, "verified", "Grant or revoke privileges."),
        # UI
        _e("ui.interact", "E2", "irreversible", "single", False, "none", "Click or type in a user interface."),
    ]
}

assert len(EFFECTS) == 23


def effect(name: str) -> EffectSpec:
    """The spec of an effect type.

    Raises:
        KeyError: unknown effect type.
    """
    return EFFECTS[name]
