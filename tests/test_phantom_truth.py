"""Analytic truth of the synthetic phantom against closed forms and independent formulas."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import measure
from fixtures.phantom import make_patient, placed_lesion
from fixtures.scenarios import SCENARIOS
from fixtures.shapes import Ellipsoid, rotation_matrix
from fixtures.truth import patient_truth


def _sphere(center, r):
    return Ellipsoid.make(center, (r, r, r))


def test_sphere_measures_closed_form():
    r = 11.3
    s = [_sphere((4.0, -7.0, 120.0), r)]
    long_mm, short_mm, z_mm = measure.recist_axial_mm(s)
    assert long_mm == pytest.approx(2 * r, abs=0.02)
    assert short_mm == pytest.approx(2 * r, abs=0.02)
    assert z_mm == pytest.approx(120.0, abs=0.3)
    assert measure.max_diameter_3d_mm(s) == pytest.approx(2 * r, abs=0.05)
    assert measure.volume_ml(s) == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=2e-3)
    np.testing.assert_allclose(measure.centroid_lps(s), [4.0, -7.0, 120.0], atol=0.05)


def test_rotated_ellipsoid_recist_and_volume():
    # semi-axes 20, 10 in-plane (rotated 30° about z), 6 along z: RECIST 40 × 20,
    # 3-D diameter 40, volume 4/3·π·abc
    e = [Ellipsoid.make((0, 0, 0), (20, 10, 6), rotation_matrix((0, 0, 30)))]
    long_mm, short_mm, _ = measure.recist_axial_mm(e)
    assert long_mm == pytest.approx(40.0, abs=0.03)
    assert short_mm == pytest.approx(20.0, abs=0.03)
    assert measure.max_diameter_3d_mm(e) == pytest.approx(40.0, abs=0.1)
    assert measure.volume_ml(e) == pytest.approx(4 / 3 * np.pi * 20 * 10 * 6 / 1000, rel=3e-3)


def test_tilted_ellipsoid_axial_section_is_not_the_3d_axis():
    # long axis 20 mm tilted 90° into z: the axial long axis is the in-plane 2·8 mm
    e = [Ellipsoid.make((0, 0, 0), (20, 8, 5), rotation_matrix((0, 90, 0)))]
    long_mm, short_mm, _ = measure.recist_axial_mm(e)
    assert long_mm == pytest.approx(16.0, abs=0.03)
    assert short_mm == pytest.approx(10.0, abs=0.03)
    assert measure.max_diameter_3d_mm(e) == pytest.approx(40.0, abs=0.1)


def test_two_spheres_union_diameter_and_volume():
    a, b = _sphere((0, 0, 0), 5.0), _sphere((30, 0, 0), 7.0)
    assert measure.max_diameter_3d_mm([a, b]) == pytest.approx(30 + 5 + 7, abs=0.05)
    expected = 4 / 3 * np.pi * (5.0**3 + 7.0**3) / 1000
    assert measure.volume_ml([a, b]) == pytest.approx(expected, rel=3e-3)


def test_margin_concentric_spheres_is_radius_difference():
    t, ice = [_sphere((1, 2, 3), 12.5)], [_sphere((1, 2, 3), 20.0)]
    margin, where = measure.min_margin_mm(t, ice)
    assert margin == pytest.approx(7.5, abs=0.01)
    assert np.linalg.norm(where - [1, 2, 3]) == pytest.approx(20.0, abs=0.01)
    assert measure.coverage_pct(t, ice) == 100.0


def _lens_volume(r1, r2, d):
    """Volume of the intersection of two balls (radii r1, r2, centres d apart)."""
    return np.pi * (r1 + r2 - d) ** 2 * (
        d**2 + 2 * d * r2 - 3 * r2**2 + 2 * d * r1 + 6 * r1 * r2 - 3 * r1**2
    ) / (12 * d)


def test_offset_sphere_margin_negative_and_coverage_matches_lens_formula():
    r, big, offset = 10.0, 13.0, 6.0
    t, ice = [_sphere((0, 0, 0), r)], [_sphere((offset, 0, 0), big)]
    margin, where = measure.min_margin_mm(t, ice)
    assert margin == pytest.approx(-(r + offset - big), abs=0.01)  # -3 mm, on the −x side
    assert where[0] == pytest.approx(-r, abs=0.05)
    expected = 100 * _lens_volume(r, big, offset) / (4 / 3 * np.pi * r**3)
    assert measure.coverage_pct(t, ice) == pytest.approx(expected, abs=0.3)


def test_distance_outside_exact_for_ellipsoid_on_axis():
    e = [Ellipsoid.make((0, 0, 0), (20, 10, 5), rotation_matrix((0, 0, 90)))]
    # after rotating 90° about z the 20 mm axis lies along y
    d = measure.distance_outside_mm(e, [[0, 25, 0], [13, 0, 0], [0, 0, 9], [0, 0, 0]])
    np.testing.assert_allclose(d, [5.0, 3.0, 4.0, 0.0], atol=1e-6)


def test_sphere_scenario_truth_closed_form():
    plan = make_patient("sphere", seed=4, small=True)
    lesion = plan.lesions[0]
    r = float(lesion.tumour.parts[0].semi_axes_mm[0])
    big = float(lesion.ablation.ice[0].semi_axes_mm[0])
    assert big - r == pytest.approx(8.0)
    truth = patient_truth(plan)["lesions"][0]
    base, intra = truth["timepoints"][0], truth["timepoints"][1]
    assert base["long_axis_mm"] == pytest.approx(2 * r, abs=0.03)
    assert base["short_axis_mm"] == pytest.approx(2 * r, abs=0.03)
    assert base["max_3d_diameter_mm"] == pytest.approx(2 * r, abs=0.1)
    assert base["volume_ml"] == pytest.approx(4 / 3 * np.pi * r**3 / 1000, rel=5e-3)
    assert intra["min_margin_mm"] == pytest.approx(big - r, abs=0.03)
    assert intra["tumour_coverage_pct"] == 100.0
    assert intra["iceball"]["long_axis_mm"] == pytest.approx(2 * big, abs=0.03)
    assert intra["iceball"]["volume_ml"] == pytest.approx(4 / 3 * np.pi * big**3 / 1000,
                                                          rel=5e-3)
    # follow-up zones are the ice ball scaled about its centre
    for tp, study in zip(truth["timepoints"][2:], plan.studies[2:], strict=True):
        scale = study.states[0].zone_scale
        assert tp["long_axis_mm"] == pytest.approx(2 * big * scale, abs=0.03)
        assert tp["volume_ml"] == pytest.approx(4 / 3 * np.pi * (big * scale) ** 3 / 1000,
                                                rel=5e-3)
    # zone long axes follow the scenario's ratios to the baseline tumour long axis
    # (up to the 5° rotation difference between the studies' axial planes)
    for tp, fu in zip(truth["timepoints"][2:], plan.scenario.followups, strict=True):
        assert tp["long_axis_mm"] == pytest.approx(fu.zone_ratio * 2 * r, rel=0.01)
    # the seed (tumour centroid) lies at the sphere centre in the seed series
    study = plan.studies[0]
    se = next(s for s in study.series if s.key.startswith("ct_") and s.contrast and s.primary)
    from fixtures.truth import series_placement

    place = series_placement(study, se)
    centre = place[:3, :3] @ lesion.tumour.parts[0].center_mm + place[:3, 3]
    np.testing.assert_allclose(truth["seed_lps"], centre, atol=0.05)


_EXPECTED = {  # scenario → expected outcome flags of the first lesion
    "clean_success": dict(success=True, technical_success=True, residual_tumour=False,
                          local_progression=False),
    "endophytic_papillary": dict(success=True, technical_success=True,
                                 residual_tumour=False, local_progression=False),
    "undercoverage": dict(success=False, technical_success=False, residual_tumour=True,
                          local_progression=False, no_enhancement=False),
    "residual_3mo": dict(success=False, technical_success=False, residual_tumour=True,
                         local_progression=False),
    "progression_12mo": dict(success=False, residual_tumour=False, local_progression=True,
                             no_enhancement=False),
    "growing_zone": dict(success=False, no_enhancement=True, size_decrease=False,
                         residual_tumour=False, local_progression=False),
    "mr_followup": dict(success=True, technical_success=True, residual_tumour=False),
    "benign_rim": dict(success=True, no_enhancement=True, residual_tumour=False),
    "sphere": dict(success=True, technical_success=True),
    "two_lesions": dict(success=True, technical_success=True),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_outcome_flags(name):
    assert set(_EXPECTED) == set(SCENARIOS)
    plan = make_patient(name, seed=1, small=True)
    truth = patient_truth(plan)
    for lesion in truth["lesions"][: 2 if name == "two_lesions" else 1]:
        outcome = lesion["outcome"]
        for flag, value in _EXPECTED[name].items():
            assert outcome[flag] is value, (name, lesion["lesion_id"], flag, outcome)
        assert outcome["success"] is (outcome["no_enhancement"] and outcome["size_decrease"])
        n = int(lesion["lesion_id"][1:]) - 1
        seed_key = next(s["key"] for st in truth["studies"] for s in st["series"]
                        if s["series_instance_uid"] == lesion["seed_series_uid"])
        tumour_lps = placed_lesion(plan, seed_key, "tumour", n)
        assert measure.inside_any(tumour_lps, np.asarray(lesion["seed_lps"]))[0]
        designed = plan.lesions[n].spec.margin_mm
        assert outcome["min_margin_mm"] == pytest.approx(designed, abs=0.15)
        assert (outcome["tumour_coverage_pct"] < 100.0) is (designed < 0)
    if name == "benign_rim":
        assert truth["lesions"][0]["timepoints"][2]["benign_rim"] is True
        assert truth["lesions"][0]["timepoints"][2]["enhancing"] == "no"
    if name == "mr_followup":
        fu = truth["lesions"][0]["timepoints"][2]
        assert fu["modality"] == "MR" and "enhancement_pct" in fu


def test_farthest_pair_is_the_brute_force_pair():
    rng = np.random.default_rng(4)
    t = np.linspace(0, 2 * np.pi, 90, endpoint=False)
    clouds = [rng.normal(size=(300, 2)), rng.normal(size=(400, 3)) * [1, 2, 5],
              np.column_stack([np.cos(t), np.sin(t)]) * 7.5,  # many (near) ties
              np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])]  # exact ties
    for pts in clouds:
        diff = pts[:, None, :] - pts[None, :, :]
        d2 = np.einsum("abk,abk->ab", diff, diff)
        a, b = np.unravel_index(np.argmax(d2), d2.shape)
        assert measure._farthest_pair(pts) == (a, b, d2[a, b])
