"""clinagent clinician app (Streamlit): a patient, the review's suggestions beside their provenance, what the gates
blocked, decisions, an order check, history and FHIR export.

It talks to clinagent through its Python API (record, review, store); record text is shown as text or in tables,
never as HTML. Run with `clinagent ui`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `streamlit run ui/app.py` from anywhere
    sys.path.insert(0, str(ROOT))

from clinagent.cdshooks import OVERRIDE_REASONS  # noqa: E402
from clinagent.errors import ClinAgentError, ConfigError, RecordError  # noqa: E402
from clinagent.record import PatientRecord, load_record, parse_order, record_from_bundle  # noqa: E402
from clinagent.review import Review, run_review, to_fhir  # noqa: E402

EXAMPLES = ROOT / "fixtures" / "examples"
SHARED = Path(os.environ.get("CLINAGENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
ACTOR = os.environ.get("CLINAGENT_UI_USER", "clinician (local)")
ICON = {"block": "⛔", "warn": "⚠️", "info": "ℹ️"}

st.set_page_config(page_title="clinagent", page_icon="💊", layout="wide")


# ---- cached resources ---------------------------------------------------------------------------------------


@st.cache_resource
def knowledge():
    from guardrails import load_knowledge

    return load_knowledge()


@st.cache_resource
def store():
    from clinagent.store import Store

    return Store(os.environ.get("DATABASE_URL"))


@st.cache_resource(max_entries=16)
def record_from_path(path: str) -> PatientRecord:
    return load_record(path)


@st.cache_resource(max_entries=8)
def record_from_bytes(data: bytes, name: str) -> PatientRecord:
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RecordError(f"not valid JSON: {e}", where=name) from None
    return record_from_bundle(doc, name)


def plain(text: object) -> str:
    """Record text for markdown: markdown's special characters escaped, so it displays literally."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~])", r"\\\1", str(text))


# ---- patient picker -----------------------------------------------------------------------------------------


def pick_patient() -> tuple[PatientRecord | None, date]:
    st.sidebar.header("Patient")
    sources = ["Bundled fixtures"]
    synthea = sorted((SHARED / "synthea" / "bundles").glob("*.json"))
    if synthea:
        sources.append("Shared Synthea patient")
    sources += ["Upload a FHIR bundle", "FHIR server"]
    source = st.sidebar.radio("Source", sources, key="source")
    default_as_of = date(2026, 11, 1)
    rec = None
    try:
        if source == "Bundled fixtures":
            fixtures = [EXAMPLES / "patient.json", *sorted((ROOT / "fixtures" / "patients" / "bundles").glob("*.json"))]
            path = st.sidebar.selectbox(
                "Fixture",
                fixtures,
                key="fixture",
                format_func=lambda p: "example patient" if p.parent == EXAMPLES else p.stem,
            )
            rec = record_from_path(str(path))
            if path.parent != EXAMPLES:
                default_as_of = rec.last_activity()
        elif source == "Shared Synthea patient":
            names = [p.name for p in synthea]
            choice = st.sidebar.selectbox(
                "Synthea patient", names, key="synthea", format_func=lambda n: n.rsplit("_", 1)[0].replace("_", " ")
            )
            path = SHARED / "synthea" / "bundles" / choice
            rec = record_from_path(str(path))
            default_as_of = rec.last_activity()
        elif source == "Upload a FHIR bundle":
            default_as_of = datetime.now(UTC).date()  # live data: reason as of today
            up = st.sidebar.file_uploader("FHIR R4 Bundle (JSON)", type=["json"], key="upload")
            if up is not None:
                rec = record_from_bytes(up.getvalue(), up.name)
        else:
            default_as_of = datetime.now(UTC).date()
            base = st.sidebar.text_input("FHIR base URL", key="fhir_url", placeholder="https://fhir.example.org/r4")
            pid = st.sidebar.text_input("Patient id", key="fhir_pid")
            token = st.sidebar.text_input("Bearer token (optional)", type="password", key="fhir_token")
            if base and pid and st.sidebar.button("Load from server", key="fhir_load"):
                st.session_state["fhir_record"] = fetch_from_server(base, pid, token)
            rec = st.session_state.get("fhir_record")
    except (RecordError, ClinAgentError, ConfigError) as e:
        st.sidebar.error(plain(f"Cannot read this record: {e}"))
        return None, default_as_of
    # keyed per patient: a key per source alone would keep the previous patient's date when the patient changes
    ref = rec.patient_ref if rec is not None else ""
    as_of = st.sidebar.date_input("Reason as of", value=default_as_of, key=f"as_of-{source}-{ref}")
    return rec, as_of


def fetch_from_server(base: str, pid: str, token: str) -> PatientRecord | None:
    """The same searches the CDS Hooks service prefetches, with paging, through clinagent.fhirclient."""
    from clinagent.cdshooks import SERVICES
    from clinagent.fhirclient import FetchError, search
    from clinagent.record import record_from_resources

    items = []
    try:
        for key, q in SERVICES["clinagent-patient-view"]["prefetch"].items():
            doc = search(base, q.replace("{{context.patientId}}", pid), token or None)
            entries = doc.get("entry") or [] if doc.get("resourceType") == "Bundle" else [{"resource": doc}]
            items += [("", e["resource"], f"/{key}") for e in entries if isinstance(e, dict) and "resource" in e]
        return record_from_resources(items, base, pid)
    except (FetchError, RecordError) as e:
        st.sidebar.error(f"Could not load from the FHIR server: {plain(e)}")
        return None


# ---- header -------------------------------------------------------------------------------------------------


def header(rec: PatientRecord, as_of: date) -> None:
    f = rec.facts(as_of)
    name = next(
        (n.get("text") or " ".join(n.get("given", []) + [n.get("family", "")]) for n in rec.patient.get("name") or []),
        rec.patient_ref,
    )
    st.title("clinagent")
    st.subheader(plain(name.strip() or rec.patient_ref), anchor=False)
    if f.deceased:
        st.error("This patient is recorded as deceased.")
    cols = st.columns(4)
    age = f.age_years
    cols[0].metric("Age / sex", f"{age:.0f} y, {f.sex or '?'}" if age is not None else "?")
    cols[1].metric("Weight", f"{f.weight.value:g} kg" if f.weight else "none", help=_src(f.weight))
    renal = f.egfr or f.crcl
    cols[2].metric("eGFR", f"{f.egfr.value:.0f}" if f.egfr else "none", help=_src(f.egfr))
    cols[3].metric("CrCl (Cockcroft-Gault)", f"{f.crcl.value:.0f} mL/min" if f.crcl else "none", help=_src(f.crcl))
    if renal is not None:
        st.caption(plain(f"Renal function: {renal.describe()} — from {renal.ref}"))
    a, m, c = st.columns(3)
    with a:
        st.markdown("**Active allergies**")
        st.dataframe(
            [
                {
                    "substance": x.text or next((k.display for k in x.codes if k.display), "?"),
                    "criticality": x.criticality or "",
                    "source": x.ref,
                }
                for x in f.allergies
            ]
            or [{"substance": "none recorded"}],
            hide_index=True,
            width="stretch",
        )
    with m:
        st.markdown("**Active medications**")
        st.dataframe(
            [
                {"medication": x.text or next((k.display for k in x.codes if k.display), "?"), "status": x.status}
                for x in f.medications
            ]
            or [{"medication": "none"}],
            hide_index=True,
            width="stretch",
        )
    with c:
        st.markdown("**Active conditions**")
        st.dataframe(
            [
                {
                    "condition": next((k.display for k in x.codes if k.display), "?"),
                    "onset": x.onset.isoformat() if x.onset else "",
                }
                for x in f.conditions
            ]
            or [{"condition": "none"}],
            hide_index=True,
            width="stretch",
        )


def _src(m) -> str | None:
    return plain(f"{m.describe()} — {m.ref}") if m is not None else None


# ---- review ---------------------------------------------------------------------------------------------------


def review_tab(rec: PatientRecord, as_of: date) -> None:
    model = os.environ.get("CLINAGENT_MODEL", "offline")
    from clinagent.models import choose_model

    try:
        choice = choose_model(model)
        st.info(f"Model: **{plain(choice.name)}** — {plain(choice.kind)}")
    except ConfigError as e:
        st.error(plain(e))
        return
    key = f"review-{rec.patient_ref}-{as_of}"
    if st.button("Run review", key="run_review", type="primary"):
        with st.spinner("Reviewing: every proposal passes the safety gates first"):
            review = run_review(rec, model=model, as_of=as_of, kb=knowledge())
            store().save_review(review)
            st.session_state[key] = review.model_dump(mode="json")
    review = st.session_state.get(key)
    if not review:
        st.caption("Run a review to see suggestions.")
        return
    st.caption(
        f"Reviewed as of {review['as_of']} · knowledge {review['knowledge_version'][:12]} · run "
        f"{review['run_id']} · {review['usage'].get('requests', 0)} model requests"
    )
    if review["notice"]:
        st.warning(plain(review["notice"]))
    if review["error"]:
        st.error(plain(f"The run did not finish ({review['error']}): nothing is shown as actionable."))
    for stale in review["stale_data"]:
        st.warning(plain(f"Relied on stale data: {stale['fact']} from {stale['reference']} ({stale['date']})"))
    st.markdown(f"### Suggestions ({len(review['shown'])})")
    if not review["shown"]:
        st.caption("No suggestions.")
    for i, s in enumerate(review["shown"]):
        suggestion_card(review, s, i)
    st.markdown(f"### Blocked by the safety gates ({len(review['blocked'])})")
    st.caption("What the model proposed and the gates stopped — shown for transparency, never actionable.")
    for s in review["blocked"]:
        with st.container(border=True):
            st.markdown(f"⛔ **{plain(s['title'])}**")
            st.text(s["rationale"])
            st.dataframe(
                [{"": ICON[f["severity"]], "category": f["category"], "finding": f["message"]} for f in s["findings"]],
                hide_index=True,
                width="stretch",
            )
    st.download_button(
        "Export the review as FHIR R4 (JSON)",
        data=json.dumps(to_fhir(Review(**review)), indent=2),
        file_name=f"clinagent-review-{review['run_id']}.json",
        mime="application/fhir+json",
        key="export",
    )


def suggestion_card(review: dict, s: dict, i: int) -> None:
    warns = [f for f in s["findings"] if f["severity"] == "warn"]
    with st.container(border=True):
        st.markdown(f"{'⚠️' if warns else '✅'} **{plain(s['title'])}**")
        st.text(s["rationale"])
        for f in warns:
            st.warning(plain(f"{f['category']}: {f['message']}"))
        with st.expander("Provenance: why, and what was checked"):
            st.markdown("**Cited from the record**")
            st.dataframe(s["cites"], hide_index=True, width="stretch")
            st.markdown("**Rules evaluated**")
            st.text(", ".join(s["rules_evaluated"]))
            st.markdown("**Findings**")
            st.dataframe(
                [
                    {
                        "severity": f["severity"],
                        "category": f["category"],
                        "rule": f["rule_id"],
                        "message": f["message"],
                    }
                    for f in s["findings"]
                ]
                or [{"severity": "none"}],
                hide_index=True,
                width="stretch",
            )
            st.markdown("**Ontology facts consulted**")
            st.dataframe(
                [
                    {
                        "fact": e["reference"],
                        "says": e.get("value", ""),
                        "sources": "; ".join(x["label"] for x in e.get("sources", [])),
                    }
                    for e in s["facts_consulted"]
                ]
                or [{"fact": "none"}],
                hide_index=True,
                width="stretch",
            )
            p = s["provenance"]
            st.caption(
                f"model {p['model']} ({p['model_kind']}) · run {p['run_id']} · knowledge "
                f"{p['knowledge_version'][:12]} · history sha256 {p['message_history_sha256'][:16]}"
            )
        decide(review, s, i, warns)


def decide(review: dict, s: dict, i: int, warns: list) -> None:
    done = st.session_state.setdefault("decisions", {})
    key = f"{review['run_id']}:{s['id']}"
    if key in done:
        st.success(f"Decision recorded: {done[key]}")
        return
    ack = True
    if warns:
        ack = st.checkbox("I have read and acknowledge the warnings", key=f"ack-{i}")
    c1, c2, c3 = st.columns([1, 1, 3])
    if c1.button("Accept", key=f"accept-{i}", disabled=not ack):
        record_decision(review, s, "accept", None, None, None, key)
    if c2.button("Reject", key=f"reject-{i}"):
        record_decision(review, s, "reject", None, None, None, key)
    with c3.popover("Override a warning") if warns else st.empty():
        if warns:
            labels = {r["code"]: r["display"] for r in OVERRIDE_REASONS}
            code = st.selectbox(
                "Reason",
                list(labels),
                index=None,
                placeholder="Choose a reason",
                format_func=labels.get,
                key=f"reason-{i}",
            )
            comment = st.text_input("Comment", key=f"comment-{i}")
            if st.button("Override and accept", key=f"override-{i}", disabled=code is None):
                record_decision(review, s, "override", code, labels[code], comment or None, key)


def record_decision(review: dict, s: dict, action: str, code, display, comment, key: str) -> None:
    try:
        store().add_decision(review["run_id"], s["id"], action, code, display, comment, ACTOR)
    except (KeyError, ValueError) as e:
        st.error(plain(f"Not recorded: {e}"))
        return
    st.session_state["decisions"][key] = action + (f" ({display})" if display else "")
    st.rerun()


# ---- order check ----------------------------------------------------------------------------------------------


def order_tab(rec: PatientRecord, as_of: date) -> None:
    from guardrails import gate

    st.markdown("Type a medication order for this patient and see the gates' verdict.")
    c = st.columns([3, 1, 1, 1, 1, 1])
    drug = c[0].text_input(
        "Drug (name, brand or RxNorm-style product name)", "Amoxicillin 500 MG Oral Capsule", key="oc_drug"
    )
    value = c[1].number_input("Dose", min_value=0.0, value=1.0, key="oc_value")
    unit = c[2].selectbox("Unit", ["(tablets/capsules)", "mg", "g", "ug", "mL", "meq", "[iU]"], key="oc_unit")
    freq = c[3].number_input("Times", min_value=1, value=3, key="oc_freq")
    per = c[4].selectbox("Per", ["d", "wk", "h"], key="oc_per")
    route = c[5].selectbox("Route", ["oral", "intravenous", "intramuscular", "subcutaneous"], key="oc_route")
    if st.button("Check order", key="oc_check"):
        from clinagent.agent import ROUTE_SNOMED

        dq = (
            {"value": value}
            if unit.startswith("(")
            else {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}
        )
        mr = {
            "resourceType": "MedicationRequest",
            "id": "ui-check",
            "status": "draft",
            "intent": "order",
            "subject": {"reference": rec.patient_ref},
            "medicationCodeableConcept": {"text": drug},
            "dosageInstruction": [
                {
                    "timing": {"repeat": {"frequency": freq, "period": 1, "periodUnit": per}},
                    "route": {
                        "coding": [{"system": "http://snomed.info/sct", "code": ROUTE_SNOMED[route], "display": route}]
                    },
                    "doseAndRate": [{"doseQuantity": dq}],
                }
            ],
        }
        try:
            v = gate(parse_order(mr, "order check"), rec.facts(as_of), knowledge())
        except RecordError as e:
            st.error(plain(e))
            return
        (st.success if v.allowed else st.error)(f"{'ALLOWED' if v.allowed else 'BLOCKED'}: {plain(drug)}")
        st.dataframe(
            [
                {"": ICON[f.severity], "category": f.category, "message": f.message, "rule": f.rule_id}
                for f in v.findings
            ]
            or [{"": "", "message": "no findings"}],
            hide_index=True,
            width="stretch",
        )


# ---- history --------------------------------------------------------------------------------------------------


def history_tab(rec: PatientRecord) -> None:
    rows = store().list_reviews(patient=rec.patient_ref)
    if not rows:
        st.caption("No stored reviews for this patient yet.")
        return
    st.dataframe(rows, hide_index=True, width="stretch")
    run = st.selectbox("Review", [r["run_id"] for r in rows], key="hist_run")
    found = store().get_review(run)
    if found:
        st.markdown("**Decisions**")
        st.dataframe(found["decisions"] or [{"decision": "none yet"}], hide_index=True, width="stretch")


def main() -> None:
    rec, as_of = pick_patient()
    if rec is None:
        st.title("clinagent")
        st.info("Choose a patient in the sidebar.")
        return
    header(rec, as_of)
    review, check, hist = st.tabs(["Review", "Order check", "History"])
    with review:
        review_tab(rec, as_of)
    with check:
        order_tab(rec, as_of)
    with hist:
        history_tab(rec)
    st.caption(f"clinagent · knowledge {knowledge().version[:12]} · {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")


main()
