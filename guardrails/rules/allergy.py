"""Drug-allergy: same ingredient, same allergy-group class, documented cross-sensitivity; unmapped allergies."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding
from ..knowledge import Knowledge, Rule
from ..sources import display_name


def check_allergy(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    kb = ctx.kb
    for ing in ctx.drug.ingredients:
        ingredient = kb.ingredients[ing]
        for a in ctx.patient.allergies:
            ev = a.evidence
            if ing in a.ingredients:
                if a.concept == ing:
                    msg = f"{ingredient.name}: the patient has an active allergy to {ingredient.name}."
                else:
                    msg = f"{ingredient.name}: the patient has an active allergy to {a.concept_label(kb)}, which includes it."
                yield ctx.finding("drug-allergy", "block", msg, (ev,), "medicationCodeableConcept")
                continue
            groups = kb.allergy_groups.get(ing, frozenset())
            shared = [c for c in groups if not a.ingredients.isdisjoint(kb.classes[c].members)]
            if shared:
                group = kb.classes[sorted(shared)[0]]
                yield ctx.finding(
                    "drug-allergy",
                    "block",
                    f"{ingredient.name} is in the same allergy group ({group.label}) as the patient's recorded allergen.",
                    (ev, Evidence("ontology", group.id, f"allergy group: {group.label}", group.sources)),
                    "medicationCodeableConcept",
                )
                continue
            rule = _cross_sensitivity(kb, a.ingredients, ing)
            if rule is not None:
                yield ctx.finding(
                    "drug-allergy",
                    "block" if rule.action == "contraindicated" else "warn",
                    f"{ingredient.name}: documented cross-sensitivity with the patient's allergy "
                    f"({rule.a} -> {rule.b}). {rule.message}".strip(),
                    (ev, ctx.fact(rule)),
                    "medicationCodeableConcept",
                )
    for a in ctx.patient.unmapped_allergies:
        label = display_name(a.text, a.codes, "unnamed")
        yield ctx.finding(
            "drug-allergy",
            "warn",
            f"A recorded allergy ('{label}') could not be mapped to the knowledge base; check it by hand.",
            (Evidence("fhir", a.ref, f"allergy: {label}"),),
        )


def _cross_sensitivity(kb: Knowledge, allergens: frozenset[str], ingredient: str) -> Rule | None:
    """The most severe documented cross-sensitivity from any allergen to the ingredient (contraindicated first)."""
    found = [rule for a in allergens for targets, rule in kb.xsens.get(a, ()) if ingredient in targets]
    return min(found, key=lambda r: (r.action != "contraindicated", r.iri), default=None)
