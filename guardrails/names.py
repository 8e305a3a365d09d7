"""Deterministic reading of drug names: normalisation and RxNorm-style product names.

"Acetaminophen 325 MG / HYDROcodone Bitartrate 5 MG Oral Tablet" -> two components with strengths and
the dose form. No model, no fuzzy matching: a name either parses to this grammar or it does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Salt and hydrate words RxNorm appends to ingredient names. A name is tried whole first, so
# "potassium chloride" still resolves as itself before "chloride" would ever be stripped.
SALT_WORDS = frozenset(
    """hydrochloride hcl hydrobromide bromide sodium potassium calcium magnesium besylate besilate maleate mesylate
    succinate tartrate bitartrate fumarate citrate sulfate sulphate phosphate acetate chloride dihydrate monohydrate
    trihydrate hemihydrate anhydrous disodium dipropionate propionate furoate xinafoate hyclate hydrate valerate
    tromethamine lysine benzoate pamoate decanoate embonate medoxomil axetil pivoxil cilexetil proxetil erbumine
    bisulfate bromide nitrate oxalate lactate gluconate carbonate mandelate hippurate monosodium dimesylate
    monopotassium napsylate salicylate stearate estolate ethylsuccinate teoclate polistirex
    usp porcine bovine human recombinant hydrocholoride""".split()
)  # "hydrocholoride": a misspelling that real records carry (Synthea RxNorm 834357)

_SPACE = re.compile(r"[\s\-_,]+")


def normalize(name: str) -> str:
    """Lower-case, collapse spaces/hyphens, drop a brand in brackets and a qualifier in parentheses."""
    name = re.sub(r"\[[^\]]*\]|\((?:usp|nf)\)", " ", name, flags=re.IGNORECASE)
    return _SPACE.sub(" ", name.lower()).strip()


def name_variants(name: str) -> list[str]:
    """The whole name first, then with trailing salt words stripped, then with every salt word stripped."""
    # FDA biosimilar names carry a four-letter suffix ("trastuzumab-oysk"): the ingredient is the core name.
    name = re.sub(r"\b([a-z]+)-[a-z]{4}\b", r"\1", name)
    n = normalize(name)
    out = [n]
    words = n.split()
    while len(words) > 1 and words[-1] in SALT_WORDS:
        words = words[:-1]
        out.append(" ".join(words))
    core = [w for w in n.split() if w not in SALT_WORDS]
    if core:
        out.append(" ".join(core))
    seen: set[str] = set()
    return [v for v in out if v and not (v in seen or seen.add(v))]


# Units as RxNorm writes them in names, mapped to UCUM.
RXNORM_UNITS = {
    "MG": "mg",
    "G": "g",
    "MCG": "ug",
    "UG": "ug",
    "MEQ": "meq",
    "UNT": "[iU]",
    "UNITS": "[iU]",
    "MMOL": "mmol",
    "ML": "mL",
    "%": "%",
    "MG/ML": "mg/mL",
    "ACTUAT": "{actuat}",
    "HR": "h",
    "SQCM": "cm2",
    "BAU": "[BAU]",
    "CELLS": "{cells}",
}
_NUM = r"\d+(?:\.\d+)?|\.\d+"
_COMPONENT = re.compile(
    rf"^(?P<name>.+?)\s+(?P<num>{_NUM})\s+(?P<unit>MG|G|MCG|UG|MEQ|UNT|UNITS|MMOL|ML|%|BAU|CELLS)"
    rf"(?:\s*/\s*(?P<den_num>{_NUM})?\s*(?P<den>ML|ACTUAT|HR|MG|G|SQCM|L)\b)?(?P<rest>.*)$",
    re.IGNORECASE,
)
# Quantities and qualifiers RxNorm puts before the first ingredient: "NDA020503 200 ACTUAT", "Abuse-Deterrent 12 HR".
_LEADING_QTY = re.compile(
    rf"^(?:(?:NDA\d+|Abuse-Deterrent|Breath-Actuated|(?:{_NUM})\s+(?:ML|ACTUAT|HR|G|MG|DAY|MIN))\s+)+", re.IGNORECASE
)
_PACK = re.compile(r"^\{.*\}\s*pack", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class ParsedComponent:
    name: str
    strength: float
    unit: str  # UCUM
    per_volume: float | None = None  # strength is per this quantity of `per_unit`
    per_unit: str | None = None  # "mL", "{actuat}", "h", ...


@dataclass(frozen=True, slots=True)
class ParsedProduct:
    components: tuple[ParsedComponent, ...]
    dose_form: str
    brand: str | None = None


def parse_product_name(text: str) -> ParsedProduct | None:
    """Parse an RxNorm SCD/SBD-style name; None when the text does not follow that grammar."""
    s = re.sub(r"\s+per\s+", "/", " ".join(text.split()), flags=re.IGNORECASE)  # "42.9 MG per 5 ML"
    brand = None
    m = re.search(r"\[([^\]]+)\]\s*$", s)
    if m:
        brand = m.group(1).strip()
        s = s[: m.start()].strip()
    if _PACK.match(s):
        inner = re.findall(r"\(([^()]*)\)", s)
        parsed = [parse_product_name(i) for i in inner]
        parts = [p for p in parsed if p is not None]
        if not parts:
            return None
        comps = tuple(c for p in parts for c in p.components if not c.name.lower().startswith("inert"))
        return ParsedProduct(comps, parts[0].dose_form, brand) if comps else None
    s = _LEADING_QTY.sub("", s)
    pieces = [p.strip() for p in re.split(r"\s+/\s+", s)]
    comps: list[ParsedComponent] = []
    dose_form = ""
    for i, piece in enumerate(pieces):
        m = _COMPONENT.match(piece)
        if not m:
            return None
        rest = m.group("rest").strip()
        if rest and i < len(pieces) - 1:
            return None
        if i == len(pieces) - 1:
            dose_form = rest
        unit = RXNORM_UNITS[m.group("unit").upper()]
        den = m.group("den")
        per_unit = RXNORM_UNITS.get(den.upper(), den) if den else None
        per_volume = float(m.group("den_num")) if m.group("den_num") else (1.0 if den else None)
        if unit == "mg/mL":  # "MG/ML" written without a space
            unit, per_volume, per_unit = "mg", 1.0, "mL"
        comps.append(ParsedComponent(m.group("name").strip(), float(m.group("num")), unit, per_volume, per_unit))
    if not comps:
        return None
    return ParsedProduct(tuple(comps), dose_form, brand)


# RxNorm dose forms -> the routes a product of that form may be given by.
_ROUTE_WORDS: tuple[tuple[str, frozenset[str]], ...] = (
    ("sublingual", frozenset({"sublingual", "oral"})),
    ("buccal", frozenset({"buccal", "oral"})),
    ("ophthalmic", frozenset({"ophthalmic"})),
    ("otic", frozenset({"otic"})),
    ("nasal", frozenset({"nasal"})),
    ("inhal", frozenset({"inhalation"})),
    ("inhaler", frozenset({"inhalation"})),
    ("nebuliz", frozenset({"inhalation"})),
    ("transdermal", frozenset({"transdermal"})),
    ("rectal", frozenset({"rectal"})),
    ("vaginal", frozenset({"vaginal"})),
    ("intrauterine", frozenset({"intrauterine"})),
    ("topical", frozenset({"topical"})),
    ("cream", frozenset({"topical"})),
    ("ointment", frozenset({"topical"})),
    ("lotion", frozenset({"topical"})),
    ("shampoo", frozenset({"topical"})),
    ("medicated pad", frozenset({"topical"})),
    ("injectable", frozenset({"intravenous", "intramuscular", "subcutaneous"})),
    ("injection", frozenset({"intravenous", "intramuscular", "subcutaneous"})),
    ("syringe", frozenset({"intravenous", "intramuscular", "subcutaneous"})),
    ("pen injector", frozenset({"subcutaneous"})),
    ("auto-injector", frozenset({"intramuscular", "subcutaneous"})),
    ("cartridge", frozenset({"subcutaneous", "intravenous"})),
    ("implant", frozenset({"subdermal"})),
    ("oral", frozenset({"oral"})),
    ("tablet", frozenset({"oral"})),
    ("capsule", frozenset({"oral"})),
    ("chewable", frozenset({"oral"})),
    ("lozenge", frozenset({"oral"})),
)


def routes_for_dose_form(dose_form: str) -> frozenset[str]:
    """The routes a dose form allows; empty when the form is unknown (then no route check applies)."""
    f = dose_form.lower()
    for word, routes in _ROUTE_WORDS:
        if word in f:
            return routes
    return frozenset()


#: Dose forms whose dose unit is a countable piece (so a unit-less dose counts pieces).
COUNTABLE_WORDS = (
    "tablet",
    "capsule",
    "suppository",
    "lozenge",
    "troche",
    "patch",
    "transdermal system",
    "film",
    "wafer",
)


def countable(dose_form: str) -> bool:
    f = dose_form.lower()
    return any(w in f for w in COUNTABLE_WORDS)
