"""The gate: run every registered rule, keep every finding, then decide. A rule that raises blocks."""

from __future__ import annotations

from .context import Context, order_route, prepare
from .findings import Finding, Verdict, rank
from .knowledge import Knowledge
from .registry import RULES
from .resolve import dose_per_ingredient, doses_per_day, resolve_drug
from .sources import MedicationOrder, PatientFacts

_RULE_IDS = tuple(RULES)


def gate(order: MedicationOrder, facts: PatientFacts, knowledge: Knowledge) -> Verdict:
    """Screen one order for one patient. Pure and deterministic: same inputs, same verdict."""
    findings: list[Finding] = []
    try:
        patient = prepare(facts, knowledge)
        drug = resolve_drug(order.codes, order.text, knowledge)
        ctx = Context(order, facts, knowledge, drug, patient, order_route(order))
        ctx.per_day, ctx.per_day_how = doses_per_day(order)
        ctx.age = facts.age_years
        if drug is not None and order.dose is not None:
            ctx.amounts, ctx.dose_problem = dose_per_ingredient(order.dose, drug, knowledge)
    except Exception as e:  # fail closed: a crash while preparing is a block, never an empty list
        f = Finding(
            "unverifiable",
            "block",
            f"The gate could not prepare this order: {type(e).__name__}: {e}",
            rule_id="gate.prepare",
        )
        return Verdict(False, (f,), knowledge.version, order.ref, ("gate.prepare",))
    for rule_id, fn in RULES.items():
        ctx.rule_id = rule_id
        try:
            findings.extend(fn(ctx))
        except Exception as e:
            findings.append(
                Finding(
                    "unverifiable",
                    "block",
                    f"Rule {rule_id} failed ({type(e).__name__}: {e}); the order cannot be verified.",
                    rule_id=rule_id,
                )
            )
    ranked = rank(findings)
    allowed = not any(f.severity == "block" for f in ranked)
    consulted = dict(ctx.consulted)
    for f in ranked:
        for e in f.evidence:
            if e.kind == "ontology":
                consulted.setdefault(e.ref, e)
    return Verdict(allowed, tuple(ranked), knowledge.version, order.ref, _RULE_IDS, tuple(consulted.values()))
