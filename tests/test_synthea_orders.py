"""Every MedicationRequest in the shared Synthea bundles, checked as an order against its own patient."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import date

from clinagent.record import load_record, parse_order
from guardrails import gate
from guardrails.resolve import resolve_drug

from .conftest import SYNTHEA, need_shared


def test_every_synthea_medication_request_gets_a_verdict_and_products_resolve(kb):
    bundles = sorted(need_shared(SYNTHEA / "bundles").glob("*.json"))
    verdicts = Counter()
    products: dict[str, bool] = {}
    n = 0
    for b in bundles:
        rec = load_record(b)
        for mr in rec.resources("MedicationRequest"):
            authored = mr.get("authoredOn", "")[:10]
            facts = rec.facts(date.fromisoformat(authored) if authored else date(2021, 1, 1))
            order = replace(parse_order(mr, b.name), replaces=f"MedicationRequest/{mr['id']}")  # re-stating itself
            v = gate(order, facts, kb)
            n += 1
            verdicts[v.allowed] += 1
            assert v.knowledge_version == kb.version
            # an internal error would surface as a rule failure: there must be none
            assert not [f for f in v.findings if f.rule_id != "order.resolve" and "failed (" in f.message], v.findings
            key = next((c.code for c in order.codes), order.text)
            products[key] = resolve_drug(order.codes, order.text, kb) is not None
    assert n >= 200
    resolved = sum(products.values())
    unresolved = sorted(k for k, ok in products.items() if not ok)
    assert resolved / len(products) >= 0.95, f"{resolved}/{len(products)} resolve; unresolved: {unresolved}"


def test_bulk_ndjson_products_resolve(kb):
    import json

    path = need_shared(SYNTHEA / "bulk-ndjson" / "10-patients" / "MedicationRequest.000.ndjson")
    codes = {}
    for line in path.read_text().splitlines():
        mr = json.loads(line)
        cc = mr.get("medicationCodeableConcept") or {}
        for c in cc.get("coding") or []:
            codes[c["code"]] = c.get("display", "")
    from guardrails import Code

    ok = [code for code, d in codes.items() if resolve_drug((Code("rxnorm", code, d),), "", kb)]
    assert len(ok) / len(codes) >= 0.95, sorted(set(codes) - set(ok))
