"""clinagent: FHIR records, the agent, persistence and interfaces around the ``guardrails`` gates.

Importing the package is cheap: the agent and the web stack are imported only by the commands that use them.
"""

from .errors import ClinAgentError, ConfigError, RecordError
from .record import PatientRecord, Staleness, load_orders, load_record, parse_order, record_from_bundle

__all__ = [
    "ClinAgentError",
    "ConfigError",
    "PatientRecord",
    "RecordError",
    "Staleness",
    "load_orders",
    "load_record",
    "parse_order",
    "record_from_bundle",
]
