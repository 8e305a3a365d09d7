"""Dose units: one table of factors computed with pint when the knowledge is compiled, pint/ucumvert as the slow path.

Every dose is reduced to a (dimension, amount in the dimension's base unit) pair: mass in mg, volume in mL,
amount-of-substance equivalents in meq, international units in [iU], or a count of the product's dose units.
A unit that cannot be reduced is returned as None, and the gate fails closed.
"""

from __future__ import annotations

from functools import lru_cache

# dimension -> base unit (the unit of every number in a DoseLimit after conversion)
BASE = {"mass": "mg", "volume": "mL", "equivalents": "meq", "units": "[iU]", "count": "{count}"}

# Spellings seen in orders and labels -> the pint expression for them. UCUM codes first, then common non-UCUM
# spellings (mcg, IU, MEQ) that real systems send. Counts are dimensionless pieces of a product.
_ALIASES: dict[str, tuple[str, str]] = {
    "mg": ("mass", "milligram"),
    "g": ("mass", "gram"),
    "gm": ("mass", "gram"),
    "gram": ("mass", "gram"),
    "grams": ("mass", "gram"),
    "kg": ("mass", "kilogram"),
    "ug": ("mass", "microgram"),
    "mcg": ("mass", "microgram"),
    "µg": ("mass", "microgram"),
    "μg": ("mass", "microgram"),
    "ng": ("mass", "nanogram"),
    "milligram": ("mass", "milligram"),
    "milligrams": ("mass", "milligram"),
    "microgram": ("mass", "microgram"),
    "micrograms": ("mass", "microgram"),
    "ml": ("volume", "milliliter"),
    "l": ("volume", "liter"),
    "cc": ("volume", "milliliter"),
    "milliliter": ("volume", "milliliter"),
    "milliliters": ("volume", "milliliter"),
    "dl": ("volume", "deciliter"),
    "meq": ("equivalents", "1"),
    "[iu]": ("units", "1"),
    "iu": ("units", "1"),
    "u": ("units", "1"),
    "[u]": ("units", "1"),
    "unit": ("units", "1"),
    "units": ("units", "1"),
    "unt": ("units", "1"),
    "[usp'u]": ("units", "1"),
    "": ("count", "1"),
    "1": ("count", "1"),
    "{count}": ("count", "1"),
    "{tbl}": ("count", "1"),
    "{tablet}": ("count", "1"),
    "{tablets}": ("count", "1"),
    "tablet": ("count", "1"),
    "tablets": ("count", "1"),
    "tab": ("count", "1"),
    "tabs": ("count", "1"),
    "{capsule}": ("count", "1"),
    "{capsules}": ("count", "1"),
    "{cap}": ("count", "1"),
    "capsule": ("count", "1"),
    "capsules": ("count", "1"),
    "cap": ("count", "1"),
    "{patch}": ("count", "1"),
    "patch": ("count", "1"),
    "{suppository}": ("count", "1"),
    "suppository": ("count", "1"),
    "{actuat}": ("actuation", "1"),
    "{puff}": ("actuation", "1"),
    "puff": ("actuation", "1"),
    "puffs": ("actuation", "1"),
    "actuation": ("actuation", "1"),
    "{spray}": ("actuation", "1"),
    "spray": ("actuation", "1"),
}
# mmol is deliberately absent: it equals meq only for monovalent ions (3 meq per mmol of potassium citrate), so a
# dose in mmol is not converted and the gate fails closed. Everything in the table is exact.


def build_table() -> dict[str, tuple[str, float]]:
    """Compute the factor of every alias to its dimension's base unit with pint. Run at knowledge compile time."""
    import pint

    try:  # pint caches its parsed definitions on disk: 0.15 s -> 0.02 s for the registry
        ureg = pint.UnitRegistry(cache_folder=":auto:")
    except Exception:
        ureg = pint.UnitRegistry()
    base_q = {"mass": ureg.Quantity(1, "milligram"), "volume": ureg.Quantity(1, "milliliter")}
    table: dict[str, tuple[str, float]] = {}
    for alias, (dim, expr) in _ALIASES.items():
        if dim in base_q:
            factor = float(ureg.Quantity(1, expr).to(base_q[dim].units).magnitude)
        else:
            factor = 1.0
        table[alias] = (dim, factor)
    return table


def lookup(unit: str, table: dict[str, tuple[str, float]]) -> tuple[str, float] | None:
    """(dimension, factor to base) for a unit string; None when it cannot be reduced."""
    key = unit.strip().lower()
    hit = table.get(key)
    if hit is not None:
        return hit
    return _slow_lookup(key)


@lru_cache(maxsize=256)
def _slow_lookup(key: str) -> tuple[str, float] | None:
    """Parse an unfamiliar UCUM string with ucumvert; only mass and volume are accepted."""
    if not key or any(c in key for c in "{}") or len(key) > 32:
        return None
    try:
        from ucumvert import PintUcumRegistry

        ureg = _ucum_registry(PintUcumRegistry)
        q = ureg.from_ucum(key)
        for dim, base in (("mass", "milligram"), ("volume", "milliliter")):
            try:
                return dim, float((1 * q).to(base).magnitude)
            except Exception:
                continue
    except Exception:
        return None
    return None


@lru_cache(maxsize=1)
def _ucum_registry(cls):
    return cls()


def to_base(value: float, unit: str, table: dict[str, tuple[str, float]]) -> tuple[str, float] | None:
    hit = lookup(unit, table)
    if hit is None:
        return None
    dim, factor = hit
    return dim, value * factor


def convert(amount_base: float, dim: str, unit: str, table: dict[str, tuple[str, float]]) -> float | None:
    """Convert an amount in the base unit of ``dim`` into ``unit``; None when ``unit`` is of another dimension."""
    hit = lookup(unit, table)
    if hit is None or hit[0] != dim:
        return None
    return amount_base / hit[1]


# Doses per day for timing codes (HL7 v3 GTSAbbreviation).
TIMING_CODES = {
    "QD": 1.0,
    "DAILY": 1.0,
    "QOD": 0.5,
    "BID": 2.0,
    "TID": 3.0,
    "QID": 4.0,
    "AM": 1.0,
    "PM": 1.0,
    "QHS": 1.0,
    "HS": 1.0,
    "Q1H": 24.0,
    "Q2H": 12.0,
    "Q3H": 8.0,
    "Q4H": 6.0,
    "Q6H": 4.0,
    "Q8H": 3.0,
    "Q12H": 2.0,
    "Q24H": 1.0,
    "WK": 1 / 7,
    "QW": 1 / 7,
    "MO": 1 / 30,
}
PERIOD_DAYS = {"s": 1 / 86400, "min": 1 / 1440, "h": 1 / 24, "d": 1.0, "wk": 7.0, "mo": 30.0, "a": 365.0}
