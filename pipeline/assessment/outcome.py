"""Per-lesion outcome flags from the lesion's timepoints (brief: "Oncologic success")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pipeline.assessment.criteria import AssessmentCriteria, SizeReference
from pipeline.assessment.records import LesionOutcome, LesionTimepoint, Role

__all__ = ["assess_lesion"]


def _all_of(values: Sequence[bool | None]) -> bool | None:
    """Three-valued AND: False if any False, None if any unknown, else True."""
    if any(v is False for v in values):
        return False
    if not values or any(v is None for v in values):
        return None
    return True


def assess_lesion(
    timepoints: Sequence[LesionTimepoint],
    procedure_date: date,
    criteria: AssessmentCriteria | None = None,
) -> LesionOutcome:
    """Compute the outcome row of one lesion from all its timepoints.

    - ``no_enhancement``: every follow-up reads ``no``; ``False`` as soon as one reads
      ``yes``; unknown (``None``) when a follow-up is equivocal or not assessable and none
      is ``yes``, or when there is no follow-up.
    - ``size_decrease``: last follow-up long axis < reference long axis (the baseline tumour
      by default, or the first follow-up's ablation zone).
    - ``success`` = ``no_enhancement`` AND ``size_decrease`` (three-valued).
    - ``technical_success``: coverage ≥ required (within tolerance) AND margin ≥ target.
    - ``residual_tumour``: the first follow-up enhances.
    - ``local_progression``: after a follow-up that reads ``no``, a later one enhances, or
      grows by ≥ growth_pct and ≥ growth_mm over the smallest earlier follow-up long axis.
    - ``needs_review``: any equivocal / not-assessable follow-up, any qc warning, a
      missing baseline, intra-procedural or follow-up study, or (covered tumour) a minimal
      margin within ``margin_review_band_mm`` of the target.
    """
    crit = criteria or AssessmentCriteria()
    if not timepoints:
        raise ValueError("assess_lesion needs at least one timepoint")
    patient_id, lesion_id = timepoints[0].patient_id, timepoints[0].lesion_id
    for tp in timepoints:
        if (tp.patient_id, tp.lesion_id) != (patient_id, lesion_id):
            raise ValueError(
                f"timepoints of several lesions passed together: {patient_id}/{lesion_id} "
                f"and {tp.patient_id}/{tp.lesion_id}"
            )
    ordered = sorted(timepoints, key=lambda t: t.days_since_procedure)
    baselines = [t for t in ordered if t.role is Role.BASELINE]
    intras = [t for t in ordered if t.role is Role.INTRAPROCEDURAL]
    followups = [t for t in ordered if t.role is Role.FOLLOWUP]
    reasons: list[str] = []

    baseline = baselines[-1] if baselines else None
    baseline_long = baseline.long_axis_mm if baseline else None
    if baseline is None:
        reasons.append("no baseline study")
    elif baseline_long is None:
        reasons.append("baseline tumour not measured")

    # --- technical success (intra-procedural) ---------------------------------------
    intra = intras[-1] if intras else None
    margin = intra.min_margin_mm if intra else None
    coverage = intra.tumour_coverage_pct if intra else None
    if intra is None:
        reasons.append("no intra-procedural study")
        technical: bool | None = None
    elif margin is None or coverage is None:
        reasons.append("margin/coverage not measured")
        technical = None
    else:
        covered = coverage >= crit.coverage_required_pct - crit.coverage_tolerance_pct
        technical = bool(covered and margin >= crit.margin_target_mm)
        if covered and abs(margin - crit.margin_target_mm) < crit.margin_review_band_mm:
            reasons.append(f"minimal margin {margin:.1f} mm within "
                           f"{crit.margin_review_band_mm:g} mm of the "
                           f"{crit.margin_target_mm:g} mm target: technical success uncertain")

    # --- follow-up: enhancement ------------------------------------------------------
    if not followups:
        reasons.append("no follow-up study")
    for fu in followups:
        if fu.enhancing in ("equivocal", "not_assessable"):
            reasons.append(f"{fu.enhancing} enhancement at day {fu.days_since_procedure}")
    reads = [fu.enhancing for fu in followups]
    if "yes" in reads:
        no_enhancement: bool | None = False
    elif reads and all(r == "no" for r in reads):
        no_enhancement = True
    else:
        no_enhancement = None

    residual = None if not followups else _residual(followups[0].enhancing)
    progression, progression_days = _local_progression(followups, crit)

    # --- size ------------------------------------------------------------------------
    last = followups[-1] if followups else None
    last_long = last.long_axis_mm if last else None
    if crit.size_reference is SizeReference.BASELINE:
        reference_long = baseline_long
    else:
        reference_long = followups[0].long_axis_mm if followups else None
    if last_long is None or reference_long is None or reference_long <= 0:
        size_change = None
        size_decrease = None
        if last is not None and last_long is None:
            reasons.append("last follow-up not measured")
    else:
        size_change = 100.0 * (last_long - reference_long) / reference_long
        size_decrease = bool(last_long < reference_long)

    for tp in ordered:
        for warning in tp.qc:
            reasons.append(f"qc day {tp.days_since_procedure}: {warning}")

    return LesionOutcome(
        patient_id=patient_id,
        lesion_id=lesion_id,
        procedure_date=procedure_date,
        baseline_long_axis_mm=baseline_long,
        last_followup_days=last.days_since_procedure if last else None,
        last_followup_long_axis_mm=last_long,
        size_change_pct=size_change,
        no_enhancement=no_enhancement,
        size_decrease=size_decrease,
        success=_all_of([no_enhancement, size_decrease]),
        technical_success=technical,
        min_margin_mm=margin,
        iceball_long_axis_mm=intra.iceball_long_axis_mm if intra else None,
        residual_tumour=residual,
        local_progression=progression,
        needs_review=bool(reasons),
        review_reasons=reasons,
        progression_days=progression_days,
    )


def _residual(first_read: str) -> bool | None:
    if first_read == "yes":
        return True
    if first_read == "no":
        return False
    return None


def _local_progression(
    followups: Sequence[LesionTimepoint], crit: AssessmentCriteria
) -> tuple[bool | None, int | None]:
    """(progression flag, day it was first seen). Needs a clean follow-up first."""
    clean_index = next((i for i, fu in enumerate(followups) if fu.enhancing == "no"), None)
    if clean_index is None:
        # residual tumour (or nothing assessable) is not "progression" by definition
        return (None, None) if not followups or followups[0].enhancing != "yes" else (False, None)
    nadir_mm = followups[clean_index].long_axis_mm
    undecided = False
    for fu in followups[clean_index + 1 :]:
        if fu.enhancing == "yes":
            return True, fu.days_since_procedure
        if fu.long_axis_mm is not None and nadir_mm is not None:
            growth_mm = fu.long_axis_mm - nadir_mm
            if growth_mm >= crit.growth_mm and growth_mm >= nadir_mm * crit.growth_pct / 100:
                return True, fu.days_since_procedure
            nadir_mm = min(nadir_mm, fu.long_axis_mm)
        elif fu.long_axis_mm is not None:
            nadir_mm = fu.long_axis_mm
        if fu.enhancing in ("equivocal", "not_assessable"):
            undecided = True
    return (None if undecided else False), None
