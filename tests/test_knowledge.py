"""The knowledge base: shape checks (SHACL and direct), coverage, codes checked against the shared code lists."""

from __future__ import annotations

import csv
import re
from collections import Counter

import pytest
from rdflib import RDF, RDFS, URIRef

from guardrails.knowledge import DEFAULT_DIR, NS_ONT, compact, content_hash, load_graph, load_knowledge

from .conftest import SHARED, need_shared

CA = lambda n: URIRef(NS_ONT + n)  # noqa: E731
FACT_KINDS = (
    "Interaction",
    "DoseLimit",
    "RenalRule",
    "AgeRule",
    "Contraindication",
    "PregnancyRule",
    "LabRule",
    "MonitoringRule",
    "CrossSensitivity",
    "Ingredient",
    "DrugClass",
    "Product",
)


@pytest.fixture(scope="module")
def graph():
    return load_graph()


def test_shacl_shapes_conform(graph):
    pyshacl = pytest.importorskip("pyshacl")
    shapes = load_graph(DEFAULT_DIR / "shapes")
    conforms, _, text = pyshacl.validate(graph, shacl_graph=shapes, inference="none", allow_warnings=True)
    assert conforms, text[:4000]


def test_every_fact_cites_a_defined_source(graph):
    defined = set(graph.subjects(RDF.type, CA("Source")))
    missing, undefined = [], []
    for kind in FACT_KINDS:
        for s in graph.subjects(RDF.type, CA(kind)):
            srcs = list(graph.objects(s, CA("source")))
            if not srcs:
                missing.append(compact(str(s)))
            undefined += [f"{compact(str(s))} -> {compact(str(o))}" for o in srcs if o not in defined]
    assert not missing, f"facts without ca:source: {missing[:20]}"
    assert not undefined, f"sources cited but not defined: {undefined[:20]}"


def test_every_referenced_drug_and_class_is_defined(graph):
    ingredients = set(graph.subjects(RDF.type, CA("Ingredient")))
    classes = set(graph.subjects(RDF.type, CA("DrugClass")))
    bad = []
    for p in ("agentA", "agentB", "appliesTo", "drug", "allergen", "target", "memberOf", "ingredient"):
        for s, o in graph.subject_objects(CA(p)):
            if o not in ingredients and o not in classes:
                bad.append(f"{compact(str(s))} ca:{p} {compact(str(o))}")
    for s, o in graph.subject_objects(RDFS.subClassOf):
        if s in classes and o not in classes:
            bad.append(f"{compact(str(s))} rdfs:subClassOf {compact(str(o))}")
    assert not bad, "undefined IRIs:\n" + "\n".join(bad[:40])


def test_rxcuis_are_unique_per_ingredient(graph):
    counts = Counter(str(o) for s in graph.subjects(RDF.type, CA("Ingredient")) for o in graph.objects(s, CA("rxcui")))
    dupes = {k: v for k, v in counts.items() if v > 1}
    assert not dupes, f"RXCUI used by more than one ingredient: {dupes}"


def test_coverage_targets(kb):
    s = kb.stats
    assert s["ingredients"] >= 300, s
    assert s["interaction_facts"] >= 165, s  # the ONC list plus at least 150 more
    onc = {r.iri for rules in kb.interactions.values() for r in rules if r.onc}
    assert len(onc) >= 10, f"ONC high-priority facts: {len(onc)}"
    with_limits = {i for i in kb.by_ingredient.get("dose", {})}
    assert len(with_limits) >= 250, len(with_limits)
    for kind in ("renal", "age", "dx", "pregnancy", "lab", "monitoring"):
        assert kb.by_ingredient.get(kind), f"no {kind} rules"
    assert kb.xsens, "no cross-sensitivity facts"


def test_ismp_high_alert_drugs_are_flagged(kb):
    for name in (
        "warfarin",
        "insulin_glargine",
        "methotrexate",
        "potassium_chloride",
        "digoxin",
        "morphine",
        "oxycodone",
        "heparin",
        "enoxaparin",
        "fentanyl",
    ):
        ing = kb.ingredients.get(f"drug:{name}")
        assert ing is not None, name
        assert ing.high_alert, f"{name} should be ISMP high-alert"


def test_ingredient_rxcuis_agree_with_the_cpic_table(kb):
    path = need_shared(SHARED / "knowledge" / "cpic-drugs-rxnorm-atc.csv")
    cpic = {row["name"].lower(): row["rxnorm_rxcui"] for row in csv.DictReader(path.open()) if row["rxnorm_rxcui"]}
    mismatches = []
    for ing in kb.ingredients.values():
        want = cpic.get(ing.name.lower())
        if want and want != ing.rxcui:
            mismatches.append(f"{ing.name}: ontology {ing.rxcui}, CPIC {want}")
    assert not mismatches, mismatches


def test_synthea_ingredient_codes_agree(kb):
    """Bare-name Synthea RxNorm codes (ingredients) map to the ingredient with the same name."""
    path = need_shared(SHARED / "knowledge" / "synthea-rxnorm-codes.csv")
    bad = []
    for row in csv.DictReader(path.open()):
        name = row["display"]
        if re.search(r"\d", name) or "/" in name:
            continue
        iid = kb.ingredient_by_name(name)
        if iid and kb.ingredients[iid].rxcui != row["code"]:
            bad.append(f"{name}: synthea {row['code']}, ontology {kb.ingredients[iid].rxcui}")
    assert not bad, bad


def test_knowledge_version_is_the_content_hash_and_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("CLINAGENT_CACHE", str(tmp_path))
    a = load_knowledge(use_cache=False)
    assert a.version == content_hash(DEFAULT_DIR) and len(a.version) == 64
    from guardrails import knowledge

    knowledge._LOADED.clear()
    b = load_knowledge()  # compiles and writes the cache
    knowledge._LOADED.clear()
    c = load_knowledge()  # reads the cache
    assert list(tmp_path.glob("knowledge-*.pickle"))
    assert b.stats == c.stats == a.stats and c.version == a.version


def test_dose_limits_are_internally_consistent(kb):
    bad = []
    for rules in kb.by_ingredient.get("dose", {}).values():
        for r in set(rules):
            if r.max_single is not None and r.max_daily is not None and r.max_single > r.max_daily:
                bad.append(f"{r.iri}: max single {r.max_single} > max daily {r.max_daily}")
            if r.usual_min_single is not None and r.max_single is not None and r.usual_min_single > r.max_single:
                bad.append(f"{r.iri}: usual minimum above maximum")
            if r.max_age is not None and r.max_age <= r.min_age:
                bad.append(f"{r.iri}: empty age band")
            if (
                r.max_single_per_kg is not None
                and r.max_daily_per_kg is not None
                and r.max_single_per_kg > r.max_daily_per_kg
            ):
                bad.append(f"{r.iri}: per-kg single above per-kg daily")
            if all(
                v is None for v in (r.max_single, r.max_daily, r.max_weekly, r.max_single_per_kg, r.max_daily_per_kg)
            ):
                bad.append(f"{r.iri}: a dose limit with no limit")
    assert not bad, bad


def test_the_fast_parser_sees_the_same_triples_as_rdflib(graph):
    """The compiler parses with pyoxigraph; SHACL and the SPARQL baseline read rdflib's graph: same triples."""
    import pyoxigraph as ox
    from rdflib import BNode, Literal

    def norm(term):
        if isinstance(term, (BNode, ox.BlankNode)):
            return "_"
        if isinstance(term, Literal):
            return ("lit", str(term), str(term.datatype or ""))
        if isinstance(term, ox.Literal):
            return (
                "lit",
                term.value,
                term.datatype.value if term.datatype.value != "http://www.w3.org/2001/XMLSchema#string" else "",
            )
        return getattr(term, "value", str(term))

    ours = {
        (norm(t.subject), norm(t.predicate), norm(t.object))
        for p in sorted(DEFAULT_DIR.glob("*.ttl"))
        for t in ox.parse(path=str(p), format=ox.RdfFormat.TURTLE)
    }
    theirs = {(norm(s), str(p), norm(o)) for s, p, o in graph}
    assert ours == theirs


def test_a_cache_others_can_write_is_not_trusted(tmp_path, monkeypatch):
    import os

    from guardrails import knowledge

    cache_dir = tmp_path / "cache"
    monkeypatch.setenv("CLINAGENT_CACHE", str(cache_dir))
    knowledge._LOADED.clear()
    load_knowledge()  # writes the cache
    (pickle_file,) = list(cache_dir.glob("knowledge-*.pickle"))
    assert knowledge._trusted(pickle_file)
    os.chmod(pickle_file, 0o666)
    assert not knowledge._trusted(pickle_file)  # group/world-writable: compiled again instead of loaded
    knowledge._LOADED.clear()
    assert load_knowledge().stats["ingredients"] > 0
