"""The `clinagent check` command as people and scripts call it: a real process, JSON contract, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "clinagent.cli", *args], capture_output=True, text=True, cwd=cwd)


def patient_bundle(tmp_path: Path, allergy_code: str | None = "7984") -> Path:
    entries = [
        {"resource": {"resourceType": "Patient", "id": "p1", "gender": "male", "birthDate": "1970-01-01"}},
        {
            "resource": {
                "resourceType": "Observation",
                "id": "w1",
                "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                "subject": {"reference": "Patient/p1"},
                "effectiveDateTime": "2026-10-01",
                "valueQuantity": {"value": 80, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
            }
        },
    ]
    if allergy_code:
        entries.append(
            {
                "resource": {
                    "resourceType": "AllergyIntolerance",
                    "id": "a1",
                    "patient": {"reference": "Patient/p1"},
                    "clinicalStatus": {"coding": [{"code": "active"}]},
                    "code": {"coding": [{"system": RX, "code": allergy_code, "display": "Penicillin V"}]},
                }
            }
        )
    p = tmp_path / "patient.json"
    p.write_text(json.dumps({"resourceType": "Bundle", "type": "collection", "entry": entries}))
    return p


def order(
    tmp_path: Path,
    code="308182",
    display="Amoxicillin 250 MG Oral Capsule",
    value=2,
    unit=None,
    name="order.json",
    frequency=3,
):
    dq = (
        {"value": value}
        if unit is None
        else {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
    )
    mr = {
        "resourceType": "MedicationRequest",
        "id": "o1",
        "status": "active",
        "intent": "order",
        "subject": {"reference": "Patient/p1"},
        "medicationCodeableConcept": {"coding": [{"system": RX, "code": code, "display": display}]},
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": frequency, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": dq}],
            }
        ],
    }
    p = tmp_path / name
    p.write_text(json.dumps(mr))
    return p, mr


def test_check_json_contract_and_block_exit_code(tmp_path):
    r = run(
        "check",
        "--patient",
        str(patient_bundle(tmp_path)),
        "--order",
        str(order(tmp_path)[0]),
        "--json",
        "--as-of",
        "2026-11-01",
    )
    assert r.returncode == 1, r.stderr
    v = json.loads(r.stdout)
    assert set(v) >= {"allowed", "findings", "knowledge_version"}
    assert v["allowed"] is False and len(v["knowledge_version"]) == 64
    f = next(f for f in v["findings"] if f["category"] == "drug-allergy")
    assert set(f) >= {"rule_id", "category", "severity", "message", "evidence"} and f["severity"] == "block"
    assert any(e.get("reference") == "AllergyIntolerance/a1" for e in f["evidence"])


def test_check_allowed_order_exits_zero_and_prints_a_table(tmp_path):
    r = run(
        "check",
        "--patient",
        str(patient_bundle(tmp_path, None)),
        "--order",
        str(order(tmp_path)[0]),
        "--as-of",
        "2026-11-01",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("ALLOWED")


def test_bundle_of_orders_gives_a_list(tmp_path):
    _, a = order(tmp_path)
    _, b = order(tmp_path, "197361", "Amlodipine 5 MG Oral Tablet", 1, frequency=1)
    p = tmp_path / "orders.json"
    p.write_text(
        json.dumps({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": a}, {"resource": b}]})
    )
    r = run("check", "--patient", str(patient_bundle(tmp_path)), "--order", str(p), "--json", "--as-of", "2026-11-01")
    out = json.loads(r.stdout)
    assert isinstance(out, list) and [v["allowed"] for v in out] == [False, True]


@pytest.mark.parametrize(
    "content, needle",
    [
        ("{broken", "not valid JSON"),
        (
            json.dumps(
                {
                    "resourceType": "MedicationRequest",
                    "status": "active",
                    "intent": "order",
                    "subject": {"reference": "Patient/p1"},
                    "medicationCodeableConcept": {"text": "x"},
                    "dosageInstruction": [{"doseAndRate": [{"doseQuantity": {"value": "lots"}}]}],
                }
            ),
            "doseQuantity",
        ),
        (json.dumps({"resourceType": "Patient", "id": "x"}), "expected MedicationRequest"),
    ],
)
def test_bad_order_input_is_exit_2_with_a_clear_message_and_no_traceback(tmp_path, content, needle):
    p = tmp_path / "bad.json"
    p.write_text(content)
    r = run("check", "--patient", str(patient_bundle(tmp_path)), "--order", str(p), "--json")
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and needle in r.stderr and "bad.json" in r.stderr
    assert r.stdout == ""


def test_missing_file_is_exit_2(tmp_path):
    r = run("check", "--patient", str(tmp_path / "nope.json"), "--order", str(tmp_path / "nope2.json"))
    assert r.returncode == 2 and "nope.json" in r.stderr and "Traceback" not in r.stderr


def test_bad_as_of_is_a_usage_error(tmp_path):
    r = run("check", "--patient", "x", "--order", "y", "--as-of", "yesterday")
    assert r.returncode == 2 and "--as-of" in r.stderr


def test_knowledge_command_prints_version_and_counts():
    r = run("knowledge")
    assert r.returncode == 0
    out = json.loads(r.stdout)
    assert out["ingredients"] > 0 and len(out["knowledge_version"]) == 64


def test_staleness_limits_are_settable(tmp_path):
    """A child's weight 40 days old is stale by default (30 days): weight-based dosing blocks; a 60-day limit allows it."""
    child = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [
            {"resource": {"resourceType": "Patient", "id": "c1", "gender": "female", "birthDate": "2020-03-01"}},
            {
                "resource": {
                    "resourceType": "Observation",
                    "id": "w1",
                    "status": "final",
                    "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7"}]},
                    "subject": {"reference": "Patient/c1"},
                    "effectiveDateTime": "2026-09-22",
                    "valueQuantity": {"value": 18, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
                }
            },
        ],
    }
    p = tmp_path / "child.json"
    p.write_text(json.dumps(child))
    o, _ = order(tmp_path, code="313782", display="Acetaminophen 325 MG Oral Tablet", value=200, unit="mg", frequency=4)
    default = run("check", "--patient", str(p), "--order", str(o), "--json", "--as-of", "2026-11-01")
    assert default.returncode == 1
    assert any("stale" in f["message"] for f in json.loads(default.stdout)["findings"])
    longer = run(
        "check",
        "--patient",
        str(p),
        "--order",
        str(o),
        "--json",
        "--as-of",
        "2026-11-01",
        "--child-weight-max-age",
        "60",
    )
    assert longer.returncode == 0, longer.stdout
    bad = run("check", "--patient", str(p), "--order", str(o), "--weight-max-age", "soon")
    assert bad.returncode == 2 and "--weight-max-age" in bad.stderr
