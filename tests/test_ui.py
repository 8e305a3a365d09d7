"""The clinician app (ui/app.py) under streamlit.testing.v1.AppTest: headless, no browser, no network.

Each test gets its own SQLite store (DATABASE_URL in a tmp dir, Streamlit's resource cache cleared) and checks the
decisions the app records by opening clinagent.store.Store on the same URL.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from .conftest import SYNTHEA, need_shared

st = pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "ui" / "app.py"
EXAMPLE = ROOT / "fixtures" / "examples" / "patient.json"
TIMEOUT = 60  # the first run imports clinagent, pydantic-ai and the knowledge base

SCRIPT = "<script>alert(1)</script>"
BOLD = "**x**"
NAME_TEXT = f"Mallory {BOLD} {SCRIPT}"
CONDITION_TEXT = f"{BOLD} {SCRIPT} rare condition"
ALLERGY_TEXT = f"{SCRIPT} {BOLD} unmapped allergen"


@pytest.fixture
def db_url(tmp_path, monkeypatch):
    """A private store per test: the app's @st.cache_resource Store() is per process, so the cache is cleared."""
    url = f"sqlite:///{tmp_path / 'ui.db'}"
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("CLINAGENT_MODEL", "offline")
    monkeypatch.delenv("CLINAGENT_UI_USER", raising=False)
    st.cache_resource.clear()
    yield url
    st.cache_resource.clear()  # drop the app's engine on this file before tmp_path goes


def stored(url: str):
    from clinagent.store import Store

    return Store(url)


def start() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def run_review(at: AppTest, url: str) -> dict:
    """Click "Run review"; return the stored review (the one the app shows) from the store."""
    at.button(key="run_review").click().run()
    assert not at.exception, [e.value for e in at.exception]
    with stored(url) as s:
        rows = s.list_reviews()
        assert len(rows) == 1, rows
        return s.get_review(rows[0]["run_id"])


def warned(review: dict) -> list[int]:
    return [i for i, s in enumerate(review["shown"]) if any(f["severity"] == "warn" for f in s["findings"])]


def decisions(url: str, run_id: str) -> list[dict]:
    with stored(url) as s:
        return s.get_review(run_id)["decisions"]


def texts(elements) -> list[str]:
    return [e.value for e in elements]


# ---- pick a patient, review ------------------------------------------------------------------------------------


def test_pick_bundled_patient_and_review(db_url):
    at = start()
    assert at.sidebar.radio(key="source").value == "Bundled fixtures"
    assert at.sidebar.selectbox(key="fixture").value.name == "patient.json"  # the example patient first
    assert at.subheader[0].value == "Demo Example"
    assert at.metric[0].label == "Age / sex" and at.metric[0].value.endswith("female")
    assert "Run a review to see suggestions." in texts(at.caption)

    review = run_review(at, db_url)
    assert review["patient"] == "Patient/demo-1" and review["shown"] and review["blocked"]
    md = texts(at.markdown)
    assert f"### Suggestions ({len(review['shown'])})" in md
    assert f"### Blocked by the safety gates ({len(review['blocked'])})" in md
    # each suggestion is a card with its title, rationale and its own buttons; provenance is in an expander
    assert [b.key for b in at.button if b.label == "Accept"] == [f"accept-{i}" for i in range(len(review["shown"]))]
    assert len([e for e in at.expander if e.label.startswith("Provenance")]) == len(review["shown"])
    rationales = texts(at.text)
    assert all(s["rationale"] in rationales for s in review["shown"] + review["blocked"])
    # the History tab lists the stored review
    assert review["run_id"] in at.selectbox(key="hist_run").options


def test_pick_shared_synthea_patient(db_url):
    bundles = need_shared(SYNTHEA / "bundles")
    path = next(iter(sorted(bundles.glob("Parker_Casper_*.json"))), None) or sorted(bundles.glob("*.json"))[0]
    at = start()
    at.sidebar.radio(key="source").set_value("Shared Synthea patient").run()
    at.sidebar.selectbox(key="synthea").set_value(path.name).run()
    assert not at.exception, [e.value for e in at.exception]
    from clinagent.record import load_record

    rec = load_record(path)
    # the as-of date defaults to the patient's last activity, also after switching from the first patient listed
    assert at.sidebar.date_input[0].value == rec.last_activity()
    assert path.name.split("_")[0] in at.subheader[0].value
    review = run_review(at, db_url)
    assert review["patient"] == rec.patient_ref
    assert review["as_of"] == rec.last_activity().isoformat()


# ---- decisions -------------------------------------------------------------------------------------------------


def test_accept_needs_the_warnings_acknowledged(db_url):
    at = start()
    review = run_review(at, db_url)
    i = warned(review)[0]
    assert at.button(key=f"accept-{i}").disabled, "accept must wait for the warning acknowledgement"
    assert at.checkbox(key=f"ack-{i}").label == "I have read and acknowledge the warnings"
    assert decisions(db_url, review["run_id"]) == []

    at.checkbox(key=f"ack-{i}").check().run()
    assert not at.button(key=f"accept-{i}").disabled
    at.button(key=f"accept-{i}").click().run()
    assert not at.exception
    assert "Decision recorded: accept" in texts(at.success)
    (d,) = decisions(db_url, review["run_id"])
    assert d["suggestion_id"] == review["shown"][i]["id"] and d["action"] == "accept"
    assert d["actor"] == "clinician (local)" and d["reason_code"] is None
    # the card now shows the decision instead of its buttons
    assert not [b for b in at.button if b.key in (f"accept-{i}", f"reject-{i}", f"override-{i}")]


def test_accept_without_warnings_and_reject(db_url):
    at = start()
    review = run_review(at, db_url)
    clean = [i for i in range(len(review["shown"])) if i not in warned(review)]
    assert clean, "the bundled example has suggestions without warnings"
    i = clean[0]
    assert not at.button(key=f"accept-{i}").disabled
    assert not [c for c in at.checkbox if c.key == f"ack-{i}"]  # nothing to acknowledge
    at.button(key=f"accept-{i}").click().run()
    j = warned(review)[0]
    at.button(key=f"reject-{j}").click().run()  # rejecting needs no acknowledgement
    got = {(d["suggestion_id"], d["action"]) for d in decisions(db_url, review["run_id"])}
    assert got == {(review["shown"][i]["id"], "accept"), (review["shown"][j]["id"], "reject")}


def test_override_needs_a_reason(db_url):
    from clinagent.cdshooks import OVERRIDE_REASONS

    at = start()
    review = run_review(at, db_url)
    i = warned(review)[0]
    reason = at.selectbox(key=f"reason-{i}")
    assert reason.value is None and set(reason.options) == {r["display"] for r in OVERRIDE_REASONS}
    at.text_input(key=f"comment-{i}").input("INR check booked for Monday").run()
    assert at.button(key=f"override-{i}").disabled, "no override without a reason"
    assert decisions(db_url, review["run_id"]) == []

    at.selectbox(key=f"reason-{i}").set_value("monitoring-planned").run()
    assert not at.button(key=f"override-{i}").disabled
    at.button(key=f"override-{i}").click().run()
    assert not at.exception
    (d,) = decisions(db_url, review["run_id"])
    assert d["action"] == "override" and d["suggestion_id"] == review["shown"][i]["id"]
    assert d["reason_code"] == "monitoring-planned"
    assert d["reason_display"] == "Will monitor (labs, levels, symptoms)"
    assert d["comment"] == "INR check booked for Monday"
    assert "Decision recorded: override (Will monitor (labs, levels, symptoms))" in texts(at.success)
    # the store itself refuses an override without a reason, whatever the UI does
    with stored(db_url) as s, pytest.raises(ValueError, match="reason"):
        s.add_decision(review["run_id"], review["shown"][i]["id"], "override", None, None, None, "someone")


def test_blocked_section_has_no_accept(db_url):
    at = start()
    review = run_review(at, db_url)
    assert review["blocked"]
    md = texts(at.markdown)
    start_blocked = md.index(f"### Blocked by the safety gates ({len(review['blocked'])})")
    blocked_md = md[start_blocked + 1 :]
    assert len([m for m in blocked_md if m.startswith("⛔ **")]) == len(review["blocked"])
    # decision buttons belong to shown suggestions only: as many Accept buttons as shown cards, none more
    accept = [b for b in at.button if b.label in ("Accept", "Override and accept")]
    n_shown, n_warned = len(review["shown"]), len(warned(review))
    assert len(accept) == n_shown + n_warned
    assert {b.key for b in accept} <= {f"{k}-{i}" for k in ("accept", "override") for i in range(n_shown)}
    # the blocked findings are listed (a table with the block icon)
    tables = [df.value for df in at.dataframe if "finding" in getattr(df.value, "columns", [])]
    assert len(tables) == len(review["blocked"]) and all((t[""] == "⛔").any() for t in tables)
    # and the store refuses to accept one, whatever the UI does
    with stored(db_url) as s, pytest.raises(ValueError, match="never actionable"):
        s.add_decision(review["run_id"], review["blocked"][0]["id"], "accept", None, None, None, "someone")


# ---- record text is text ---------------------------------------------------------------------------------------


def injected_bundle() -> bytes:
    doc = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    pid = next(e["resource"]["id"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")
    for e in doc["entry"]:
        if e["resource"]["resourceType"] == "Patient":
            e["resource"]["name"] = [{"text": NAME_TEXT}]
    doc["entry"] += [
        {
            "fullUrl": "urn:uuid:c-inj",
            "resource": {
                "resourceType": "Condition",
                "id": "c-inj",
                "subject": {"reference": f"Patient/{pid}"},
                "clinicalStatus": {
                    "coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]
                },
                "code": {
                    "coding": [{"system": "http://snomed.info/sct", "code": "1234567", "display": CONDITION_TEXT}]
                },
                "onsetDateTime": "2024-01-01",
            },
        },
        {
            "fullUrl": "urn:uuid:al-inj",
            "resource": {
                "resourceType": "AllergyIntolerance",
                "id": "al-inj",
                "patient": {"reference": f"Patient/{pid}"},
                "clinicalStatus": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical",
                            "code": "active",
                        }
                    ]
                },
                "category": ["medication"],
                "code": {"text": ALLERGY_TEXT},
            },
        },
    ]
    return json.dumps(doc).encode()


def walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from walk(child)


LITERAL = {"dataframe", "arrow_data_frame", "text", "code"}  # element types that display their content as plain text


def test_record_text_is_never_rendered_as_html_or_markdown(db_url):
    at = start()
    at.sidebar.radio(key="source").set_value("Upload a FHIR bundle").run()
    at.sidebar.file_uploader(key="upload").set_value(("injected.json", injected_bundle(), "application/json")).run()
    assert not at.exception and not at.sidebar.error, texts(at.sidebar.error)
    review = run_review(at, db_url)

    # shown literally, in tables and plain text
    cells = [str(v) for df in at.dataframe for v in df.value.to_numpy().ravel()]
    assert CONDITION_TEXT in cells and ALLERGY_TEXT in cells
    assert any(ALLERGY_TEXT in s["rationale"] or ALLERGY_TEXT in json.dumps(s["findings"]) for s in review["shown"])
    # where markdown shows record text (the name, the warnings) its special characters are escaped
    assert "Mallory" in at.subheader[0].value and BOLD not in at.subheader[0].value
    warnings = [w for w in texts(at.warning) if "unmapped allergen" in w]
    assert warnings, texts(at.warning)

    # no element other than a table or plain text carries the raw markup, anywhere in the page (labels, help, alerts)
    elements = [n for n in walk(at._tree) if hasattr(n, "proto") and not hasattr(n, "children")]
    assert elements
    for el in elements:
        if el.type in LITERAL:
            continue
        raw = str(el.proto)
        assert SCRIPT not in raw and BOLD not in raw, (el.type, raw[:300])
        assert not getattr(el.proto, "allow_html", False), el.type
    assert not [el for el in elements if el.type == "html"]
    assert not [p for p in (ROOT / "ui").rglob("*.py") if "unsafe_allow_html" in p.read_text()]


# ---- order check and FHIR export -------------------------------------------------------------------------------


def test_order_check_blocked_and_allowed(db_url):
    at = start()
    # the default order: amoxicillin for a patient with a penicillin allergy and CrCl below 30
    assert at.text_input(key="oc_drug").value == "Amoxicillin 500 MG Oral Capsule"
    at.button(key="oc_check").click().run()
    assert texts(at.error) == ["BLOCKED: Amoxicillin 500 MG Oral Capsule"]
    findings = at.dataframe[-1].value
    assert (findings[""] == "⛔").any() and findings["category"].str.contains("allergy").any()

    at.text_input(key="oc_drug").input("Atorvastatin 20 MG Oral Tablet")
    at.number_input(key="oc_freq").set_value(1)
    at.button(key="oc_check").click().run()
    assert not at.error and texts(at.success) == ["ALLOWED: Atorvastatin 20 MG Oral Tablet"]
    with stored(db_url) as s:  # an order check is not a review: nothing is stored
        assert s.list_reviews() == []


@pytest.fixture
def downloads(monkeypatch):
    """The bytes behind each download button: AppTest keeps media in a per-run manager, so record what it stores."""
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    files: dict[str, tuple[bytes, str]] = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def load_and_get_id(self, path_or_data, mimetype, kind, filename=None):
        file_id = original(self, path_or_data, mimetype, kind, filename)
        data = path_or_data if isinstance(path_or_data, bytes) else Path(path_or_data).read_bytes()
        files[file_id] = (data, mimetype)
        return file_id

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", load_and_get_id)
    return files


def test_fhir_export_is_a_valid_r4_bundle(db_url, downloads):
    from fhir.resources.R4B.bundle import Bundle

    at = start()
    review = run_review(at, db_url)
    (button,) = at.get("download_button")
    assert button.label == "Export the review as FHIR R4 (JSON)"
    data, mimetype = downloads[Path(button.proto.url).stem]
    assert mimetype == "application/fhir+json"
    doc = json.loads(data)
    bundle = Bundle.model_validate(doc)
    assert bundle.type in ("collection", "document", "transaction", "batch")
    text = json.dumps(doc)
    assert review["run_id"] in text
    assert all(s["id"] in text or s["title"] in text for s in review["shown"])
