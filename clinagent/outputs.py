"""What the agent may propose: typed actions, each with a rationale and the FHIR references it relies on."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field


class DoseSpec(BaseModel):
    """A dose with its unit and how often it is given."""

    value: float = Field(gt=0, description="Amount per dose, e.g. 500.")
    unit: str = Field(description="UCUM unit of the amount: mg, g, ug, meq, [iU], mL, or '' for tablets/capsules.")
    frequency: float = Field(gt=0, description="Doses per period, e.g. 2 for twice daily.")
    period: float = Field(default=1, gt=0, description="Length of the period, e.g. 1.")
    period_unit: Literal["h", "d", "wk"] = Field(default="d", description="Unit of the period: h, d or wk.")
    route: Literal["oral", "intravenous", "intramuscular", "subcutaneous", "inhalation", "topical"] = "oral"

    def describe(self) -> str:
        """In plain words: '500 mg oral twice a day', '1 tablet/capsule oral every 8 h'."""
        amount = f"{self.value:g} {self.unit}" if self.unit else f"{self.value:g} tablet(s)/capsule(s)"
        if self.period_unit == "h":
            timing = f"every {self.period / self.frequency:g} h"
        else:
            times = {1: "once", 2: "twice"}.get(int(self.frequency), f"{self.frequency:g} times")
            unit = {"d": "day", "wk": "week"}[self.period_unit]
            timing = f"{times} a {unit}" if self.period == 1 else f"{times} every {self.period:g} {unit}s"
        return f"{amount} {self.route} {timing}"


class _Action(BaseModel):
    rationale: str = Field(description="Why, in one or two sentences a clinician can check against the record.")
    cites: list[str] = Field(
        description="FHIR references the proposal relies on, exactly as the tools returned them, e.g. 'Condition/abc'."
    )


class StartMedication(_Action):
    """Start a new medication."""

    kind: Literal["start_medication"] = "start_medication"
    drug: str = Field(
        description="The drug: an RxNorm-style name like 'Metformin 500 MG Oral Tablet' or a generic name."
    )
    rxnorm: str | None = Field(default=None, description="RxNorm code of the product or ingredient, if known.")
    dose: DoseSpec


class ChangeDose(_Action):
    """Change the dose of a medication the patient already takes."""

    kind: Literal["change_dose"] = "change_dose"
    medication: str = Field(
        description="Reference of the active MedicationRequest to change, e.g. 'MedicationRequest/x'."
    )
    drug: str = Field(default="", description="Name of that medication, for the clinician.")
    dose: DoseSpec


class StopMedication(_Action):
    """Stop a medication the patient takes."""

    kind: Literal["stop_medication"] = "stop_medication"
    medication: str = Field(description="Reference of the active MedicationRequest to stop.")
    drug: str = Field(default="", description="Name of that medication, for the clinician.")


class OrderLab(_Action):
    """Order a laboratory test or monitoring."""

    kind: Literal["order_lab"] = "order_lab"
    loinc: str = Field(description="LOINC code of the test, e.g. '4548-4' for HbA1c.")
    display: str = Field(description="Name of the test.")


Proposal = Annotated[StartMedication | ChangeDose | StopMedication | OrderLab, Field(discriminator="kind")]


class Plan(BaseModel):
    """The agent's proposals for this patient. An empty list is a valid answer."""

    summary: str = Field(description="One paragraph: what was reviewed and what is proposed.")
    proposals: list[Proposal] = Field(default_factory=list)
