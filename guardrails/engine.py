"""The gate: run every registered rule, keep every finding, then decide. A rule that raises blocks."""

from __future__ import annotations

from .context import Context, order_route, prepare
from .findings import Finding, Verdict, rank
from .knowledge import Knowledge
from .registry import RULES
from .resolve import dose_per_ingredient, doses_per_day, resolve_drug
from .sources import MedicationOrder, PatientFacts

_RULE_IDS = tuple(RULES)


def gate(
    order: MedicationOrder, facts: PatientFacts, knowledge: Knowledge, pending: tuple[MedicationOrder, ...] = ()
) -> Verdict:
    """Screen one order for one patient. Pure and deterministic: same inputs, same verdict.

    ``pending``: the other orders of the same request or plan (draft orders signed together, a model's other
    proposals); they are screened against this one like active medications (interactions, duplicates)."""
    findings: list[Finding] = []
    try:
        if pending:
            facts = _with_pending(facts, order, pending)
        patient = prepare(facts, knowledge)
        drug = resolve_drug(order.codes, order.text, knowledge)
        ctx = Context(order, facts, knowledge, drug, patient, order_route(order))
        ctx.per_day, ctx.per_day_how = doses_per_day(order)
        ctx.age = facts.age_years
        if drug is not None and order.dose is not None:
            ctx.amounts, ctx.dose_problem = dose_per_ingredient(order.dose, drug, knowledge)
            if order.dose.value <= 0:
                ctx.dose_problem = f"the dose {order.dose.value:g} is not a positive amount"
            elif order.max_per_period is not None and not ctx.dose_problem:
                _apply_max_per_period(ctx, order, knowledge)
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


def _with_pending(facts: PatientFacts, order: MedicationOrder, pending: tuple[MedicationOrder, ...]) -> PatientFacts:
    from dataclasses import replace

    from .sources import ActiveMedication

    others = tuple(
        ActiveMedication(o.ref or f"pending-order-{i}", o.codes, o.text, "pending")
        for i, o in enumerate(pending)
        if o is not order
    )
    return replace(facts, medications=facts.medications + others, _cache=facts._cache)


def _apply_max_per_period(ctx: Context, order: MedicationOrder, kb: Knowledge) -> None:
    """maxDosePerPeriod caps as-needed use: the worst case is the cap itself, in the dose's own units."""
    from . import units

    cap, dose = order.max_per_period, order.dose
    a = units.lookup(cap.unit, kb.unit_table)
    b = units.lookup(dose.unit, kb.unit_table)
    if a is None or b is None or a[0] != b[0] or not order.max_per_period_days:
        ctx.dose_problem = (
            f"maxDosePerPeriod ({cap.value:g} {cap.unit or 'unit(s)'}) cannot be compared with the "
            f"dose ({dose.value:g} {dose.unit or 'unit(s)'})"
        )
        return
    doses = cap.value * a[1] / (dose.value * b[1]) / order.max_per_period_days
    if ctx.per_day is None or doses > ctx.per_day:
        ctx.per_day, ctx.per_day_how = doses, f"up to {cap.value:g} {cap.unit} per {order.max_per_period_days:g} d"
