"""The baseline the compiled gate is measured against: the same checks answered by SPARQL over the same graph.

Each check is a prepared rdflib query run per order (class membership through ca:memberOf/rdfs:subClassOf*),
as a gate without compiled indexes would do. It returns the ontology facts that fire, so the benchmark can
confirm both implementations agree before it compares their speed.
"""

from __future__ import annotations

from rdflib import Literal, Namespace, URIRef
from rdflib.namespace import RDFS
from rdflib.plugins.sparql import prepareQuery

CA = Namespace("https://w3id.org/clinagent/ont#")
NS = {"ca": CA, "rdfs": RDFS}

RESOLVE = prepareQuery(
    """
SELECT ?ing WHERE {
  { ?p ca:rxcui ?code ; a ca:Product ; ca:component/ca:ingredient ?ing . }
  UNION { ?ing a ca:Ingredient ; ca:rxcui ?code . }
}""",
    initNs=NS,
)

INTERACTION = prepareQuery(
    """
SELECT DISTINCT ?i WHERE {
  ?i a ca:Interaction ; ca:agentA ?x ; ca:agentB ?y .
  { ?a (ca:memberOf/rdfs:subClassOf*)? ?x . ?b (ca:memberOf/rdfs:subClassOf*)? ?y . }
  UNION
  { ?b (ca:memberOf/rdfs:subClassOf*)? ?x . ?a (ca:memberOf/rdfs:subClassOf*)? ?y . }
}""",
    initNs=NS,
)

RULES = prepareQuery(
    """
SELECT DISTINCT ?r WHERE {
  ?r a ?kind ; ca:appliesTo ?c .
  VALUES ?kind { ca:RenalRule ca:AgeRule ca:Contraindication ca:PregnancyRule ca:LabRule ca:MonitoringRule }
  ?ing (ca:memberOf/rdfs:subClassOf*)? ?c .
}""",
    initNs=NS,
)

DOSE = prepareQuery("SELECT ?r WHERE { ?r a ca:DoseLimit ; ca:drug ?ing . }", initNs=NS)

ALLERGY_GROUP = prepareQuery(
    """
ASK { ?a ca:memberOf/rdfs:subClassOf* ?g . ?b ca:memberOf/rdfs:subClassOf* ?g . ?g ca:allergyGroup true . }""",
    initNs=NS,
)

DUPLICATE = prepareQuery(
    """
ASK { ?a ca:memberOf/rdfs:subClassOf* ?g . ?b ca:memberOf/rdfs:subClassOf* ?g . ?g ca:duplicateGroup true .
      FILTER(?a != ?b) }""",
    initNs=NS,
)


def resolve(g, rxcui: str) -> list[URIRef]:
    return sorted({row.ing for row in g.query(RESOLVE, initBindings={"code": Literal(rxcui)})})


def check(g, order_rxcui: str, med_rxcuis: list[str], allergen_rxcuis: list[str]) -> dict[str, set[str]]:
    """The facts that fire for one order: interactions, per-ingredient rules, dose limits, allergy and duplicates."""
    out: dict[str, set[str]] = {
        "interaction": set(),
        "rules": set(),
        "dose": set(),
        "allergy": set(),
        "duplicate": set(),
    }
    ings = resolve(g, order_rxcui)
    meds = [resolve(g, m) for m in med_rxcuis]
    allergens = [resolve(g, a) for a in allergen_rxcuis]
    for ing in ings:
        for med in meds:
            for other in med:
                if other == ing:
                    out["duplicate"].add(str(other))
                    continue
                for row in g.query(INTERACTION, initBindings={"a": ing, "b": other}):
                    out["interaction"].add(str(row.i))
                if g.query(DUPLICATE, initBindings={"a": ing, "b": other}).askAnswer:
                    out["duplicate"].add(str(other))
        out["rules"] |= {str(r.r) for r in g.query(RULES, initBindings={"ing": ing})}
        out["dose"] |= {str(r.r) for r in g.query(DOSE, initBindings={"ing": ing})}
        for al in allergens:
            for a in al:
                if a == ing or g.query(ALLERGY_GROUP, initBindings={"a": ing, "b": a}).askAnswer:
                    out["allergy"].add(str(a))
    return out
