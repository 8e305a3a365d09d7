"""Drug-drug interactions and duplicate therapy against the patient's active medications."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding

_SEVERITY = {"contraindicated": "block", "major": "warn", "moderate": "warn"}


def _med_evidence(pm, ctx: Context) -> Evidence:
    label = pm.med.text or next((c.display for c in pm.med.codes if c.display), "")
    return Evidence("fhir", pm.med.ref, f"active medication: {label}")


def _other_meds(ctx: Context):
    return [pm for pm in ctx.patient.meds if pm.med.ref != ctx.order.ref]


def check_interactions(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    seen: set[tuple[str, str]] = set()
    for pm in _other_meds(ctx):
        for ing in ctx.drug.ingredients:
            for other in pm.ingredients:
                if other == ing:
                    continue
                for rule in ctx.kb.interactions.get((min(ing, other), max(ing, other)), ()):
                    key = (rule.iri, pm.med.ref)
                    if key in seen:
                        continue
                    seen.add(key)
                    onc = " (ONC high-priority)" if rule.onc else ""
                    msg = (f"{ctx.name(ing)} + {ctx.name(other)} ({rule.severity}{onc}): {rule.effect}"
                           + (f" {rule.management}" if rule.management else ""))
                    yield Finding("drug-drug", _SEVERITY.get(rule.severity, "warn"), msg,
                                  (_med_evidence(pm, ctx), ctx.fact(rule)), "medicationCodeableConcept")
    for m in ctx.patient.unresolved_meds:
        if m.ref == ctx.order.ref:
            continue
        label = m.text or next((c.display for c in m.codes if c.display), "unnamed")
        yield Finding("drug-drug", "info",
                      f"Active medication '{label}' is not in the knowledge base; interactions with it were not checked.",
                      (Evidence("fhir", m.ref, f"active medication: {label}"),))


def check_duplicates(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    kb = ctx.kb
    for pm in _other_meds(ctx):
        for ing in ctx.drug.ingredients:
            if ing in pm.ingredients:
                yield Finding("duplicate-therapy", "warn",
                              f"{ctx.name(ing)} is already active for this patient.",
                              (_med_evidence(pm, ctx),), "medicationCodeableConcept")
                break
            groups = sorted(c for c in kb.ingredients[ing].classes
                            if c in kb.classes and kb.classes[c].duplicate_group
                            and (pm.ingredients & kb.classes[c].members) - {ing})
            if groups:
                g = kb.classes[groups[-1]]
                yield Finding("duplicate-therapy", "warn",
                              f"{ctx.name(ing)} duplicates an active {g.label} ({', '.join(ctx.name(x) for x in sorted(pm.ingredients & g.members))}).",
                              (_med_evidence(pm, ctx), Evidence("ontology", g.id, f"duplicate-therapy group: {g.label}", g.sources)),
                              "medicationCodeableConcept")
                break
