"""clinagent benchmarks, one command: `python benchmarks/run.py [--quick]`.

Measures, in one run on this machine:
  1. knowledge load+compile (Turtle -> indexes) and the cached load;
  2. gate latency per order against a patient with 20 active medications: compiled indexes vs the SPARQL baseline
     over the same graph (after checking both find the same facts);
  3. record load MB/s: clinagent.record (validates only what it uses) vs validating the whole bundle with fhir.resources;
  4. the whole `clinagent check` process: wall time and peak RSS, warm and cold knowledge cache.
Prints a table and writes benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from clinagent.record import load_record  # noqa: E402
from guardrails import ActiveMedication, Allergy, Code, Dose, Measured, MedicationOrder, PatientFacts, gate  # noqa: E402
from guardrails.knowledge import DEFAULT_DIR, compile_knowledge, load_graph, load_knowledge  # noqa: E402

SHARED = Path(os.environ.get("CLINAGENT_SHARED_DATA", ROOT.parent / "shared" / "data"))

# 20 active medications of an elderly polypharmacy patient (RxNorm SCD codes present in products.ttl).
ACTIVE = [
    "855332",
    "314076",
    "197361",
    "310798",
    "861007",
    "617314",
    "200801",
    "198211",
    "312961",
    "311372",
    "197884",
    "313782",
    "1049221",
    "310965",
    "308136",
    "197591",
    "866924",
    "1116635",
    "198013",
    "849574",
]
ORDERS = [
    "308182",
    "197806",
    "313782",
    "308460",
    "197361",
    "310798",
    "197319",
    "1049221",
    "311989",
    "198211",
    "855332",
    "866924",
    "1116635",
    "309362",
    "200064",
    "314076",
    "849574",
    "197884",
    "862019",
    "198013",
]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def patient(kb) -> PatientFacts:
    meds = []
    for i, code in enumerate(ACTIVE):
        name = kb.products[code].name if code in kb.products else ""
        meds.append(ActiveMedication(f"MedicationRequest/m{i}", (Code("rxnorm", code, name),), name))
    return PatientFacts(
        patient_ref="Patient/bench",
        as_of=date(2026, 11, 1),
        birth_date=date(1948, 3, 1),
        sex="female",
        weight=Measured(68, "kg", date(2026, 10, 1), "Observation/w"),
        egfr=Measured(48, "mL/min/1.73m2", date(2026, 10, 1), "Observation/e", method="reported"),
        crcl=Measured(41, "mL/min", date(2026, 10, 1), "Observation/c", method="Cockcroft-Gault"),
        labs={"6298-4": Measured(4.6, "mmol/L", date(2026, 10, 25), "Observation/k", code="6298-4")},
        allergies=(
            Allergy("AllergyIntolerance/a1", (Code("rxnorm", "10831", "Sulfamethoxazole / Trimethoprim"),)),
            Allergy("AllergyIntolerance/a2", (Code("rxnorm", "7984", "Penicillin V"),)),
        ),
        medications=tuple(meds),
    )


def orders(kb) -> list[MedicationOrder]:
    out = []
    for i, code in enumerate(ORDERS):
        name = kb.products[code].name if code in kb.products else ""
        out.append(
            MedicationOrder(
                f"MedicationRequest/o{i}",
                (Code("rxnorm", code, name),),
                name,
                Dose(1, ""),
                frequency=2,
                period=1,
                period_unit="d",
                route=Code("snomed", "26643006", "oral"),
            )
        )
    return out


def bench_knowledge(n: int) -> dict:
    compile_times = []
    for _ in range(n):
        t = time.perf_counter()
        compile_knowledge(DEFAULT_DIR)
        compile_times.append(time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as d:
        code = (
            "import time,os; t=time.perf_counter(); from guardrails import load_knowledge; "
            "load_knowledge(); print(time.perf_counter()-t)"
        )
        env = {**os.environ, "CLINAGENT_CACHE": d}
        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)  # writes the cache
        cached = [
            float(
                subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True).stdout
            )
            for _ in range(n)
        ]
    return {"compile_median_s": statistics.median(compile_times), "cached_load_median_s": statistics.median(cached)}


def bench_gate(kb, reps: int, baseline_reps: int) -> dict:
    import sparql_baseline

    facts = patient(kb)
    ords = orders(kb)
    unresolved = [o.codes[0].code for o in ords if o.codes[0].code not in kb.products]
    t = time.perf_counter()
    gate(ords[0], facts, kb)  # the per-patient preparation (resolving 20 meds, allergies) happens once
    prepare_s = time.perf_counter() - t
    times = []
    for _ in range(reps):
        for o in ords:
            t0 = time.perf_counter_ns()
            gate(o, facts, kb)
            times.append((time.perf_counter_ns() - t0) / 1000)
    # the same orders with the drug-resolution memo emptied before each call: first sight of a product
    cold = []
    for _ in range(max(1, reps // 10)):
        for o in ords:
            kb.resolve_cache.clear()
            t0 = time.perf_counter_ns()
            gate(o, facts, kb)
            cold.append((time.perf_counter_ns() - t0) / 1000)
    g = load_graph()
    meds = ACTIVE
    allergens = ["10831", "7984"]
    # agreement: the interactions found must be the same facts
    disagree = []
    for o in ords:
        code = o.codes[0].code
        base = sparql_baseline.check(g, code, meds, allergens)
        v = gate(o, facts, kb)
        ours = {e.ref for f in v.findings if f.category == "drug-drug" for e in f.evidence if e.kind == "ontology"}
        theirs = {"fact:" + i.rsplit("/", 1)[-1] for i in base["interaction"]}
        if ours != theirs:
            disagree.append({"order": code, "compiled": sorted(ours), "sparql": sorted(theirs)})
    btimes = []
    for _ in range(baseline_reps):
        for o in ords:
            t0 = time.perf_counter_ns()
            sparql_baseline.check(g, o.codes[0].code, meds, allergens)
            btimes.append((time.perf_counter_ns() - t0) / 1000)
    med, bmed = statistics.median(times), statistics.median(btimes)
    return {
        "orders": len(ords),
        "active_meds": len(ACTIVE),
        "unresolved_codes": unresolved,
        "per_patient_prepare_ms": prepare_s * 1000,
        "gate_median_us": med,
        "gate_p99_us": pct(times, 99),
        "gate_samples": len(times),
        "gate_cold_resolution_median_us": statistics.median(cold),
        "gate_cold_resolution_p99_us": pct(cold, 99),
        "sparql_median_us": bmed,
        "sparql_p99_us": pct(btimes, 99),
        "sparql_samples": len(btimes),
        "speedup_median": bmed / med,
        "agreement_mismatches": disagree,
    }


def bench_records(n: int) -> dict:
    from fhir.resources.R4B.bundle import Bundle

    files = sorted((SHARED / "synthea" / "bundles").glob("*.json"))
    if not files:
        return {"skipped": f"no bundles under {SHARED}"}
    mb = sum(f.stat().st_size for f in files) / 1e6
    ours, full = [], []
    for _ in range(n):
        t = time.perf_counter()
        for f in files:
            load_record(f).facts(date(2021, 1, 1))
        ours.append(time.perf_counter() - t)
    for _ in range(max(1, n // 2)):
        t = time.perf_counter()
        for f in files:
            Bundle.model_validate_json(f.read_bytes())
        full.append(time.perf_counter() - t)
    o, fu = statistics.median(ours), statistics.median(full)
    return {
        "files": len(files),
        "mb": mb,
        "record_mb_per_s": mb / o,
        "full_validation_mb_per_s": mb / fu,
        "ratio": fu / o,
    }


def bench_reviews() -> dict:
    """`clinagent review` with the offline model on every shared Synthea patient, as of its last activity."""
    from clinagent.review import run_review

    files = sorted((SHARED / "synthea" / "bundles").glob("*.json"))
    if not files:
        return {"skipped": f"no bundles under {SHARED}"}
    kb = load_knowledge()
    rows = []
    for f in files:
        as_of = load_record(f).last_activity()
        t0 = time.perf_counter()
        rec = load_record(f)
        t1 = time.perf_counter()
        r = run_review(rec, as_of=as_of, kb=kb)
        t2 = time.perf_counter()
        rows.append(
            {
                "file": f.name,
                "mb": f.stat().st_size / 1e6,
                "load_s": t1 - t0,
                "review_s": t2 - t1,
                "requests": r.usage.get("requests", 0),
                "input_tokens": r.usage.get("input_tokens", 0),
                "output_tokens": r.usage.get("output_tokens", 0),
                "shown": len(r.shown),
                "blocked": len(r.blocked),
                "deceased": bool(r.notice),
            }
        )
    total = [x["load_s"] + x["review_s"] for x in rows]
    largest = max(rows, key=lambda x: x["mb"])
    alive = [x for x in rows if not x["deceased"]]
    return {
        "patients": len(rows),
        "total_s": sum(total),
        "median_s": statistics.median(total),
        "load_share": sum(x["load_s"] for x in rows) / sum(total),
        "max_requests": max(x["requests"] for x in rows),
        "median_requests_alive": statistics.median(x["requests"] for x in alive) if alive else 0,
        "patients_with_blocked": sum(1 for x in rows if x["blocked"]),
        "shown": sum(x["shown"] for x in rows),
        "blocked": sum(x["blocked"] for x in rows),
        "largest": largest,
        "rows": rows,
    }


def bench_service(seconds: float) -> dict:
    """order-sign with full prefetch against `clinagent serve` on loopback (SQLite store, audit on every call):
    latency of sequential calls, then throughput with 8 concurrent clients (the clients share the 2 cores)."""
    import tempfile
    import threading

    import httpx

    sys.path.insert(0, str(ROOT))
    from tests.test_service_load import body, start

    with tempfile.TemporaryDirectory() as d:
        proc, base = start(Path(d) / "bench.db", Path(d) / "server.log")
        try:
            url = f"{base}/cds-services/clinagent-order-sign"
            with httpx.Client(timeout=30) as c:
                for _ in range(20):
                    c.post(url, json=body())
                lat = []
                for _ in range(300):
                    b = body()
                    t = time.perf_counter()
                    r = c.post(url, json=b)
                    lat.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
            done = []
            stop = time.perf_counter() + seconds

            def worker():
                with httpx.Client(timeout=30) as cl:
                    while time.perf_counter() < stop:
                        if cl.post(url, json=body()).status_code == 200:
                            done.append(1)

            threads = [threading.Thread(target=worker) for _ in range(8)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return {
        "p50_ms": pct(lat, 50),
        "p95_ms": pct(lat, 95),
        "p99_ms": pct(lat, 99),
        "sequential_samples": len(lat),
        "throughput_rps": len(done) / elapsed,
        "concurrent_clients": 8,
    }


def bench_process(n: int) -> dict:
    pat = ROOT / "fixtures" / "examples" / "patient.json"
    order = ROOT / "fixtures" / "examples" / "order.json"
    cmd = [
        sys.executable,
        "-m",
        "clinagent.cli",
        "check",
        "--patient",
        str(pat),
        "--order",
        str(order),
        "--json",
        "--as-of",
        "2026-11-01",
    ]

    def one(env) -> tuple[float, float]:
        code = (
            "import resource,subprocess,sys,time,json; t=time.perf_counter(); "
            f"subprocess.run({cmd!r}, capture_output=True); w=time.perf_counter()-t; "
            "print(json.dumps([w, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024]))"
        )
        return tuple(
            json.loads(
                subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
            )
        )

    with tempfile.TemporaryDirectory() as d:
        env = {**os.environ, "CLINAGENT_CACHE": d}
        cold = one(env)
        warm = [one(env) for _ in range(n)]
    return {
        "cold_wall_s": cold[0],
        "cold_peak_mb": cold[1],
        "warm_wall_median_s": statistics.median(w for w, _ in warm),
        "warm_peak_mb_max": max(m for _, m in warm),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    a = ap.parse_args()
    n = 2 if a.quick else 5
    kb = load_knowledge()
    res = {
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "knowledge_stats": kb.stats,
        "knowledge": bench_knowledge(n),
        "gate": bench_gate(kb, 50 if a.quick else 500, 2 if a.quick else 5),
        "records": bench_records(n),
        "check_process": bench_process(n),
        "reviews": bench_reviews(),
        "service": bench_service(3 if a.quick else 10),
    }
    out = ROOT / "benchmarks" / "results"
    out.mkdir(exist_ok=True)
    (out / "latest.json").write_text(json.dumps(res, indent=2))
    k, g, r, p = res["knowledge"], res["gate"], res["records"], res["check_process"]
    print(
        f"knowledge: compile {k['compile_median_s']:.3f} s (median), cached load {k['cached_load_median_s']:.3f} s "
        f"({kb.stats['triples']} triples)"
    )
    print(
        f"gate ({g['active_meds']} active meds, {g['orders']} orders, {g['gate_samples']} samples): "
        f"median {g['gate_median_us']:.1f} us, p99 {g['gate_p99_us']:.1f} us; drug resolution not memoised: "
        f"median {g['gate_cold_resolution_median_us']:.1f} us, p99 {g['gate_cold_resolution_p99_us']:.1f} us"
    )
    print(
        f"SPARQL baseline ({g['sparql_samples']} samples): median {g['sparql_median_us']:.0f} us, "
        f"p99 {g['sparql_p99_us']:.0f} us -> compiled is {g['speedup_median']:.0f}x faster (median); "
        f"interaction agreement mismatches: {len(g['agreement_mismatches'])}"
    )
    if "skipped" not in r:
        print(
            f"records: {r['files']} Synthea bundles, {r['mb']:.1f} MB: clinagent.record {r['record_mb_per_s']:.1f} MB/s, "
            f"full fhir.resources validation {r['full_validation_mb_per_s']:.1f} MB/s ({r['ratio']:.1f}x)"
        )
    print(
        f"clinagent check process: warm {p['warm_wall_median_s']:.2f} s (median), peak {p['warm_peak_mb_max']:.0f} MB; "
        f"cold cache {p['cold_wall_s']:.2f} s, {p['cold_peak_mb']:.0f} MB"
    )
    sv = res["service"]
    print(
        f"order-sign on loopback (full prefetch, audited): p50 {sv['p50_ms']:.1f} ms, p95 {sv['p95_ms']:.1f} ms, "
        f"p99 {sv['p99_ms']:.1f} ms; {sv['throughput_rps']:.0f} req/s with {sv['concurrent_clients']} clients"
    )
    rv = res["reviews"]
    if "skipped" not in rv:
        lg = rv["largest"]
        print(
            f"reviews (offline model): {rv['patients']} Synthea patients in {rv['total_s']:.2f} s total, median "
            f"{rv['median_s'] * 1000:.0f} ms, {rv['load_share']:.0%} of it loading records; at most {rv['max_requests']} "
            f"model requests (median {rv['median_requests_alive']} for living patients); {rv['shown']} shown, "
            f"{rv['blocked']} blocked in {rv['patients_with_blocked']} patients; largest record ({lg['file'][:30]}, "
            f"{lg['mb']:.1f} MB): {lg['input_tokens']} input + {lg['output_tokens']} output tokens"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
