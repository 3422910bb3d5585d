"""Outcome flags from timepoints: each rule of the brief, including edge cases."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from pipeline.assessment import (
    AssessmentCriteria,
    LesionTimepoint,
    Role,
    assess_lesion,
    summarize_cohort,
)

PROC = date(2024, 3, 1)


def _tp(role: str, days: int, **kw: object) -> LesionTimepoint:
    return LesionTimepoint(
        patient_id="P1",
        lesion_id="L1",
        study_instance_uid=f"1.2.3.{days + 1000}",
        study_date=PROC + timedelta(days=days),
        days_since_procedure=days,
        role=Role(role),
        modality="CT",
        **kw,  # type: ignore[arg-type]
    )


def _clean_course(overrides: dict[int, dict[str, object]] | None = None) -> list[LesionTimepoint]:
    tps = [
        _tp("baseline", -20, long_axis_mm=30.0, short_axis_mm=25.0),
        _tp("intraprocedural", 0, min_margin_mm=6.0, tumour_coverage_pct=100.0,
            iceball_long_axis_mm=52.0),
        _tp("followup", 90, long_axis_mm=38.0, enhancing="no"),
        _tp("followup", 365, long_axis_mm=24.0, enhancing="no"),
    ]
    for tp in tps:
        for k, v in (overrides or {}).get(tp.days_since_procedure, {}).items():
            setattr(tp, k, v)
    return tps


def test_clean_course_is_success() -> None:
    out = assess_lesion(_clean_course(), PROC)
    assert out.no_enhancement is True
    assert out.size_decrease is True
    assert out.success is True
    assert out.technical_success is True
    assert out.residual_tumour is False
    assert out.local_progression is False
    assert out.needs_review is False
    assert out.size_change_pct == pytest.approx(100 * (24 - 30) / 30)
    assert out.last_followup_days == 365


def test_zone_larger_than_tumour_is_not_size_decrease() -> None:
    out = assess_lesion(_clean_course({365: {"long_axis_mm": 31.0}}), PROC)
    assert out.size_decrease is False
    assert out.success is False
    assert out.local_progression is False  # 31 vs nadir 38: no growth


def test_size_reference_first_followup() -> None:
    crit = AssessmentCriteria(size_reference="first_followup")
    out = assess_lesion(_clean_course({365: {"long_axis_mm": 31.0}}), PROC, crit)
    assert out.size_decrease is True
    assert out.size_change_pct == pytest.approx(100 * (31 - 38) / 38)


def test_residual_at_first_followup() -> None:
    out = assess_lesion(_clean_course({90: {"enhancing": "yes"}}), PROC)
    assert out.residual_tumour is True
    assert out.no_enhancement is False
    assert out.success is False
    assert out.local_progression is False


def test_local_progression_by_enhancement_after_clean_followup() -> None:
    out = assess_lesion(_clean_course({365: {"enhancing": "yes"}}), PROC)
    assert out.residual_tumour is False
    assert out.local_progression is True
    assert out.progression_days == 365


@pytest.mark.parametrize(
    ("last_mm", "expected"),
    [(38.0 * 1.2 + 0.1, True), (38.0 + 4.9, False), (38.0 * 1.19, False)],
)
def test_local_progression_by_growth_needs_20pct_and_5mm(last_mm: float, expected: bool) -> None:
    out = assess_lesion(_clean_course({365: {"long_axis_mm": last_mm}}), PROC)
    assert out.local_progression is expected


def test_technical_failure_on_small_margin_or_partial_coverage() -> None:
    out = assess_lesion(_clean_course({0: {"min_margin_mm": 4.9}}), PROC)
    assert out.technical_success is False
    out = assess_lesion(
        _clean_course({0: {"tumour_coverage_pct": 97.0, "min_margin_mm": -1.2}}), PROC
    )
    assert out.technical_success is False
    assert out.min_margin_mm == pytest.approx(-1.2)


@pytest.mark.parametrize(
    ("margin_mm", "coverage_pct", "band_mm", "review"),
    [(4.6, 100.0, 0.5, True), (5.4, 100.0, 0.5, True), (5.5, 100.0, 0.5, False),
     (4.4, 100.0, 0.5, False), (5.2, 100.0, 0.0, False), (5.2, 96.0, 0.5, False)],
)
def test_margin_near_the_target_needs_review(margin_mm: float, coverage_pct: float,
                                             band_mm: float, review: bool) -> None:
    """The margin is known to a few tenths of a millimetre: within the band of the target
    (either side) technical success may be either, and the lesion goes up for review.
    The flag itself still follows the measured margin; an uncovered tumour has failed
    whatever its margin."""
    crit = AssessmentCriteria(margin_review_band_mm=band_mm)
    out = assess_lesion(_clean_course({0: {"min_margin_mm": margin_mm,
                                           "tumour_coverage_pct": coverage_pct}}), PROC, crit)
    assert out.technical_success is (coverage_pct == 100.0 and margin_mm >= 5.0)
    assert out.needs_review is review
    assert any("technical success uncertain" in r for r in out.review_reasons) is review


def test_margin_review_band_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="margin_review_band_mm"):
        AssessmentCriteria(margin_review_band_mm=-0.1)


def test_equivocal_needs_review_and_is_not_assessable() -> None:
    out = assess_lesion(_clean_course({365: {"enhancing": "equivocal"}}), PROC)
    assert out.no_enhancement is None
    assert out.success is None
    assert out.needs_review is True
    assert any("equivocal" in r for r in out.review_reasons)


def test_qc_warning_triggers_review() -> None:
    out = assess_lesion(_clean_course({0: {"qc": ["registration doubtful"]}}), PROC)
    assert out.needs_review is True
    assert out.technical_success is True


def test_missing_studies() -> None:
    tps = [_tp("baseline", -10, long_axis_mm=20.0)]
    out = assess_lesion(tps, PROC)
    assert out.success is None and out.technical_success is None
    assert out.needs_review is True
    assert {"no intra-procedural study", "no follow-up study"} <= set(out.review_reasons)


def test_mixed_lesions_rejected() -> None:
    tps = _clean_course()
    tps[1].lesion_id = "L2"
    with pytest.raises(ValueError, match="several lesions"):
        assess_lesion(tps, PROC)


def test_bad_enhancing_value_and_bad_criteria() -> None:
    with pytest.raises(ValueError, match="enhancing must be"):
        _tp("followup", 90, enhancing="maybe")
    with pytest.raises(ValueError, match="equivocal_hu"):
        AssessmentCriteria(enhancing_hu=10, equivocal_hu=20)
    with pytest.raises(ValueError, match="unknown assessment criteria"):
        AssessmentCriteria.from_mapping({"enhancing_HU": 25})


def test_ct_and_mr_classification_thresholds() -> None:
    c = AssessmentCriteria()
    assert [c.classify_ct_delta_hu(v).value for v in (25, 20, 19.9, 10, 9.9, None)] == [
        "yes", "yes", "equivocal", "equivocal", "no", "not_assessable"]
    assert [c.classify_mr_pct(v).value for v in (15, 14.9, None)] == [
        "yes", "no", "not_assessable"]


def test_cohort_summary_and_km() -> None:
    outcomes = [
        assess_lesion(_clean_course(), PROC),
        assess_lesion(_clean_course({90: {"enhancing": "yes"}}), PROC),
        assess_lesion(_clean_course({365: {"enhancing": "yes"}}), PROC),
        assess_lesion(_clean_course({0: {"min_margin_mm": 2.0}}), PROC),
    ]
    s = summarize_cohort(outcomes)
    assert (s.n_success, s.n_success_assessable) == (2, 4)
    assert (s.n_technical_success, s.n_technical_assessable) == (3, 4)
    km = s.local_control
    assert km is not None and km.n_events == 2 and km.n_lesions == 4
    # events at day 90 (1 of 4) and day 365 (1 of 3 at risk): S = 3/4 * 2/3 = 0.5
    assert km.control_probability[-1] == pytest.approx(0.5)
    assert "success 2/4" in s.describe()
