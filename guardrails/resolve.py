"""Resolving what an order or record names to ingredients, and reducing a dose to amounts per ingredient."""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import units
from .knowledge import Component, Knowledge, Product
from .names import countable, normalize, parse_product_name, routes_for_dose_form
from .sources import Code, Dose, MedicationOrder

RXNORM = "rxnorm"
SNOMED = "snomed"


@dataclass(frozen=True, slots=True)
class ResolvedDrug:
    ingredients: tuple[str, ...]
    product: Product | None
    how: str  # how it was resolved, for the evidence
    unresolved: tuple[str, ...] = ()  # component names that did not resolve
    conflict: str = ""  # the code and the name point at different drugs: both are checked, and an order is blocked


def _product_from_name(text: str, kb: Knowledge) -> tuple[Product | None, tuple[str, ...]]:
    parsed = parse_product_name(text)
    if parsed is None:
        return None, ()
    comps, missing = [], []
    for c in parsed.components:
        iid = kb.ingredient_by_name(c.name)
        if not iid:
            missing.append(c.name)
        comps.append(Component(iid or "", c.name, c.strength, c.unit, c.per_volume, c.per_unit))
    return Product("", text, tuple(comps), parsed.dose_form, routes_for_dose_form(parsed.dose_form)), tuple(missing)


_JOINERS = re.compile(r"\s*(?:/|\+|&|\bwith\b|\band\b)\s*", re.IGNORECASE)
_NUMBERING = re.compile(r"#\s*\d+|\bno\.?\s*\d+\b", re.IGNORECASE)
# Dose-form words that free-text orders append to a name ("Tylenol with Codeine #3 tablet").
_FORM_WORDS = re.compile(
    r"\b(?:oral|tablets?|tabs?|capsules?|caps?|solution|suspension|syrup|liquid|elixir|injection|injectable|"
    r"chewable|extended[- ]release|delayed[- ]release|immediate[- ]release)\b"
    r"|\b\d+(?:\.\d+)?\s*(?:mg|mcg|ug|g|ml|meq|units?)\b",
    re.IGNORECASE,
)  # "Lasix 40mg"


def _names_list(text: str, kb: Knowledge) -> tuple[list[str], list[str]]:
    """A name, brand or combination ('Sulfamethoxazole / Trimethoprim', 'Tylenol with Codeine #3') -> ingredient ids
    (and the parts that failed). The whole text is tried first, so a name containing 'and' still resolves."""
    text = _NUMBERING.sub(" ", text)
    for candidate in (text, _FORM_WORDS.sub(" ", text)):
        whole = kb.ingredients_by_name(candidate)
        if whole:
            return list(whole), []
    found, missing = [], []
    for part in [p.strip() for p in _JOINERS.split(_FORM_WORDS.sub(" ", text))]:
        if not part:
            continue
        ids = kb.ingredients_by_name(part)
        (found.extend(ids) if ids else missing.append(part))
    return found, missing


def resolve_drug(codes: tuple[Code, ...], text: str, kb: Knowledge) -> ResolvedDrug | None:
    """RxNorm code first, then name/synonym/brand, then the RxNorm-style product name. None if nothing resolves.

    When both a code and a name resolve and they name disjoint ingredients (a wrong code in the order or in the
    knowledge base), the result carries both sets of ingredients and a ``conflict``: never silently the code's."""
    key = (codes, text)
    hit = kb.resolve_cache.get(key, _MISS)
    if hit is not _MISS:
        return hit
    result = _resolve(codes, text, kb)
    if len(kb.resolve_cache) < 50_000:  # a pure function of its inputs: memoised per knowledge base, bounded
        kb.resolve_cache[key] = result
    return result


_MISS = object()


def _resolve(codes: tuple[Code, ...], text: str, kb: Knowledge) -> ResolvedDrug | None:
    names = [c.display for c in codes if c.display] + ([text] if text else [])
    coded = _by_code(codes, kb)
    if coded is not None and coded.product is not None:
        # a name that is the product's own RxNorm name cannot disagree with it: skip re-parsing it
        own = normalize(coded.product.name)
        names = [n for n in names if normalize(n) != own]
    named = _by_name(names, kb)
    if coded is None:
        return named
    if coded.conflict:
        return coded
    said = lambda ids: ", ".join(kb.ingredients[i].name for i in ids)  # noqa: E731
    if named is not None and (set(named.ingredients) - set(coded.ingredients) or named.unresolved):
        # the name names something the code does not: screen everything it could be, and block as unconfirmed
        both = tuple(dict.fromkeys(coded.ingredients + named.ingredients))
        extra = ", ".join([said(set(named.ingredients) - set(coded.ingredients)), *named.unresolved]).strip(", ")
        return ResolvedDrug(
            both,
            coded.product,
            f"{coded.how} and {named.how}",
            named.unresolved,
            conflict=f"the code means {said(coded.ingredients)} but the name also names {extra}",
        )
    if named is None and coded.product is None and not kb.ingredients[coded.ingredients[0]].rxcui_verified:
        ing = kb.ingredients[coded.ingredients[0]]
        return ResolvedDrug(
            coded.ingredients,
            None,
            coded.how,
            conflict=(
                f"RxNorm {ing.rxcui} is recorded for {ing.name} but that code is not yet verified against RxNorm, and the "
                "order gives no name to confirm it"
            ),
        )
    return coded


def _by_code(codes: tuple[Code, ...], kb: Knowledge) -> ResolvedDrug | None:
    """Every RxNorm coding is resolved; codings that disagree are screened together and flagged."""
    found: list[ResolvedDrug] = []
    for c in codes:
        if c.system != RXNORM:
            continue
        p = kb.products.get(c.code)
        if p is not None and p.components and all(x.ingredient for x in p.components):
            found.append(
                ResolvedDrug(tuple(dict.fromkeys(x.ingredient for x in p.components)), p, f"RxNorm {c.code} (product)")
            )
            continue
        iid = kb.rxcui_ingredient.get(c.code)
        if iid:
            unverified = "" if kb.ingredients[iid].rxcui_verified else ", code not yet verified"
            found.append(ResolvedDrug((iid,), None, f"RxNorm {c.code} (ingredient{unverified})"))
    if not found:
        return None
    first = found[0]
    extra = [d for d in found[1:] if set(d.ingredients) != set(first.ingredients)]
    if not extra:
        return first
    both = tuple(dict.fromkeys(i for d in found for i in d.ingredients))
    return ResolvedDrug(
        both,
        first.product,
        "; ".join(d.how for d in found),
        conflict="the order's RxNorm codings name different drugs: "
        + "; ".join(", ".join(kb.ingredients[i].name for i in d.ingredients) for d in found),
    )


def _by_name(names: list[str], kb: Knowledge) -> ResolvedDrug | None:
    for n in names:
        if parse_product_name(n) is not None:
            continue  # a product name: the parser below keeps its strengths and dose form
        found, missing = _names_list(n, kb)
        if found and not missing:
            return ResolvedDrug(tuple(dict.fromkeys(found)), None, f"name '{normalize(n)}'")
    for n in names:
        product, missing = _product_from_name(n, kb)
        if product is not None:
            ids = tuple(dict.fromkeys(c.ingredient for c in product.components if c.ingredient))
            if ids:
                return ResolvedDrug(ids, product, f"parsed product name '{n}'", missing)
    return None


def resolve_concept(codes: tuple[Code, ...], text: str, kb: Knowledge) -> tuple[frozenset[str], str, str] | None:
    """An allergy's substance -> (ingredient ids, concept id, how). A class allergen yields all its members."""
    for c in codes:
        if c.system == SNOMED and c.code in kb.snomed:
            concept = kb.snomed[c.code]
            return kb.members(concept), concept, f"SNOMED CT {c.code}"
    drug = resolve_drug(codes, "", kb)
    if drug is None:
        for n in [c.display for c in codes if c.display] + ([text] if text else []):
            cls = kb.class_by_name(n)
            if cls:
                return kb.members(cls), cls, f"class name '{normalize(n)}'"
        drug = resolve_drug((), text or next((c.display for c in codes if c.display), ""), kb)
    if drug is None:
        return None
    if drug.unresolved:
        return None
    concept = drug.ingredients[0] if len(drug.ingredients) == 1 else "+".join(drug.ingredients)
    return frozenset(drug.ingredients), concept, drug.how


# ---- dose arithmetic ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Amount:
    dim: str  # units.BASE key
    value: float  # in the dimension's base unit


def dose_per_ingredient(dose: Dose, drug: ResolvedDrug, kb: Knowledge) -> tuple[dict[str, Amount], str | None]:
    """Amount of each ingredient in one dose, or a reason why it cannot be known."""
    value = dose.high if dose.high is not None else dose.value
    hit = units.lookup(dose.unit, kb.unit_table)
    if hit is None:
        return {}, f"the dose unit '{dose.unit}' cannot be converted"
    dim, factor = hit
    p = drug.product
    if dim in ("count", "actuation", "volume"):
        if p is None:
            return {}, (
                f"a dose in '{dose.unit or 'units'}' needs a product strength, but the order names only an ingredient"
            )
        out: dict[str, Amount] = {}
        for c in p.components:
            if not c.ingredient:
                continue
            if c.strength is None or c.unit is None:
                return {}, f"the strength of {c.name} in '{p.name}' is not known"
            if dim == "count":
                if c.per_unit is not None or not countable(p.dose_form):
                    return {}, f"a unit-less dose is ambiguous for '{p.name}' (not a tablet or capsule)"
                pieces = value * factor
            elif dim == "actuation":
                if c.per_unit != "{actuat}":
                    return {}, f"'{dose.unit}' is not a dose unit of '{p.name}'"
                pieces = value / (c.per_volume or 1.0)
            else:  # volume
                if c.per_unit != "mL" or not c.per_volume:
                    return {}, f"a dose in mL needs a liquid concentration, and '{p.name}' has none"
                pieces = value * factor / c.per_volume
            s = units.lookup(c.unit, kb.unit_table)
            if s is None or s[0] not in ("mass", "equivalents", "units"):
                return {}, f"the strength unit '{c.unit}' of {c.name} cannot be converted"
            prev = out.get(c.ingredient)
            amount = pieces * c.strength * s[1]
            out[c.ingredient] = Amount(s[0], amount + (prev.value if prev else 0.0))
        return out, None
    if len(drug.ingredients) != 1:
        return {}, (
            f"a dose in {dose.unit} is ambiguous for a combination product; order it as a count of "
            "tablets/capsules or a volume"
        )
    return {drug.ingredients[0]: Amount(dim, value * factor)}, None


def doses_per_day(order: MedicationOrder) -> tuple[float | None, str]:
    """How many doses in 24 hours, worst case over every way the timing says it, and how that was read.

    timing.repeat (a period without a frequency means once per period), the timing code (BID, Q4H, ...), and the
    count of when/timeOfDay entries are all read; the largest wins."""
    readings: list[tuple[float, str]] = []
    if order.period and order.period_unit in units.PERIOD_DAYS:
        freq = order.frequency if order.frequency is not None else 1.0
        readings.append(
            (
                freq / (order.period * units.PERIOD_DAYS[order.period_unit]),
                f"{freq:g} per {order.period:g} {order.period_unit}",
            )
        )
    if order.timing_code and order.timing_code.upper() in units.TIMING_CODES:
        readings.append((units.TIMING_CODES[order.timing_code.upper()], order.timing_code.upper()))
    if order.times_of_day:
        readings.append((float(order.times_of_day), f"{order.times_of_day} times of day"))
    if not readings:
        return None, "no frequency given"
    return max(readings)
