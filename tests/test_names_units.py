"""The RxNorm-style name parser and unit arithmetic, with property-based tests against pint."""

from __future__ import annotations

import math

import pint
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import units
from guardrails.names import countable, name_variants, parse_product_name, routes_for_dose_form

TABLE = units.build_table()
UREG = pint.UnitRegistry()


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Amoxicillin 500 MG Oral Capsule", [("Amoxicillin", 500.0, "mg", None, None)]),
        (
            "Acetaminophen 325 MG / HYDROcodone Bitartrate 5 MG Oral Tablet",
            [("Acetaminophen", 325.0, "mg", None, None), ("HYDROcodone Bitartrate", 5.0, "mg", None, None)],
        ),
        ("Amoxicillin 250 MG/5ML Oral Suspension", [("Amoxicillin", 250.0, "mg", 5.0, "mL")]),
        ("120 ACTUAT Albuterol 0.09 MG/ACTUAT Metered Dose Inhaler", [("Albuterol", 0.09, "mg", 1.0, "{actuat}")]),
        ("Insulin Lispro 100 UNT/ML Injectable Solution [Humalog]", [("Insulin Lispro", 100.0, "[iU]", 1.0, "mL")]),
        ("Potassium Chloride 20 MEQ Extended Release Oral Tablet", [("Potassium Chloride", 20.0, "meq", None, None)]),
        ("Levothyroxine Sodium 0.075 MG Oral Tablet", [("Levothyroxine Sodium", 0.075, "mg", None, None)]),
        ("Ondansetron 4 MG per 5 ML Oral Solution", [("Ondansetron", 4.0, "mg", 5.0, "mL")]),
    ],
)
def test_parse_product_name(text, expected):
    p = parse_product_name(text)
    assert p is not None
    got = [(c.name, c.strength, c.unit, c.per_volume, c.per_unit) for c in p.components]
    assert got == expected


@pytest.mark.parametrize("text", ["Aspirin", "take two tablets", "Amoxicillin Oral Capsule", ""])
def test_non_product_names_do_not_parse(text):
    assert parse_product_name(text) is None


def test_name_variants_try_whole_name_first():
    assert name_variants("Potassium Chloride")[0] == "potassium chloride"
    assert "hydrocodone" in name_variants("HYDROcodone Bitartrate")


def test_dose_forms():
    assert routes_for_dose_form("Oral Tablet") == {"oral"}
    assert "intravenous" in routes_for_dose_form("Injectable Solution")
    assert countable("Extended Release Oral Tablet") and not countable("Oral Suspension")


MASS = ["mg", "g", "ug", "mcg", "kg", "ng"]
PINT_NAME = {"mg": "milligram", "g": "gram", "ug": "microgram", "mcg": "microgram", "kg": "kilogram", "ng": "nanogram"}


@settings(max_examples=300, deadline=None)
@given(st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), st.sampled_from(MASS), st.sampled_from(MASS))
def test_mass_conversion_matches_pint(value, a, b):
    dim, base = units.to_base(value, a, TABLE)
    assert dim == "mass"
    got = units.convert(base, dim, b, TABLE)
    want = UREG.Quantity(value, PINT_NAME[a]).to(PINT_NAME[b]).magnitude
    assert math.isclose(got, want, rel_tol=1e-9)


@settings(max_examples=200, deadline=None)
@given(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False), st.sampled_from(MASS))
def test_round_trip_is_identity(value, unit):
    dim, base = units.to_base(value, unit, TABLE)
    assert math.isclose(units.convert(base, dim, unit, TABLE), value, rel_tol=1e-12)


@pytest.mark.parametrize("unit", ["puffs", "drops", "{drop}", "tsp", "mg/kg", "banana"])
def test_units_that_are_not_mass_do_not_convert_to_mass(unit):
    hit = units.lookup(unit, TABLE)
    assert hit is None or hit[0] != "mass"


def test_gram_milligram_microgram_are_three_orders_apart():
    assert units.to_base(1, "g", TABLE) == ("mass", 1000.0)
    assert units.to_base(1, "mg", TABLE) == ("mass", 1.0)
    assert units.to_base(1, "ug", TABLE) == ("mass", 0.001)
    assert units.to_base(1, "mcg", TABLE) == ("mass", 0.001)


def test_unknown_ucum_mass_unit_goes_through_ucumvert():
    hit = units.lookup("dg", TABLE)  # decigram: not in the table
    assert hit is not None and hit[0] == "mass" and math.isclose(hit[1], 100.0)


def test_mmol_is_not_silently_treated_as_meq():
    assert units.lookup("mmol", TABLE) is None or units.lookup("mmol", TABLE)[0] != "equivalents"
