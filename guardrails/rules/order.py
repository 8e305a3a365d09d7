"""Rules about the order itself: can the drug be resolved, is the order well formed, is the route valid."""

from __future__ import annotations

from collections.abc import Iterator

from ..context import Context
from ..findings import Evidence, Finding


def check_resolution(ctx: Context) -> Iterator[Finding]:
    o = ctx.order
    named = ", ".join(f"{c.system} {c.code} '{c.display}'" for c in o.codes) or f"'{o.text}'"
    if ctx.drug is None:
        yield ctx.finding(
            "unverifiable",
            "block",
            f"The ordered drug ({named}) could not be resolved to any ingredient in the knowledge base.",
            (Evidence("order", o.ref or "order", named),),
            "medicationCodeableConcept",
        )
        return
    if ctx.drug.conflict:
        yield ctx.finding(
            "unverifiable",
            "block",
            f"The drug cannot be confirmed: {ctx.drug.conflict}. Everything it could be was checked; fix the order.",
            (Evidence("order", o.ref or "order", named),),
            "medicationCodeableConcept",
        )
    if ctx.drug.unresolved:
        yield ctx.finding(
            "unverifiable",
            "block",
            f"Part of the ordered product could not be resolved: {', '.join(ctx.drug.unresolved)}.",
            (Evidence("order", o.ref or "order", named),),
            "medicationCodeableConcept",
        )
    for p in o.problems:
        yield ctx.finding(
            "unverifiable", "block", f"The order cannot be read: {p}.", (Evidence("order", o.ref or "order", p),)
        )
    if ctx.facts.deceased:
        yield ctx.finding(
            "unverifiable",
            "block",
            "The patient is recorded as deceased.",
            (Evidence("fhir", ctx.facts.patient_ref, "deceased"),),
            "subject",
        )


def check_route(ctx: Context) -> Iterator[Finding]:
    o = ctx.order
    if ctx.drug is None or o.route is None:
        return
    if ctx.route is None:
        yield ctx.finding(
            "drug-route",
            "warn",
            f"The route '{o.route.display or o.route.code}' is not recognised; not checked.",
            (Evidence("order", o.ref or "order", f"route {o.route.code} {o.route.display}"),),
            "dosageInstruction[0].route",
        )
        return
    p = ctx.drug.product
    if p is not None and p.routes and ctx.route not in p.routes:
        yield ctx.finding(
            "drug-route",
            "block",
            f"'{p.name}' ({p.dose_form}) cannot be given by the {ctx.route} route "
            f"(valid: {', '.join(sorted(p.routes))}).",
            (Evidence("order", o.ref or "order", f"route {ctx.route}"),),
            "dosageInstruction[0].route",
        )
