"""A real server on loopback: 50 concurrent clients, every acknowledged request audited; a kill mid-load loses nothing."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest

from clinagent.store import Store

from . import _bundles as B

RX = "http://www.nlm.nih.gov/research/umls/rxnorm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(db: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clinagent.cli",
            "serve",
            "--no-auth",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--database-url",
            f"sqlite:///{db}",
        ],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.2)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError("server did not start:\n" + log.read_text()[-2000:])


def body() -> dict:
    pid = "load-1"
    p = B.patient("1958-04-02", "female")
    p["id"] = pid
    allergy = B.allergy("pcn", "7984", "Penicillin V") | {"patient": {"reference": f"Patient/{pid}"}}
    search = lambda e: {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in e]}  # noqa: E731
    order = {
        "resourceType": "MedicationRequest",
        "id": "draft-1",
        "status": "draft",
        "intent": "order",
        "subject": {"reference": f"Patient/{pid}"},
        "medicationCodeableConcept": {
            "coding": [{"system": RX, "code": "308182", "display": "Amoxicillin 250 MG Oral Capsule"}]
        },
        "dosageInstruction": [
            {
                "timing": {"repeat": {"frequency": 3, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": {"value": 2}}],
            }
        ],
    }
    return {
        "hook": "order-sign",
        "hookInstance": str(uuid.uuid4()),
        "context": {
            "userId": "Practitioner/1",
            "patientId": pid,
            "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
        },
        "prefetch": {
            "patient": p,
            "medications": search([]),
            "allergies": search([allergy]),
            "conditions": search([]),
            "labs": search([]),
            "vitals": search([]),
        },
    }


def fire(base: str, n: int, acked: list, errors: list, stop: threading.Event | None = None) -> None:
    with httpx.Client(timeout=30) as c:
        for _ in range(n):
            if stop is not None and stop.is_set():
                return
            b = body()
            try:
                r = c.post(f"{base}/cds-services/clinagent-order-sign", json=b)
            except httpx.HTTPError as e:
                errors.append(type(e).__name__)
                continue
            if r.status_code == 200 and any(card["indicator"] == "critical" for card in r.json()["cards"]):
                acked.append(b["hookInstance"])
            else:
                errors.append(r.status_code)


def stored(db: Path) -> tuple[set[str], set[str]]:
    con = sqlite3.connect(db)
    try:
        calls = dict(con.execute("select id, hook_instance from hook_calls").fetchall())
        refs = {r[0] for r in con.execute("select ref from audit_log where ref like 'hook_call/%'")}
    finally:
        con.close()
    audited = {calls[int(ref.split("/")[1])] for ref in refs if int(ref.split("/")[1]) in calls}
    return set(calls.values()), audited


def test_fifty_concurrent_clients_every_request_has_its_audit_row(tmp_path):
    db = tmp_path / "load.db"
    proc, base = start(db, tmp_path / "server.log")
    acked, errors = [], []
    try:
        threads = [threading.Thread(target=fire, args=(base, 4, acked, errors)) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    assert errors == [] and len(acked) == 200
    calls, audited = stored(db)
    assert set(acked) <= calls and set(acked) <= audited  # nothing lost
    report = Store(f"sqlite:///{db}").verify_audit()
    assert report.ok and report.rows >= 200, report.message


@pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")
def test_killing_the_server_mid_load_loses_no_acknowledged_row(tmp_path):
    db = tmp_path / "kill.db"
    proc, base = start(db, tmp_path / "server.log")
    acked, errors = [], []
    stop = threading.Event()
    threads = [threading.Thread(target=fire, args=(base, 10_000, acked, errors, stop)) for _ in range(20)]
    for t in threads:
        t.start()
    deadline = time.time() + 30
    while len(acked) < 50 and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()  # SIGKILL mid-load: no shutdown, no flush
    proc.wait(timeout=30)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    assert len(acked) >= 50 and errors  # requests were in flight when it died
    calls, audited = stored(db)
    lost = set(acked) - audited
    assert not lost, f"{len(lost)} acknowledged requests have no audit row"
    report = Store(f"sqlite:///{db}").verify_audit()
    assert report.ok, report.message
