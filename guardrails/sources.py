"""What the rules read: the order and the patient's facts, as plain typed values.

These are filled by whoever owns I/O (``clinagent.record`` builds them from FHIR); the gate never
sees a FHIR resource, a narrative or a note, only the structured fields copied here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date


@dataclass(frozen=True, slots=True)
class Code:
    system: str  # "rxnorm" | "snomed" | "loinc" | a URI
    code: str
    display: str = ""


def display_name(text: str, codes: tuple[Code, ...], default: str = "") -> str:
    """What to call a coded thing in a message: its text, else the first coding's display."""
    return text or next((c.display for c in codes if c.display), default)


@dataclass(frozen=True, slots=True)
class Measured:
    """A dated numeric fact taken from one resource (or computed from one)."""

    value: float
    unit: str
    when: date | None
    ref: str  # the FHIR reference it came from, e.g. "Observation/abc"
    stale: bool = False
    method: str = ""  # e.g. "measured eGFR (LOINC 33914-3)" or "CKD-EPI 2021 from creatinine"
    code: str = ""  # LOINC

    def describe(self) -> str:
        when = self.when.isoformat() if self.when else "undated"
        stale = ", STALE" if self.stale else ""
        how = f" ({self.method})" if self.method else ""
        return f"{self.value:g} {self.unit} on {when}{how}{stale}"


@dataclass(frozen=True, slots=True)
class Allergy:
    ref: str
    codes: tuple[Code, ...]
    text: str = ""  # the coded concept's display/text: a name, never a note
    criticality: str = ""
    verification: str = ""
    category: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Condition:
    ref: str
    codes: tuple[Code, ...]
    onset: date | None = None


@dataclass(frozen=True, slots=True)
class ActiveMedication:
    ref: str
    codes: tuple[Code, ...]
    text: str = ""
    status: str = "active"


@dataclass(frozen=True, slots=True)
class Dose:
    value: float
    unit: str  # UCUM code or unit text; "" = a count of the product's dose units
    high: float | None = None  # doseRange.high, when a range is given


@dataclass(frozen=True, slots=True)
class MedicationOrder:
    """A proposed or written medication order, reduced to what the gates check."""

    ref: str
    codes: tuple[Code, ...]
    text: str = ""
    dose: Dose | None = None
    frequency: float | None = None  # doses per period
    period: float | None = None
    period_unit: str | None = None  # UCUM: s, min, h, d, wk, mo, a
    timing_code: str | None = None  # e.g. BID, Q8H
    route: Code | None = None
    as_needed: bool = False
    max_per_period: Dose | None = None  # maxDosePerPeriod numerator
    max_per_period_days: float | None = None
    times_of_day: int = 0  # timing.repeat.when / timeOfDay entries (doses a day when no frequency is given)
    replaces: str = ""  # the active medication this order replaces or re-states (not its own duplicate/interaction)
    problems: tuple[str, ...] = ()  # structural problems found while reading the order


@dataclass(slots=True)
class PatientFacts:
    """The patient as the gates see it. Every value keeps the resource it came from and its date."""

    patient_ref: str
    as_of: date
    birth_date: date | None = None
    sex: str | None = None
    deceased: bool = False
    weight: Measured | None = None  # kg
    height: Measured | None = None  # cm
    egfr: Measured | None = None  # mL/min/1.73 m2
    crcl: Measured | None = None  # mL/min (Cockcroft-Gault)
    creatinine: Measured | None = None  # mg/dL
    labs: dict[str, Measured] = field(default_factory=dict)  # LOINC -> latest value
    conditions: tuple[Condition, ...] = ()
    pregnant: str | None = None  # the reference that says so
    allergies: tuple[Allergy, ...] = ()
    medications: tuple[ActiveMedication, ...] = ()
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def age_years(self) -> float | None:
        if self.birth_date is None:
            return None
        b, a = self.birth_date, self.as_of
        years = a.year - b.year - ((a.month, a.day) < (b.month, b.day))
        anniversary = _safe_date(b.year + years, b.month, b.day)
        frac = (a - anniversary).days / 365.25
        return years + max(0.0, min(frac, 0.999))


def _safe_date(y: int, m: int, d: int) -> date:
    try:
        return date(y, m, d)
    except ValueError:  # 29 February in a non-leap year
        return date(y, m, 28)
