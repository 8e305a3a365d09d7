"""Drug-allergy: same ingredient, same allergy-group class, documented cross-sensitivity; unmapped allergies."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding


def _allergy_evidence(a) -> Evidence:
    label = a.allergy.text or next((c.display for c in a.allergy.codes if c.display), a.concept)
    crit = f", criticality {a.allergy.criticality}" if a.allergy.criticality else ""
    return Evidence("fhir", a.allergy.ref, f"allergy: {label}{crit} (matched by {a.how})")


def check_allergy(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    kb = ctx.kb
    for ing in ctx.drug.ingredients:
        ingredient = kb.ingredients[ing]
        for a in ctx.patient.allergies:
            ev = _allergy_evidence(a)
            if ing in a.ingredients:
                if a.concept == ing:
                    msg = f"{ingredient.name}: the patient has an active allergy to {ingredient.name}."
                else:
                    msg = f"{ingredient.name}: the patient has an active allergy to {a.concept_label(kb)}, which includes it."
                yield Finding("drug-allergy", "block", msg, (ev,), "medicationCodeableConcept")
                continue
            shared = [c for c in ingredient.classes if kb.classes.get(c) and kb.classes[c].allergy_group
                      and any(x in kb.classes[c].members for x in a.ingredients)]
            if shared:
                group = kb.classes[sorted(shared)[0]]
                yield Finding(
                    "drug-allergy", "block",
                    f"{ingredient.name} is in the same allergy group ({group.label}) as the patient's recorded allergen.",
                    (ev, Evidence("ontology", group.id, f"allergy group: {group.label}", group.sources)),
                    "medicationCodeableConcept",
                )
                continue
            for allergen in a.ingredients:
                for targets, rule in kb.xsens.get(allergen, ()):
                    if ing in targets:
                        sev = "block" if rule.action == "contraindicated" else "warn"
                        yield Finding(
                            "drug-allergy", sev,
                            f"{ingredient.name}: documented cross-sensitivity with the patient's allergy "
                            f"({rule.a} -> {rule.b}). {rule.message}".strip(),
                            (ev, ctx.fact(rule)), "medicationCodeableConcept",
                        )
                        break
                else:
                    continue
                break
    for a in ctx.patient.unmapped_allergies:
        label = a.text or next((c.display for c in a.codes if c.display), "unnamed")
        yield Finding(
            "drug-allergy", "warn",
            f"A recorded allergy ('{label}') could not be mapped to the knowledge base; check it by hand.",
            (Evidence("fhir", a.ref, f"allergy: {label}"),),
        )
