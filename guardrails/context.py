"""The per-order context the rules read, and the per-patient preparation shared by every order."""

from __future__ import annotations

from dataclasses import dataclass, field

from . import units
from .findings import Evidence, Finding
from .knowledge import Knowledge, Rule
from .resolve import Amount, ResolvedDrug, resolve_concept, resolve_drug
from .sources import ActiveMedication, Allergy, Condition, MedicationOrder, PatientFacts, display_name

ROUTE_CODES = {  # SNOMED CT route of administration -> route name used by the knowledge base
    "26643006": "oral",
    "47625008": "intravenous",
    "78421000": "intramuscular",
    "34206005": "subcutaneous",
    "6064005": "topical",
    "447694001": "inhalation",
    "18679011000001101": "inhalation",
    "37161004": "rectal",
    "16857009": "vaginal",
    "37839007": "sublingual",
    "54471007": "buccal",
    "46713006": "nasal",
    "54485002": "ophthalmic",
    "10547007": "otic",
    "45890007": "transdermal",
    "372449004": "dental",
}
ROUTE_WORDS = {
    "oral": "oral",
    "po": "oral",
    "by mouth": "oral",
    "intravenous": "intravenous",
    "iv": "intravenous",
    "intramuscular": "intramuscular",
    "im": "intramuscular",
    "subcutaneous": "subcutaneous",
    "sc": "subcutaneous",
    "subq": "subcutaneous",
    "sq": "subcutaneous",
    "topical": "topical",
    "inhalation": "inhalation",
    "respiratory tract route": "inhalation",
    "inhaled": "inhalation",
    "rectal": "rectal",
    "pr": "rectal",
    "vaginal": "vaginal",
    "sublingual": "sublingual",
    "sl": "sublingual",
    "nasal": "nasal",
    "ophthalmic": "ophthalmic",
    "otic": "otic",
    "transdermal": "transdermal",
    "buccal": "buccal",
}


@dataclass(frozen=True, slots=True)
class PreparedMed:
    med: ActiveMedication
    ingredients: frozenset[str]
    evidence: Evidence


@dataclass(frozen=True, slots=True)
class PreparedAllergy:
    allergy: Allergy
    ingredients: frozenset[str]  # empty when unmapped
    concept: str
    how: str
    evidence: Evidence

    def concept_label(self, kb: Knowledge) -> str:
        if self.concept in kb.classes:
            return kb.classes[self.concept].label
        return " / ".join(kb.ingredients[i].name for i in self.concept.split("+") if i in kb.ingredients)


@dataclass(frozen=True, slots=True)
class PreparedPatient:
    meds: tuple[PreparedMed, ...]
    unresolved_meds: tuple[ActiveMedication, ...]
    allergies: tuple[PreparedAllergy, ...]
    unmapped_allergies: tuple[Allergy, ...]
    conditions: dict[str, Condition]  # SNOMED code -> condition
    meds_by_ingredient: dict[str, tuple[PreparedMed, ...]]
    meds_by_duplicate_group: dict[str, tuple[PreparedMed, ...]]


_NON_DRUG_ALLERGY = frozenset({"food", "environment", "biologic"})


def prepare(facts: PatientFacts, kb: Knowledge) -> PreparedPatient:
    """Resolve the patient's medications and allergies once per knowledge version; cached on the facts."""
    # Keyed by the knowledge and by the identity of the lists it resolves: replacing a list re-prepares.
    key = ("prepared", kb.version, id(facts.medications), id(facts.allergies), id(facts.conditions))
    hit = facts._cache.get(key)
    if hit is not None:
        return hit
    meds, unresolved = [], []
    for m in facts.medications:
        d = resolve_drug(m.codes, m.text, kb)
        if d is None:
            unresolved.append(m)
        else:
            label = display_name(m.text, m.codes)
            meds.append(
                PreparedMed(
                    m,
                    frozenset(d.ingredients),
                    Evidence(
                        "fhir",
                        m.ref,
                        f"{'another order of this request' if m.status == 'pending' else 'active medication'}: {label}",
                    ),
                )
            )
    allergies, unmapped = [], []
    for a in facts.allergies:
        r = resolve_concept(a.codes, a.text, kb)
        if r is None:
            if not (set(a.category) & _NON_DRUG_ALLERGY) or "medication" in a.category:
                unmapped.append(a)
            continue
        label = display_name(a.text, a.codes, r[1])
        crit = f", criticality {a.criticality}" if a.criticality else ""
        allergies.append(
            PreparedAllergy(a, r[0], r[1], r[2], Evidence("fhir", a.ref, f"allergy: {label}{crit} (matched by {r[2]})"))
        )
    conditions: dict[str, Condition] = {}
    for c in facts.conditions:
        for code in c.codes:
            if code.system == "snomed":
                conditions.setdefault(code.code, c)
    by_ing: dict[str, list[PreparedMed]] = {}
    by_group: dict[str, list[PreparedMed]] = {}
    for pm in meds:
        for i in pm.ingredients:
            by_ing.setdefault(i, []).append(pm)
            for g in kb.duplicate_groups.get(i, ()):
                if pm not in by_group.setdefault(g, []):
                    by_group[g].append(pm)
    prepared = PreparedPatient(
        tuple(meds),
        tuple(unresolved),
        tuple(allergies),
        tuple(unmapped),
        conditions,
        {k: tuple(v) for k, v in by_ing.items()},
        {k: tuple(v) for k, v in by_group.items()},
    )
    facts._cache[key] = prepared
    return prepared


@dataclass(slots=True)
class Context:
    order: MedicationOrder
    facts: PatientFacts
    kb: Knowledge
    drug: ResolvedDrug | None
    patient: PreparedPatient
    route: str | None  # the order's route name, when given and understood
    amounts: dict[str, Amount] = field(default_factory=dict)  # ingredient -> amount in one dose
    dose_problem: str | None = None  # why the dose cannot be reduced to amounts
    per_day: float | None = None  # doses in 24 h (worst case)
    per_day_how: str = ""
    rule_id: str = ""  # set by the engine before each rule runs
    consulted: dict[str, Evidence] = field(default_factory=dict)  # ontology facts the rules applied, by IRI
    age: float | None = None  # years at facts.as_of

    def finding(self, category: str, severity: str, message: str, evidence: tuple = (), path: str = "") -> Finding:
        return Finding(category, severity, message, evidence, path, self.rule_id)

    def daily(self, ingredient: str, unit: str) -> float | None:
        """The ordered amount of ``ingredient`` per 24 h in ``unit``; None if unknown or not convertible."""
        a = self.amounts.get(ingredient)
        if a is None or self.per_day is None:
            return None
        v = units.convert(a.value, a.dim, unit, self.kb.unit_table)
        return None if v is None else v * self.per_day

    def order_evidence(self) -> Evidence:
        o = self.order
        dose = f"{o.dose.value:g} {o.dose.unit or 'unit(s)'}" if o.dose else "no dose"
        return Evidence("order", o.ref or "order", f"{dose}, {self.per_day_how}")

    def consult(self, rule: Rule) -> None:
        """Record that a rule applied this fact to the order (shown as "what was checked", finding or not)."""
        self.consulted.setdefault(rule.iri, self.fact(rule))

    def fact(self, rule: Rule) -> Evidence:
        ev = self.kb.evidence_cache.get(rule.iri)
        if ev is None:
            ev = self.kb.evidence_cache[rule.iri] = Evidence("ontology", rule.iri, rule.summary(), rule.sources)
        return ev

    def name(self, ingredient: str) -> str:
        i = self.kb.ingredients.get(ingredient)
        return i.name if i else ingredient


def order_route(order: MedicationOrder) -> str | None:
    if order.route is None:
        return None
    if order.route.code in ROUTE_CODES:
        return ROUTE_CODES[order.route.code]
    return ROUTE_WORDS.get(order.route.display.strip().lower())
