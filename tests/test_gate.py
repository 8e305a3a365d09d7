"""Gate behaviour that the order suite does not pin down on its own: fail-closed paths, determinism, arithmetic."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import date

import pint
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrails import RULES, ActiveMedication, Allergy, Code, Dose, Measured, MedicationOrder, PatientFacts, gate

from . import _bundles as B

AS_OF = date(2026, 11, 1)
UREG = pint.UnitRegistry()


def adult(**kw) -> PatientFacts:
    base = dict(
        patient_ref="Patient/t",
        as_of=AS_OF,
        birth_date=date(1980, 1, 1),
        sex="female",
        weight=Measured(70, "kg", date(2026, 10, 1), "Observation/w"),
        egfr=Measured(90, "mL/min/1.73m2", date(2026, 10, 1), "Observation/e"),
    )
    base.update(kw)
    return PatientFacts(**base)


def child(weight: Measured | None, **kw) -> PatientFacts:
    return adult(birth_date=date(2020, 5, 1), weight=weight, egfr=None, **kw)


def order(code="", display="", text="", value=1.0, unit="", freq=1.0, period=1.0, period_unit="d", route=None):
    codes = (Code("rxnorm", code, display),) if code else ()
    return MedicationOrder(
        "MedicationRequest/t",
        codes,
        text,
        Dose(value, unit) if value is not None else None,
        frequency=freq,
        period=period,
        period_unit=period_unit,
        route=Code("snomed", route, "") if route else None,
    )


def cats(v, severity="block"):
    return {f.category for f in v.findings if f.severity == severity}


def test_a_rule_that_raises_blocks_the_order(kb, monkeypatch):
    def broken(ctx):
        raise KeyError("boom")
        yield  # pragma: no cover

    monkeypatch.setitem(RULES, "dose.limits", broken)
    v = gate(order(text="amoxicillin", value=500, unit="mg", freq=3), adult(), kb)
    assert not v.allowed
    f = next(f for f in v.findings if f.rule_id == "dose.limits")
    assert f.category == "unverifiable" and f.severity == "block" and "boom" in f.message


def test_unknown_drug_and_unknown_unit_fail_closed(kb):
    v = gate(order(text="zorblatinib", value=10, unit="mg"), adult(), kb)
    assert not v.allowed and cats(v) == {"unverifiable"}
    v = gate(order(text="amoxicillin", value=2, unit="{drop}"), adult(), kb)
    assert not v.allowed and "unverifiable" in cats(v)
    v = gate(order(text="amoxicillin", value=None), adult(), kb)
    assert not v.allowed and "unverifiable" in cats(v)


def test_grams_milligrams_micrograms(kb):
    ok = gate(order(text="amoxicillin", value=0.5, unit="g", freq=3), adult(), kb)
    assert ok.allowed, ok.findings
    tenfold = gate(order(text="amoxicillin", value=5, unit="g", freq=3), adult(), kb)
    assert "dose-single" in cats(tenfold)
    levo_ok = gate(order(text="levothyroxine", value=100, unit="ug"), adult(), kb)
    assert levo_ok.allowed, levo_ok.findings
    levo_mg = gate(order(text="levothyroxine", value=100, unit="mg"), adult(), kb)  # 1000x
    assert "dose-single" in cats(levo_mg)


def test_methotrexate_daily_is_blocked_weekly_is_not(kb):
    weekly = gate(
        order(text="methotrexate", value=15, unit="mg", freq=1, period=1, period_unit="wk", route="26643006"),
        adult(),
        kb,
    )
    assert "dose-daily" not in cats(weekly)
    daily = gate(
        order(text="methotrexate", value=15, unit="mg", freq=1, period=1, period_unit="d", route="26643006"),
        adult(),
        kb,
    )
    assert "dose-daily" in cats(daily)


def test_weight_based_child_dose_needs_a_current_weight(kb):
    o = order(text="acetaminophen", value=200, unit="mg", freq=4)
    fresh = Measured(18, "kg", date(2026, 10, 20), "Observation/w")
    assert gate(o, child(fresh), kb).allowed
    assert "unverifiable" in cats(gate(o, child(None), kb))
    stale = Measured(18, "kg", date(2025, 1, 1), "Observation/w", stale=True)
    v = gate(o, child(stale), kb)
    assert "unverifiable" in cats(v) and any("stale" in f.message for f in v.findings)
    over = gate(order(text="acetaminophen", value=500, unit="mg", freq=4), child(fresh), kb)  # 27.8 mg/kg
    assert "dose-single" in cats(over)


def test_stale_or_missing_renal_function_warns_for_a_renally_cleared_drug(kb):
    o = order(text="metformin", value=500, unit="mg", freq=2)
    stale = adult(egfr=Measured(25, "mL/min/1.73m2", date(2025, 1, 1), "Observation/e", stale=True))
    v = gate(o, stale, kb)
    assert v.allowed and "drug-renal" in cats(v, "warn")  # a stale eGFR of 25 is not treated as current
    low = adult(egfr=Measured(25, "mL/min/1.73m2", date(2026, 10, 1), "Observation/e"))
    assert "drug-renal" in cats(gate(o, low, kb))


def test_allergy_class_and_cross_sensitivity(kb):
    pen = Allergy("AllergyIntolerance/a", (Code("rxnorm", "7984", "Penicillin V"),))
    facts = adult(allergies=(pen,))
    assert "drug-allergy" in cats(gate(order(text="amoxicillin", value=500, unit="mg", freq=3), facts, kb))
    cef = gate(order(text="ceftriaxone", value=1, unit="g", freq=1, route="78421000"), facts, kb)
    assert cef.allowed and "drug-allergy" in cats(cef, "warn")
    unmapped = adult(
        allergies=(Allergy("AllergyIntolerance/b", (), "Blue pill from abroad", category=("medication",)),)
    )
    v = gate(order(text="lisinopril", value=10, unit="mg"), unmapped, kb)
    assert "drug-allergy" in cats(v, "warn")


def test_interaction_blocks_only_when_contraindicated(kb):
    warf = ActiveMedication("MedicationRequest/w", (Code("rxnorm", "855332", "Warfarin Sodium 5 MG Oral Tablet"),))
    v = gate(order(text="ibuprofen", value=400, unit="mg", freq=3), adult(medications=(warf,)), kb)
    assert v.allowed and "drug-drug" in cats(v, "warn")
    clari = ActiveMedication("MedicationRequest/c", (), "clarithromycin")
    v = gate(order(text="simvastatin", value=20, unit="mg"), adult(medications=(clari,)), kb)
    assert "drug-drug" in cats(v)


def test_an_order_is_screened_against_an_active_drug_with_the_same_id_unless_it_replaces_it(kb):
    same = ActiveMedication("MedicationRequest/t", (), "lisinopril")
    v = gate(order(text="lisinopril", value=10, unit="mg"), adult(medications=(same,)), kb)
    assert "duplicate-therapy" in cats(v, "warn")  # an id is not proof of identity
    restated = replace(order(text="lisinopril", value=10, unit="mg"), replaces="MedicationRequest/t")
    assert "duplicate-therapy" not in cats(gate(restated, adult(medications=(same,)), kb), "warn")
    clari = ActiveMedication("MedicationRequest/t", (), "clarithromycin")
    assert "drug-drug" in cats(gate(order(text="simvastatin", value=20, unit="mg"), adult(medications=(clari,)), kb))


def test_deceased_patient_blocks(kb):
    v = gate(order(text="lisinopril", value=10, unit="mg"), adult(deceased=True), kb)
    assert "unverifiable" in cats(v)


def test_gate_is_deterministic(kb):
    o = order(text="Percocet", value=2, unit="", freq=4)
    a = gate(o, adult(), kb).as_dict()
    b = gate(o, adult(), kb).as_dict()
    assert a == b


# ---- property-based: dose arithmetic against pint -------------------------------------------------------------

TABLETS = [("308182", "mg"), ("197361", "mg"), ("310798", "mg"), ("314076", "mg")]


@settings(max_examples=150, deadline=None)
@given(
    st.sampled_from(TABLETS),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=1, max_value=6),
    st.sampled_from([(1, "d"), (12, "h"), (8, "h"), (1, "wk")]),
)
def test_count_times_strength_times_frequency(kb, product, count, freq, period):
    """A unit-less dose is a count of the product's units; the daily total follows timing.repeat."""
    from guardrails.context import Context, prepare
    from guardrails.resolve import dose_per_ingredient, doses_per_day, resolve_drug

    code, _ = product
    p = kb.products[code]
    o = order(code=code, display=p.name, value=count, unit="", freq=freq, period=period[0], period_unit=period[1])
    drug = resolve_drug(o.codes, o.text, kb)
    amounts, problem = dose_per_ingredient(o.dose, drug, kb)
    assert problem is None
    ((ing, amount),) = amounts.items()
    strength = p.components[0].strength
    assert math.isclose(amount.value, count * strength)
    per_day, _ = doses_per_day(o)
    expected = UREG.Quantity(freq, "1") / UREG.Quantity(period[0], {"d": "day", "h": "hour", "wk": "week"}[period[1]])
    assert math.isclose(per_day, expected.to("1/day").magnitude)
    ctx = Context(o, adult(), kb, drug, prepare(adult(), kb), None, amounts, None, per_day)
    assert math.isclose(ctx.daily(ing, "g"), count * strength * per_day / 1000)


@settings(max_examples=100, deadline=None)
@given(st.floats(min_value=0.5, max_value=40, allow_nan=False))
def test_liquid_volume_dose_uses_concentration(kb, ml):
    from guardrails.resolve import dose_per_ingredient, resolve_drug

    o = order(text="Amoxicillin 250 MG/5ML Oral Suspension", value=ml, unit="mL")  # uncoded: the parsed name
    amounts, problem = dose_per_ingredient(o.dose, resolve_drug(o.codes, o.text, kb), kb)
    assert problem is None
    assert math.isclose(amounts["drug:amoxicillin"].value, ml * 250 / 5)


def test_code_and_name_that_disagree_block_and_both_drugs_are_checked(kb):
    # RxNorm 855332 is a warfarin product; the display names amoxicillin: a wrong code, or a wrong name
    pen = Allergy("AllergyIntolerance/a", (Code("rxnorm", "7984", "Penicillin V"),))
    o = MedicationOrder(
        "MedicationRequest/t",
        (Code("rxnorm", "855332", "Amoxicillin 500 MG Oral Capsule"),),
        "",
        Dose(1, ""),
        frequency=1,
        period=1,
        period_unit="d",
    )
    v = gate(o, adult(allergies=(pen,)), kb)
    assert not v.allowed
    assert any("the code means warfarin but the name also names amoxicillin" in f.message for f in v.findings)
    assert "drug-allergy" in cats(v)  # the name's drug was screened too
    same = MedicationOrder(
        "MedicationRequest/t",
        (Code("rxnorm", "855332", "Coumadin 5 mg tablet"),),
        "",
        Dose(1, ""),
        frequency=1,
        period=1,
        period_unit="d",
    )
    assert not any("cannot be confirmed" in f.message for f in gate(same, adult(), kb).findings)


def test_an_unverified_ingredient_code_without_a_name_is_not_trusted(kb):
    unverified = next(i for i in kb.ingredients.values() if not i.rxcui_verified)
    o = MedicationOrder("MedicationRequest/t", (Code("rxnorm", unverified.rxcui, ""),), "", Dose(1, "mg"))
    v = gate(o, adult(), kb)
    assert not v.allowed and any("not yet verified" in f.message for f in v.findings)
    named = MedicationOrder(
        "MedicationRequest/t", (Code("rxnorm", unverified.rxcui, unverified.name),), "", Dose(1, "mg")
    )
    assert not any("not yet verified" in f.message for f in gate(named, adult(), kb).findings)


def test_the_most_severe_cross_sensitivity_wins(kb):
    """Cephalexin is both a 1st-generation cephalosporin (caution after penicillin allergy) and shares the
    aminopenicillin R1 side chain (contraindicated): the block must win, whatever the order of the facts."""
    pen = Allergy("AllergyIntolerance/a", (Code("rxnorm", "7984", "Penicillin V"),))
    v = gate(order(text="cephalexin", value=500, unit="mg", freq=4), adult(allergies=(pen,)), kb)
    assert "drug-allergy" in cats(v)


# ---- fail-open paths found in review: each must now block or warn --------------------------------------------


def _mr(text, value, unit, repeat=None, code=None, mpp=None, when=None):
    from clinagent.record import parse_order

    dq = (
        {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        if unit
        else {"value": value}
    )
    di = {"doseAndRate": [{"doseQuantity": dq}]}
    if repeat is not None or when:
        di["timing"] = {"repeat": (repeat or {}) | ({"when": when} if when else {})}
    if code:
        di.setdefault("timing", {})["code"] = {"coding": [{"code": code}]}
    if mpp:
        di["maxDosePerPeriod"] = mpp
    return parse_order(
        {
            "resourceType": "MedicationRequest",
            "id": "x",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": "Patient/t"},
            "medicationCodeableConcept": {"text": text},
            "dosageInstruction": [di],
        }
    )


@pytest.mark.parametrize(
    "o, category",
    [
        (lambda: _mr("acetaminophen", 1000, "mg", {"period": 2, "periodUnit": "h"}), "dose-daily"),  # once every 2 h
        (lambda: _mr("acetaminophen", 1000, "mg", when=["MORN", "NOON", "AFT", "EVE", "NIGHT", "HS"]), "dose-daily"),
        (
            lambda: _mr("acetaminophen", 1000, "mg", {"frequency": 1, "period": 1, "periodUnit": "d"}, code="Q2H"),
            "dose-daily",
        ),
        (
            lambda: _mr(
                "acetaminophen",
                1000,
                "mg",
                mpp={"numerator": {"value": 8, "unit": "g"}, "denominator": {"value": 1, "unit": "day"}},
            ),
            "dose-daily",
        ),
        (lambda: _mr("acetaminophen", -500, "mg", {"frequency": 1, "period": 1, "periodUnit": "d"}), "unverifiable"),
    ],
)
def test_timing_and_caps_are_read_worst_case(kb, o, category):
    assert category in cats(gate(o(), adult(), kb))


def test_draft_orders_signed_together_are_screened_against_each_other(kb):
    simva = order(text="simvastatin", value=20, unit="mg")
    clari = replace(order(text="clarithromycin", value=500, unit="mg", freq=2), ref="MedicationRequest/c")
    assert gate(simva, adult(), kb).allowed
    assert "drug-drug" in cats(gate(simva, adult(), kb, pending=(simva, clari)))


def test_several_codings_that_disagree_block_and_all_are_screened(kb):
    pen = Allergy("AllergyIntolerance/a", (Code("rxnorm", "7984", "Penicillin V"),))
    o = MedicationOrder(
        "MedicationRequest/t",
        (Code("rxnorm", "161", ""), Code("rxnorm", "723", "")),
        "",
        Dose(500, "mg"),
        frequency=3,
        period=1,
        period_unit="d",
    )
    v = gate(o, adult(allergies=(pen,)), kb)
    assert "drug-allergy" in cats(v) and any("codings name different drugs" in f.message for f in v.findings)


def test_unknown_age_blocks_an_age_restricted_drug(kb):
    o = order(text="codeine", value=30, unit="mg", freq=4)
    assert "unverifiable" in cats(gate(o, adult(birth_date=None), kb))


def test_a_newer_lab_without_a_value_does_not_hide_a_dangerous_one(kb):
    from clinagent.record import record_from_bundle

    k = lambda oid, v, when: {**B.obs(oid, "6298-4", "Potassium", v, "mmol/L", when)}  # noqa: E731
    hemolysed = B.obs("k2", "6298-4", "Potassium", 0, "mmol/L", "2026-10-31")
    del hemolysed["valueQuantity"]
    hemolysed["valueString"] = "hemolysed"
    facts = record_from_bundle(B.bundle(k("k1", 6.3, "2026-10-30"), hemolysed)).facts(AS_OF)
    assert facts.labs["6298-4"].value == 6.3
