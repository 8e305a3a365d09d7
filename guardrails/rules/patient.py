"""Patient-state rules: renal function, age, active conditions, pregnancy, labs and monitoring."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding

_SEV = {"contraindicated": "block", "caution": "warn"}


def _renal_value(ctx: Context, measure: str):
    f = ctx.facts
    if measure == "CrCl":
        if f.crcl is not None and not f.crcl.stale:
            return f.crcl, ""
        if f.egfr is not None and not f.egfr.stale:
            return f.egfr, " (eGFR used: no current CrCl)"
        return f.crcl or f.egfr, ""
    return f.egfr, ""  # the caller treats a stale value as missing


def check_renal(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    for ing in ctx.drug.ingredients:
        rules = ctx.kb.rules("renal", ing)
        if not rules:
            continue
        name = ctx.name(ing)
        # Without a current renal lab, warn only where renal function could make THIS order unsafe: the drug is
        # contraindicated at some clearance, high-alert, or the ordered daily dose exceeds a renal maximum. Otherwise
        # a drug merely adjusted at low clearance (amoxicillin 500 mg twice daily) would warn on every order.
        needs_lab = ctx.kb.ingredients[ing].high_alert or any(_could_block(ctx, ing, r) for r in rules)
        missing_reported = not needs_lab
        for r in rules:
            ctx.consult(r)
            value, note = _renal_value(ctx, r.measure)
            if value is None or value.stale:
                if not missing_reported:
                    missing_reported = True
                    why = "none is recorded" if value is None else f"the last value ({value.describe()}) is stale"
                    ev = (Evidence("fhir", value.ref, f"{r.measure} {value.describe()}"),) if value else ()
                    yield ctx.finding(
                        "drug-renal",
                        "warn",
                        f"{name} needs current renal function ({r.measure}) and {why}.",
                        ev + (ctx.fact(r),),
                    )
                continue
            if value.value < r.at_least or (r.below is not None and value.value >= r.below):
                continue
            ev = (Evidence("fhir", value.ref, f"{r.measure} {value.describe()}{note}"), ctx.fact(r))
            band = f"{r.measure} {value.value:g}{note}"
            if r.action == "maxDaily" and (r.max_daily is not None or r.max_daily_per_kg is not None):
                limit = r.max_daily
                if r.max_daily_per_kg is not None:
                    w = ctx.facts.weight
                    if w is None or w.stale:
                        yield ctx.finding(
                            "drug-renal",
                            "warn",
                            f"{name}: at {band} the maximum is {r.max_daily_per_kg:g} {r.dose_unit}/kg/day "
                            "and there is no current weight to apply it.",
                            ev,
                        )
                        continue
                    per_kg = r.max_daily_per_kg * w.value
                    limit = per_kg if limit is None else min(limit, per_kg)
                    ev = ev + (Evidence("fhir", w.ref, f"weight {w.describe()}"),)
                daily = ctx.daily(ing, r.dose_unit)
                if daily is None:
                    yield ctx.finding(
                        "drug-renal",
                        "warn",
                        f"{name}: at {band} the maximum is {limit:g} {r.dose_unit}/day; the ordered daily "
                        "total could not be computed.",
                        ev,
                    )
                elif daily > limit * (1 + 1e-9):
                    yield ctx.finding(
                        "drug-renal",
                        "block",
                        f"{name} {daily:g} {r.dose_unit}/day exceeds the renal maximum of {limit:g} "
                        f"{r.dose_unit}/day at {band}.",
                        ev,
                        "dosageInstruction[0]",
                    )
                continue
            sev = _SEV.get(r.action, "warn")
            yield ctx.finding("drug-renal", sev, f"{name} at {band}: {r.message}".strip(), ev)


def _could_block(ctx: Context, ing: str, r) -> bool:
    if r.action == "contraindicated":
        return True
    if r.action != "maxDaily":
        return False
    daily = ctx.daily(ing, r.dose_unit)
    if daily is None or r.max_daily_per_kg is not None:
        return True
    return r.max_daily is not None and daily > r.max_daily


def check_age(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    age = ctx.age
    if age is None:
        for ing in ctx.drug.ingredients:
            rules = [r for r in ctx.kb.rules("age", ing) if r.action == "contraindicated"]
            if rules:
                yield ctx.finding(
                    "unverifiable",
                    "block",
                    f"{ctx.name(ing)} is contraindicated at some ages and the patient's age is unknown.",
                    tuple(ctx.fact(r) for r in rules),
                    "subject",
                )
        return
    for ing in ctx.drug.ingredients:
        for r in ctx.kb.rules("age", ing):
            ctx.consult(r)
            if age >= r.min_age and (r.max_age is None or age < r.max_age):
                ev = (
                    Evidence("fhir", ctx.facts.patient_ref, f"age {age:.1f} y (birthDate, as of {ctx.facts.as_of})"),
                    ctx.fact(r),
                )
                yield ctx.finding(
                    "drug-age",
                    _SEV.get(r.action, "warn"),
                    f"{ctx.name(ing)} at age {age:.1f} y: {r.message}".strip(),
                    ev,
                )


def check_diagnosis(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None or not ctx.patient.conditions:
        return
    for ing in ctx.drug.ingredients:
        for r in ctx.kb.rules("dx", ing):
            ctx.consult(r)
            hits = [c for c in r.conditions if c in ctx.patient.conditions]
            if not hits:
                continue
            cond = ctx.patient.conditions[hits[0]]
            label = next((c.display for c in cond.codes if c.code == hits[0] and c.display), r.condition_label)
            ev = (Evidence("fhir", cond.ref, f"active condition: {label} (SNOMED CT {hits[0]})"), ctx.fact(r))
            yield ctx.finding(
                "drug-diagnosis", _SEV.get(r.action, "warn"), f"{ctx.name(ing)} with {label}: {r.message}".strip(), ev
            )


def check_pregnancy(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None or not ctx.facts.pregnant:
        return
    for ing in ctx.drug.ingredients:
        for r in ctx.kb.rules("pregnancy", ing):
            ev = (Evidence("fhir", ctx.facts.pregnant, "pregnant"), ctx.fact(r))
            yield ctx.finding(
                "drug-pregnancy", _SEV.get(r.action, "warn"), f"{ctx.name(ing)} in pregnancy: {r.message}".strip(), ev
            )


def _latest(ctx: Context, loincs):
    found = [ctx.facts.labs[c] for c in loincs if c in ctx.facts.labs]
    return max(found, key=lambda m: (m.when is not None, m.when)) if found else None


def check_labs(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    for ing in ctx.drug.ingredients:
        for r in ctx.kb.rules("lab", ing):
            ctx.consult(r)
            lab = _latest(ctx, r.loincs)
            if lab is None or lab.stale:
                continue  # a missing lab is the monitoring rule's business
            if r.unit and lab.unit and _norm_unit(lab.unit) != _norm_unit(r.unit):
                yield ctx.finding(
                    "drug-lab",
                    "warn",
                    f"{ctx.name(ing)}: lab {lab.code} is in {lab.unit}, the rule in {r.unit}; not compared.",
                    (Evidence("fhir", lab.ref, lab.describe()), ctx.fact(r)),
                )
                continue
            fired = (r.above is not None and lab.value >= r.above) or (r.under is not None and lab.value < r.under)
            if fired:
                ev = (Evidence("fhir", lab.ref, f"LOINC {lab.code}: {lab.describe()}"), ctx.fact(r))
                yield ctx.finding(
                    "drug-lab",
                    _SEV.get(r.action, "warn"),
                    f"{ctx.name(ing)} with {lab.value:g} {lab.unit} (LOINC {lab.code}): {r.message}".strip(),
                    ev,
                )


def check_monitoring(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    for ing in ctx.drug.ingredients:
        for r in ctx.kb.rules("monitoring", ing):
            lab = _latest(ctx, r.loincs)
            age_days = (ctx.facts.as_of - lab.when).days if lab is not None and lab.when else None
            if (
                lab is not None
                and not lab.stale
                and age_days is not None
                and (r.max_age_days is None or age_days <= r.max_age_days)
            ):
                continue
            why = (
                "none is recorded"
                if lab is None
                else f"the last one ({lab.describe()}) is {age_days if age_days is not None else '?'} days old"
            )
            ev = ((Evidence("fhir", lab.ref, lab.describe()),) if lab else ()) + (ctx.fact(r),)
            yield ctx.finding(
                "drug-lab",
                "warn",
                f"{ctx.name(ing)} needs a current lab (LOINC {', '.join(r.loincs)}) and {why}. {r.message}".strip(),
                ev,
            )


def _norm_unit(u: str) -> str:
    u = u.strip().lower().replace("meq", "mmol")
    return u
