"""Cohort summary: success and technical-success rates, Kaplan–Meier local tumour control."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.assessment.records import LesionOutcome

__all__ = ["CohortSummary", "KaplanMeierCurve", "summarize_cohort", "local_control_km"]


@dataclass(frozen=True)
class KaplanMeierCurve:
    """Step function of local tumour control (probability free of residual/progression)."""

    days: tuple[float, ...]
    control_probability: tuple[float, ...]
    n_lesions: int
    n_events: int


@dataclass(frozen=True)
class CohortSummary:
    n_lesions: int
    n_success_assessable: int
    n_success: int
    n_technical_assessable: int
    n_technical_success: int
    n_needs_review: int
    local_control: KaplanMeierCurve | None

    @property
    def success_rate(self) -> float | None:
        return self.n_success / self.n_success_assessable if self.n_success_assessable else None

    @property
    def technical_success_rate(self) -> float | None:
        if not self.n_technical_assessable:
            return None
        return self.n_technical_success / self.n_technical_assessable

    def describe(self) -> str:
        def pct(x: float | None) -> str:
            return "n/a" if x is None else f"{100 * x:.0f} %"

        return (
            f"{self.n_lesions} lesions: success {self.n_success}/{self.n_success_assessable} "
            f"({pct(self.success_rate)}), technical success {self.n_technical_success}/"
            f"{self.n_technical_assessable} ({pct(self.technical_success_rate)}), "
            f"{self.n_needs_review} need review"
        )


def _event(outcome: LesionOutcome) -> tuple[float, bool] | None:
    """(time in days, event) for local tumour control; None when no follow-up."""
    if outcome.last_followup_days is None:
        return None
    if outcome.residual_tumour:
        # residual tumour: failure of local control at the first follow-up
        return float(outcome.progression_days or outcome.last_followup_days), True
    if outcome.local_progression and outcome.progression_days is not None:
        return float(outcome.progression_days), True
    return float(outcome.last_followup_days), False


def local_control_km(outcomes: Sequence[LesionOutcome]) -> KaplanMeierCurve | None:
    """Kaplan–Meier estimate of local tumour control (lifelines), censored at last follow-up."""
    pairs = [e for e in (_event(o) for o in outcomes) if e is not None]
    if not pairs:
        return None
    from lifelines import KaplanMeierFitter  # slow import (~4 s): only when needed

    durations = [p[0] for p in pairs]
    events = [p[1] for p in pairs]
    kmf = KaplanMeierFitter()
    kmf.fit(durations, event_observed=events, label="local_control")
    sf = kmf.survival_function_
    return KaplanMeierCurve(
        days=tuple(float(t) for t in sf.index),
        control_probability=tuple(float(v) for v in sf["local_control"]),
        n_lesions=len(pairs),
        n_events=int(sum(events)),
    )


def summarize_cohort(outcomes: Sequence[LesionOutcome], *, with_km: bool = True) -> CohortSummary:
    success = [o.success for o in outcomes if o.success is not None]
    technical = [o.technical_success for o in outcomes if o.technical_success is not None]
    return CohortSummary(
        n_lesions=len(outcomes),
        n_success_assessable=len(success),
        n_success=sum(success),
        n_technical_assessable=len(technical),
        n_technical_success=sum(technical),
        n_needs_review=sum(o.needs_review for o in outcomes),
        local_control=local_control_km(outcomes) if with_km else None,
    )
