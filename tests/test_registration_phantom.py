"""Registration on the synthetic scenarios: baseline contrast CT → follow-up CT, target
registration error at the lesion from the analytic placement of each series (the
kidney moves against the body with breathing). Slow (rendering)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from fixtures.phantom import PhantomCase, phantom_case, render_series
from fixtures.truth import series_placement
from pipeline.image import Volume
from segmentation import register_rigid, transform_points_lps

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


@pytest.mark.parametrize(
    "scenario",
    [
        "clean_success",
        "undercoverage",
        "residual_3mo",
        pytest.param("endophytic_papillary", marks=pytest.mark.xfail(
            reason="TRE 2.7 mm measured: small endophytic lesion, kidney shift vs body wall",
            strict=True)),
    ],
)
def test_baseline_to_followup_tre_at_lesion(scenario: str) -> None:
    case = _baseline(scenario)
    key = "fu1/ct_nephrographic"
    moving = _series(scenario, key)
    seed = np.asarray(case.truth["lesion"]["seed_lps"])
    res = register_rigid(case.image, moving, focus_point_lps=seed)
    truth = _true_point(case, case.key, key, seed)
    assert np.linalg.norm(transform_points_lps(res.transform, seed) - truth) <= 2.0
    assert res.ok


@pytest.mark.xfail(reason="intra-procedural (prone, ice ball, metal streaks): the body is "
                          "aligned within ~1 mm but the kidney's own 6–8 mm shift is only "
                          "partly recovered (TRE 3–7 mm)", strict=True)
def test_baseline_to_intra_tre_at_lesion() -> None:
    case = _baseline("clean_success")
    key = "intra/ct_iceball"
    moving = _series("clean_success", key)
    fixed = _series("clean_success", "baseline/ct_unenhanced")
    seed = _true_point(case, case.key, "baseline/ct_unenhanced",
                       case.truth["lesion"]["seed_lps"])
    res = register_rigid(fixed, moving, focus_point_lps=seed)
    truth = _true_point(case, "baseline/ct_unenhanced", key, seed)
    assert np.linalg.norm(transform_points_lps(res.transform, seed) - truth) <= 2.0
