"""A review: one agent run over one patient, every suggestion with its provenance, exportable as FHIR R4."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime

from pydantic import BaseModel, Field

from .agent import ReviewDeps, Screened, get_agent
from .models import choose_model
from .record import PatientRecord, Staleness

SEVERITY_FHIR = {"block": "high", "warn": "moderate", "info": "low"}
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# v3 ActCode detected-issue codes per gate category (DRG and DUPTHPY as in the FHIR R4 DetectedIssue examples)
ISSUE_CODE = {
    "drug-allergy": ("ALGY", "Allergy Alert"),
    "drug-drug": ("DRG", "Drug Interaction Alert"),
    "duplicate-therapy": ("DUPTHPY", "Duplicate Therapy Alert"),
    "dose-single": ("DOSEH", "High Dose Alert"),
    "dose-daily": ("DOSEH", "High Dose Alert"),
    "drug-renal": ("DOSECOND", "dosage-condition alert"),
    "drug-age": ("AGE", "Age Alert"),
    "drug-diagnosis": ("COND", "Condition Alert"),
    "drug-pregnancy": ("COND", "Condition Alert"),
    "drug-lab": ("COND", "Condition Alert"),
    "drug-route": ("DOSE", "Dosage problem"),
    "unverifiable": ("DACT", "drug action detected issue"),
}
REQUEST_LIMIT = 8


class SuggestionOut(BaseModel):
    id: str
    kind: str
    title: str
    status: str  # shown | blocked | withheld
    attempt: int
    rationale: str
    proposal: dict
    findings: list[dict]
    rules_evaluated: list[str]
    facts_consulted: list[dict]
    cites: list[dict]
    resource: dict
    provenance: dict = Field(default_factory=dict)  # model, run, knowledge version, message-history hash, as of


class Review(BaseModel):
    """The contract of `clinagent review --json`."""

    run_id: str
    patient: str
    as_of: str
    model: str
    model_kind: str
    knowledge_version: str
    started_at: str
    notice: str = ""
    summary: str = ""
    shown: list[SuggestionOut] = Field(default_factory=list)
    blocked: list[SuggestionOut] = Field(default_factory=list)
    withheld: list[SuggestionOut] = Field(default_factory=list)
    stale_data: list[dict] = Field(default_factory=list)
    usage: dict = Field(default_factory=dict)
    message_history_sha256: str = ""
    error: str = ""
    message_history: list = Field(default_factory=list, exclude=True)  # the full run, for audit (not in --json)


def _suggestion(s: Screened, status: str) -> SuggestionOut:
    v = s.verdict
    return SuggestionOut(
        id=s.resource["id"],
        kind=s.proposal.kind,
        title=s.title,
        status=status,
        attempt=s.attempt,
        rationale=s.proposal.rationale,
        proposal=s.proposal.model_dump(mode="json"),
        findings=[f.as_dict() for f in s.findings],
        rules_evaluated=list(v.rules_evaluated) if v else ["grounding.cites"],
        facts_consulted=[e.as_dict() for e in v.facts_consulted] if v else [],
        cites=s.cited,
        resource=s.resource,
    )


def _stale(facts, cited_refs: set[str]) -> list[dict]:
    out = []
    for label, m in (("weight", facts.weight), ("eGFR", facts.egfr), ("CrCl", facts.crcl)):
        if m is not None and m.stale:
            out.append({"fact": label, "reference": m.ref, "date": m.when.isoformat() if m.when else None})
    for code, m in facts.labs.items():
        if m.stale and m.ref in cited_refs:
            out.append({"fact": f"LOINC {code}", "reference": m.ref, "date": m.when.isoformat() if m.when else None})
    return out


def run_review(
    record: PatientRecord,
    *,
    model: str | None = None,
    as_of: date | None = None,
    staleness: Staleness = Staleness(),  # noqa: B008 (frozen)
    retries: int = 2,
    kb=None,
) -> Review:
    """Run the agent over one patient, gate everything it proposes, and report what is shown and blocked."""
    from pydantic_ai import UsageLimits, capture_run_messages
    from pydantic_ai.exceptions import AgentRunError
    from pydantic_ai.messages import ModelMessagesTypeAdapter

    from guardrails import load_knowledge

    kb = kb or load_knowledge()
    facts = record.facts(as_of, staleness)
    choice = choose_model(model)
    review = Review(
        run_id=str(uuid.uuid4()),
        patient=record.patient_ref,
        as_of=facts.as_of.isoformat(),
        model=choice.name,
        model_kind=choice.kind,
        knowledge_version=kb.version,
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    if facts.deceased:
        review.notice = (
            f"The patient is recorded as deceased (as of {facts.as_of.isoformat()}): no suggestions are made."
        )
        return review
    deps = ReviewDeps(record, facts, kb)
    limits = UsageLimits(request_limit=REQUEST_LIMIT, tool_calls_limit=40, total_tokens_limit=400_000)
    prompt = (
        f"Review the record of patient {record.patient_ref} as of {facts.as_of.isoformat()} and propose "
        "what the clinician should consider."
    )
    result = None
    with capture_run_messages() as messages:
        try:
            result = get_agent().run_sync(
                prompt, deps=deps, model=choice.model, usage_limits=limits, retries={"output": retries, "tools": 1}
            )
        except AgentRunError as e:
            review.error = f"{type(e).__name__}: {e}"
    all_messages = list(result.all_messages() if result else messages)
    history = ModelMessagesTypeAdapter.dump_json(all_messages)
    review.message_history_sha256 = hashlib.sha256(history).hexdigest()
    review.message_history = all_messages
    if result is not None:
        review.run_id = result.run_id or review.run_id
        review.summary = result.output.summary
        u = result.usage
        review.usage = {
            "requests": u.requests,
            "input_tokens": u.input_tokens,
            "output_tokens": u.output_tokens,
            "tool_calls": u.tool_calls,
            "output_attempts": len(deps.attempts),
        }
    final = deps.attempts[-1] if deps.attempts else []
    for attempt in deps.attempts[:-1]:
        review.blocked += [_suggestion(s, "blocked") for s in attempt if not s.allowed]
    for s in final:
        if not s.allowed:
            review.blocked.append(_suggestion(s, "blocked"))
        elif result is None:  # the run did not finish: nothing is shown as actionable
            review.withheld.append(_suggestion(s, "withheld"))
        else:
            review.shown.append(_suggestion(s, "shown"))
    cited = {c["reference"] for s in final for c in s.cited}
    review.stale_data = _stale(facts, cited)
    stamp = {
        "model": review.model,
        "model_kind": review.model_kind,
        "run_id": review.run_id,
        "knowledge_version": review.knowledge_version,
        "message_history_sha256": review.message_history_sha256,
        "as_of": review.as_of,
    }
    for s in review.shown + review.blocked + review.withheld:
        s.provenance = stamp
    return review


# ---- FHIR export ---------------------------------------------------------------------------------------------


def to_fhir(review: Review) -> dict:
    """The review as a FHIR R4 collection Bundle: proposals (MedicationRequest/ServiceRequest, status draft and
    intent proposal; blocked ones cancelled), one DetectedIssue per finding, and a Provenance for all of it."""
    entries: list[dict] = []
    targets: list[dict] = []
    sources: dict[str, None] = {}
    for s in review.shown + review.blocked:
        res = dict(s.resource)
        if s.status == "blocked":
            res["status"] = "revoked" if res["resourceType"] == "ServiceRequest" else "cancelled"
            res["statusReason"] = {"text": "Blocked by the clinagent safety gates; never actionable."}
        ref = f"urn:uuid:{res['id']}"  # resolves to the entry's fullUrl inside the Bundle
        entries.append({"fullUrl": f"urn:uuid:{res['id']}", "resource": res})
        targets.append({"reference": ref})
        for c in s.cites:
            sources[c["reference"]] = None
        for i, f in enumerate(s.findings):
            code, display = ISSUE_CODE.get(f["category"], ("DACT", "drug action detected issue"))
            issue = {
                "resourceType": "DetectedIssue",
                "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{res['id']}/issue/{i}")),
                "status": "final",
                "code": {"coding": [{"system": ACT_CODE, "code": code, "display": display}], "text": f["category"]},
                "severity": SEVERITY_FHIR[f["severity"]],
                "patient": {"reference": review.patient},
                "implicated": [{"reference": ref}],
                "detail": f["message"],
                "reference": f"https://w3id.org/clinagent/rules/{f['rule_id']}",
                "evidence": [
                    {"detail": [{"reference": e["reference"]}]}
                    for e in f["evidence"]
                    if e["type"] == "fhir" and "/" in e["reference"]
                ],
            }
            if not issue["evidence"]:
                del issue["evidence"]
            entries.append({"fullUrl": f"urn:uuid:{issue['id']}", "resource": issue})
            targets.append({"reference": f"urn:uuid:{issue['id']}"})
    if targets:
        prov = {
            "resourceType": "Provenance",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"provenance/{review.run_id}")),
            "target": targets,
            "recorded": review.started_at,
            "reason": [{"text": "Decision support suggestion screened by deterministic safety gates"}],
            "agent": [
                {
                    "type": {
                        "coding": [
                            {
                                "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
                                "code": "assembler",
                                "display": "Assembler",
                            }
                        ]
                    },
                    "who": {
                        "display": f"clinagent with {review.model} ({review.model_kind}); knowledge "
                        f"{review.knowledge_version[:12]}; run {review.run_id}"
                    },
                }
            ],
            "entity": [{"role": "source", "what": {"reference": r}} for r in sources],
            "policy": [f"https://w3id.org/clinagent/knowledge/{review.knowledge_version}"],
        }
        if not prov["entity"]:
            del prov["entity"]
        entries.append({"fullUrl": f"urn:uuid:{prov['id']}", "resource": prov})
    return {"resourceType": "Bundle", "type": "collection", "timestamp": review.started_at, "entry": entries}
