"""The one table of gate rules: rule id -> function. The engine stamps the id onto every finding."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .context import Context
from .findings import Finding
from .rules.allergy import check_allergy
from .rules.dosing import check_dose
from .rules.interactions import check_duplicates, check_interactions
from .rules.order import check_resolution, check_route
from .rules.patient import check_age, check_diagnosis, check_labs, check_monitoring, check_pregnancy, check_renal

RuleFn = Callable[[Context], Iterator[Finding]]

RULES: dict[str, RuleFn] = {
    "order.resolve": check_resolution,
    "allergy.match": check_allergy,
    "ddi.pair": check_interactions,
    "dose.limits": check_dose,
    "renal.function": check_renal,
    "age.band": check_age,
    "dx.contraindication": check_diagnosis,
    "pregnancy.status": check_pregnancy,
    "lab.value": check_labs,
    "lab.monitoring": check_monitoring,
    "route.valid": check_route,
    "duplicate.therapy": check_duplicates,
}
