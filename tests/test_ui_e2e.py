"""End to end: the real app (`clinagent ui`) in Debian's Chromium, driven by Playwright.

Picks a shared Synthea patient, runs a review, accepts a suggestion, checks the decision is in the store and saves a
full-page screenshot under $CLINAGENT_ARTIFACTS (or the test's tmp dir). Never downloads a browser: it uses
/usr/bin/chromium and skips without it.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import SYNTHEA

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PATIENT = "Parker Casper"  # the offline review of this Synthea patient has suggestions and a blocked one
TIMEOUT_MS = 30_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def browser_env():
    """Skip (before any server starts) without Debian's Chromium, the shared Synthea patient or Playwright."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium); the browser test never downloads one")
    bundles = sorted((SYNTHEA / "bundles").glob(PATIENT.replace(" ", "_") + "_*.json"))
    if not bundles:
        pytest.skip(f"shared Synthea data not present: no {PATIENT} in {SYNTHEA / 'bundles'}")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright (in the dev extras)")
    return sync_api, bundles[0]


@pytest.fixture
def app_server(browser_env, tmp_path):
    """`python -m clinagent.cli ui` on a free port with a tmp SQLite store; yields (base URL, database URL)."""
    port = free_port()
    url = f"sqlite:///{tmp_path / 'e2e.db'}"
    log = tmp_path / "server.log"
    env = dict(os.environ, CLINAGENT_MODEL="offline")
    env.pop("CLINAGENT_UI_USER", None)
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clinagent.cli", "ui", "--port", str(port), "--database-url", url],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the CLI's streamlit child stops with it
        )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the app exited with {proc.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/_stcore/health", timeout=2) as r:
                    if r.read() == b"ok":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the app did not become healthy in 60 s:\n{log.read_text()}")
            time.sleep(0.1)
        yield base, url
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def settle(page) -> None:
    """Wait until Streamlit has finished the current script run (no running indicator, no stale elements)."""
    page.wait_for_timeout(150)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " && !document.querySelector('[data-stale=\"true\"]')",
        timeout=TIMEOUT_MS,
    )


def full_page_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside its main container, so the viewport is stretched to the content before the shot."""
    height = page.evaluate(
        "() => Math.max(document.documentElement.scrollHeight,"
        " document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 0)"
    )
    page.set_viewport_size({"width": page.viewport_size["width"], "height": min(int(height), 8000)})
    page.mouse.move(0, 0)  # no hover toolbars in the picture
    settle(page)
    page.screenshot(path=str(path), full_page=True)


def test_review_and_accept_in_a_browser(browser_env, app_server, tmp_path):
    from clinagent.record import load_record
    from clinagent.store import Store

    sync_api, bundle = browser_env
    base, db_url = app_server
    rec = load_record(bundle)
    artifacts = Path(os.environ.get("CLINAGENT_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "ui-e2e-review.png"

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(base)
            page.get_by_role("heading", name="Demo Example").wait_for()  # the bundled example loads first
            settle(page)

            # pick the shared Synthea patient
            page.get_by_text("Shared Synthea patient", exact=True).click()
            combo = page.get_by_role("combobox", name="Synthea patient")
            combo.wait_for()
            settle(page)
            combo.click()
            combo.fill(PATIENT)
            page.get_by_role("option", name=PATIENT, exact=True).click()
            page.get_by_role("heading", name=re.compile("Casper")).wait_for()
            settle(page)
            # the as-of date defaults to the patient's last activity
            as_of = rec.last_activity()
            date_text = re.sub(r"\s", "", page.get_by_role("group", name="Reason as of").inner_text())
            assert date_text == f"{as_of:%Y/%m/%d}", date_text

            # run the review
            page.get_by_role("button", name="Run review").click()
            page.get_by_text(re.compile(r"^Suggestions \(\d+\)$")).wait_for()
            page.get_by_text(re.compile(r"^Blocked by the safety gates \(\d+\)$")).wait_for()
            settle(page)
            with Store(db_url) as s:
                (row,) = s.list_reviews()
                review = s.get_review(row["run_id"])
            assert review["patient"] == rec.patient_ref and review["as_of"] == as_of.isoformat()
            assert review["shown"], "this patient's review should have a suggestion"

            # accept the first suggestion, acknowledging its warnings when it has any
            first = page.get_by_role("button", name="Accept", exact=True).first
            if first.is_disabled():
                page.get_by_text("I have read and acknowledge the warnings").first.click()
                settle(page)
                assert first.is_enabled()
            first.click()
            page.get_by_text("Decision recorded: accept").wait_for()
            settle(page)

            with Store(db_url) as s:
                (decision,) = s.get_review(review["run_id"])["decisions"]
            assert decision["action"] == "accept" and decision["suggestion_id"] == review["shown"][0]["id"]
            assert decision["actor"] == "clinician (local)"

            full_page_screenshot(page, shot)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")
