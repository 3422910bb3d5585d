"""Row types of the two registry tables (column names exactly as in the brief)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from enum import Enum, StrEnum
from typing import Any

__all__ = [
    "Role",
    "LesionTimepoint",
    "LesionOutcome",
    "TIMEPOINT_COLUMNS",
    "OUTCOME_COLUMNS",
    "timepoint_from_dict",
    "timepoint_to_dict",
]


class Role(StrEnum):
    BASELINE = "baseline"
    INTRAPROCEDURAL = "intraprocedural"
    FOLLOWUP = "followup"


@dataclass
class LesionTimepoint:
    """One lesion in one study (a row of ``lesion_timepoints.csv``).

    ``None`` means "does not apply / not measured" and is written as an empty cell.
    ``qc`` holds warnings (joined with "; " in the CSV).
    """

    patient_id: str
    lesion_id: str
    study_instance_uid: str
    study_date: date
    days_since_procedure: int
    role: Role
    modality: str
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    max_3d_diameter_mm: float | None = None
    volume_ml: float | None = None
    enhancement_hu: float | None = None
    enhancement_pct: float | None = None
    enhancing: str = "not_assessable"
    iceball_long_axis_mm: float | None = None
    iceball_short_axis_mm: float | None = None
    iceball_volume_ml: float | None = None
    min_margin_mm: float | None = None
    tumour_coverage_pct: float | None = None
    qc: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.role = Role(self.role)
        if self.enhancing not in ("yes", "no", "equivocal", "not_assessable"):
            raise ValueError(
                f"enhancing must be yes|no|equivocal|not_assessable, got {self.enhancing!r} "
                f"(lesion {self.patient_id}/{self.lesion_id}, study {self.study_instance_uid})"
            )


@dataclass
class LesionOutcome:
    """One lesion (a row of ``lesion_outcomes.csv``). ``None`` = not assessable."""

    patient_id: str
    lesion_id: str
    procedure_date: date
    baseline_long_axis_mm: float | None
    last_followup_days: int | None
    last_followup_long_axis_mm: float | None
    size_change_pct: float | None
    no_enhancement: bool | None
    size_decrease: bool | None
    success: bool | None
    technical_success: bool | None
    min_margin_mm: float | None
    iceball_long_axis_mm: float | None
    residual_tumour: bool | None
    local_progression: bool | None
    needs_review: bool
    review_reasons: list[str] = field(default_factory=list)
    progression_days: int | None = None


TIMEPOINT_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(LesionTimepoint))
# the registry CSV has exactly the brief's columns; review_reasons/progression_days are
# kept in the database and the report only.
OUTCOME_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in fields(LesionOutcome) if f.name not in ("review_reasons", "progression_days")
)


def _cell(value: Any) -> str:
    """Format one CSV cell: empty for None, true/false for booleans, 2 decimals for floats."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:.2f}"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return str(value)


def timepoint_to_dict(tp: LesionTimepoint) -> dict[str, Any]:
    """JSON-ready dict (dates as ISO strings, role as its value)."""
    d = {f.name: getattr(tp, f.name) for f in fields(LesionTimepoint)}
    d["study_date"] = tp.study_date.isoformat()
    d["role"] = tp.role.value
    d["qc"] = list(tp.qc)
    return d


def timepoint_from_dict(d: dict[str, Any]) -> LesionTimepoint:
    values = dict(d)
    values["study_date"] = date.fromisoformat(values["study_date"])
    return LesionTimepoint(**values)
