"""Replaying patient fixtures (fixtures/patients) through the agent and the gates, with expected outcomes.

A case file names a patient bundle (a path relative to the case, or `shared:<path>` under ../shared/data),
an "as of" date, the model, and what must be shown or blocked (and in which category). The replay prints a
per-category confusion matrix; any mismatch fails it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from .errors import RecordError
from .record import load_record
from .review import Review, SuggestionOut, run_review

SHARED = Path(
    os.environ.get("CLINAGENT_SHARED_DATA", Path(__file__).resolve().parent.parent.parent / "shared" / "data")
)


@dataclass
class PatientCase:
    id: str
    path: Path
    description: str
    bundle: Path
    as_of: date
    model: str
    expected: dict
    patient_id: str | None = None


@dataclass
class CaseOutcome:
    case: PatientCase
    review: Review | None
    problems: list[str] = field(default_factory=list)
    skipped: str = ""
    cells: list[tuple[str, str]] = field(default_factory=list)  # (expected, actual) per expectation

    @property
    def passed(self) -> bool:
        return not self.problems


def resolve_bundle(ref: str, base: Path) -> Path:
    if ref.startswith("shared:"):
        return SHARED / ref.removeprefix("shared:")
    return (base / ref).resolve()


def load_patient_cases(directory: str | Path) -> list[PatientCase]:
    d = Path(directory)
    if not d.is_dir():
        raise RecordError("not a directory of patient cases", where=str(d))
    cases = []
    for p in sorted(d.glob("*.json")):
        try:
            raw = json.loads(p.read_text())
            cases.append(
                PatientCase(
                    p.stem,
                    p,
                    raw.get("description", ""),
                    resolve_bundle(raw["bundle"], p.parent),
                    date.fromisoformat(raw["as_of"]),
                    raw.get("model", "offline"),
                    raw["expected"],
                    raw.get("patient_id"),
                )
            )
        except (KeyError, ValueError, TypeError) as e:
            raise RecordError(f"malformed patient case: {e}", where=str(p)) from None
    if not cases:
        raise RecordError("no *.json patient cases", where=str(d))
    return cases


def _matches(s: SuggestionOut, want: dict) -> bool:
    if "kind" in want and s.kind != want["kind"]:
        return False
    if "drug" in want:
        names = [
            s.title,
            str(s.proposal.get("drug", "")),
            str(s.proposal.get("medication", "")),
            json.dumps(s.resource.get("medicationCodeableConcept", {})),
        ]
        text = " ".join(names)  # never the rationale: an alternative's reason may name the drug it replaces
        if want["drug"].lower() not in text.lower():
            return False
    if "loinc" in want and s.proposal.get("loinc") != want["loinc"]:
        return False
    return True


def check_review(review: Review, expected: dict) -> tuple[list[str], list[tuple[str, str]]]:
    problems, cells = [], []
    blocked_final = [s for s in review.blocked]
    for want in expected.get("shown", []):
        hit = next((s for s in review.shown if _matches(s, want)), None)
        actual = "shown" if hit else ("blocked" if any(_matches(s, want) for s in blocked_final) else "absent")
        cells.append(("shown", actual))
        if not hit:
            problems.append(f"expected shown {want}, got {actual}")
    for want in expected.get("blocked", []):
        cat = want.get("category", "any")
        hits = [s for s in blocked_final if _matches(s, want)]
        cats = {f["category"] for s in hits for f in s.findings if f["severity"] == "block"}
        shown_hit = any(_matches(s, want) for s in review.shown)
        if hits and (cat == "any" or cat in cats):
            actual = cat
        elif hits:
            actual = "blocked:" + ",".join(sorted(cats))
        else:
            actual = "shown" if shown_hit else "absent"
        cells.append((f"blocked:{cat}", actual if actual != cat else f"blocked:{cat}"))
        if actual != cat:
            problems.append(f"expected blocked in {cat}: {want}, got {actual}")
        if shown_hit:
            problems.append(f"blocked proposal {want} was also shown")
    for want in expected.get("not_shown", []):
        if any(_matches(s, want) for s in review.shown):
            problems.append(f"must not be shown: {want}")
            cells.append(("not_shown", "shown"))
        else:
            cells.append(("not_shown", "not_shown"))
    if "shown_count" in expected and len(review.shown) != expected["shown_count"]:
        problems.append(f"expected {expected['shown_count']} shown, got {len(review.shown)}")
    if expected.get("notice") and expected["notice"].lower() not in review.notice.lower():
        problems.append(f"expected a notice containing {expected['notice']!r}, got {review.notice!r}")
    if expected.get("max_requests") and review.usage.get("requests", 0) > expected["max_requests"]:
        problems.append(f"{review.usage.get('requests')} model requests, expected at most {expected['max_requests']}")
    if review.error:
        problems.append(f"run error: {review.error}")
    return problems, cells


def replay_case(case: PatientCase, model: str | None = None, kb=None) -> CaseOutcome:
    if not case.bundle.exists():
        return CaseOutcome(case, None, skipped=f"bundle not present: {case.bundle}")
    review = run_review(load_record(case.bundle, case.patient_id), model=model or case.model, as_of=case.as_of, kb=kb)
    problems, cells = check_review(review, case.expected)
    return CaseOutcome(case, review, problems, cells=cells)


def confusion(outcomes: list[CaseOutcome]) -> dict[str, dict[str, int]]:
    m: dict[str, dict[str, int]] = {}
    for o in outcomes:
        for exp, act in o.cells:
            m.setdefault(exp, {}).setdefault(act, 0)
            m[exp][act] += 1
    return m


def format_confusion(m: dict[str, dict[str, int]]) -> str:
    cols = sorted({a for row in m.values() for a in row})
    width = max([len(r) for r in m] + [8])
    lines = ["expected \\ actual".ljust(width) + "  " + "  ".join(c.rjust(max(len(c), 5)) for c in cols)]
    for exp in sorted(m):
        lines.append(exp.ljust(width) + "  " + "  ".join(str(m[exp].get(c, 0)).rjust(max(len(c), 5)) for c in cols))
    return "\n".join(lines)


def junit(outcomes: list[CaseOutcome], path: str | Path) -> None:
    from xml.etree import ElementTree as ET

    suite = ET.Element(
        "testsuite",
        name="clinagent-replay",
        tests=str(len(outcomes)),
        failures=str(sum(not o.passed for o in outcomes if not o.skipped)),
        skipped=str(sum(bool(o.skipped) for o in outcomes)),
    )
    for o in outcomes:
        tc = ET.SubElement(suite, "testcase", classname="replay", name=o.case.id)
        if o.skipped:
            ET.SubElement(tc, "skipped", message=o.skipped)
        elif not o.passed:
            ET.SubElement(tc, "failure", message="; ".join(o.problems)[:500]).text = "\n".join(o.problems)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
