"""Rendered phantom voxels: consistent with the analytic truth and physiologically plausible."""

from __future__ import annotations

import numpy as np
import pytest

from fixtures import measure, render
from fixtures.phantom import (
    lesion_mask,
    make_patient,
    placed_lesion,
    render_series,
    series_layers,
)
from fixtures.render import Grid, _gaussian_filter_in_plane, render_layers, render_mask
from fixtures.scenarios import SCENARIOS
from fixtures.shapes import Box, Difference, Ellipsoid, Intersection, Union
from fixtures.tissues import Layer
from fixtures.truth import patient_truth, series_placement


def _primary_keys(plan):
    return [f"{st.key}/{se.key}" for st in plan.studies for se in st.series
            if se.kind == "volume" and se.primary]


def _check_renders(plan, keys):
    for key in keys:
        img = render_series(plan, key)
        assert img.array.dtype == np.float32 and np.all(np.isfinite(img.array))
        if img.modality == "CT":
            assert img.array.min() >= -1024 and img.array.max() <= 3071
            assert img.array.max() > 200  # bone is in the field
        else:
            assert img.array.min() >= 0
        _, series = plan.find_series(key)
        if series.kind == "reformat":
            continue
        for n in range(len(plan.lesions)):
            mask = lesion_mask(plan, key, "lesion", lesion=n)
            assert mask.same_grid(img) and mask.array.dtype == bool
            assert mask.array.sum() > 0, f"{key}: lesion {n} not in the field of view"
            centre = np.mean([p.center_mm for p in placed_lesion(plan, key, "tumour", n)], 0)
            assert img.contains_lps(centre)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_scenario_renders_small(name):
    plan = make_patient(name, seed=2, small=True)
    assert [s.role for s in plan.studies][:2] == ["baseline", "intraprocedural"]
    assert len(plan.studies) >= 4
    keys = _primary_keys(plan)
    _check_renders(plan, [k for k in keys if k.startswith(("intra/", plan.studies[-1].key))])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_every_series_of_every_scenario_renders_small(name):
    plan = make_patient(name, seed=3, small=True)
    keys = [k for k in plan.series_keys() if plan.find_series(k)[1].grid is not None]
    _check_renders(plan, keys)


def _local_grid(center_lps, half_mm=45.0, spacing_mm=0.7, slices=9, thickness_mm=1.0):
    n = int(2 * half_mm / spacing_mm)
    aff = np.eye(4)
    aff[:3, :3] = np.diag([spacing_mm, spacing_mm, thickness_mm])
    aff[:3, 3] = np.asarray(center_lps) - [half_mm, half_mm, (slices - 1) / 2 * thickness_mm]
    return Grid(aff, (slices, n, n), thickness_mm)


def _mean_in(img, shape, grid, place):
    m = render_mask(shape, grid, place=place)
    assert m.sum() > 20
    return float(img[m].mean())


@pytest.mark.parametrize(
    ("phase", "aorta", "cortex_minus_medulla"),
    [("unenhanced", (30, 55), (-5, 5)), ("corticomedullary", (280, 400), (80, 150)),
     ("nephrographic", (140, 200), (-10, 10)), ("excretory", (100, 150), (-20, 0))],
)
def test_phase_physiology_noise_free(phase, aorta, cortex_minus_medulla):
    plan = make_patient("clean_success", seed=0, small=True)
    study = plan.studies[0]
    series = next(s for s in study.series if s.primary)
    place = series_placement(study, series)
    healthy = "R" if plan.lesions[0].side == "L" else "L"
    kidney = plan.anatomy.kidneys[healthy]
    centre = place[:3, :3] @ kidney.center_mm + place[:3, 3]
    grid = _local_grid(centre, half_mm=100.0, spacing_mm=0.8)
    layers = series_layers(plan, study, series)
    img = render_layers(layers, grid, body_to_lps=study.body_to_lps,
                        mobile_shift_mm=series.mobile_shift_mm, phase=phase, background=-1000)
    ax, ay = plan.anatomy.aorta_xy_mm
    aorta_probe = Ellipsoid.make((ax, ay, kidney.center_mm[2]), (6, 6, 4))
    a = _mean_in(img, aorta_probe, grid, study.body_to_lps)
    assert aorta[0] <= a <= aorta[1]
    medulla = Union(tuple(layer.shape.inflated(-1.5) for layer in layers
                          if layer.name == f"kidney_{healthy}/medulla"))
    e = kidney.ellipsoid
    lateral_half = Box.make(e.center_mm - e.rotation[:, 0] * e.semi_axes_mm[0],
                            (e.semi_axes_mm[0], 100.0, 100.0), e.rotation)
    cortex = Intersection((Difference(e.inflated(-0.8), e.inflated(-3.5)), lateral_half))
    diff = _mean_in(img, cortex, grid, place) - _mean_in(img, medulla, grid, place)
    assert cortex_minus_medulla[0] <= diff <= cortex_minus_medulla[1]


def test_mask_and_partial_volume_match_truth_volume_at_full_resolution():
    plan = make_patient("clean_success", seed=3, small=False)
    key = next(k for k in _primary_keys(plan) if k.startswith("baseline/ct_c"))
    study, series = plan.find_series(key)
    truth_ml = measure.volume_ml(plan.lesions[0].tumour.parts)
    mask = lesion_mask(plan, key, "tumour")
    vox_ml = mask.voxel_volume_mm3 / 1000.0
    assert mask.array.sum() * vox_ml == pytest.approx(truth_ml, rel=0.03)
    # partial volume: a unit-valued tumour on a zero background sums to its volume
    layer = Layer("t", plan.lesions[0].tumour.shape, (1.0,) * 6, mobile=True)
    pv = render_layers([layer], series.grid, body_to_lps=study.body_to_lps,
                       mobile_shift_mm=series.mobile_shift_mm, phase="unenhanced",
                       background=0.0)
    assert pv.min() >= 0 and pv.max() <= 1
    assert 0.05 * mask.array.sum() < ((pv > 0) & (pv < 1)).sum()  # a real PV edge
    assert pv.sum() * vox_ml == pytest.approx(truth_ml, rel=0.015)


def _eroded_mean(plan, key, what, erode_mm):
    _study, series = plan.find_series(key)
    img = render_series(plan, key)
    parts = placed_lesion(plan, key, what)
    inner = Union(tuple(p.inflated(-erode_mm) for p in parts))
    m = render_mask(inner, series.grid, place=np.eye(4))
    assert m.sum() >= 4, (key, what, int(m.sum()))
    return float(img.array[m].mean())


@pytest.mark.parametrize(("name", "lo", "hi", "erode_mm"),
                         [("clean_success", 60, 160, 3.0), ("endophytic_papillary", 15, 50, 1.0)])
def test_baseline_enhancement_in_image_matches_truth(name, lo, hi, erode_mm):
    plan = make_patient(name, seed=1, small=True)
    truth = patient_truth(plan)["lesions"][0]["timepoints"][0]
    base = plan.studies[0]
    contrast = next(s.key for s in base.series if s.primary and s.contrast)
    rise = (_eroded_mean(plan, f"baseline/{contrast}", "tumour", erode_mm)
            - _eroded_mean(plan, "baseline/ct_unenhanced", "tumour", erode_mm))
    assert lo <= truth["enhancement_hu"] <= hi
    assert rise == pytest.approx(truth["enhancement_hu"], abs=20.0)


def test_intraprocedural_prone_ice_ball_and_probes():
    plan = make_patient("undercoverage", seed=0, small=True)
    img = render_series(plan, "intra/ct_iceball")
    direction = img.direction
    np.testing.assert_allclose(np.diag(direction), [-1, -1, 1])  # HFP: IOP [-1,0,0,0,-1,0]
    ice = lesion_mask(plan, "intra/ct_iceball", "iceball").array
    tumour = lesion_mask(plan, "intra/ct_iceball", "tumour").array
    assert (tumour & ~ice).sum() > 0  # under-coverage: part of the tumour outside the ice
    values = img.array[ice & (img.array < 500)]
    assert -80 < float(np.median(values)) < -25  # tissue − 85 HU, frozen fat ≥ −60 HU
    assert img.array.max() > 1000  # metal probes
    planning = render_series(plan, "intra/ct_planning")
    assert planning.array.max() < 1500  # no probes before they go in
    # noise-free at 0.25 mm around a probe tip: steel far above the storable 3071 HU
    study, series = plan.find_series("intra/ct_iceball")
    place = series_placement(study, series)
    probe = plan.lesions[0].ablation.probes[0]
    tip = place[:3, :3] @ (probe.p0_mm + 5 * (probe.p1_mm - probe.p0_mm)
                           / np.linalg.norm(probe.p1_mm - probe.p0_mm)) + place[:3, 3]
    grid = _local_grid(tip, half_mm=4.0, spacing_mm=0.25, slices=3, thickness_mm=0.25)
    local = render_layers(series_layers(plan, study, series), grid,
                          body_to_lps=study.body_to_lps, mobile_shift_mm=series.mobile_shift_mm,
                          phase="unenhanced", background=-1000)
    assert local.max() > 5000


def test_residual_nodule_enhances_and_zone_does_not():
    plan = make_patient("residual_3mo", seed=0, small=True)
    # noise-free, 0.5 mm around the nodule: exact tissue values
    study, series = plan.find_series("fu1/ct_nephrographic")
    nodule = placed_lesion(plan, "fu1/ct_nephrographic", "nodule")[0]
    grid = _local_grid(nodule.center_mm, half_mm=25.0, spacing_mm=0.5, slices=21,
                       thickness_mm=0.5)
    layers = series_layers(plan, study, series)
    phases = {ph: render_layers(layers, grid, body_to_lps=study.body_to_lps,
                                mobile_shift_mm=series.mobile_shift_mm, phase=ph,
                                background=-1000) for ph in ("unenhanced", "nephrographic")}
    inner = Union((nodule.inflated(-1.0),))
    zone = Difference(Union(tuple(p.inflated(-1.0) for p in placed_lesion(
        plan, "fu1/ct_nephrographic", "zone"))), Union((nodule.inflated(1.0),)))
    eye = np.eye(4)
    nodule_rise = (_mean_in(phases["nephrographic"], inner, grid, eye)
                   - _mean_in(phases["unenhanced"], inner, grid, eye))
    zone_rise = (_mean_in(phases["nephrographic"], zone, grid, eye)
                 - _mean_in(phases["unenhanced"], zone, grid, eye))
    truth = patient_truth(plan)["lesions"][0]["timepoints"][2]
    assert nodule_rise == pytest.approx(truth["enhancement_hu"], abs=0.5)
    assert zone_rise == pytest.approx(truth["zone_enhancement_hu"], abs=0.5)
    # and in the noisy, coarse rendered series the nodule still stands out
    post = _eroded_mean(plan, "fu1/ct_nephrographic", "nodule", 0.0)
    pre = _eroded_mean(plan, "fu1/ct_unenhanced", "nodule", 0.0)
    assert post - pre > 15


def test_mr_followup_relative_enhancement():
    plan = make_patient("mr_followup", seed=0, small=True)
    pre, post = render_series(plan, "fu1/mr_t1_pre"), render_series(plan, "fu1/mr_t1_post")
    assert pre.modality == "MR" and pre.array.max() < 4096
    zone_pre = _eroded_mean(plan, "fu1/mr_t1_pre", "zone", 5.0)
    zone_post = _eroded_mean(plan, "fu1/mr_t1_post", "zone", 5.0)
    assert abs(zone_post / zone_pre - 1) < 0.15
    assert post.array.mean() > pre.array.mean()


def test_render_is_deterministic_and_seed_dependent():
    a = render_series(make_patient("sphere", seed=7, small=True), "fu1/ct_nephrographic")
    b = render_series(make_patient("sphere", seed=7, small=True), "fu1/ct_nephrographic")
    c = render_series(make_patient("sphere", seed=8, small=True), "fu1/ct_nephrographic")
    assert np.array_equal(a.array, b.array) and np.allclose(a.affine_lps, b.affine_lps)
    assert a.array.shape != c.array.shape or not np.array_equal(a.array, c.array)


@pytest.mark.parametrize("sigma_px", [0.4, 0.54, 1.26, 2.9])
def test_in_plane_gaussian_is_scipys_bit_for_bit(sigma_px):
    ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(int(sigma_px * 100))
    for shape in [(3, 40, 27), (1, 5, 130), (2, 2, 3)]:  # incl. lines shorter than the kernel
        noise = (rng.standard_normal(shape, dtype=np.float32) * 30).astype(np.float32)
        ours = noise.copy()
        _gaussian_filter_in_plane(ours, sigma_px, truncate=3.0)
        ndimage.gaussian_filter(noise, sigma=(0, sigma_px, sigma_px), output=noise, truncate=3.0)
        assert ours.tobytes() == noise.tobytes()


def test_voxel_by_voxel_painting_equals_block_classification(monkeypatch):
    """Coarse grids paint every voxel of a bounding box; classifying 2×2×1 blocks first
    (the full-resolution path) gives the same bits."""
    plan = make_patient("clean_success", seed=2, small=True)
    study, series = plan.find_series("intra/ct_iceball")
    kw = {"body_to_lps": study.body_to_lps, "mobile_shift_mm": series.mobile_shift_mm,
          "phase": series.phase, "background": -1000.0}
    layers = series_layers(plan, study, series)
    per_voxel = render_layers(layers, series.grid, **kw)
    spacing = series.grid.spacing_mm
    monkeypatch.setattr(render, "_BLOCK_MM", 2.0 * float(spacing[0]))
    assert render._Classifier(series.grid, np.eye(4)).block.tolist() == [2, 2, 1]
    blocks = render_layers(layers, series.grid, **kw)
    assert per_voxel.tobytes() == blocks.tobytes()
    mask = render_mask(plan.lesions[0].tumour.shape, series.grid, place=study.body_to_lps)
    monkeypatch.setattr(render, "_BLOCK_MM", 0.5)
    assert np.array_equal(mask, render_mask(plan.lesions[0].tumour.shape, series.grid,
                                            place=study.body_to_lps))


def test_benign_rim_blends_linearly_with_the_tissue_outside():
    """The rim is the zone's outer 2 mm: a voxel on the zone's surface holds rim and the
    tissue outside in proportion to its coverage (a rim shell painted over the zone
    blended the outside tissue twice, (1 - f)², and read ~30 HU too bright at f = ½)."""
    plan = make_patient("benign_rim", seed=2, small=False)
    study, series = plan.find_series("fu1/ct_nephrographic")
    layers = [la for la in series_layers(plan, study, series)
              if la.name.endswith(("/rim", "/zone"))]
    assert [la.name.split("/")[1] for la in layers] == ["rim", "zone"]
    kw = {"body_to_lps": study.body_to_lps, "mobile_shift_mm": series.mobile_shift_mm,
          "phase": series.phase}
    fat_hu = -100.0
    image = render_layers(layers, series.grid, background=fat_hu, **kw)
    cover = render_layers([Layer("c", layers[0].shape, (1.0,) * 6, mobile=True)], series.grid,
                          background=0.0, **kw)
    inner = render_layers([Layer("i", layers[1].shape, (1.0,) * 6, mobile=True)],
                          series.grid, background=0.0, **kw)
    surface = (cover > 0.05) & (cover < 0.95) & (inner == 0)
    assert surface.sum() > 500
    rim_hu = float(layers[0].values[render.phase_index(series.phase)])
    expected = fat_hu * (1 - cover[surface]) + rim_hu * cover[surface]
    # float32 painting of values ~100 HU (0.0 HU off measured here; 0.05 allows rounding on
    # another platform); the double blend this guards against was 32.6 HU off at f = ½
    np.testing.assert_allclose(image[surface], expected, atol=0.05)
