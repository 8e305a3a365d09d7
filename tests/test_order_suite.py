"""Replay every order in fixtures/orders against its patient; report per-category detection and nuisance blocks."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinagent.ordersuite import format_summary, load_cases, run_case, summarize

SUITE = Path(__file__).resolve().parent.parent / "fixtures" / "orders"
CASES = load_cases(SUITE)
RESULTS: dict[str, object] = {}
_RECORDS: dict = {}


def test_suite_size_and_mix():
    assert len(CASES) >= 150
    nuisance = sum(c.kind == "nuisance" for c in CASES)
    assert nuisance / len(CASES) >= 0.25
    from guardrails import CATEGORIES

    assert {c.category for c in CASES} >= set(CATEGORIES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case, kb):
    result = run_case(case, kb, _RECORDS)
    RESULTS[case.id] = result
    detail = "\n".join(f"  {f.severity} {f.category}: {f.message}" for f in result.verdict.findings)
    assert result.passed, f"{case.description}\n" + "\n".join(result.problems) + "\nfindings:\n" + detail


def test_summary_targets():
    """100% of dangerous orders caught, 0 nuisance orders blocked (runs after the cases)."""
    if len(RESULTS) < len(CASES):
        pytest.skip("run the whole suite for the summary")
    s = summarize(list(RESULTS.values()))
    print("\n" + format_summary(s))
    assert s["nuisance_blocked"] == 0
    assert s["caught"] == s["dangerous"]
