"""Drug-drug interactions and duplicate therapy against the patient's active medications."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding
from ..sources import display_name

_SEVERITY = {"contraindicated": "block", "major": "warn", "moderate": "warn"}


def check_interactions(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    by_ing = ctx.patient.meds_by_ingredient
    seen: set[tuple[str, str]] = set()
    for ing in ctx.drug.ingredients:
        partners = ctx.kb.partners.get(ing)
        if not partners:
            continue
        for other, meds in by_ing.items():
            rules = partners.get(other)
            if not rules or other == ing:
                continue
            for pm in meds:
                if pm.med.ref == ctx.order.replaces:
                    continue
                for rule in rules:
                    key = (rule.iri, pm.med.ref)
                    if key in seen:
                        continue
                    seen.add(key)
                    onc = " (ONC high-priority)" if rule.onc else ""
                    msg = f"{ctx.name(ing)} + {ctx.name(other)} ({rule.severity}{onc}): {rule.effect}" + (
                        f" {rule.management}" if rule.management else ""
                    )
                    yield ctx.finding(
                        "drug-drug",
                        _SEVERITY.get(rule.severity, "warn"),
                        msg,
                        (pm.evidence, ctx.fact(rule)),
                        "medicationCodeableConcept",
                    )
    for m in ctx.patient.unresolved_meds:
        if m.ref == ctx.order.replaces:
            continue
        label = display_name(m.text, m.codes, "unnamed")
        yield ctx.finding(
            "drug-drug",
            "info",
            f"Active medication '{label}' is not in the knowledge base; interactions with it were not checked.",
            (Evidence("fhir", m.ref, f"active medication: {label}"),),
        )


def check_duplicates(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    kb, p = ctx.kb, ctx.patient
    reported: set[str] = set()
    for ing in ctx.drug.ingredients:
        for pm in p.meds_by_ingredient.get(ing, ()):
            if pm.med.ref == ctx.order.replaces or pm.med.ref in reported:
                continue
            reported.add(pm.med.ref)
            yield ctx.finding(
                "duplicate-therapy",
                "warn",
                f"{ctx.name(ing)} is already active for this patient.",
                (pm.evidence,),
                "medicationCodeableConcept",
            )
        # the most specific duplicate-therapy class the order shares with each other active medication
        for gid in sorted(kb.duplicate_groups.get(ing, ()), key=lambda c: len(kb.classes[c].members)):
            g = kb.classes[gid]
            for pm in p.meds_by_duplicate_group.get(gid, ()):
                if pm.med.ref == ctx.order.replaces or pm.med.ref in reported or ing in pm.ingredients:
                    continue
                reported.add(pm.med.ref)
                names = ", ".join(ctx.name(x) for x in sorted(pm.ingredients & g.members))
                yield ctx.finding(
                    "duplicate-therapy",
                    "warn",
                    f"{ctx.name(ing)} duplicates an active {g.label} ({names}).",
                    (pm.evidence, Evidence("ontology", g.id, f"duplicate-therapy group: {g.label}", g.sources)),
                    "medicationCodeableConcept",
                )
