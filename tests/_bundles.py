"""Small synthetic FHIR bundles for agent tests (no real people)."""

from __future__ import annotations

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"
SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
PID = "p-test"


def patient(birth="1950-02-01", gender="female", name="Test Patient", deceased=None) -> dict:
    p = {"resourceType": "Patient", "id": PID, "gender": gender, "birthDate": birth, "name": [{"text": name}]}
    if deceased:
        p["deceasedDateTime"] = deceased
    return p


def condition(cid, code, display, onset="2020-01-01") -> dict:
    return {
        "resourceType": "Condition",
        "id": cid,
        "subject": {"reference": f"Patient/{PID}"},
        "clinicalStatus": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
        },
        "code": {"coding": [{"system": SCT, "code": code, "display": display}], "text": display},
        "onsetDateTime": onset,
    }


def obs(oid, code, display, value, unit, when) -> dict:
    return {
        "resourceType": "Observation",
        "id": oid,
        "status": "final",
        "subject": {"reference": f"Patient/{PID}"},
        "code": {"coding": [{"system": LOINC, "code": code, "display": display}], "text": display},
        "effectiveDateTime": when,
        "valueQuantity": {"value": value, "unit": unit, "system": UCUM, "code": unit},
    }


def allergy(aid, code, display) -> dict:
    return {
        "resourceType": "AllergyIntolerance",
        "id": aid,
        "patient": {"reference": f"Patient/{PID}"},
        "clinicalStatus": {"coding": [{"code": "active"}]},
        "category": ["medication"],
        "criticality": "high",
        "code": {"coding": [{"system": RX, "code": code, "display": display}], "text": display},
    }


def med(mid, code, display, freq=1) -> dict:
    return {
        "resourceType": "MedicationRequest",
        "id": mid,
        "status": "active",
        "intent": "order",
        "subject": {"reference": f"Patient/{PID}"},
        "medicationCodeableConcept": {"coding": [{"system": RX, "code": code, "display": display}], "text": display},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": freq, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 1}}],
            }
        ],
    }


def bundle(*resources, pat=None) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": f"urn:uuid:{r['id']}", "resource": r} for r in (pat or patient(), *resources)],
    }


def heart_failure_low_egfr() -> dict:
    """Heart failure at eGFR 22: the planner's spironolactone is blocked (renal) and dropped."""
    return bundle(
        condition("hf", "88805009", "Chronic congestive heart failure (disorder)"),
        obs("egfr", "33914-3", "eGFR", 22, "mL/min/{1.73_m2}", "2026-10-20"),
        obs("wt", "29463-7", "Body weight", 70, "kg", "2026-10-20"),
    )


def strep_penicillin_allergy() -> dict:
    """Adult strep throat with a penicillin allergy: amoxicillin and cephalexin blocked, azithromycin shown."""
    return bundle(
        condition("strep", "43878008", "Streptococcal sore throat (disorder)", "2026-10-28"),
        allergy("pcn", "7984", "Penicillin V"),
        obs("wt", "29463-7", "Body weight", 70, "kg", "2026-10-28"),
        pat=patient("1990-06-01"),
    )
