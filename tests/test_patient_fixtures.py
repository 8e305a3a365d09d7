"""Replay every patient case in fixtures/patients through the agent (offline model) and the gates."""

from __future__ import annotations

from pathlib import Path

import pytest

from clinagent.replay import load_patient_cases, replay_case

CASES = load_patient_cases(Path(__file__).resolve().parent.parent / "fixtures" / "patients")


def test_there_are_enough_cases_of_each_kind():
    assert len(CASES) >= 30
    assert sum(c.bundle.parts[-3:-1] == ("synthea", "bundles") for c in CASES) >= 10
    assert sum("injection" in c.description.lower() or c.id.startswith("pi-") for c in CASES) >= 3


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_patient_case(case, kb):
    outcome = replay_case(case, kb=kb)
    if outcome.skipped:
        pytest.skip(f"{outcome.skipped} (shared data absent)")
    assert outcome.passed, f"{case.description}\n" + "\n".join(outcome.problems)
