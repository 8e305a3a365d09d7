"""The agent's tools: read-only views of ONE patient's record and of the knowledge base, plus a gate dry run.

Each returns structured facts (with the FHIR reference and date of every value) built from the record the
review was started with; none takes a patient id, so a tool cannot reach another patient. Docstrings are
written for the model.
"""

from __future__ import annotations

from dataclasses import replace

from pydantic import BaseModel
from pydantic_ai import RunContext

from guardrails.sources import Measured, display_name

from .deps import ReviewDeps
from .outputs import StartMedication


class Value(BaseModel):
    value: float
    unit: str
    date: str | None
    reference: str
    stale: bool
    method: str = ""


def _value(m: Measured | None) -> Value | None:
    if m is None:
        return None
    return Value(
        value=round(m.value, 2),
        unit=m.unit,
        date=m.when.isoformat() if m.when else None,
        reference=m.ref,
        stale=m.stale,
        method=m.method,
    )


class PatientSummary(BaseModel):
    reference: str
    as_of: str
    age_years: float | None
    sex: str | None
    deceased: bool
    weight_kg: Value | None
    egfr: Value | None
    crcl: Value | None
    creatinine_mg_dl: Value | None
    pregnant: str | None  # the reference that says so


class AllergyItem(BaseModel):
    reference: str
    substance: str
    codes: list[str]
    criticality: str


class MedicationItem(BaseModel):
    reference: str
    drug: str
    rxnorm: str | None
    ingredients: list[str]
    status: str
    dosage: str


class ConditionItem(BaseModel):
    reference: str
    snomed: str
    display: str
    onset: str | None


class LabItem(BaseModel):
    loinc: str
    latest: Value
    previous: list[Value]


class DrugInfo(BaseModel):
    query: str
    resolved: bool
    ingredients: list[str]
    classes: list[str]
    high_alert: bool
    dose_limits: list[str]
    how: str


class MedicationProblem(BaseModel):
    reference: str
    drug: str
    ingredients: list[str]
    reason: str
    categories: list[str]
    evidence: list[str]


class DryRun(BaseModel):
    allowed: bool
    findings: list[str]


def patient_summary(ctx: RunContext[ReviewDeps]) -> PatientSummary:
    """Demographics and the facts dosing depends on: age, sex, latest weight, renal function (eGFR and
    Cockcroft-Gault CrCl, with the observation and method they come from), pregnancy. A value marked stale is
    too old to be treated as current."""
    f = ctx.deps.facts
    age = f.age_years
    return PatientSummary(
        reference=f.patient_ref,
        as_of=f.as_of.isoformat(),
        age_years=round(age, 1) if age is not None else None,
        sex=f.sex,
        deceased=f.deceased,
        weight_kg=_value(f.weight),
        egfr=_value(f.egfr),
        crcl=_value(f.crcl),
        creatinine_mg_dl=_value(f.creatinine),
        pregnant=f.pregnant,
    )


def active_allergies(ctx: RunContext[ReviewDeps]) -> list[AllergyItem]:
    """The patient's active, not refuted allergies and intolerances (drug, food, environment)."""
    return [
        AllergyItem(
            reference=a.ref,
            substance=display_name(a.text, a.codes, "unnamed"),
            codes=[f"{c.system}:{c.code}" for c in a.codes],
            criticality=a.criticality,
        )
        for a in ctx.deps.facts.allergies
    ]


def active_medications(ctx: RunContext[ReviewDeps]) -> list[MedicationItem]:
    """The patient's active and on-hold medications, with the ingredients the knowledge base resolves them to."""
    from guardrails.resolve import resolve_drug

    out = []
    for m in ctx.deps.facts.medications:
        d = resolve_drug(m.codes, m.text, ctx.deps.kb)
        rx = next((c.code for c in m.codes if c.system == "rxnorm"), None)
        res = ctx.deps.record.resolve(m.ref) or {}
        di = (res.get("dosageInstruction") or [{}])[0]
        out.append(
            MedicationItem(
                reference=m.ref,
                drug=display_name(m.text, m.codes, "unnamed"),
                rxnorm=rx,
                ingredients=[ctx.deps.kb.ingredients[i].name for i in (d.ingredients if d else ())],
                status=m.status,
                dosage=di.get("text") or _dosage_text(di),
            )
        )
    return out


def active_conditions(ctx: RunContext[ReviewDeps]) -> list[ConditionItem]:
    """The patient's active conditions (SNOMED CT), with onset dates."""
    out = []
    for c in ctx.deps.facts.conditions:
        code = next((x for x in c.codes if x.system == "snomed"), None)
        if code:
            out.append(
                ConditionItem(
                    reference=c.ref,
                    snomed=code.code,
                    display=code.display,
                    onset=c.onset.isoformat() if c.onset else None,
                )
            )
    return out


def latest_labs(ctx: RunContext[ReviewDeps]) -> list[LabItem]:
    """Latest value and up to three previous values of each lab and vital the gates use: weight, creatinine,
    eGFR, potassium, sodium, INR, HbA1c, lipids, blood pressure (LOINC codes)."""
    from .record import LABS, WEIGHT

    deps = ctx.deps
    out = []
    for code in sorted(set(LABS) | set(WEIGHT)):
        rows = deps.record.series(code, deps.facts.as_of)
        if not rows:
            continue
        stale_latest = deps.facts.labs.get(code)
        vals = [Value(value=round(v, 2), unit=u, date=d.isoformat(), reference=r, stale=False) for d, v, u, r in rows]
        latest = vals[-1]
        if stale_latest is not None:
            latest.stale = stale_latest.stale
        out.append(LabItem(loinc=code, latest=latest, previous=vals[-4:-1]))
    return out


def lookup_drug(ctx: RunContext[ReviewDeps], name: str) -> DrugInfo:
    """Look a drug up in the knowledge base by name, brand or RxNorm-style product name: its ingredients,
    classes, whether it is high-alert, and its dose limits."""
    from guardrails.resolve import resolve_drug

    kb = ctx.deps.kb
    d = resolve_drug((), name, kb)
    if d is None:
        return DrugInfo(
            query=name,
            resolved=False,
            ingredients=[],
            classes=[],
            high_alert=False,
            dose_limits=[],
            how="not in the knowledge base",
        )
    ings = [kb.ingredients[i] for i in d.ingredients]
    classes = sorted({kb.classes[c].label for i in ings for c in i.classes if c in kb.classes})
    limits = [r.summary() for i in d.ingredients for r in kb.rules("dose", i)]
    return DrugInfo(
        query=name,
        resolved=True,
        ingredients=[i.name for i in ings],
        classes=classes,
        high_alert=any(i.high_alert for i in ings),
        dose_limits=limits,
        how=d.how,
    )


def check_order(ctx: RunContext[ReviewDeps], proposal: StartMedication) -> DryRun:
    """Dry-run the safety gate on a candidate medication order for this patient before proposing it."""
    from .agent import screen

    result = screen(proposal, ctx.deps)
    return DryRun(allowed=result.allowed, findings=[f"{f.severity} {f.category}: {f.message}" for f in result.findings])


# Findings on an ACTIVE medication that make it worth stopping (a missing dose on an old prescription is not one).
_STOP_CATEGORIES = {
    "drug-allergy",
    "drug-drug",
    "drug-renal",
    "drug-pregnancy",
    "drug-diagnosis",
    "drug-lab",
    "drug-age",
}


def screen_active_medications(ctx: RunContext[ReviewDeps]) -> list[MedicationProblem]:
    """Re-screen each active medication with the safety gates as if it were ordered today (allergies, interactions,
    renal function, pregnancy, conditions, labs): the ones that would now be BLOCKED, with the reason."""
    from guardrails import gate
    from guardrails.resolve import resolve_drug

    from .record import parse_order

    deps = ctx.deps
    out = []
    for m in deps.facts.medications:
        res = deps.record.resolve(m.ref)
        if res is None or res.get("resourceType") != "MedicationRequest":
            continue
        order = replace(parse_order(res, deps.record.source, m.ref, deps.record), replaces=m.ref)
        v = gate(order, deps.facts, deps.kb)
        blocks = [f for f in v.findings if f.severity == "block" and f.category in _STOP_CATEGORIES]
        if blocks:
            drug = resolve_drug(order.codes, order.text, deps.kb)
            refs = sorted({e.ref for f in blocks for e in f.evidence if e.kind == "fhir" and e.ref != m.ref})
            out.append(
                MedicationProblem(
                    reference=m.ref,
                    drug=display_name(m.text, m.codes, "unnamed"),
                    ingredients=[deps.kb.ingredients[i].name for i in (drug.ingredients if drug else ())],
                    reason=" ".join(f.message for f in blocks),
                    categories=sorted({f.category for f in blocks}),
                    evidence=refs,
                )
            )
    return out


def _dosage_text(di: dict) -> str:
    dose = next((dr.get("doseQuantity") for dr in di.get("doseAndRate") or [] if dr.get("doseQuantity")), None)
    rep = (di.get("timing") or {}).get("repeat") or {}
    if not dose and not rep:
        return ""
    amount = f"{dose.get('value')} {dose.get('unit', '') or 'unit(s)'}" if dose else "? "
    return f"{amount} x{rep.get('frequency', '?')} per {rep.get('period', '?')} {rep.get('periodUnit', '')}".strip()


TOOLS = (
    patient_summary,
    active_allergies,
    active_medications,
    active_conditions,
    latest_labs,
    screen_active_medications,
    lookup_drug,
    check_order,
)
