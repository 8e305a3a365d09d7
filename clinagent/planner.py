"""The offline model: a deterministic guideline planner driving the same agent, tools and gates as an LLM.

It is a pydantic-ai FunctionModel, never presented as an LLM. Request 1 calls the read-only tools; request 2
turns what they returned (never the raw bundle) into first-line, guideline-based proposals without second-guessing
the gates; when the output validator sends blocked proposals back, it replaces each with the next alternative.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date

from pydantic import BaseModel
from pydantic_ai import ModelResponse, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from .outputs import DoseSpec, OrderLab, Plan, StartMedication, StopMedication

READ_TOOLS = (
    "patient_summary",
    "active_allergies",
    "active_medications",
    "active_conditions",
    "latest_labs",
    "screen_active_medications",
)

DIABETES = {"44054006"}
HYPERTENSION = {"59621000", "38341003"}
ATRIAL_FIBRILLATION = {"49436004"}
ASCVD = {"22298006", "399211009", "401303003", "401314000", "414545008", "53741008", "230690007"}
HYPERLIPIDEMIA = {"55822004"}
ASTHMA = {"195967001", "233678006"}
STREP = {"43878008"}
CYSTITIS = {"38822007", "68566005"}
CHRONIC_PAIN = {"82423001"}
HEART_FAILURE = {"88805009", "84114007"}

ACE_ARB = {
    "lisinopril",
    "enalapril",
    "ramipril",
    "benazepril",
    "captopril",
    "quinapril",
    "fosinopril",
    "moexipril",
    "perindopril",
    "trandolapril",
    "losartan",
    "valsartan",
    "olmesartan",
    "irbesartan",
    "telmisartan",
    "candesartan",
    "azilsartan",
    "sacubitril",
}
ANTICOAGULANTS = {"warfarin", "apixaban", "rivaroxaban", "dabigatran", "edoxaban", "heparin", "enoxaparin"}
STATINS = {"atorvastatin", "simvastatin", "rosuvastatin", "pravastatin", "lovastatin", "fluvastatin", "pitavastatin"}
ICS = {"fluticasone", "budesonide", "beclomethasone", "mometasone", "ciclesonide"}
ANTIPLATELETS = {"aspirin", "clopidogrel", "prasugrel", "ticagrelor"}
MRA = {"spironolactone", "eplerenone"}
# Drugs that can be held for a while when they interact with something that must continue (an antibiotic course).
HOLDABLE = STATINS | {
    "ibuprofen",
    "naproxen",
    "diclofenac",
    "meloxicam",
    "omeprazole",
    "esomeprazole",
    "pantoprazole",
    "lansoprazole",
    "tizanidine",
    "ramelteon",
    "sildenafil",
    "tadalafil",
    "colchicine",
}
ANALGESICS = {"acetaminophen", "ibuprofen", "naproxen", "celecoxib", "tramadol", "oxycodone", "hydrocodone", "morphine"}


@dataclass
class Seen:
    """What the read tools returned, as plain values."""

    summary: dict
    allergies: list[dict]
    meds: list[dict]
    conditions: list[dict]
    labs: dict[str, dict]
    problems: list[dict]  # active medications the gates would block today

    @property
    def as_of(self) -> date:
        return date.fromisoformat(self.summary["as_of"])

    def taking(self, names: set[str]) -> bool:
        return any(set(m["ingredients"]) & names for m in self.meds)

    def conditions_in(self, codes: set[str], within_days: int | None = None) -> list[dict]:
        out = [c for c in self.conditions if c["snomed"] in codes]
        if within_days is not None:
            out = [
                c
                for c in out
                if c.get("onset") and (self.as_of - date.fromisoformat(c["onset"][:10])).days <= within_days
            ]
        return out

    def lab(self, *codes: str, max_days: int | None = None) -> dict | None:
        found = [self.labs[c]["latest"] for c in codes if c in self.labs]
        found = [v for v in found if v.get("date")]
        if not found:
            return None
        v = max(found, key=lambda x: x["date"])
        if max_days is not None and (self.as_of - date.fromisoformat(v["date"][:10])).days > max_days:
            return None
        return v


def _plain(value):
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _seen(messages) -> Seen | None:
    got: dict[str, object] = {}
    for m in messages:
        for part in getattr(m, "parts", ()):
            if isinstance(part, ToolReturnPart) and part.tool_name in READ_TOOLS:
                got[part.tool_name] = _plain(part.content)
    if not all(t in got for t in READ_TOOLS):
        return None
    return Seen(
        got["patient_summary"],
        got["active_allergies"],
        got["active_medications"],
        got["active_conditions"],
        {lab["loinc"]: lab for lab in got["latest_labs"]},
        got["screen_active_medications"],
    )


def _blocked_titles(messages) -> set[str]:
    """Titles of proposals the gates blocked in earlier attempts (from the retry feedback)."""
    out: set[str] = set()
    for m in messages:
        for part in getattr(m, "parts", ()):
            content = getattr(part, "content", None)
            if getattr(part, "outcome", None) == "retried" or type(part).__name__ == "RetryPromptPart":
                try:
                    data = json.loads(content if isinstance(content, str) else json.dumps(content))
                except (TypeError, ValueError):
                    continue
                if isinstance(data, dict):
                    out |= {b["proposal"] for b in data.get("blocked", [])}
    return out


def _med(
    drug: str,
    value: float,
    unit: str,
    freq: float,
    rationale: str,
    cites: list[str],
    rxnorm: str | None = None,
    route: str = "oral",
) -> StartMedication:
    return StartMedication(
        drug=drug,
        rxnorm=rxnorm,
        rationale=rationale,
        cites=cites,
        dose=DoseSpec(value=value, unit=unit, frequency=freq, period=1, period_unit="d", route=route),
    )


def candidates(s: Seen) -> list[list]:
    """Each guideline rule that applies gives its options in order of preference."""
    from .agent import describe_proposal  # noqa: F401  (titles are compared by the caller)

    rules: list[list] = []
    age = s.summary.get("age_years") or 0
    weight = s.summary.get("weight_kg")
    egfr = s.summary.get("egfr")
    renal_refs = [egfr["reference"]] if egfr else []

    dm = s.conditions_in(DIABETES)
    if dm and not s.taking({"metformin"}):
        why = "Type 2 diabetes without metformin: first-line therapy (ADA Standards of Care)."
        refs = [dm[0]["reference"], *renal_refs]
        rules.append(
            [
                _med(
                    "24 HR Metformin hydrochloride 500 MG Extended Release Oral Tablet", 1, "", 1, why, refs, "860975"
                ),
                _med(
                    "linagliptin 5 MG Oral Tablet",
                    1,
                    "",
                    1,
                    "Type 2 diabetes; metformin not possible: a DPP-4 inhibitor needing no renal adjustment.",
                    refs,
                ),
            ]
        )
    if dm and not s.lab("4548-4", max_days=180):
        rules.append(
            [
                OrderLab(
                    loinc="4548-4",
                    display="Hemoglobin A1c/Hemoglobin.total in Blood",
                    rationale="Diabetes with no HbA1c in the last 6 months.",
                    cites=[dm[0]["reference"]],
                )
            ]
        )

    htn = s.conditions_in(HYPERTENSION)
    sbp = s.lab("8480-6", max_days=365)
    if htn and sbp and sbp["value"] >= 140 and not s.taking(ACE_ARB):
        refs = [htn[0]["reference"], sbp["reference"]]
        why = f"Hypertension with systolic {sbp['value']:.0f} mm Hg, above target, not on an ACE inhibitor or ARB."
        rules.append(
            [
                _med("lisinopril 10 MG Oral Tablet", 1, "", 1, why, refs, "314076"),
                _med(
                    "Losartan Potassium 25 MG Oral Tablet",
                    1,
                    "",
                    1,
                    why + " ARB instead of an ACE inhibitor.",
                    refs,
                    "979485",
                ),
                _med("Amlodipine 5 MG Oral Tablet", 1, "", 1, why + " Calcium channel blocker instead.", refs),
            ]
        )
    if s.taking(ACE_ARB) and not s.lab("6298-4", "2823-3", max_days=365):
        ref = next(m["reference"] for m in s.meds if set(m["ingredients"]) & ACE_ARB)
        rules.append(
            [
                OrderLab(
                    loinc="2823-3",
                    display="Potassium [Moles/volume] in Serum or Plasma",
                    rationale="On an ACE inhibitor/ARB with no potassium in the last year.",
                    cites=[ref],
                )
            ]
        )

    af = s.conditions_in(ATRIAL_FIBRILLATION)
    if af and not s.taking(ANTICOAGULANTS):
        # apixaban 2.5 mg when two of: age >= 80, weight <= 60 kg, serum creatinine >= 1.5 mg/dL (current values only)
        cr = s.summary.get("creatinine_mg_dl")
        current_weight = weight if weight and not weight.get("stale") else None
        current_cr = cr if cr and not cr.get("stale") else None
        criteria = sum(
            [
                age >= 80,
                bool(current_weight and current_weight["value"] <= 60),
                bool(current_cr and current_cr["value"] >= 1.5),
            ]
        )
        strength = "2.5" if criteria >= 2 else "5"
        why = (
            "Atrial fibrillation without anticoagulation: stroke prevention (apixaban dose by age, weight, creatinine)."
        )
        refs = [af[0]["reference"], *renal_refs]
        rules.append(
            [
                _med(f"apixaban {strength} MG Oral Tablet", 1, "", 2, why, refs),
                _med(
                    "Warfarin Sodium 5 MG Oral Tablet",
                    1,
                    "",
                    1,
                    "Atrial fibrillation without anticoagulation; warfarin with INR monitoring.",
                    refs,
                    "855332",
                ),
            ]
        )

    ascvd = s.conditions_in(ASCVD) or s.conditions_in(HYPERLIPIDEMIA) or (dm if 40 <= age <= 75 else [])
    if ascvd and not s.taking(STATINS) and not s.summary.get("pregnant"):  # statins are stopped in pregnancy
        why = "Statin indicated (ASCVD, hyperlipidemia or diabetes aged 40-75) and none active (ACC/AHA)."
        refs = [ascvd[0]["reference"]]
        rules.append(
            [
                _med("atorvastatin 40 MG Oral Tablet", 1, "", 1, why, refs, "617311"),
                _med("rosuvastatin 10 MG Oral Tablet", 1, "", 1, why + " Rosuvastatin instead.", refs),
                _med(
                    "pravastatin sodium 40 MG Oral Tablet", 1, "", 1, why + " Pravastatin (fewest interactions).", refs
                ),
            ]
        )

    asthma = s.conditions_in(ASTHMA)
    if asthma and not s.taking(ICS):
        rules.append(
            [
                _med(
                    "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler [Flovent]",
                    88,
                    "ug",
                    2,
                    "Asthma without a controller: low-dose inhaled corticosteroid (GINA).",
                    [asthma[0]["reference"]],
                    "895996",
                    route="inhalation",
                )
            ]
        )

    strep = s.conditions_in(STREP, within_days=14)
    if strep:
        refs = [strep[0]["reference"]]
        why = "Streptococcal pharyngitis: 10 days of antibiotic (IDSA)."
        if age < 18:
            if weight and not weight.get("stale"):
                mg = min(500.0, round(25 * weight["value"] / 5) * 5)
                refs = refs + [weight["reference"]]
                rules.append(
                    [
                        _med(
                            "Amoxicillin 250 MG/5ML Oral Suspension", mg, "mg", 2, why + " 25 mg/kg twice daily.", refs
                        ),
                        _med(
                            "Azithromycin 200 MG/5ML Oral Suspension",
                            min(500.0, round(12 * weight["value"])),
                            "mg",
                            1,
                            why + " Azithromycin 12 mg/kg daily for 5 days (penicillin allergy).",
                            refs,
                        ),
                    ]
                )
            else:
                rules.append(
                    [
                        OrderLab(
                            loinc="29463-7",
                            display="Body weight",
                            rationale="Child with strep pharyngitis: a current weight is needed to dose.",
                            cites=refs,
                        )
                    ]
                )
        else:
            rules.append(
                [
                    _med("amoxicillin 500 MG Oral Tablet", 1, "", 2, why, refs, "308192"),
                    _med("cephalexin 500 MG Oral Tablet", 1, "", 2, why + " Cephalexin.", refs, "197454"),
                    _med(
                        "Azithromycin 250 MG Oral Tablet",
                        2,
                        "",
                        1,
                        why + " Azithromycin (penicillin allergy).",
                        refs,
                        "308460",
                    ),
                ]
            )

    uti = s.conditions_in(CYSTITIS, within_days=14)
    if uti and age >= 12:
        refs = [uti[0]["reference"], *renal_refs]
        why = "Acute uncomplicated cystitis (IDSA)."
        rules.append(
            [
                _med("Nitrofurantoin 100 MG Oral Capsule", 1, "", 2, why + " Nitrofurantoin 5 days.", refs),
                _med(
                    "Sulfamethoxazole 800 MG / Trimethoprim 160 MG Oral Tablet",
                    1,
                    "",
                    2,
                    why + " TMP-SMX 3 days.",
                    refs,
                ),
                _med("Fosfomycin 3000 MG Oral Granules", 3, "g", 1, why + " Single dose of fosfomycin.", refs),
            ]
        )

    pain = s.conditions_in(CHRONIC_PAIN)
    if pain and not s.taking(ANALGESICS):
        why = "Chronic pain without an analgesic: acetaminophen first (lowest risk)."
        rules.append(
            [
                _med("Acetaminophen 325 MG Oral Tablet", 2, "", 3, why, [pain[0]["reference"]], "313782"),
                _med(
                    "Ibuprofen 200 MG Oral Tablet",
                    2,
                    "",
                    3,
                    "Chronic pain: short course of an NSAID.",
                    [pain[0]["reference"]],
                    "310965",
                ),
            ]
        )

    ascvd_only = s.conditions_in(ASCVD)
    if ascvd_only and not s.taking(ANTIPLATELETS | ANTICOAGULANTS):
        why = "Atherosclerotic cardiovascular disease without antiplatelet therapy: secondary prevention (ACC/AHA)."
        refs = [ascvd_only[0]["reference"]]
        rules.append(
            [
                _med("aspirin 81 MG Oral Tablet", 1, "", 1, why, refs),
                _med(
                    "clopidogrel 75 MG Oral Tablet",
                    1,
                    "",
                    1,
                    why + " Clopidogrel (aspirin not possible).",
                    refs,
                    "309362",
                ),
            ]
        )

    hf = s.conditions_in(HEART_FAILURE)
    if hf and not s.taking(MRA):
        rules.append(
            [
                _med(
                    "Spironolactone 25 MG Oral Tablet",
                    1,
                    "",
                    1,
                    "Heart failure with reduced ejection fraction (confirm LVEF <= 40%): add a mineralocorticoid "
                    "receptor antagonist (AHA/ACC/HFSA 2022).",
                    [hf[0]["reference"], *renal_refs],
                )
            ]
        )

    for problem in s.problems:
        if set(problem["categories"]) == {"drug-drug"} and not (set(problem.get("ingredients", [])) & HOLDABLE):
            continue  # an interaction alone: hold the drug that can safely wait (e.g. the statin), not both
        refs = [problem["reference"], *problem["evidence"]]
        rules.append(
            [
                StopMedication(
                    medication=problem["reference"],
                    drug=problem["drug"],
                    cites=refs,
                    rationale=f"Re-screening the active list: {problem['reason']}",
                )
            ]
        )

    warf = [m for m in s.meds if "warfarin" in m["ingredients"]]
    if warf and not s.lab("6301-6", "34714-6", max_days=30):
        rules.append(
            [
                OrderLab(
                    loinc="6301-6",
                    display="INR in Platelet poor plasma by Coagulation assay",
                    rationale="On warfarin with no INR in the last 30 days.",
                    cites=[warf[0]["reference"]],
                )
            ]
        )
    met = [m for m in s.meds if "metformin" in m["ingredients"]]
    if met and not s.lab("2160-0", "38483-4", "33914-3", "62238-1", max_days=365):
        rules.append(
            [
                OrderLab(
                    loinc="2160-0",
                    display="Creatinine [Mass/volume] in Serum or Plasma",
                    rationale="On metformin with no renal function in the last year.",
                    cites=[met[0]["reference"]],
                )
            ]
        )
    return rules


def plan_for(s: Seen, blocked: set[str]) -> Plan:
    from .agent import describe_proposal

    proposals = []
    for options in candidates(s):
        choice = next((o for o in options if describe_proposal(o) not in blocked), None)
        if choice is not None:
            proposals.append(choice)
    what = "; ".join(describe_proposal(p) for p in proposals) or "no change proposed"
    return Plan(
        summary=f"Offline guideline planner reviewed the record as of {s.summary['as_of']}: {what}.",
        proposals=proposals,
    )


def _respond(messages, info: AgentInfo) -> ModelResponse:
    seen = _seen(messages)
    if seen is None:
        return ModelResponse(parts=[ToolCallPart(name, {}, tool_call_id=f"read-{name}") for name in READ_TOOLS])
    if seen.summary.get("deceased"):
        plan = Plan(summary="The patient is recorded as deceased: no suggestions.", proposals=[])
    else:
        plan = plan_for(seen, _blocked_titles(messages))
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, plan.model_dump(mode="json"))])


def planner_model() -> FunctionModel:
    return FunctionModel(_respond, model_name="offline-guideline-planner")
