"""What a review run carries: the deps its tools and validator read, and each proposal after the gates."""

from __future__ import annotations

from dataclasses import dataclass, field

from guardrails import Finding, PatientFacts, Verdict
from guardrails.knowledge import Knowledge

from .outputs import Proposal
from .record import PatientRecord


@dataclass
class Screened:
    """One proposal after the gates: the FHIR resource it became, the verdict, what it cites."""

    proposal: Proposal
    resource: dict
    findings: tuple[Finding, ...]
    allowed: bool
    cited: list[dict]
    verdict: Verdict | None = None
    attempt: int = 0

    @property
    def title(self) -> str:
        from .agent import describe_proposal

        return describe_proposal(self.proposal)


@dataclass
class ReviewDeps:
    """What the agent's tools and validator read: one patient's record and facts, and the knowledge."""

    record: PatientRecord
    facts: PatientFacts
    kb: Knowledge
    attempts: list[list[Screened]] = field(default_factory=list)
