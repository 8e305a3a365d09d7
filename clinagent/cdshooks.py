"""CDS Hooks 2.0: service definitions (discovery with prefetch templates), requests, and cards from verdicts/reviews."""

from __future__ import annotations

import uuid
from typing import Any

from pydantic import BaseModel

SOURCE = {"label": "clinagent safety gates", "url": "https://w3id.org/clinagent"}
TOPIC_SYSTEM = "https://w3id.org/clinagent/gate-category"
OVERRIDE_SYSTEM = "https://w3id.org/clinagent/override-reason"
OVERRIDE_REASONS = [
    {
        "code": "benefit-outweighs-risk",
        "system": OVERRIDE_SYSTEM,
        "display": "Benefit outweighs the risk for this patient",
    },
    {"code": "patient-tolerated", "system": OVERRIDE_SYSTEM, "display": "Patient has tolerated this before"},
    {"code": "monitoring-planned", "system": OVERRIDE_SYSTEM, "display": "Will monitor (labs, levels, symptoms)"},
    {"code": "data-incorrect", "system": OVERRIDE_SYSTEM, "display": "The record is wrong or out of date"},
    {"code": "dose-intended", "system": OVERRIDE_SYSTEM, "display": "The dose is intended"},
]
INDICATOR = {"block": "critical", "warn": "warning"}

_PATIENT_PREFETCH = {
    "patient": "Patient/{{context.patientId}}",
    "medications": "MedicationRequest?patient={{context.patientId}}&status=active,on-hold",
    "allergies": "AllergyIntolerance?patient={{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "labs": "Observation?patient={{context.patientId}}&category=laboratory&_sort=-date&_count=200",
    "vitals": "Observation?patient={{context.patientId}}&category=vital-signs&_sort=-date&_count=100",
}
SERVICES: dict[str, dict] = {
    "clinagent-order-select": {
        "hook": "order-select",
        "title": "clinagent medication safety (order-select)",
        "description": "Screens draft medication orders with deterministic safety gates: allergy, interactions, dose, "
        "renal, age, pregnancy, conditions, labs, route, duplicates.",
        "prefetch": _PATIENT_PREFETCH,
        "usageRequirements": "Send draftOrders as a Bundle of MedicationRequest.",
    },
    "clinagent-order-sign": {
        "hook": "order-sign",
        "title": "clinagent medication safety (order-sign)",
        "description": "Screens medication orders about to be signed with deterministic safety gates.",
        "prefetch": _PATIENT_PREFETCH,
        "usageRequirements": "Send draftOrders as a Bundle of MedicationRequest.",
    },
    "clinagent-patient-view": {
        "hook": "patient-view",
        "title": "clinagent suggestions",
        "description": "Reviews the record and suggests guideline-based actions; every suggestion has passed the safety gates.",
        "prefetch": _PATIENT_PREFETCH,
    },
}


def discovery() -> dict:
    return {"services": [{"id": sid, **{k: v for k, v in s.items()}} for sid, s in SERVICES.items()]}


class FhirAuthorization(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int | None = None
    scope: str | None = None
    subject: str | None = None


class HookRequest(BaseModel):
    """A CDS Hooks request. Unknown fields are allowed (the spec lets hooks and clients add them)."""

    hook: str
    hookInstance: str  # noqa: N815 (the spec's name)
    fhirServer: str | None = None  # noqa: N815
    fhirAuthorization: FhirAuthorization | None = None  # noqa: N815
    context: dict[str, Any]
    prefetch: dict[str, Any] | None = None

    model_config = {"extra": "allow"}


def _short(text: str, limit: int = 140) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _evidence_md(evidence: list[dict]) -> str:
    lines = []
    for e in evidence:
        src = "; ".join(f"[{s['label']}]({s['url']})" if s.get("url") else s["label"] for s in e.get("sources", []))
        value = f": {e['value']}" if e.get("value") else ""
        lines.append(f"- `{e['reference']}`{value}" + (f" — source: {src}" if src else ""))
    return "\n".join(lines)


def order_cards(order_ref: str, order_name: str, verdict: dict) -> list[dict]:
    """One card per finding worth showing (block -> critical, warn -> warning) for one draft order."""
    cards = []
    for f in verdict["findings"]:
        if f["severity"] not in INDICATOR:
            continue
        blocked = f["severity"] == "block"
        card = {
            "uuid": str(uuid.uuid4()),
            "summary": _short(f"{'Blocked' if blocked else 'Caution'}: {order_name} — {f['message']}"),
            "indicator": INDICATOR[f["severity"]],
            "detail": (
                f"**{f['category']}** ({f['severity']}): {f['message']}\n\n**Evidence**\n\n"
                f"{_evidence_md(f['evidence'])}\n\nRule `{f['rule_id']}`; knowledge version "
                f"`{verdict['knowledge_version'][:12]}`."
            ),
            "source": {**SOURCE, "topic": {"system": TOPIC_SYSTEM, "code": f["category"], "display": f["category"]}},
            "overrideReasons": OVERRIDE_REASONS,
        }
        if blocked and order_ref:
            card["selectionBehavior"] = "at-most-one"
            card["suggestions"] = [
                {
                    "label": _short(f"Remove the order for {order_name}", 80),
                    "uuid": str(uuid.uuid4()),
                    "isRecommended": True,
                    "actions": [
                        {
                            "type": "delete",
                            "description": "Remove the draft order the safety gates blocked.",
                            "resourceId": [order_ref],
                        }
                    ],
                }
            ]
        cards.append(card)
    return cards


def review_cards(review: dict) -> list[dict]:
    """patient-view: one card per shown suggestion, with a `create` action carrying the draft proposal."""
    cards = []
    for s in review["shown"]:
        warns = [f for f in s["findings"] if f["severity"] == "warn"]
        cites = "\n".join(f"- `{c['reference']}`: {c['value']}" for c in s["cites"])
        warn_md = "\n".join(f"- **{f['category']}**: {f['message']}" for f in warns)
        detail = (
            f"{s['rationale']}\n\n**Based on**\n\n{cites}\n\n"
            + (f"**Warnings to acknowledge**\n\n{warn_md}\n\n" if warns else "")
            + f"Suggested by {review['model']} ({review['model_kind']}); run `{review['run_id']}`; knowledge "
            f"`{review['knowledge_version'][:12]}`."
        )
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "summary": _short(s["title"]),
                "indicator": "warning" if warns else "info",
                "detail": detail,
                "source": {**SOURCE, "topic": {"system": TOPIC_SYSTEM, "code": "suggestion", "display": "suggestion"}},
                "selectionBehavior": "at-most-one",
                "suggestions": [
                    {
                        "label": _short(s["title"], 80),
                        "uuid": str(uuid.uuid4()),
                        "isRecommended": not warns,
                        "actions": [{"type": "create", "description": _short(s["title"]), "resource": s["resource"]}],
                    }
                ],
                "overrideReasons": OVERRIDE_REASONS,
            }
        )
    if review["blocked"]:
        names = "\n".join(
            f"- {b['title']}: " + "; ".join(f["message"] for f in b["findings"] if f["severity"] == "block")
            for b in review["blocked"]
        )
        cards.append(
            {
                "uuid": str(uuid.uuid4()),
                "indicator": "info",
                "summary": _short(
                    f"{len(review['blocked'])} proposal(s) were blocked by the safety gates (not actionable)"
                ),
                "detail": f"Shown for transparency only:\n\n{names}",
                "source": {**SOURCE, "topic": {"system": TOPIC_SYSTEM, "code": "blocked", "display": "blocked"}},
            }
        )
    if review.get("notice"):
        cards.append(
            {"uuid": str(uuid.uuid4()), "indicator": "info", "summary": _short(review["notice"]), "source": {**SOURCE}}
        )
    return cards


def operation_outcome(message: str, code: str = "exception", expression: str | None = None) -> dict:
    issue: dict[str, Any] = {"severity": "error", "code": code, "diagnostics": message}
    if expression:
        issue["expression"] = [expression]
    return {"resourceType": "OperationOutcome", "issue": [issue]}
