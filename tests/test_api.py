"""The HTTP service in-process (FastAPI TestClient): CDS Hooks with the spec's examples, REST, limits, errors."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from fastapi.testclient import TestClient

from clinagent.api import Settings, create_app

from . import _bundles as B
from .conftest import SHARED, need_shared

HOOKS = SHARED / "cds-hooks"
RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


@pytest.fixture()
def client(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'api.db'}", no_auth=True))
    with TestClient(app) as c:
        c.app_store = app.state.store
        yield c


def patient_prefetch(pid="1288992", allergy=True) -> dict:
    """Full prefetch for the spec examples' patient id: a penicillin allergy, no labs."""
    p = B.patient("1960-01-01", "male")
    p["id"] = pid
    entries = []
    if allergy:
        a = B.allergy("pcn", "7984", "Penicillin V")
        a["patient"] = {"reference": f"Patient/{pid}"}
        entries.append({"resource": a})
    search = lambda e: {"resourceType": "Bundle", "type": "searchset", "entry": e}  # noqa: E731
    return {
        "patient": p,
        "medications": search([]),
        "allergies": search(entries),
        "conditions": search([]),
        "labs": search([]),
        "vitals": search([]),
    }


def hook_request(example: str, hook: str, prefetch: dict | None) -> dict:
    ctx = json.loads((need_shared(HOOKS / "hook-library-examples") / example).read_text())["context"]
    body = {"hook": hook, "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": ctx}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def test_discovery_lists_the_services_with_prefetch(client):
    r = client.get("/cds-services")
    assert r.status_code == 200
    services = {s["hook"]: s for s in r.json()["services"]}
    assert set(services) == {"order-select", "order-sign", "patient-view"}
    assert "{{context.patientId}}" in services["order-sign"]["prefetch"]["allergies"]


@pytest.mark.parametrize(
    "example, hook",
    [("order-sign__01__example-r4.json", "order-sign"), ("order-select__01__example-r4.json", "order-select")],
)
def test_spec_order_examples_are_accepted_and_the_allergy_blocks(client, example, hook):
    sid = f"clinagent-{hook}"
    r = client.post(f"/cds-services/{sid}", json=hook_request(example, hook, patient_prefetch()))
    assert r.status_code == 200, r.text
    cards = r.json()["cards"]
    critical = [c for c in cards if c["indicator"] == "critical"]
    assert critical and critical[0]["source"]["topic"]["code"] == "drug-allergy"
    for c in cards:
        assert len(c["summary"]) <= 140 and c["uuid"] and c["detail"] and c["source"]["label"]
        assert c["overrideReasons"] and all({"code", "system", "display"} <= set(o) for o in c["overrideReasons"])
    delete = critical[0]["suggestions"][0]["actions"][0]
    assert delete["type"] == "delete" and delete["resourceId"] == ["MedicationRequest/smart-MedicationRequest-103"]


def test_order_sign_without_allergy_gives_no_critical_card(client):
    body = hook_request("order-sign__01__example-r4.json", "order-sign", patient_prefetch(allergy=False))
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 200
    assert not [c for c in r.json()["cards"] if c["indicator"] == "critical"]


@pytest.mark.parametrize("example", ["patient-view__01__examples.json", "patient-view__02__examples.json"])
def test_spec_patient_view_examples_are_accepted(client, example):
    pre = patient_prefetch(allergy=True)
    strep = B.condition("strep", "43878008", "Streptococcal sore throat (disorder)", "2099-01-01")
    pre["conditions"]["entry"].append({"resource": {**strep, "subject": {"reference": "Patient/1288992"}}})
    r = client.post("/cds-services/clinagent-patient-view", json=hook_request(example, "patient-view", pre))
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["cards"], list)


def test_spec_feedback_examples_are_accepted_and_stored(client):
    for name in (
        "spec__24__example-suggestion-accepted.json",
        "spec__26__example-overridden-guidance-with-overridereason.json",
    ):
        body = json.loads((need_shared(HOOKS / "spec-examples") / name).read_text())
        r = client.post("/cds-services/clinagent-order-sign/feedback", json=body)
        assert r.status_code == 200, r.text
    assert client.app_store.verify_audit().ok


class _Fhir(BaseHTTPRequestHandler):
    seen: list[tuple[str, str | None]] = []
    data: dict = {}

    def do_GET(self):  # noqa: N802
        _Fhir.seen.append((self.path, self.headers.get("Authorization")))
        key = next((k for k in _Fhir.data if self.path.startswith(k)), None)
        body = json.dumps(_Fhir.data[key] if key else {"resourceType": "Bundle", "type": "searchset"}).encode()
        self.send_response(200 if key or "?" in self.path else 404)
        self.send_header("Content-Type", "application/fhir+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def test_missing_prefetch_is_fetched_from_the_fhir_server_with_the_token(client):
    pre = patient_prefetch()
    _Fhir.seen = []
    _Fhir.data = {"/fhir/Patient/1288992": pre["patient"], "/fhir/AllergyIntolerance": pre["allergies"]}
    server = HTTPServer(("127.0.0.1", 0), _Fhir)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        body = hook_request("order-sign__01__example-r4.json", "order-sign", None)
        body["fhirServer"] = f"http://127.0.0.1:{server.server_address[1]}/fhir"
        body["fhirAuthorization"] = {
            "access_token": "opaque-token-123",
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "user/*.read",
            "subject": "clinagent",
        }
        r = client.post("/cds-services/clinagent-order-sign", json=body)
    finally:
        server.shutdown()
    assert r.status_code == 200, r.text
    assert [c for c in r.json()["cards"] if c["indicator"] == "critical"]  # the fetched allergy blocked the order
    assert len(_Fhir.seen) == 6 and all(auth == "Bearer opaque-token-123" for _, auth in _Fhir.seen)


def test_unreachable_fhir_server_or_none_is_412(client):
    body = hook_request("order-sign__01__example-r4.json", "order-sign", None)
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 412 and r.json()["resourceType"] == "OperationOutcome"
    server = HTTPServer(("127.0.0.1", 0), _Fhir)
    port = server.server_address[1]
    server.server_close()  # nothing listens there any more
    body["fhirServer"] = f"http://127.0.0.1:{port}/fhir"
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 412 and "could not fetch" in r.json()["issue"][0]["diagnostics"]


def test_malformed_input_is_422_with_a_pointer(client):
    r = client.post(
        "/cds-services/clinagent-order-sign", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and r.json()["pointer"] == "/"
    body = hook_request("order-sign__01__example-r4.json", "order-sign", patient_prefetch())
    del body["hookInstance"]
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 422 and r.json()["pointer"] == "/hookInstance"
    body = hook_request("order-sign__01__example-r4.json", "order-sign", patient_prefetch())
    mr = next(
        e["resource"]
        for e in body["context"]["draftOrders"]["entry"]
        if e["resource"]["resourceType"] == "MedicationRequest"
    )
    mr["dosageInstruction"][0]["timing"]["repeat"]["frequency"] = "twice"
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 422
    issue = r.json()["issue"][0]
    assert issue["expression"][0].startswith("/context/draftOrders/entry/1/resource")


def test_oversized_body_is_413(tmp_path):
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", no_auth=True, max_body_bytes=1000))
    with TestClient(app) as c:
        r = c.post(
            "/cds-services/clinagent-order-sign", content=b"x" * 5000, headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 413


def test_internal_failure_is_500_with_an_operation_outcome_never_empty_cards(client, monkeypatch):
    import clinagent.api as api

    monkeypatch.setattr(api, "_order_cards", lambda *a: 1 / 0)
    quiet = TestClient(client.app, raise_server_exceptions=False)
    r = quiet.post(
        "/cds-services/clinagent-order-sign",
        json=hook_request("order-sign__01__example-r4.json", "order-sign", patient_prefetch()),
    )
    assert r.status_code == 500 and r.json()["resourceType"] == "OperationOutcome"
    assert client.app_store.verify_audit().ok  # the failed call was audited too


def test_rest_check_review_get_and_decisions(client):
    order = {
        "resourceType": "MedicationRequest",
        "id": "o1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{B.PID}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RX, "code": "308182", "display": "Amoxicillin 250 MG Oral Capsule"}]
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 2}}],
            }
        ],
    }
    r = client.post("/v1/check", json={"patient": B.strep_penicillin_allergy(), "order": order, "as_of": "2026-11-01"})
    assert r.status_code == 200 and r.json()["allowed"] is False
    r = client.post("/v1/reviews", json={"bundle": B.strep_penicillin_allergy(), "as_of": "2026-11-01"})
    assert r.status_code == 201
    review = r.json()
    got = client.get(f"/v1/reviews/{review['run_id']}")
    assert got.status_code == 200 and got.json()["run_id"] == review["run_id"]
    sid = review["shown"][0]["id"]
    ok = client.post(
        f"/v1/reviews/{review['run_id']}/decisions",
        json={
            "suggestion_id": sid,
            "action": "override",
            "reason": {"code": "benefit-outweighs-risk", "display": "Benefit"},
            "comment": "ok",
        },
    )
    assert ok.status_code == 201, ok.text
    assert (
        client.post(
            f"/v1/reviews/{review['run_id']}/decisions", json={"suggestion_id": sid, "action": "override"}
        ).status_code
        == 422
    )
    assert (
        client.post(
            f"/v1/reviews/{review['run_id']}/decisions", json={"suggestion_id": "nope", "action": "accept"}
        ).status_code
        == 404
    )
    assert client.get("/v1/reviews/does-not-exist").status_code == 404
    bad = client.post(
        "/v1/check", json={"patient": {"resourceType": "Bundle", "type": "collection", "entry": []}, "order": order}
    )
    assert bad.status_code == 422 and "pointer" in bad.json()
    assert client.app_store.verify_audit().ok


def test_openapi_is_served(client):
    r = client.get("/openapi.json")
    assert r.status_code == 200 and "/v1/check" in r.json()["paths"]


def test_an_operation_outcome_or_a_partial_page_in_prefetch_counts_as_missing(client):
    pre = patient_prefetch()
    pre["allergies"] = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "processing"}]}
    body = hook_request("order-sign__01__example-r4.json", "order-sign", pre)
    assert client.post("/cds-services/clinagent-order-sign", json=body).status_code == 412  # no fhirServer to ask
    pre = patient_prefetch()
    pre["allergies"]["link"] = [{"relation": "next", "url": "http://elsewhere.example/fhir?page=2"}]
    body = hook_request("order-sign__01__example-r4.json", "order-sign", pre)
    assert client.post("/cds-services/clinagent-order-sign", json=body).status_code == 412


def _draft(i, code, name):
    return {
        "resource": {
            "resourceType": "MedicationRequest",
            "id": i,
            "status": "draft",
            "intent": "order",
            "subject": {"reference": "Patient/1288992"},
            "medicationCodeableConcept": {"coding": [{"system": RX, "code": code, "display": name}]},
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
                    "doseAndRate": [{"doseQuantity": {"value": 1}}],
                }
            ],
        }
    }


def test_draft_orders_signed_together_interact(client):
    body = hook_request("order-sign__01__example-r4.json", "order-sign", patient_prefetch(allergy=False))
    body["context"]["draftOrders"]["entry"] = [
        _draft("s", "312961", "Simvastatin 20 MG Oral Tablet"),
        _draft("c", "197517", "clarithromycin 500 MG Oral Tablet"),
    ]
    r = client.post("/cds-services/clinagent-order-sign", json=body)
    assert r.status_code == 200
    assert any(c["indicator"] == "critical" and c["source"]["topic"]["code"] == "drug-drug" for c in r.json()["cards"])
