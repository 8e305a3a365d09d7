"""The compiled knowledge base: Turtle in ``ontologies/`` compiled once into plain in-memory indexes.

``load_knowledge()`` returns a :class:`Knowledge`. Compiling parses the Turtle with rdflib (about a second);
the result is cached as a pickle keyed by the SHA-256 of the Turtle files and of this compiler, so a
process that finds the cache never imports rdflib at all. The hash of the Turtle files is the knowledge
version stamped on every verdict.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .names import name_variants, normalize, routes_for_dose_form

NS_ONT = "https://w3id.org/clinagent/ont#"
PREFIXES = {
    "https://w3id.org/clinagent/drug/": "drug:",
    "https://w3id.org/clinagent/class/": "cls:",
    "https://w3id.org/clinagent/product/": "prod:",
    "https://w3id.org/clinagent/fact/": "fact:",
    "https://w3id.org/clinagent/source/": "src:",
}
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "ontologies"
_COMPILER_FILES = ("knowledge.py", "names.py", "units.py")

Sources = tuple[tuple[str, str], ...]


def compact(iri: str) -> str:
    for ns, p in PREFIXES.items():
        if iri.startswith(ns):
            return p + iri[len(ns) :]
    return iri


@dataclass(frozen=True, slots=True)
class Ingredient:
    id: str  # "drug:warfarin"
    name: str
    rxcui: str
    classes: frozenset[str]  # every class, transitively ("cls:...")
    high_alert: bool
    sources: Sources
    rxcui_verified: bool = True


@dataclass(frozen=True, slots=True)
class DrugClass:
    id: str
    label: str
    allergy_group: bool
    duplicate_group: bool
    members: frozenset[str]
    sources: Sources


@dataclass(frozen=True, slots=True)
class Component:
    ingredient: str  # ingredient id, or "" when the name did not resolve
    name: str
    strength: float | None
    unit: str | None
    per_volume: float | None = None
    per_unit: str | None = None


@dataclass(frozen=True, slots=True)
class Product:
    rxcui: str
    name: str
    components: tuple[Component, ...]
    dose_form: str
    routes: frozenset[str]
    sources: Sources = ()


@dataclass(frozen=True, slots=True)
class Rule:
    """Any cited rule fact. Which fields are set depends on ``kind``."""

    iri: str
    kind: str  # interaction | dose | renal | age | dx | pregnancy | lab | monitoring | xsens
    sources: Sources
    message: str = ""
    action: str = ""  # contraindicated | caution | maxDaily
    severity: str = ""  # interactions: contraindicated | major | moderate
    a: str = ""  # interactions: agent labels; xsens: allergen/target labels
    b: str = ""
    effect: str = ""
    mechanism: str = ""
    management: str = ""
    onc: bool = False
    route: str | None = None
    min_age: float = 0.0
    max_age: float | None = None
    dose_unit: str = "mg"
    max_single: float | None = None
    max_daily: float | None = None
    max_weekly: float | None = None
    usual_min_single: float | None = None
    max_single_per_kg: float | None = None
    max_daily_per_kg: float | None = None
    schedule: str | None = None
    measure: str = "eGFR"
    at_least: float = 0.0
    below: float | None = None
    conditions: frozenset[str] = frozenset()
    condition_label: str = ""
    loincs: tuple[str, ...] = ()
    above: float | None = None
    under: float | None = None
    unit: str = ""
    max_age_days: float | None = None

    def summary(self) -> str:
        if self.kind == "interaction":
            return f"{self.a} + {self.b}: {self.severity}. {self.effect}".strip()
        if self.kind == "dose" and not self.message:
            band = f"age {self.min_age:g}" + (f"-<{self.max_age:g}" if self.max_age is not None else "+")
            parts = [
                f"{label} {v:g} {self.dose_unit}{suffix}"
                for label, v, suffix in (
                    ("max single", self.max_single, ""),
                    ("max daily", self.max_daily, "/day"),
                    ("max weekly", self.max_weekly, "/week"),
                    ("max single", self.max_single_per_kg, "/kg"),
                    ("max daily", self.max_daily_per_kg, "/kg/day"),
                    ("usual min single", self.usual_min_single, ""),
                )
                if v is not None
            ]
            route = f", {self.route}" if self.route else ""
            sched = ", dosed weekly" if self.schedule == "weekly" else ""
            return f"dose limit ({band} y{route}{sched}): " + "; ".join(parts)
        return self.message or self.iri


@dataclass
class Knowledge:
    version: str
    ingredients: dict[str, Ingredient] = field(default_factory=dict)
    classes: dict[str, DrugClass] = field(default_factory=dict)
    products: dict[str, Product] = field(default_factory=dict)
    rxcui_ingredient: dict[str, str] = field(default_factory=dict)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # normalised name/synonym/brand -> ingredient ids
    class_names: dict[str, str] = field(default_factory=dict)  # normalised class label -> class id
    snomed: dict[str, str] = field(default_factory=dict)  # SNOMED CT substance -> ingredient or class id
    interactions: dict[tuple[str, str], tuple[Rule, ...]] = field(default_factory=dict)
    partners: dict[str, dict[str, tuple[Rule, ...]]] = field(default_factory=dict)  # ingredient -> other -> rules
    duplicate_groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # ingredient -> duplicate classes
    allergy_groups: dict[str, frozenset[str]] = field(default_factory=dict)  # ingredient -> allergy-group classes
    evidence_cache: dict[str, Any] = field(default_factory=dict, repr=False)  # rule iri -> Evidence, filled lazily
    resolve_cache: dict[Any, Any] = field(default_factory=dict, repr=False)  # (codes, text) -> ResolvedDrug
    by_ingredient: dict[str, dict[str, tuple[Rule, ...]]] = field(default_factory=dict)  # kind -> id -> rules
    xsens: dict[str, tuple[tuple[frozenset[str], Rule], ...]] = field(default_factory=dict)
    unit_table: dict[str, tuple[str, float]] = field(default_factory=dict)
    monitoring_loincs: frozenset[str] = frozenset()
    stats: dict[str, int] = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Knowledge(version={self.version[:12]!r}, {self.stats})"

    def rules(self, kind: str, ingredient: str) -> tuple[Rule, ...]:
        return self.by_ingredient.get(kind, {}).get(ingredient, ())

    def members(self, concept: str) -> frozenset[str]:
        """Ingredients of a class id, or the ingredient itself."""
        if concept in self.classes:
            return self.classes[concept].members
        return frozenset({concept}) if concept in self.ingredients else frozenset()

    def ingredients_by_name(self, name: str) -> tuple[str, ...]:
        """Ingredient ids for a name, synonym or brand (a combination brand names several)."""
        for v in name_variants(name):
            hit = self.names.get(v)
            if hit:
                return hit
        return ()

    def ingredient_by_name(self, name: str) -> str | None:
        hit = self.ingredients_by_name(name)
        return hit[0] if len(hit) == 1 else None

    def class_by_name(self, name: str) -> str | None:
        n = normalize(name)
        for v in (n, n.rstrip("s"), n + "s"):
            hit = self.class_names.get(v)
            if hit:
                return hit
        return None


# ---- loading -------------------------------------------------------------------------------------------------


def ttl_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.ttl"))


def content_hash(directory: Path) -> str:
    h = hashlib.sha256()
    for p in ttl_files(directory):
        h.update(p.name.encode())
        h.update(b"\0")
        h.update(p.read_bytes())
    return h.hexdigest()


def _compiler_hash() -> str:
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in _COMPILER_FILES:
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


def _cache_dir() -> Path:
    return Path(os.environ.get("CLINAGENT_CACHE", Path.home() / ".cache" / "clinagent"))


_LOADED: dict[tuple[str, str], Knowledge] = {}


def load_knowledge(directory: str | Path | None = None, *, use_cache: bool = True) -> Knowledge:
    """Load the compiled knowledge for ``directory`` (default: the bundled ``ontologies/``)."""
    d = Path(directory or os.environ.get("CLINAGENT_ONTOLOGIES") or DEFAULT_DIR)
    version = content_hash(d)
    key = (str(d), version)
    if key in _LOADED:
        return _LOADED[key]
    cache = _cache_dir() / f"knowledge-{version[:24]}-{_compiler_hash()}.pickle"
    kb = None
    if use_cache and cache.exists() and _trusted(cache):
        try:
            with cache.open("rb") as f:
                kb = pickle.load(f)
        except Exception:  # a corrupt or foreign cache is rebuilt, never trusted
            kb = None
    if kb is None:
        kb = compile_knowledge(d, version)
        if use_cache:
            _write_cache(cache, kb)
    _LOADED[key] = kb
    return kb


def _trusted(path: Path) -> bool:
    """A pickle runs code when loaded: only read one that this user owns and nobody else can write."""
    try:
        for p in (path, path.parent):
            st = p.stat()
            if (hasattr(os, "getuid") and st.st_uid != os.getuid()) or st.st_mode & 0o022:
                return False
    except OSError:
        return False
    return True


def _write_cache(path: Path, kb: Knowledge) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")  # created 0600
        with os.fdopen(fd, "wb") as f:
            pickle.dump(kb, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only home only costs the next process a compile


def load_graph(directory: str | Path | None = None):
    """The knowledge as an rdflib graph: for SHACL validation, the SPARQL baseline and the generator scripts."""
    import rdflib

    d = Path(directory or os.environ.get("CLINAGENT_ONTOLOGIES") or DEFAULT_DIR)
    g = rdflib.Graph()
    for p in ttl_files(d):
        g.parse(p, format="turtle")
    return g


# ---- compiling -----------------------------------------------------------------------------------------------

_RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
_SUBCLASS = "http://www.w3.org/2000/01/rdf-schema#subClassOf"


_XSD = "http://www.w3.org/2001/XMLSchema#"
_NUMERIC = {_XSD + t for t in ("integer", "decimal", "double", "float", "int", "long", "nonNegativeInteger")}


class _Triples:
    """Every triple indexed once by subject and predicate, with IRIs compacted and literals as Python values,
    so compiling is dictionary lookups rather than a graph query per field.

    The Turtle is parsed with pyoxigraph (Rust): the same files rdflib reads for SHACL and SPARQL, about ten times
    faster to parse; tests/test_knowledge.py checks that both parsers see the same triples."""

    def __init__(self, directory: Path) -> None:
        import pyoxigraph as ox

        self.by_s: dict[object, dict[str, list]] = {}
        self.by_type: dict[str, list] = {}
        self.count = 0
        for path in ttl_files(directory):
            for tr in ox.parse(path=str(path), format=ox.RdfFormat.TURTLE):
                s, o = tr.subject, tr.object
                key = compact(s.value) if isinstance(s, ox.NamedNode) else s
                if isinstance(o, ox.Literal):
                    dt = o.datatype.value
                    val = (
                        (o.value == "true") if dt == _XSD + "boolean" else float(o.value) if dt in _NUMERIC else o.value
                    )
                elif isinstance(o, ox.NamedNode):
                    val = compact(o.value)
                else:
                    val = o
                pred = tr.predicate.value
                self.by_s.setdefault(key, {}).setdefault(pred, []).append(val)
                if pred == _RDF_TYPE:
                    self.by_type.setdefault(val, []).append(key)
                self.count += 1

    def of_type(self, kind: str) -> list:
        return sorted(self.by_type.get(NS_ONT + kind, ()), key=str)

    def all(self, s, p: str) -> list:
        return self.by_s.get(s, {}).get(p if p.startswith("http") else NS_ONT + p, [])

    def one(self, s, p: str, default=None):
        vals = self.all(s, p)
        return vals[0] if vals else default

    def num(self, s, p: str) -> float | None:
        v = self.one(s, p)
        return float(v) if v is not None else None

    def text(self, s, p: str) -> str:
        return str(self.one(s, p, ""))


def compile_knowledge(directory: Path, version: str | None = None) -> Knowledge:
    """Parse the Turtle and build every index the gates use."""
    from . import units

    t = _Triples(directory)
    kb = Knowledge(version=version or content_hash(directory))
    kb.unit_table = units.build_table()

    source_info = {s: (str(t.one(s, _LABEL, s)), t.text(s, "url")) for s in t.of_type("Source")}

    def sources(s) -> Sources:
        return tuple(sorted({source_info.get(c, (str(c), "")) for c in t.all(s, "source")}))

    # classes and their closure
    class_nodes = t.of_type("DrugClass")
    parents: dict[str, set[str]] = {c: set(t.all(c, _SUBCLASS)) for c in class_nodes}

    def ancestors(cid: str, seen: set[str] | None = None) -> set[str]:
        seen = set() if seen is None else seen
        for p in parents.get(cid, ()):
            if p not in seen:
                seen.add(p)
                ancestors(p, seen)
        return seen

    # ingredients
    members: dict[str, set[str]] = {c: set() for c in parents}
    names: dict[str, set[str]] = {}
    for iid in t.of_type("Ingredient"):
        direct = set(t.all(iid, "memberOf"))
        closure = set(direct)
        for c in direct:
            closure |= ancestors(c)
        for c in closure:
            members.setdefault(c, set()).add(iid)
        name = str(t.one(iid, _LABEL, iid.split(":", 1)[1].replace("_", " ")))
        rx = t.text(iid, "rxcui")
        kb.ingredients[iid] = Ingredient(
            iid,
            name,
            rx,
            frozenset(closure),
            bool(t.one(iid, "highAlert", False)),
            sources(iid),
            t.one(iid, "rxcuiStatus") != "unverified",
        )
        if rx:
            kb.rxcui_ingredient[rx] = iid
        for n in [name, iid.split(":", 1)[1].replace("_", " "), *t.all(iid, "synonym"), *t.all(iid, "brand")]:
            names.setdefault(normalize(str(n)), set()).add(iid)
        for code in t.all(iid, "snomed"):
            kb.snomed[str(code)] = iid
    kb.names = {n: tuple(sorted(ids)) for n, ids in names.items()}
    for cid in class_nodes:
        label = str(t.one(cid, _LABEL, cid))
        kb.classes[cid] = DrugClass(
            cid,
            label,
            bool(t.one(cid, "allergyGroup", False)),
            bool(t.one(cid, "duplicateGroup", False)),
            frozenset(members.get(cid, ())),
            sources(cid),
        )
        for n in [label, cid.split(":", 1)[1].replace("_", " "), *t.all(cid, "synonym")]:
            kb.class_names.setdefault(normalize(str(n)), cid)
        for code in t.all(cid, "snomed"):
            kb.snomed.setdefault(str(code), cid)

    def label_of(concept: str) -> str:
        if concept in kb.classes:
            return kb.classes[concept].label
        if concept in kb.ingredients:
            return kb.ingredients[concept].name
        return concept

    def applies(s, prop="appliesTo") -> list[str]:
        out: list[str] = []
        for o in t.all(s, prop):
            out.extend(sorted(kb.members(o)))
        return out

    # products
    for s in t.of_type("Product"):
        rx = t.text(s, "rxcui")
        comps = []
        for c in t.all(s, "component"):
            iid = t.one(c, "ingredient", "")
            comps.append(
                Component(
                    iid,
                    kb.ingredients[iid].name if iid in kb.ingredients else t.text(c, "name"),
                    t.num(c, "strength"),
                    t.one(c, "strengthUnit"),
                    t.num(c, "perVolume"),
                    t.one(c, "perUnit"),
                )
            )
        form = t.text(s, "doseForm")
        routes = frozenset(str(r) for r in t.all(s, "route")) or routes_for_dose_form(form)
        kb.products[rx] = Product(
            rx, str(t.one(s, _LABEL, rx)), tuple(sorted(comps, key=lambda c: c.name)), form, routes, sources(s)
        )

    # interactions, expanded to ingredient pairs
    pairs: dict[tuple[str, str], list[Rule]] = {}
    for s in t.of_type("Interaction"):
        a, b = t.all(s, "agentA"), t.all(s, "agentB")
        if not a or not b:
            continue
        rule = Rule(
            s,
            "interaction",
            sources(s),
            severity=t.text(s, "severity"),
            a=label_of(a[0]),
            b=label_of(b[0]),
            effect=t.text(s, "effect"),
            mechanism=t.text(s, "mechanism"),
            management=t.text(s, "management"),
            onc=bool(t.one(s, "oncHighPriority", False)),
        )
        ma = set().union(*(kb.members(x) for x in a))
        mb = set().union(*(kb.members(x) for x in b))
        for x in ma:
            for y in mb:
                if x != y:
                    pairs.setdefault((min(x, y), max(x, y)), []).append(rule)
    kb.interactions = {k: tuple(dict.fromkeys(v)) for k, v in pairs.items()}
    for (x, y), rules in kb.interactions.items():
        kb.partners.setdefault(x, {})[y] = rules
        kb.partners.setdefault(y, {})[x] = rules
    for iid, ing in kb.ingredients.items():
        kb.duplicate_groups[iid] = tuple(
            sorted(c for c in ing.classes if c in kb.classes and kb.classes[c].duplicate_group)
        )
        kb.allergy_groups[iid] = frozenset(c for c in ing.classes if c in kb.classes and kb.classes[c].allergy_group)

    # per-ingredient rules
    per: dict[str, dict[str, list[Rule]]] = {}
    facts_per_kind: dict[str, int] = {}

    def add(kind: str, ids: list[str], rule: Rule) -> None:
        facts_per_kind[kind] = facts_per_kind.get(kind, 0) + 1
        for i in ids:
            per.setdefault(kind, {}).setdefault(i, []).append(rule)

    for s in t.of_type("DoseLimit"):
        add(
            "dose",
            applies(s, "drug"),
            Rule(
                s,
                "dose",
                sources(s),
                route=t.one(s, "route"),
                min_age=t.num(s, "minAgeYears") or 0.0,
                max_age=t.num(s, "maxAgeYears"),
                dose_unit=str(t.one(s, "doseUnit", "mg")),
                max_single=t.num(s, "maxSingle"),
                max_daily=t.num(s, "maxDaily"),
                max_weekly=t.num(s, "maxWeekly"),
                usual_min_single=t.num(s, "usualMinSingle"),
                max_single_per_kg=t.num(s, "maxSinglePerKg"),
                max_daily_per_kg=t.num(s, "maxDailyPerKg"),
                schedule=t.one(s, "schedule"),
                message=t.text(s, "message"),
            ),
        )
    for s in t.of_type("RenalRule"):
        add(
            "renal",
            applies(s),
            Rule(
                s,
                "renal",
                sources(s),
                message=t.text(s, "message"),
                action=t.text(s, "action"),
                measure=str(t.one(s, "measure", "eGFR")),
                at_least=t.num(s, "atLeast") or 0.0,
                below=t.num(s, "below"),
                max_daily=t.num(s, "maxDaily"),
                dose_unit=str(t.one(s, "doseUnit", "mg")),
                max_daily_per_kg=t.num(s, "maxDailyPerKg"),
            ),
        )
    for s in t.of_type("AgeRule"):
        add(
            "age",
            applies(s),
            Rule(
                s,
                "age",
                sources(s),
                message=t.text(s, "message"),
                action=t.text(s, "action"),
                min_age=t.num(s, "atLeastAgeYears") or 0.0,
                max_age=t.num(s, "belowAgeYears"),
            ),
        )
    for s in t.of_type("Contraindication"):
        add(
            "dx",
            applies(s),
            Rule(
                s,
                "dx",
                sources(s),
                message=t.text(s, "message"),
                action=t.text(s, "action"),
                conditions=frozenset(str(c) for c in t.all(s, "condition")),
                condition_label=t.text(s, "conditionLabel"),
            ),
        )
    for s in t.of_type("PregnancyRule"):
        add(
            "pregnancy",
            applies(s),
            Rule(s, "pregnancy", sources(s), message=t.text(s, "message"), action=t.text(s, "action")),
        )
    loincs: set[str] = set()
    for s in t.of_type("LabRule"):
        codes = tuple(sorted(str(c) for c in t.all(s, "loinc")))
        loincs.update(codes)
        add(
            "lab",
            applies(s),
            Rule(
                s,
                "lab",
                sources(s),
                message=t.text(s, "message"),
                action=t.text(s, "action"),
                loincs=codes,
                above=t.num(s, "above"),
                under=t.num(s, "under"),
                unit=t.text(s, "unit"),
            ),
        )
    for s in t.of_type("MonitoringRule"):
        codes = tuple(sorted(str(c) for c in t.all(s, "loinc")))
        loincs.update(codes)
        add(
            "monitoring",
            applies(s),
            Rule(
                s,
                "monitoring",
                sources(s),
                message=t.text(s, "message"),
                loincs=codes,
                max_age_days=t.num(s, "maxAgeDays"),
            ),
        )
    kb.monitoring_loincs = frozenset(loincs)
    kb.by_ingredient = {k: {i: tuple(v) for i, v in d.items()} for k, d in per.items()}

    # cross-sensitivity: allergen ingredient -> (target ingredients, rule)
    xs: dict[str, list[tuple[frozenset[str], Rule]]] = {}
    for s in t.of_type("CrossSensitivity"):
        allergen, target = t.all(s, "allergen"), t.all(s, "target")
        if not allergen or not target:
            continue
        facts_per_kind["xsens"] = facts_per_kind.get("xsens", 0) + 1
        rule = Rule(
            s,
            "xsens",
            sources(s),
            message=t.text(s, "message"),
            action=t.text(s, "action"),
            a=label_of(allergen[0]),
            b=label_of(target[0]),
        )
        targets = frozenset().union(*(kb.members(x) for x in target))
        for al in allergen:
            for i in kb.members(al):
                xs.setdefault(i, []).append((targets, rule))
    kb.xsens = {k: tuple(v) for k, v in xs.items()}
    kb.stats = {
        "triples": t.count,
        "ingredients": len(kb.ingredients),
        "classes": len(kb.classes),
        "products": len(kb.products),
        "interaction_facts": len(t.of_type("Interaction")),
        "interaction_pairs": len(kb.interactions),
        "rxcui_unverified": sum(not i.rxcui_verified for i in kb.ingredients.values()),
        **{f"{k}_facts": n for k, n in sorted(facts_per_kind.items())},
    }
    return kb
