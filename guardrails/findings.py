"""Findings and verdicts: the values the gate returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["block", "warn", "info"]

#: The categories of DESIGN.md's gate policy table (after the Leapfrog CPOE test), in display order.
CATEGORIES: tuple[str, ...] = (
    "unverifiable",
    "drug-allergy",
    "drug-drug",
    "dose-single",
    "dose-daily",
    "drug-renal",
    "drug-age",
    "drug-diagnosis",
    "drug-pregnancy",
    "drug-lab",
    "drug-route",
    "duplicate-therapy",
)
_SEVERITY_RANK = {"block": 0, "warn": 1, "info": 2}


@dataclass(frozen=True, slots=True)
class Evidence:
    """One thing a finding relies on: a FHIR resource (with the value read) or an ontology fact (with its sources)."""

    kind: Literal["fhir", "ontology", "order"]
    ref: str
    value: str = ""
    sources: tuple[tuple[str, str], ...] = ()  # (label, url) for ontology facts

    def as_dict(self) -> dict:
        d: dict = {"type": self.kind, "reference": self.ref}
        if self.value:
            d["value"] = self.value
        if self.sources:
            d["sources"] = [{"label": label, "url": url} for label, url in self.sources]
        return d


@dataclass(frozen=True, slots=True)
class Finding:
    """One result of one rule. ``rule_id`` is stamped by the engine from the registry."""

    category: str
    severity: Severity
    message: str
    evidence: tuple[Evidence, ...] = ()
    path: str = ""  # FHIRPath into the order, when the finding is about one field
    rule_id: str = ""

    def as_dict(self) -> dict:
        d = {
            "rule_id": self.rule_id,
            "category": self.category,
            "severity": self.severity,
            "message": self.message,
            "evidence": [e.as_dict() for e in self.evidence],
        }
        if self.path:
            d["path"] = self.path
        return d


def rank(findings: list[Finding]) -> list[Finding]:
    """Order findings for display: blocks first, then warnings, then info; by category within each."""
    order = {c: i for i, c in enumerate(CATEGORIES)}
    return sorted(findings, key=lambda f: (_SEVERITY_RANK[f.severity], order.get(f.category, 99)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """The gate's decision for one order: allowed unless any finding blocks."""

    allowed: bool
    findings: tuple[Finding, ...]
    knowledge_version: str
    order_ref: str = ""
    rules_evaluated: tuple[str, ...] = field(default=())
    facts_consulted: tuple[Evidence, ...] = field(default=())  # ontology facts applied, whether or not they fired

    @property
    def blocked(self) -> bool:
        return not self.allowed

    def as_dict(self) -> dict:
        return {
            "allowed": self.allowed,
            "findings": [f.as_dict() for f in self.findings],
            "knowledge_version": self.knowledge_version,
            "order": self.order_ref,
            "rules_evaluated": list(self.rules_evaluated),
            "facts_consulted": [e.as_dict() for e in self.facts_consulted],
        }
