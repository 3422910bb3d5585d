"""Registration on the synthetic scenarios: baseline contrast CT → intra-procedural and
follow-up CT, target registration error at the lesion from the analytic placement of each
series (the kidney moves against the body with breathing). Slow (rendering)."""

from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import pytest
import SimpleITK as sitk

from fixtures.phantom import PhantomCase, phantom_case, render_series
from fixtures.truth import series_placement
from pipeline.image import Volume
from segmentation import register_rigid, transform_points_lps
from segmentation.registration import _finish

pytestmark = pytest.mark.slow


@lru_cache(maxsize=4)
def _baseline(scenario: str) -> PhantomCase:
    return phantom_case(scenario, study="baseline", small=False)


@lru_cache(maxsize=4)
def _series(scenario: str, key: str) -> Volume:
    return render_series(_baseline(scenario).plan, key)


def _true_point(case: PhantomCase, key_from: str, key_to: str, point_lps) -> np.ndarray:
    """Where a point on a mobile structure (the lesion) of series ``key_from`` lies in
    series ``key_to``: through the body frame with each series' placement."""
    st_f, se_f = case.plan.find_series(key_from)
    st_t, se_t = case.plan.find_series(key_to)
    m = series_placement(st_t, se_t) @ np.linalg.inv(series_placement(st_f, se_f))
    return (m @ np.r_[np.asarray(point_lps, float), 1.0])[:3]


def _displaced(transform, shift_mm) -> sitk.Transform:
    comp = sitk.CompositeTransform(3)
    comp.AddTransform(transform)
    comp.AddTransform(sitk.TranslationTransform(3, tuple(float(v) for v in shift_mm)))
    return comp


# (scenario, moving series): the pipeline's pairs, baseline primary contrast CT → the
# prone intra-procedural ice-ball CT (probes, ice, unenhanced) and → a follow-up CT
_PAIRS = [
    ("clean_success", "intra/ct_iceball"),
    ("clean_success", "fu1/ct_nephrographic"),
    ("endophytic_papillary", "intra/ct_iceball"),
    ("endophytic_papillary", "fu1/ct_nephrographic"),
    ("residual_3mo", "intra/ct_iceball"),
    ("undercoverage", "fu1/ct_nephrographic"),
]


@pytest.mark.parametrize(("scenario", "key"), _PAIRS)
def test_baseline_to_study_tre_at_lesion(scenario: str, key: str) -> None:
    """The kidney slides 2–15 mm against the body between studies: the lesion must land
    within 2 mm, the fit must be ok, and the same transform displaced 7 mm at the lesion
    must be flagged (ok=False)."""
    case = _baseline(scenario)
    moving = _series(scenario, key)
    seed = np.asarray(case.truth["lesion"]["seed_lps"])
    truth = _true_point(case, case.key, key, seed)
    started = time.process_time()
    res = register_rigid(case.image, moving, focus_point_lps=seed, focus_radius_mm=60.0)
    seconds = time.process_time() - started
    err = float(np.linalg.norm(transform_points_lps(res.transform, seed) - truth))
    assert err <= 2.0, f"{scenario} {key}: TRE {err:.2f} mm"
    assert res.ok, res.qc
    assert seconds < 30.0  # ~10 s CPU on one core of the 2-core CI box
    for shift in ([7.0, 0.0, 0.0], [0.0, 0.0, -7.0]):
        bad = _finish(case.image, moving, _displaced(res.transform, shift), float("nan"),
                      seed, 60.0, [], organ=True)
        assert not bad.ok, f"{scenario} {key}: 7 mm off not flagged ({bad.quality:.2f})"


@pytest.mark.parametrize("scenario", ["clean_success", "endophytic_papillary"])
def test_unenhanced_reference_to_intra_is_right_or_flagged(scenario: str) -> None:
    """Without contrast in the reference there is no enhancing organ to lock onto (the
    metric falls back to a ball around the lesion, body wall included): measured TRE
    6.4 / 8.4 mm for these two, both flagged; a result more than 2 mm off must carry
    ok=False."""
    case = _baseline(scenario)
    fixed_key, key = "baseline/ct_unenhanced", "intra/ct_iceball"
    fixed = render_series(case.plan, fixed_key)
    seed = _true_point(case, case.key, fixed_key, case.truth["lesion"]["seed_lps"])
    res = register_rigid(fixed, _series(scenario, key), focus_point_lps=seed,
                         focus_radius_mm=60.0)
    err = float(np.linalg.norm(transform_points_lps(res.transform, seed)
                               - _true_point(case, fixed_key, key, seed)))
    assert err <= 2.0 or not res.ok, f"{scenario}: TRE {err:.2f} mm not flagged"


def test_lesion_organ_search_ignores_a_separate_static_enhancing_organ() -> None:
    """Endophytic papillary (seed 5, patient 1): a bowel/liver component within 30 mm of
    the small intrarenal tumour, larger than the kidney part of the box and static against
    the kidney's 15 mm breathing shift, held the search at the body's position (15 mm off,
    unflagged). The lesion's own organ gives ≤ 2 mm; the wrong position is flagged."""
    from fixtures.phantom import lesion_mask, make_patient

    plan = make_patient("endophytic_papillary", 5, index=1)
    key_f, key_m = "baseline/ct_nephrographic", "intra/ct_iceball"
    fixed, moving = render_series(plan, key_f), render_series(plan, key_m)
    tumour = np.asarray(lesion_mask(plan, key_f, "tumour").array)
    seed = fixed.index_to_lps(np.argwhere(tumour).mean(axis=0)[::-1])
    st_f, se_f = plan.find_series(key_f)
    st_m, se_m = plan.find_series(key_m)
    placement = series_placement(st_m, se_m) @ np.linalg.inv(series_placement(st_f, se_f))
    truth = (placement @ np.r_[seed, 1.0])[:3]
    reg = register_rigid(fixed, moving, focus_point_lps=seed, focus_radius_mm=60.0)
    assert np.linalg.norm(transform_points_lps(reg.transform, seed) - truth) <= 2.0
    off = truth - transform_points_lps(reg.transform, seed)
    wrong = _finish(fixed, moving, _displaced(reg.transform, -off + np.array([0, 7.0, 13.0])),
                    0.0, seed, 60.0, [], organ=True)
    assert not wrong.ok


@pytest.mark.parametrize(("fine_mm", "limit_mm"), [(1.0, 1.0)])
def test_intra_registration_of_an_endophytic_tumour_on_the_fine_grid(
        fine_mm: float, limit_mm: float) -> None:
    """Seed 47's endophytic tumour (2.5 ml, inside the kidney; 2 mm ice-ball slices): with
    the lesion search's last level on a 1.5 mm grid the tumour landed 1.94 mm off along
    the slices (its margin read 2.1 mm short, `technical_success` wrong); on the 1.0 mm
    grid the pipeline uses for the ice-ball scan, 0.66 mm."""
    case = phantom_case("endophytic_papillary", seed=47, index=1, small=False)
    key = "intra/ct_iceball"
    moving = render_series(case.plan, key)
    seed = np.asarray(case.truth["lesion"]["seed_lps"])
    truth = _true_point(case, case.key, key, seed)
    res = register_rigid(case.image, moving, focus_point_lps=seed, focus_radius_mm=60.0,
                         fine_mm=fine_mm)
    err = float(np.linalg.norm(transform_points_lps(res.transform, seed) - truth))
    # 1.0 mm: half a 2 mm slice; 0.66 mm seen, 1.95 on the 1.5 mm grid
    assert err <= limit_mm, f"TRE {err:.2f} mm"
    assert res.ok, res.qc


@pytest.mark.parametrize(("scenario", "seed", "index", "before_mm", "limit_mm"), [
    ("endophytic_papillary", 73, 1, 1.24, 0.7),
    ("residual_3mo", 71, 3, 0.85, 0.5),
])
def test_intra_registration_refined_off_the_ice_ball(scenario: str, seed: int, index: int,
                                                    before_mm: float, limit_mm: float) -> None:
    """The ice ball and the probes' streaks change the kidney around the tumour, and the
    lesion search matched that tissue against its unfrozen baseline look: on a 1.0 mm
    grid the tumour landed 1.24 mm (seed 73's endophytic tumour; its margin read 1.55 mm
    short and `technical_success` wrong) and 0.85 mm off. Refined with the segmented ice
    ball (+3 mm) left out of the metric: 0.52 and 0.18 mm (true ice ball, screen). The
    pipeline searches the ice-ball scan on a 0.75 mm grid since session 18: there the
    first registration lands 0.78 / 0.09 mm off and the refinement 0.42 / 0.07 mm."""
    from pipeline.analysis.patient import _INTRA_FINE_MM, _registration_off_the_ice
    from segmentation import segment_iceball

    case = phantom_case(scenario, seed=seed, index=index, small=False)
    key = "intra/ct_iceball"
    moving = render_series(case.plan, key)
    point = np.asarray(case.truth["lesion"]["seed_lps"])
    truth = _true_point(case, case.key, key, point)

    def error_mm(transform: sitk.Transform) -> float:
        return float(np.linalg.norm(transform_points_lps(transform, point) - truth))

    # the scene must still show the error this test is about, on the grid it was found
    # on (0.3 mm: the screen's pipeline runs and renders differ by that much)
    coarse = register_rigid(case.image, moving, focus_point_lps=point, focus_radius_mm=60.0,
                            fine_mm=1.0)
    err_coarse = error_mm(coarse.transform)
    assert err_coarse >= before_mm - 0.3, f"first registration {err_coarse:.2f} mm: scene changed?"
    # the pipeline's path: the first registration on its grid, refined off the ice ball
    first = register_rigid(case.image, moving, focus_point_lps=point, focus_radius_mm=60.0,
                           fine_mm=_INTRA_FINE_MM)
    err_first = error_mm(first.transform)
    ice = segment_iceball(moving, transform_points_lps(first.transform, point))
    refined = _registration_off_the_ice(case.image, moving, point, first.transform, ice.mask,
                                        70.0)
    err = error_mm(refined)
    # limits: the screen's 0.52 / 0.18 mm with the true ice ball, plus 0.2 / 0.3 mm for
    # the segmented one (Dice 0.99, its border within a voxel); both under half a 3 mm
    # ice-ball slice and under the error of the first registration on the old grid
    assert err <= limit_mm, f"refined {err:.2f} mm (first {err_first:.2f})"


def test_global_fit_keeps_a_start_the_descent_ran_off() -> None:
    """Held-out seed 243's residual_3mo patient: its 3-month CT lies 500 mm along S from
    the baseline's frame. The body-COM start already matched (overlap MI 1.016); the
    descent ran 71 mm off it (0.082), the 180° candidate (0.438) won, and the lesion was
    sought 223 mm away (a 188 ml "zone", Dice 0). The start is kept when it scores better
    than its fit: the lesion lands within 2 mm (1.6 mm seen; 234 mm before) and the fit is
    ok."""
    case = phantom_case("residual_3mo", study="baseline", seed=243, index=3, small=False)
    moving = render_series(case.plan, "fu1/ct_nephrographic")
    seed = np.asarray(case.truth["lesion"]["seed_lps"])
    truth = _true_point(case, case.key, "fu1/ct_nephrographic", seed)
    res = register_rigid(case.image, moving, focus_point_lps=seed, focus_radius_mm=60.0)
    err = float(np.linalg.norm(transform_points_lps(res.transform, seed) - truth))
    # the module's TRE bar (test_baseline_to_study_tre_at_lesion): 1.6 mm now, 234 before
    assert err <= 2.0, f"TRE {err:.2f} mm"
    assert res.ok, res.qc
