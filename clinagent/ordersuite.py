"""The order-screening suite (fixtures/orders): load cases, replay them through the gate, score them.

Scores are those of the Leapfrog CPOE evaluation: per category, the share of dangerous orders the gate
caught; for nuisance orders (safe ones), the share it wrongly blocked.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from guardrails import Verdict, gate
from guardrails.knowledge import Knowledge

from .errors import RecordError
from .record import load_record, parse_order


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    kind: str  # dangerous | nuisance
    description: str
    patient: Path
    as_of: date
    order: dict
    expected: dict


@dataclass
class CaseResult:
    case: Case
    verdict: Verdict
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems


def load_cases(directory: str | Path) -> list[Case]:
    d = Path(directory)
    cases = []
    for p in sorted((d / "cases").glob("*.json")):
        try:
            raw = json.loads(p.read_text())
            cases.append(
                Case(
                    p.stem,
                    raw["category"],
                    raw["kind"],
                    raw.get("description", ""),
                    d / "patients" / f"{raw['patient']}.json",
                    date.fromisoformat(raw["as_of"]),
                    raw["order"],
                    raw["expected"],
                )
            )
        except (KeyError, ValueError, TypeError) as e:
            raise RecordError(f"malformed case: {e}", where=str(p)) from None
    return cases


def _matches(finding: dict, want: dict) -> bool:
    return all(finding.get(k) == v for k, v in want.items())


def run_case(case: Case, kb: Knowledge, _records: dict | None = None) -> CaseResult:
    records = _records if _records is not None else {}
    rec = records.get(case.patient)
    if rec is None:
        rec = records[case.patient] = load_record(case.patient)
    facts = rec.facts(case.as_of)
    order = parse_order(case.order, f"{case.id}.json", "/order")
    verdict = gate(order, facts, kb)
    found = [f.as_dict() for f in verdict.findings]
    problems = []
    exp = case.expected
    if verdict.allowed != exp["allowed"]:
        problems.append(f"allowed={verdict.allowed}, expected {exp['allowed']}")
    for want in exp.get("findings", []):
        if not any(_matches(f, want) for f in found):
            problems.append(f"missing finding {want}")
    for unwanted in exp.get("absent", []):
        hits = [f for f in found if _matches(f, unwanted)]
        if hits:
            problems.append(f"unexpected finding {unwanted}: {hits[0]['message']}")
    return CaseResult(case, verdict, problems)


def summarize(results: list[CaseResult]) -> dict:
    """Per-category detection of dangerous orders and the nuisance false-alert (block) rate."""
    cats: dict[str, dict[str, int]] = {}
    for r in results:
        c = cats.setdefault(r.case.category, {"dangerous": 0, "caught": 0, "nuisance": 0, "nuisance_blocked": 0})
        if r.case.kind == "dangerous":
            c["dangerous"] += 1
            c["caught"] += int(r.passed)
        else:
            c["nuisance"] += 1
            c["nuisance_blocked"] += int(not r.verdict.allowed)
    dangerous = sum(c["dangerous"] for c in cats.values())
    caught = sum(c["caught"] for c in cats.values())
    nuisance = sum(c["nuisance"] for c in cats.values())
    blocked = sum(c["nuisance_blocked"] for c in cats.values())
    return {
        "cases": len(results),
        "passed": sum(r.passed for r in results),
        "dangerous": dangerous,
        "caught": caught,
        "detection": caught / dangerous if dangerous else 1.0,
        "nuisance": nuisance,
        "nuisance_blocked": blocked,
        "nuisance_false_alert_rate": blocked / nuisance if nuisance else 0.0,
        "categories": dict(sorted(cats.items())),
    }


def format_summary(s: dict) -> str:
    lines = [f"{'category':20} {'dangerous':>9} {'caught':>6} {'nuisance':>8} {'blocked':>7}"]
    for name, c in s["categories"].items():
        lines.append(f"{name:20} {c['dangerous']:9d} {c['caught']:6d} {c['nuisance']:8d} {c['nuisance_blocked']:7d}")
    lines.append(
        f"detection {s['caught']}/{s['dangerous']} = {s['detection']:.1%}; nuisance blocked "
        f"{s['nuisance_blocked']}/{s['nuisance']} = {s['nuisance_false_alert_rate']:.1%}"
    )
    return "\n".join(lines)
