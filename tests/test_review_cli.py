"""`clinagent review` and `clinagent replay` as processes: JSON contract, FHIR output, exit codes, JUnit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

from . import _bundles as B

ROOT = Path(__file__).resolve().parent.parent


def run(*args):
    return subprocess.run([sys.executable, "-m", "clinagent.cli", *args], capture_output=True, text=True)


def test_review_json_contract_and_fhir_out(tmp_path):
    p = tmp_path / "patient.json"
    p.write_text(json.dumps(B.strep_penicillin_allergy()))
    out = tmp_path / "fhir"
    r = run("review", str(p), "--json", "--as-of", "2026-11-01", "--fhir-out", str(out))
    assert r.returncode == 0, r.stderr
    rv = json.loads(r.stdout)
    assert {"shown", "blocked", "model", "knowledge_version", "run_id", "as_of", "message_history_sha256"} <= set(rv)
    assert rv["model"] == "offline-guideline-planner" and len(rv["message_history_sha256"]) == 64
    assert rv["shown"] and rv["blocked"]
    s = rv["shown"][0]
    assert {"cites", "findings", "rules_evaluated", "facts_consulted", "resource", "provenance"} <= set(s)
    assert s["provenance"]["model"] == rv["model"] and s["provenance"]["run_id"] == rv["run_id"]
    assert s["provenance"]["knowledge_version"] == rv["knowledge_version"]
    (bundle,) = list(out.glob("review-*.json"))
    from fhir.resources.R4B.bundle import Bundle

    Bundle.model_validate(json.loads(bundle.read_text()))


def test_review_readable_output_and_bad_input(tmp_path):
    p = tmp_path / "patient.json"
    p.write_text(json.dumps(B.heart_failure_low_egfr()))
    r = run("review", str(p), "--as-of", "2026-11-01")
    assert r.returncode == 0 and "Blocked by the safety gates" in r.stdout and "not an LLM" in r.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    r = run("review", str(bad))
    assert r.returncode == 2 and "bad.json" in r.stderr and "Traceback" not in r.stderr
    r = run("review", str(p), "--model", "nonsense")
    assert r.returncode == 2 and "unknown model" in r.stderr


def _case(d: Path, name: str, expected: dict) -> None:
    (d / "bundles").mkdir(exist_ok=True)
    (d / "bundles" / "hf.json").write_text(json.dumps(B.heart_failure_low_egfr()))
    (d / f"{name}.json").write_text(
        json.dumps({"description": name, "bundle": "bundles/hf.json", "as_of": "2026-11-01", "expected": expected})
    )


def test_replay_passes_fails_and_writes_junit(tmp_path):
    good = tmp_path / "good"
    good.mkdir()
    _case(good, "hf-blocked", {"blocked": [{"drug": "spironolactone", "category": "drug-renal"}], "shown_count": 0})
    junit = tmp_path / "junit.xml"
    r = run("replay", str(good), "--junit", str(junit))
    assert r.returncode == 0, r.stdout
    assert "blocked:drug-renal" in r.stdout and "1 passed, 0 failed" in r.stdout
    assert ET.parse(junit).getroot().get("failures") == "0"
    bad = tmp_path / "bad"
    bad.mkdir()
    _case(bad, "hf-wrong", {"shown": [{"drug": "spironolactone"}]})
    r = run("replay", str(bad), "--junit", str(junit))
    assert r.returncode == 1 and "FAIL" in r.stdout and "0 passed, 1 failed" in r.stdout
    assert ET.parse(junit).getroot().get("failures") == "1"
