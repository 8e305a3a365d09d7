"""Deterministic safety gates: ``gate(order, facts, knowledge) -> Verdict``. Never imports clinagent."""

from .engine import gate
from .findings import CATEGORIES, Evidence, Finding, Verdict
from .knowledge import Knowledge, load_knowledge
from .registry import RULES
from .sources import ActiveMedication, Allergy, Code, Condition, Dose, Measured, MedicationOrder, PatientFacts

__all__ = [
    "ActiveMedication",
    "Allergy",
    "CATEGORIES",
    "Code",
    "Condition",
    "Dose",
    "Evidence",
    "Finding",
    "Knowledge",
    "Measured",
    "MedicationOrder",
    "PatientFacts",
    "RULES",
    "Verdict",
    "gate",
    "load_knowledge",
]
