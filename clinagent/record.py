"""PatientRecord: a FHIR R4 Bundle (collection, transaction, searchset) or NDJSON, read into dated facts.

Only the resource types clinagent uses are validated (fhir.resources R4B: it reads R4 data); other types are
kept as they are and never read. Observations are validated only when their LOINC code is one the gates use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from guardrails.sources import ActiveMedication, Allergy, Code, Condition, Dose, Measured, MedicationOrder, PatientFacts

from .errors import RecordError

RXNORM_URI = "http://www.nlm.nih.gov/research/umls/rxnorm"
SNOMED_URI = "http://snomed.info/sct"
LOINC_URI = "http://loinc.org"
UCUM_URI = "http://unitsofmeasure.org"
SYSTEMS = {RXNORM_URI: "rxnorm", SNOMED_URI: "snomed", LOINC_URI: "loinc"}

WEIGHT = ("29463-7", "3141-9")
HEIGHT = ("8302-2",)
EGFR = ("33914-3", "62238-1", "48642-3", "48643-1", "98979-8", "69405-9", "50044-7")
CREATININE = ("2160-0", "38483-4")
PREGNANCY_STATUS = "82810-3"
PREGNANT_CODES = frozenset({"77386006", "72892002"})
#: Labs kept by LOINC for the lab and monitoring rules (with the unit they are stored in).
LABS = {
    "6298-4": "mmol/L",
    "2823-3": "mmol/L",  # potassium
    "6301-6": "{INR}",
    "34714-6": "{INR}",  # INR
    "2951-2": "mmol/L",
    "2947-0": "mmol/L",  # sodium
    "1742-6": "U/L",
    "1920-8": "U/L",  # ALT, AST
    "777-3": "10*3/uL",
    "26515-7": "10*3/uL",  # platelets
    "3016-3": "m[IU]/L",  # TSH
    "4548-4": "%",  # HbA1c
    "14334-7": "mmol/L",  # lithium
    "8480-6": "mm[Hg]",  # systolic blood pressure (a component of the BP panel)
    "8462-4": "mm[Hg]",  # diastolic blood pressure
    "18262-6": "mg/dL",  # LDL cholesterol (direct)
    "13457-7": "mg/dL",  # LDL cholesterol (calculated)
    "2093-3": "mg/dL",  # total cholesterol
    "10535-3": "ng/mL",  # digoxin
    "2160-0": "mg/dL",
    "38483-4": "mg/dL",
    "33914-3": "mL/min/{1.73_m2}",
    "62238-1": "mL/min/{1.73_m2}",
    "48642-3": "mL/min/{1.73_m2}",
    "48643-1": "mL/min/{1.73_m2}",
    "98979-8": "mL/min/{1.73_m2}",
    "69405-9": "mL/min/{1.73_m2}",
}
BP_PANELS = frozenset({"85354-9", "55284-4"})
USED_LOINC = frozenset(LABS) | frozenset(WEIGHT) | frozenset(HEIGHT) | {PREGNANCY_STATUS} | BP_PANELS
USED_TYPES = frozenset(
    {
        "Patient",
        "Observation",
        "Condition",
        "AllergyIntolerance",
        "MedicationRequest",
        "MedicationStatement",
        "Medication",
    }
)
CREATININE_UMOL_PER_MGDL = 88.42  # 1 mg/dL creatinine = 88.42 umol/L (molar mass 113.12 g/mol)


@dataclass(frozen=True)
class Staleness:
    """How old a value may be (days, relative to "as of") before it is stale and no longer treated as current."""

    weight_days: int = 365
    child_weight_days: int = 30
    renal_days: int = 180
    lab_days: int = 30
    pregnancy_days: int = 280


# ---- reading files -------------------------------------------------------------------------------------------


def _load_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise RecordError(f"cannot read file: {e.strerror}", where=str(path)) from None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise RecordError(f"not valid JSON: {e.msg} (line {e.lineno}, column {e.colno})", where=str(path)) from None
    except UnicodeDecodeError:
        raise RecordError("not UTF-8 text", where=str(path)) from None


def _read_ndjson(path: Path) -> list[dict]:
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"cannot read file: {e}", where=str(path)) from None
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
        except json.JSONDecodeError as e:
            raise RecordError(f"line {i} is not valid JSON: {e.msg}", where=str(path), field=f"line {i}") from None
        if not isinstance(r, dict) or "resourceType" not in r:
            raise RecordError(f"line {i} is not a FHIR resource", where=str(path), field=f"line {i}")
        out.append(r)
    return out


def _entries(doc: Any, where: str) -> list[tuple[str, dict, str]]:
    """(fullUrl, resource, JSON pointer) for every resource in a Bundle or a bare resource."""
    if not isinstance(doc, dict) or "resourceType" not in doc:
        raise RecordError("not a FHIR resource (no resourceType)", where=where, field="/")
    if doc["resourceType"] != "Bundle":
        return [("", doc, "")]
    btype = doc.get("type")
    if btype not in (
        "collection",
        "transaction",
        "searchset",
        "batch",
        "document",
        "message",
        "transaction-response",
        "batch-response",
        "history",
    ):
        raise RecordError(f"unsupported Bundle.type {btype!r}", where=where, field="/type")
    out = []
    for i, e in enumerate(doc.get("entry") or []):
        if not isinstance(e, dict) or not isinstance(e.get("resource"), dict):
            raise RecordError("entry has no resource", where=where, field=f"/entry/{i}")
        r = e["resource"]
        if "resourceType" not in r:
            raise RecordError("resource has no resourceType", where=where, field=f"/entry/{i}/resource")
        out.append((e.get("fullUrl") or "", r, f"/entry/{i}/resource"))
    return out


def _validate(resource: dict, where: str, pointer: str):
    """Validate one resource with fhir.resources R4B; a failure names the field."""
    from fhir.resources.R4B import get_fhir_model_class
    from pydantic import ValidationError

    cls = get_fhir_model_class(resource["resourceType"])
    try:
        return cls.model_validate(resource)
    except ValidationError as e:
        err = e.errors()[0]
        loc = "/".join(str(x) for x in err["loc"] if x not in ("function-after[validate_root()]",))
        rid = resource.get("id", "?")
        raise RecordError(
            f"{resource['resourceType']}/{rid}: {err['msg']}", where=where, field=f"{pointer}/{loc}" if loc else pointer
        ) from None


# ---- small readers of FHIR JSON ------------------------------------------------------------------------------


def codes_of(cc: dict | None) -> tuple[Code, ...]:
    if not cc:
        return ()
    return tuple(
        Code(SYSTEMS.get(c.get("system", ""), c.get("system", "")), str(c.get("code", "")), c.get("display", ""))
        for c in cc.get("coding") or []
        if c.get("code")
    )


def _status(cc: dict | None) -> str:
    for c in (cc or {}).get("coding") or []:
        if c.get("code"):
            return c["code"]
    return ""


def parse_date(value: str | None) -> date | None:
    if not value:
        return None
    try:
        if len(value) == 4:
            return date(int(value), 7, 1)
        if len(value) == 7:
            return date(int(value[:4]), int(value[5:7]), 15)
        if len(value) == 10:
            return date.fromisoformat(value)
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return dt.astimezone(UTC).date() if dt.tzinfo else dt.date()
    except ValueError:
        return None


def _obs_date(o: dict) -> date | None:
    return parse_date(o.get("effectiveDateTime") or (o.get("effectivePeriod") or {}).get("start") or o.get("issued"))


# ---- the record ----------------------------------------------------------------------------------------------


@dataclass
class PatientRecord:
    """One patient's resources, validated where used, indexed by type and by reference."""

    source: str
    patient: dict
    by_type: dict[str, list[dict]] = field(default_factory=dict)
    by_ref: dict[str, dict] = field(default_factory=dict)

    @property
    def patient_ref(self) -> str:
        return f"Patient/{self.patient.get('id', 'unknown')}"

    def ref(self, r: dict) -> str:
        return f"{r['resourceType']}/{r.get('id', '?')}"

    def resources(self, rtype: str) -> list[dict]:
        return self.by_type.get(rtype, [])

    def resolve(self, reference: str) -> dict | None:
        return self.by_ref.get(reference)

    def observations(self) -> list[tuple[str, date, dict]]:
        """(LOINC, date, observation) for every usable observation, blood-pressure panels split into their
        components (each component keeps the panel as its source)."""
        cached = self.__dict__.get("_observations")
        if cached is not None:
            return cached
        out = []
        for o in self.resources("Observation"):
            if o.get("status") not in ("final", "amended", "corrected", "preliminary"):
                continue
            code, when = _loinc(o), _obs_date(o)
            if code is None or when is None:
                continue
            if code in BP_PANELS:
                for comp in o.get("component") or []:
                    ccode = next(
                        (
                            c.get("code")
                            for c in (comp.get("code") or {}).get("coding") or []
                            if c.get("system") == LOINC_URI and c.get("code") in LABS
                        ),
                        None,
                    )
                    if ccode and comp.get("valueQuantity"):
                        out.append((ccode, when, {**o, "valueQuantity": comp["valueQuantity"]}))
                continue
            out.append((code, when, o))
        self.__dict__["_observations"] = out
        return out

    def last_activity(self) -> date:
        """The latest dated event in the record (the day before death for a deceased patient): replaying a record
        as of then sees it as its clinicians last did. Today when the record has no dated event."""
        from datetime import timedelta

        dates = [
            parse_date(r.get(k))
            for rs in self.by_type.values()
            for r in rs
            for k in ("effectiveDateTime", "authoredOn", "onsetDateTime")
            if r.get(k)
        ]
        dates = [d for d in dates if d]
        last = max(dates) if dates else datetime.now(UTC).date()
        died = parse_date(self.patient.get("deceasedDateTime"))
        if died is not None and died <= last:
            last = died - timedelta(days=1)
        return last

    def series(self, code: str, as_of: date) -> list[tuple[date, float, str, str]]:
        """(date, value, unit, reference) of one LOINC code up to ``as_of``, oldest first."""
        rows = []
        for c, when, o in self.observations():
            if c == code and when <= as_of and (q := _quantity(o)):
                rows.append((when, q[0], q[1], self.ref(o)))
        return sorted(rows)

    def facts(self, as_of: date | None = None, staleness: Staleness = Staleness()) -> PatientFacts:  # noqa: B008 (frozen)
        return build_facts(self, as_of or datetime.now(UTC).date(), staleness)


def load_record(path: str | Path, patient_id: str | None = None) -> PatientRecord:
    """Read a Bundle JSON file, an NDJSON file, or a directory of NDJSON files (bulk export)."""
    p = Path(path)
    where = str(p)
    if p.is_dir():
        items = []
        # Bulk-export layout: one <ResourceType>.<n>.ndjson per type; other files (log.ndjson) are not resources.
        for f in sorted(p.glob("*.ndjson")):
            if f.name.split(".")[0] in USED_TYPES:
                items += [("", r, f"{f.name} line {i + 1}") for i, r in enumerate(_read_ndjson(f))]
        if not items:
            raise RecordError("directory holds no .ndjson files", where=where)
    elif p.suffix == ".ndjson":
        items = [("", r, f"line {i + 1}") for i, r in enumerate(_read_ndjson(p))]
    else:
        items = _entries(_load_json(p), where)
    return record_from_resources(items, where, patient_id)


def record_from_bundle(doc: Any, where: str = "<bundle>", patient_id: str | None = None) -> PatientRecord:
    return record_from_resources(_entries(doc, where), where, patient_id)


def record_from_resources(
    items: list[tuple[str, dict, str]], where: str, patient_id: str | None = None
) -> PatientRecord:
    patients = [r for _, r, _ in items if r.get("resourceType") == "Patient"]
    if patient_id:
        patients = [r for r in patients if r.get("id") == patient_id]
    if not patients:
        raise RecordError("no Patient resource" + (f" with id {patient_id}" if patient_id else ""), where=where)
    if len({r.get("id") for r in patients}) == 1:
        patients = patients[:1]  # the same Patient sent twice (e.g. under two prefetch keys)
    if len(patients) > 1:
        ids = ", ".join(str(r.get("id")) for r in patients[:5])
        raise RecordError(
            f"{len(patients)} patients in the input ({ids}...); choose one with a patient id", where=where
        )
    patient = patients[0]
    pid = patient.get("id")
    # Every way a resource may point at this patient: Patient/<id> (relative or absolute) or the entry's fullUrl.
    aliases = {f"Patient/{pid}"} | {u for u, r, _ in items if r is patient and u}
    rec = PatientRecord(where, patient)
    for full_url, r, pointer in items:
        rtype = r.get("resourceType")
        if rtype not in USED_TYPES:
            continue
        subj = (r.get("subject") or r.get("patient") or {}).get("reference", "")
        if (
            rtype not in ("Patient", "Medication")
            and subj
            and not (subj in aliases or subj.endswith(f"/Patient/{pid}"))
        ):
            continue  # another patient's resource in a multi-patient file
        if rtype == "Observation" and not _used_observation(r):
            continue
        _validate(r, where, pointer)
        rec.by_type.setdefault(rtype, []).append(r)
        if r.get("id"):
            rec.by_ref[f"{rtype}/{r['id']}"] = r
        if full_url:
            rec.by_ref[full_url] = r
    return rec


def _used_observation(o: dict) -> bool:
    for c in (o.get("code") or {}).get("coding") or []:
        if c.get("system") == LOINC_URI and c.get("code") in USED_LOINC:
            return True
    return False


# ---- facts ---------------------------------------------------------------------------------------------------


def _loinc(o: dict) -> str | None:
    for c in (o.get("code") or {}).get("coding") or []:
        if c.get("system") == LOINC_URI and c.get("code") in USED_LOINC:
            return c["code"]
    return None


def _quantity(o: dict) -> tuple[float, str] | None:
    q = o.get("valueQuantity")
    if not q or q.get("value") is None:
        return None
    return float(q["value"]), q.get("code") or q.get("unit") or ""


_PERIOD_WORDS = {
    "h": 1 / 24,
    "hour": 1 / 24,
    "hours": 1 / 24,
    "d": 1.0,
    "day": 1.0,
    "days": 1.0,
    "wk": 7.0,
    "week": 7.0,
    "weeks": 7.0,
    "mo": 30.0,
    "month": 30.0,
}
_KG = {"kg": 1.0, "g": 0.001, "[lb_av]": 0.45359237, "lb": 0.45359237, "lbs": 0.45359237}
_CM = {"cm": 1.0, "m": 100.0, "[in_i]": 2.54, "in": 2.54}


def build_facts(rec: PatientRecord, as_of: date, st: Staleness) -> PatientFacts:
    p = rec.patient
    birth = parse_date(p.get("birthDate"))
    # Deceased as of the date we reason at: replaying a record to a date before the death sees a living patient.
    died = parse_date(p.get("deceasedDateTime"))
    deceased = bool(p.get("deceasedBoolean")) or (died is not None and died <= as_of)
    facts = PatientFacts(
        patient_ref=rec.patient_ref, as_of=as_of, birth_date=birth, sex=p.get("gender"), deceased=deceased
    )
    age = facts.age_years
    child = age is not None and age < 18

    def stale(when: date | None, days: int) -> bool:
        return when is None or (as_of - when).days > days or when > as_of

    latest: dict[str, tuple[date, dict]] = {}
    for code, when, o in rec.observations():
        if when > as_of:
            continue
        if code != PREGNANCY_STATUS and _quantity(o) is None:
            continue  # a newer result without a value (hemolysed, cancelled) must not hide the last real one
        if code not in latest or when > latest[code][0]:
            latest[code] = (when, o)

    def newest(codes) -> tuple[str, date, dict] | None:
        hits = [(latest[c][0], c) for c in codes if c in latest]
        if not hits:
            return None
        when, c = max(hits)
        return c, when, latest[c][1]

    w = newest(WEIGHT)
    if w and (q := _quantity(w[2])) and q[1] in _KG:
        facts.weight = Measured(
            round(q[0] * _KG[q[1]], 3),
            "kg",
            w[1],
            rec.ref(w[2]),
            stale(w[1], st.child_weight_days if child else st.weight_days),
            code=w[0],
        )
    h = newest(HEIGHT)
    if h and (q := _quantity(h[2])) and q[1] in _CM:
        facts.height = Measured(q[0] * _CM[q[1]], "cm", h[1], rec.ref(h[2]), stale(h[1], st.weight_days), code=h[0])
    cr = newest(CREATININE)
    per_mg_dl = {
        "mg/dl": 1.0,
        "umol/l": 1 / CREATININE_UMOL_PER_MGDL,
        "µmol/l": 1 / CREATININE_UMOL_PER_MGDL,
        "mmol/l": 1000 / CREATININE_UMOL_PER_MGDL,
    }
    if cr and (q := _quantity(cr[2])) and q[1].strip().lower() in per_mg_dl:  # another unit: not used, never guessed
        value = q[0] * per_mg_dl[q[1].strip().lower()]
        facts.creatinine = Measured(
            round(value, 3), "mg/dL", cr[1], rec.ref(cr[2]), stale(cr[1], st.renal_days), code=cr[0]
        )
    eg = newest(EGFR)
    measured = None
    if eg and (q := _quantity(eg[2])):
        measured = Measured(
            q[0],
            "mL/min/1.73m2",
            eg[1],
            rec.ref(eg[2]),
            stale(eg[1], st.renal_days),
            f"reported eGFR, LOINC {eg[0]}",
            eg[0],
        )
    computed = None
    if facts.creatinine and age is not None and age >= 18 and facts.sex in ("male", "female"):
        computed = Measured(
            round(ckd_epi_2021(facts.creatinine.value, age, facts.sex), 1),
            "mL/min/1.73m2",
            facts.creatinine.when,
            facts.creatinine.ref,
            facts.creatinine.stale,
            f"CKD-EPI 2021 from creatinine {facts.creatinine.value:g} mg/dL",
        )
    # The newer of a reported eGFR and one computed from creatinine is used.
    facts.egfr = measured
    if computed and (measured is None or (computed.when and measured.when and computed.when > measured.when)):
        facts.egfr = computed
    if facts.creatinine and facts.weight and age is not None and age >= 18 and facts.sex in ("male", "female"):
        crcl = cockcroft_gault(facts.creatinine.value, age, facts.weight.value, facts.sex)
        facts.crcl = Measured(
            round(crcl, 1),
            "mL/min",
            facts.creatinine.when,
            facts.creatinine.ref,
            facts.creatinine.stale or facts.weight.stale,
            f"Cockcroft-Gault from creatinine {facts.creatinine.value:g} mg/dL and weight "
            f"{facts.weight.value:g} kg ({facts.weight.ref})",
        )
    for code, unit in LABS.items():
        if code in latest and (q := _quantity(latest[code][1])):
            when, o = latest[code]
            days = st.renal_days if code in CREATININE or code in EGFR else st.lab_days
            facts.labs[code] = Measured(q[0], q[1] or unit, when, rec.ref(o), stale(when, days), code=code)

    conditions = []
    for c in rec.resources("Condition"):
        if not condition_active(c, as_of):
            continue
        codes = codes_of(c.get("code"))
        conditions.append(Condition(rec.ref(c), codes, parse_date(c.get("onsetDateTime"))))
        if facts.pregnant is None and any(x.system == "snomed" and x.code in PREGNANT_CODES for x in codes):
            facts.pregnant = rec.ref(c)
    facts.conditions = tuple(conditions)
    ps = latest.get(PREGNANCY_STATUS)
    if ps and not stale(ps[0], st.pregnancy_days):
        vals = {x.code for x in codes_of(ps[1].get("valueCodeableConcept"))}
        if vals & PREGNANT_CODES:
            facts.pregnant = facts.pregnant or rec.ref(ps[1])
        elif "60001007" in vals and facts.pregnant and facts.pregnant.startswith("Condition/"):
            pass  # a "not pregnant" observation does not override an active pregnancy condition

    allergies = []
    for a in rec.resources("AllergyIntolerance"):
        clin, ver = _status(a.get("clinicalStatus")), _status(a.get("verificationStatus"))
        if ver in ("refuted", "entered-in-error") or clin in ("inactive", "resolved"):
            continue
        if _after(as_of, a.get("onsetDateTime") or a.get("recordedDate")):
            continue  # recorded after the date we reason at
        code = a.get("code") or {}
        allergies.append(
            Allergy(
                rec.ref(a),
                codes_of(code),
                code.get("text", ""),
                a.get("criticality", ""),
                ver,
                tuple(a.get("category") or ()),
            )
        )
    facts.allergies = tuple(allergies)

    meds = []
    for m in rec.resources("MedicationRequest"):
        if m.get("status") in ("active", "on-hold") and not _after(as_of, m.get("authoredOn")):
            codes, text = medication_codes(m, rec)
            meds.append(ActiveMedication(rec.ref(m), codes, text, m["status"]))
    for m in rec.resources("MedicationStatement"):
        start = m.get("effectiveDateTime") or (m.get("effectivePeriod") or {}).get("start")
        if m.get("status") == "active" and not _after(as_of, start):
            codes, text = medication_codes(m, rec)
            meds.append(ActiveMedication(rec.ref(m), codes, text, "active"))
    facts.medications = tuple(meds)
    return facts


def _after(as_of: date, value: str | None) -> bool:
    """Surely after ``as_of``: a partial date counts from its earliest day ("2026" = 1 January), and a day of
    tolerance covers date-only values written in another time zone than the one "as of" was computed in."""
    if not value:
        return False
    earliest = parse_date(value[:4] + "-01-01" if len(value) == 4 else value[:7] + "-01" if len(value) == 7 else value)
    return earliest is not None and earliest > as_of + timedelta(days=1)


def condition_active(c: dict, as_of: date) -> bool:
    """Was this Condition active on ``as_of``? Onset and abatement dates decide for a replayed date: an episode
    resolved today was active while it lasted; one that starts later did not exist yet."""
    clin, ver = _status(c.get("clinicalStatus")), _status(c.get("verificationStatus"))
    if ver in ("refuted", "entered-in-error"):
        return False
    onset = c.get("onsetDateTime") or (c.get("onsetPeriod") or {}).get("start") or c.get("recordedDate")
    if _after(as_of, onset):
        return False
    abated = parse_date(c.get("abatementDateTime") or (c.get("abatementPeriod") or {}).get("end"))
    if clin in ("", "active", "recurrence", "relapse"):
        return abated is None or abated > as_of
    return abated is not None and abated > as_of  # inactive/resolved/remission now, but not yet then


def medication_codes(r: dict, rec: PatientRecord | None = None) -> tuple[tuple[Code, ...], str]:
    cc = r.get("medicationCodeableConcept")
    if cc:
        return codes_of(cc), cc.get("text", "")
    ref = (r.get("medicationReference") or {}).get("reference", "")
    med = None
    if ref.startswith("#"):
        med = next((c for c in r.get("contained") or [] if c.get("id") == ref[1:]), None)
    elif rec is not None:
        med = rec.resolve(ref)
    if med:
        return codes_of(med.get("code")), (med.get("code") or {}).get("text", "")
    return (), (r.get("medicationReference") or {}).get("display", "")


def ckd_epi_2021(scr_mg_dl: float, age: float, sex: str) -> float:
    """eGFR (mL/min/1.73 m2) by the race-free CKD-EPI 2021 creatinine equation (Inker et al., NEJM 2021)."""
    female = sex == "female"
    kappa, alpha = (0.7, -0.241) if female else (0.9, -0.302)
    ratio = scr_mg_dl / kappa
    egfr = 142 * min(ratio, 1.0) ** alpha * max(ratio, 1.0) ** -1.200 * 0.9938**age
    return egfr * 1.012 if female else egfr


def cockcroft_gault(scr_mg_dl: float, age: float, weight_kg: float, sex: str) -> float:
    """Creatinine clearance (mL/min) by Cockcroft-Gault (1976), with actual body weight."""
    crcl = (140 - age) * weight_kg / (72 * scr_mg_dl)
    return crcl * 0.85 if sex == "female" else crcl


# ---- orders --------------------------------------------------------------------------------------------------


def load_orders(path: str | Path) -> list[tuple[dict, MedicationOrder]]:
    """A MedicationRequest file, or a Bundle of them: (resource, order) pairs."""
    p = Path(path)
    items = _entries(_load_json(p), str(p))
    out = []
    for _, r, pointer in items:
        if r.get("resourceType") != "MedicationRequest":
            raise RecordError(
                f"expected MedicationRequest, found {r.get('resourceType')}",
                where=str(p),
                field=pointer or "/resourceType",
            )
        out.append((r, parse_order(r, str(p), pointer)))
    if not out:
        raise RecordError("no MedicationRequest in the order file", where=str(p))
    return out


def _upgrade_dosage(r: dict) -> dict:
    """Two shapes real clients send that R4 does not allow, both in the CDS Hooks library's own examples: STU3's
    doseQuantity/rateQuantity directly on the Dosage (R4 moved them into doseAndRate: order-sign), and doseAndRate
    as one object instead of a list (order-select). Normalise those two, change nothing else."""
    keys = ("doseQuantity", "doseRange", "rateQuantity", "rateRatio", "rateRange")
    dis = r.get("dosageInstruction")
    if not isinstance(dis, list) or not any(
        isinstance(d, dict) and (any(k in d for k in keys) or isinstance(d.get("doseAndRate"), dict)) for d in dis
    ):
        return r
    out = dict(r)
    out["dosageInstruction"] = []
    for d in dis:
        if isinstance(d, dict) and isinstance(d.get("doseAndRate"), dict):
            d = d | {"doseAndRate": [d["doseAndRate"]]}
        if isinstance(d, dict) and "doseAndRate" not in d:
            moved = {k: d[k] for k in keys if k in d}
            if moved:
                d = {k: v for k, v in d.items() if k not in moved} | {"doseAndRate": [moved]}
        out["dosageInstruction"].append(d)
    return out


def parse_order(
    r: dict, where: str = "<order>", pointer: str = "", rec: PatientRecord | None = None
) -> MedicationOrder:
    """A MedicationRequest (validated with R4B) reduced to the fields the gates check."""
    r = _upgrade_dosage(r)
    _validate(r, where, pointer)
    codes, text = medication_codes(r, rec)
    problems: list[str] = []
    di = (r.get("dosageInstruction") or [None])[0] or {}
    dose = None
    for dr in di.get("doseAndRate") or []:
        if dr.get("doseQuantity"):
            q = dr["doseQuantity"]
            if q.get("value") is None:
                problems.append("doseQuantity has no value")
                break
            unit = (
                q.get("code")
                if q.get("system") == UCUM_URI and q.get("code")
                else (q.get("unit") or q.get("code") or "")
            )
            dose = Dose(float(q["value"]), unit)
            break
        if dr.get("doseRange"):
            hi = dr["doseRange"].get("high") or {}
            lo = dr["doseRange"].get("low") or {}
            q = hi if hi.get("value") is not None else lo
            if q.get("value") is None:
                problems.append("doseRange has no values")
                break
            dose = Dose(float(q["value"]), q.get("code") or q.get("unit") or "", float(q["value"]))
            break
    rep = (di.get("timing") or {}).get("repeat") or {}
    freq = rep.get("frequencyMax", rep.get("frequency"))
    period = rep.get("period")
    tcode = None
    tc = (di.get("timing") or {}).get("code")
    if tc:
        tcode = _status(tc) or tc.get("text")
    route = None
    if di.get("route"):
        rc = codes_of(di["route"])
        route = rc[0] if rc else Code("", "", di["route"].get("text", ""))
        if not route.display:
            route = Code(route.system, route.code, di["route"].get("text", ""))
    as_needed = bool(di.get("asNeededBoolean")) or bool(di.get("asNeededCodeableConcept"))
    mpp = di.get("maxDosePerPeriod")
    max_dose = max_days = None
    if isinstance(mpp, dict) and (mpp.get("numerator") or {}).get("value") is not None:
        num, den = mpp["numerator"], mpp.get("denominator") or {}
        per = str(den.get("code") or den.get("unit") or "d").strip().lower()
        days = _PERIOD_WORDS.get(per)
        if days is None or not den.get("value"):
            problems.append(f"maxDosePerPeriod has a period that cannot be read ({den.get('value')} {per})")
        else:
            max_dose = Dose(float(num["value"]), num.get("code") or num.get("unit") or "")
            max_days = float(den["value"]) * days
    ref = f"MedicationRequest/{r['id']}" if r.get("id") else ""
    return MedicationOrder(
        ref=ref,
        codes=codes,
        text=text,
        dose=dose,
        frequency=float(freq) if freq is not None else None,
        period=float(period) if period is not None else None,
        period_unit=rep.get("periodUnit"),
        timing_code=tcode,
        route=route,
        as_needed=as_needed,
        max_per_period=max_dose,
        max_per_period_days=max_days,
        times_of_day=len(rep.get("when") or []) + len(rep.get("timeOfDay") or []),
        problems=tuple(problems),
    )
