"""Dose limits: single, daily and weekly maxima, per-kg limits for children, weekly-only schedules."""

from __future__ import annotations

import math
from collections.abc import Iterator

from .. import units
from ..context import Context
from ..findings import Evidence, Finding

_DOSE_PATH = "dosageInstruction[0].doseAndRate[0].doseQuantity"


def _band(rule) -> str:
    hi = f"<{rule.max_age:g}" if rule.max_age is not None else "+"
    route = f", {rule.route}" if rule.route else ""
    return f"age {rule.min_age:g}{hi} y{route}"


def check_dose(ctx: Context) -> Iterator[Finding]:
    if ctx.drug is None:
        return
    o, kb = ctx.order, ctx.kb
    if o.dose is None:
        yield ctx.finding(
            "unverifiable",
            "block",
            "The order has no dose, so dose limits cannot be checked.",
            (ctx.order_evidence(),),
            _DOSE_PATH,
        )
        return
    if ctx.dose_problem:
        yield ctx.finding(
            "unverifiable",
            "block",
            f"Dose cannot be verified: {ctx.dose_problem}.",
            (ctx.order_evidence(),),
            _DOSE_PATH,
        )
        return
    age = ctx.age
    route = ctx.route
    if route is None and ctx.drug.product is not None and len(ctx.drug.product.routes) == 1:
        route = next(iter(ctx.drug.product.routes))
    order_ev = ctx.order_evidence()
    for ing, amount in ctx.amounts.items():
        name = ctx.name(ing)
        limits = kb.rules("dose", ing)
        if not limits:
            yield ctx.finding("dose-single", "info", f"No dose limits for {name} in the knowledge base.", (order_ev,))
            continue
        if age is None and any(r.min_age > 0 or r.max_age is not None for r in limits):
            yield ctx.finding(
                "unverifiable",
                "block",
                f"{name} has age-dependent dose limits and the patient's age is unknown.",
                (order_ev,),
                _DOSE_PATH,
            )
            continue
        applicable = [
            r
            for r in limits
            if (r.route is None or route is None or r.route == route)
            and (age is None or (r.min_age <= age and (r.max_age is None or age < r.max_age)))
        ]
        if not applicable:
            yield ctx.finding(
                "dose-single", "info", f"No dose limit for {name} applies at this age/route.", (order_ev,)
            )
            continue
        for r in applicable:
            yield from _check_limit(ctx, ing, name, amount, r, order_ev)


def _check_limit(ctx: Context, ing: str, name: str, amount, r, order_ev: Evidence) -> Iterator[Finding]:
    kb, facts = ctx.kb, ctx.facts
    ctx.consult(r)
    fact = ctx.fact(r)
    single = units.convert(amount.value, amount.dim, r.dose_unit, kb.unit_table)
    if single is None:
        yield ctx.finding(
            "unverifiable",
            "block",
            f"The {name} dose ({amount.value:g} {units.BASE[amount.dim]}) cannot be compared with its limit in "
            f"{r.dose_unit}.",
            (order_ev, fact),
            _DOSE_PATH,
        )
        return
    u = r.dose_unit
    per_day = ctx.per_day
    daily = single * per_day if per_day is not None else None
    max_single, max_daily = r.max_single, r.max_daily
    evidence = [order_ev, fact]
    if r.max_single_per_kg is not None or r.max_daily_per_kg is not None:
        w = facts.weight
        if w is None or w.stale:
            why = "none is recorded" if w is None else f"the last one ({w.describe()}) is stale"
            yield ctx.finding(
                "unverifiable",
                "block",
                f"{name} is dosed by weight at this age ({_band(r)}) and {why}.",
                tuple(evidence) + ((Evidence("fhir", w.ref, f"weight {w.describe()}"),) if w else ()),
                "subject",
            )
            return
        evidence.append(Evidence("fhir", w.ref, f"weight {w.describe()}"))
        if r.max_single_per_kg is not None:
            max_single = min(max_single or math.inf, r.max_single_per_kg * w.value)
        if r.max_daily_per_kg is not None:
            max_daily = min(max_daily or math.inf, r.max_daily_per_kg * w.value)
    ev = tuple(evidence)
    eps = 1e-9
    if max_single is not None and single > max_single * (1 + eps):
        yield ctx.finding(
            "dose-single",
            "block",
            f"{name} {single:g} {u} per dose exceeds the maximum single dose of {max_single:g} {u} "
            f"({_band(r)}; {single / max_single:.1f}x).",
            ev,
            _DOSE_PATH,
        )
    elif r.usual_min_single is not None and single < r.usual_min_single * (1 - eps):
        yield ctx.finding(
            "dose-single",
            "warn",
            f"{name} {single:g} {u} per dose is below the usual minimum of {r.usual_min_single:g} {u}: "
            "check for a decimal or unit error.",
            ev,
            _DOSE_PATH,
        )
    if r.schedule == "weekly" and per_day is not None and per_day > 1 / 7 + eps:
        yield ctx.finding(
            "dose-daily",
            "block",
            f"{name} is dosed once weekly; this order gives it {ctx.per_day_how} ({per_day * 7:g} doses a week).",
            ev,
            "dosageInstruction[0].timing",
        )
    if daily is None:
        if max_daily is not None or r.max_weekly is not None:
            high = kb.ingredients[ing].high_alert
            yield ctx.finding(
                "unverifiable" if high else "dose-daily",
                "block" if high else "warn",
                f"No frequency given: the {name} daily total could not be checked"
                + (" (a high-alert drug: the order needs its frequency)." if high else "."),
                ev,
                "dosageInstruction[0].timing",
            )
        return
    if max_daily is not None:
        if daily > max_daily * (1 + eps):
            yield ctx.finding(
                "dose-daily",
                "block",
                f"{name} {daily:g} {u}/day exceeds the maximum daily dose of {max_daily:g} {u} "
                f"({_band(r)}; {daily / max_daily:.1f}x).",
                ev,
                _DOSE_PATH,
            )
        elif daily >= 0.9 * max_daily and (per_day > 1 or kb.ingredients[ing].high_alert):
            # Near the ceiling: worth a warning when several doses add up to it or the drug is high-alert; a
            # once-daily drug whose usual dose is its maximum would otherwise warn on every routine order.
            yield ctx.finding(
                "dose-daily",
                "warn",
                f"{name} {daily:g} {u}/day is at or near the maximum daily dose of {max_daily:g} {u}.",
                ev,
                _DOSE_PATH,
            )
    if r.max_weekly is not None and daily * 7 > r.max_weekly * (1 + eps):
        yield ctx.finding(
            "dose-daily",
            "block",
            f"{name} {daily * 7:g} {u}/week exceeds the maximum weekly dose of {r.max_weekly:g} {u}.",
            ev,
            _DOSE_PATH,
        )
