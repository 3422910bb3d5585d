"""Assessment: per-lesion outcome flags and the cohort summary from measured timepoints."""

from pipeline.assessment.cohort import (
    CohortSummary,
    KaplanMeierCurve,
    local_control_km,
    summarize_cohort,
)
from pipeline.assessment.criteria import AssessmentCriteria, EnhancementClass, SizeReference
from pipeline.assessment.outcome import assess_lesion
from pipeline.assessment.records import (
    OUTCOME_COLUMNS,
    TIMEPOINT_COLUMNS,
    LesionOutcome,
    LesionTimepoint,
    Role,
)

__all__ = [
    "AssessmentCriteria",
    "CohortSummary",
    "EnhancementClass",
    "KaplanMeierCurve",
    "LesionOutcome",
    "LesionTimepoint",
    "OUTCOME_COLUMNS",
    "Role",
    "SizeReference",
    "TIMEPOINT_COLUMNS",
    "assess_lesion",
    "local_control_km",
    "summarize_cohort",
]
