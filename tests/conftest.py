"""Shared test setup: no real model requests, a private knowledge cache, paths to shared data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CLINAGENT_SHARED_DATA", ROOT.parent / "shared" / "data"))
SYNTHEA = SHARED / "synthea"

os.environ.setdefault("CLINAGENT_CACHE", tempfile.mkdtemp(prefix="clinagent-test-cache-"))

try:  # the agent arrives in a later issue; when it does, no test may reach a real model
    import pydantic_ai.models

    pydantic_ai.models.ALLOW_MODEL_REQUESTS = False
except ImportError:  # pragma: no cover
    pass


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data not present: {path} (tests that read ../shared/data skip without it)")
    return path


@pytest.fixture(scope="session")
def kb():
    from guardrails import load_knowledge

    return load_knowledge()


def pytest_terminal_summary(terminalreporter):
    """Print the order suite's per-category detection and nuisance false-alert rate after the run."""
    import sys

    mod = sys.modules.get("tests.test_order_suite")
    results = getattr(mod, "RESULTS", None)
    if not results:
        return
    from clinagent.ordersuite import format_summary, summarize

    terminalreporter.write_sep("-", "order suite (fixtures/orders)")
    terminalreporter.write_line(format_summary(summarize(list(results.values()))))
