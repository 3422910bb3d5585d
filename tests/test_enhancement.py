"""CT/MR enhancement and enhancing components on synthetic images with known ΔHU.

Images are built on a 0.7 × 0.7 × 2.5 mm grid: unenhanced 30 HU, contrast = unenhanced +
a known ΔHU map, each with independent Gaussian noise σ = 12 HU (so ΔHU noise σ ≈ 17 HU
per voxel). Tolerances quote the noise of the statistic used.
"""

from __future__ import annotations

import numpy as np
import pytest

from measurements import (
    ComponentShape,
    EnhancementClass,
    ModalityError,
    ct_enhancement,
    enhancing_components,
    mean_attenuation_hu,
    mr_enhancement,
    mr_fat_signal_ratio,
    subtraction_image,
)
from pipeline.image import GeometryError, Volume
from tests.test_enhancement_slabs import CENTRE as SLAB_CENTRE
from tests.test_enhancement_slabs import _grid as _slab_grid
from tests.test_enhancement_slabs import _render
from tests.test_measure_shapes import grid, voxel_centres_lps

SPACING = (0.7, 0.7, 2.5)
CENTRE = np.array([40.0, 20.0, -60.0])
ZONE_R = 15.0  # 3 cm ablation zone
NOISE_HU = 12.0


@pytest.fixture(scope="module")
def geometry() -> tuple[Volume, np.ndarray, np.ndarray]:
    g = grid(CENTRE, ZONE_R + 7, SPACING, offset_vox=(0.1, 0.2, 0.3))
    pts = voxel_centres_lps(g)
    return g, pts, np.linalg.norm(pts - CENTRE, axis=1)


def _ct(g: Volume, delta_hu: np.ndarray, seed: int, noise: float = NOISE_HU,
        modality: str = "CT") -> tuple[Volume, Volume]:
    rng = np.random.default_rng(seed)
    shape = g.array.shape
    pre = 30.0 + rng.normal(0.0, noise, shape)
    post = 30.0 + delta_hu.reshape(shape) + rng.normal(0.0, noise, shape)
    return (g.with_array(np.round(pre).astype(np.int16), modality=modality),
            g.with_array(np.round(post).astype(np.int16), modality=modality))


def _mask(g: Volume, inside: np.ndarray) -> Volume:
    return g.with_array(inside.reshape(g.array.shape))


# ----------------------------------------------------------------------------- CT ΔHU


@pytest.mark.parametrize(
    ("delta", "expected"),
    [(35.0, EnhancementClass.YES), (14.0, EnhancementClass.EQUIVOCAL), (3.0, EnhancementClass.NO)],
)
def test_ct_enhancement_classes(geometry, delta: float, expected: EnhancementClass) -> None:
    """Uniform ΔHU in a 10 mm-radius lesion: the median over ~2400 eroded voxels has
    σ ≈ 1.25·17/√2400 ≈ 0.45 HU; tolerance 2 HU (4σ)."""
    g, _pts, r = geometry
    lesion = r <= 10.0
    pre, post = _ct(g, np.where(lesion, delta, 0.0), seed=int(delta))
    res = ct_enhancement(pre, post, _mask(g, lesion))
    assert res.delta_hu == pytest.approx(delta, abs=2.0)
    assert res.classification == expected
    assert res.classification == expected.value  # registry strings
    assert res.pre_hu == pytest.approx(30.0, abs=2.0)
    assert res.n_voxels > 1000


def test_erosion_removes_the_partial_volume_edge(geometry) -> None:
    """A 0.7 mm bright edge (+200 HU) around a non-enhancing core: with the default 1.5 mm
    erosion the edge is excluded (ΔHU ≈ 0, 'no'); without erosion the mean is pulled up."""
    g, _pts, r = geometry
    lesion = r <= 10.0
    edge = lesion & (r > 9.3)
    pre, post = _ct(g, np.where(edge, 200.0, 0.0), seed=5, noise=0.0)
    eroded = ct_enhancement(pre, post, _mask(g, lesion))
    assert eroded.delta_hu == 0.0 and eroded.mean_delta_hu == 0.0
    assert eroded.classification == EnhancementClass.NO
    raw = ct_enhancement(pre, post, _mask(g, lesion), erode_mm=0.0)
    assert raw.mean_delta_hu > 10.0
    assert raw.n_voxels > eroded.n_voxels


def test_metal_and_calcification_are_excluded(geometry) -> None:
    """Probe metal (post 3000 HU) and a calcification (pre 600 HU, post 900) inside a
    non-enhancing lesion are excluded and counted; ΔHU stays 0 (noise-free)."""
    g, pts, r = geometry
    lesion = r <= 10.0
    pre, post = _ct(g, np.zeros(len(r)), seed=6, noise=0.0)
    pre_a, post_a = pre.array.copy(), post.array.copy()
    metal = (np.abs(pts[:, 0] - CENTRE[0]) < 1.0).reshape(g.array.shape) & _mask(g, lesion).array
    calc = (np.linalg.norm(pts - CENTRE - [0, 5, 0], axis=1) < 3).reshape(g.array.shape)
    post_a[metal] = 3000
    pre_a[calc], post_a[calc] = 600, 900
    res = ct_enhancement(pre.with_array(pre_a), post.with_array(post_a), _mask(g, lesion))
    assert res.delta_hu == 0.0 and res.mean_delta_hu == 0.0
    assert res.n_excluded > 0


def test_ct_not_assessable_and_errors(geometry) -> None:
    g, _pts, r = geometry
    tiny = r <= 1.0  # nothing left after a 1.5 mm erosion
    pre, post = _ct(g, np.zeros(len(r)), seed=7)
    res = ct_enhancement(pre, post, _mask(g, tiny))
    assert res.classification == EnhancementClass.NOT_ASSESSABLE and res.delta_hu is None
    mr_pre, mr_post = _ct(g, np.zeros(len(r)), seed=7, modality="MR")
    with pytest.raises(ModalityError, match="MR"):
        ct_enhancement(mr_pre, mr_post, _mask(g, r <= 10))
    with pytest.raises(ModalityError):
        mean_attenuation_hu(mr_pre, _mask(g, r <= 10))
    other = Volume(post.array, post.affine_lps * np.diag([1.0, 1.0, 1.1, 1.0]), modality="CT")
    with pytest.raises(GeometryError, match="post_hu is not on the grid of mask"):
        ct_enhancement(pre, other, _mask(g, r <= 10))


def test_mean_attenuation_hu_erodes_in_mm(geometry) -> None:
    """45 HU core, 300 HU outer 1 mm: eroding 1.5 mm leaves exactly 45 HU; 0 mm does not."""
    g, _pts, r = geometry
    lesion = r <= 10.0
    img = g.with_array(np.where(r > 9.0, 300, 45).reshape(g.array.shape).astype(np.int16),
                       modality="CT")
    assert mean_attenuation_hu(img, _mask(g, lesion), erode_mm=1.5) == 45.0
    assert mean_attenuation_hu(img, _mask(g, lesion), erode_mm=0.0) > 60.0
    with pytest.raises(ValueError, match="empty after erosion"):
        mean_attenuation_hu(img, _mask(g, r <= 1.0), erode_mm=1.5)


# ----------------------------------------------------------------------------- MR


@pytest.mark.parametrize(("post_au", "expected"), [(240.0, "yes"), (220.0, "no")])
def test_mr_percent_enhancement(geometry, post_au: float, expected: str) -> None:
    """Pre 200 AU, post 240 (+20 %) or 220 (+10 %), noise 5 AU: percent within 1 point."""
    g, _pts, r = geometry
    lesion = r <= 10.0
    rng = np.random.default_rng(11)
    pre = g.with_array(200 + rng.normal(0, 5, g.array.shape), modality="MR")
    post = g.with_array(np.where(lesion, post_au, 200.0).reshape(g.array.shape)
                        + rng.normal(0, 5, g.array.shape), modality="MR")
    res = mr_enhancement(pre, post, _mask(g, lesion))
    assert res.enhancement_pct == pytest.approx(100 * (post_au - 200) / 200, abs=1.0)
    assert res.classification == expected
    assert res.subtraction_median == pytest.approx(post_au - 200, abs=2.0)
    sub = subtraction_image(pre, post)
    assert float(np.median(sub.array[_mask(g, lesion).array])) == pytest.approx(
        post_au - 200, abs=2.0)
    with pytest.raises(ModalityError, match="CT"):
        mr_enhancement(pre.with_array(pre.array, modality="CT"), post, _mask(g, lesion))


def test_mr_with_non_positive_baseline_is_not_assessable(geometry) -> None:
    g, _pts, r = geometry
    zero = g.with_array(np.zeros(g.array.shape), modality="MR")
    res = mr_enhancement(zero, zero, _mask(g, r <= 10.0))
    assert res.classification == EnhancementClass.NOT_ASSESSABLE
    assert res.enhancement_pct is None


# ----------------------------------------------------------------------------- components


@pytest.mark.parametrize("threshold_hu", [20.0, 10.0])
def test_clean_zone_with_noise_has_no_component(geometry, threshold_hu: float) -> None:
    """σ = 12 HU noise, no enhancement: after 1 mm smoothing ΔHU noise σ ≈ 3–4 HU; at the
    20 HU threshold (> 5σ) and the 10 HU equivocal one (≈ 3σ, isolated exceedances far
    below the 30 mm³ minimum) no component anywhere in the zone or shell."""
    g, _pts, r = geometry
    pre, post = _ct(g, np.zeros(len(r)), seed=21)
    zone = _mask(g, r <= ZONE_R)
    assert enhancing_components(pre, post, zone, threshold_hu=threshold_hu) == []


def test_one_centimetre_nodule_is_found(geometry) -> None:
    """A 1 cm (r = 5 mm) +60 HU nodule inside a 3 cm dead zone: found once, nodular, 3-D
    diameter 10 mm within one voxel diagonal + smoothing widening (2.6 + 0.9 mm), centroid
    within 1 mm, volume 0.52 ml within 35 % (threshold at 1/3 of the step on a blurred
    5 mm sphere moves its surface out by ≈ 0.4 mm: +25 %)."""
    g, pts, r = geometry
    nod_c = CENTRE + np.array([7.0, 0.0, 0.0])
    nodule = np.linalg.norm(pts - nod_c, axis=1) <= 5.0
    pre, post = _ct(g, np.where(nodule, 60.0, 0.0), seed=22)
    comps = enhancing_components(pre, post, _mask(g, r <= ZONE_R))
    assert len(comps) == 1
    c = comps[0]
    assert c.shape == ComponentShape.NODULAR
    assert c.max_diameter_mm == pytest.approx(10.0, abs=np.linalg.norm(SPACING) + 0.9)
    assert np.linalg.norm(c.centroid_lps - nod_c) < 1.0
    assert c.volume_ml == pytest.approx(4 / 3 * np.pi * 125 / 1000, rel=0.35)
    assert 40.0 < c.mean_delta_hu < 65.0
    assert c.fraction_in_zone == 1.0 and not c.reaches_search_limit


def test_thin_complete_rim_is_rim_and_partial_thick_one_is_crescentic(geometry) -> None:
    """2 mm +60 HU rim just inside the zone edge → 'rim' (thickness ≈ 2 mm, ≤ 3 mm; covers
    the whole edge). A 5 mm thick band over a quarter of the edge → 'crescentic'."""
    g, pts, r = geometry
    zone = _mask(g, r <= ZONE_R)
    rim = (r > ZONE_R - 2.0) & (r <= ZONE_R)
    pre, post = _ct(g, np.where(rim, 60.0, 0.0), seed=23)
    comps = enhancing_components(pre, post, zone)
    assert len(comps) == 1
    assert comps[0].shape == ComponentShape.RIM
    assert comps[0].thickness_mm == pytest.approx(2.0, abs=1.0)
    assert comps[0].edge_coverage > 0.9 and comps[0].touches_zone_edge

    band = (r > ZONE_R - 5.0) & (r <= ZONE_R) & (pts[:, 0] - CENTRE[0] > 8.0)
    pre, post = _ct(g, np.where(band, 60.0, 0.0), seed=24)
    comps = enhancing_components(pre, post, zone)
    assert [c.shape for c in comps] == [ComponentShape.CRESCENTIC]
    assert comps[0].edge_coverage < 0.5


def test_enhancing_surroundings_are_flagged_as_beyond_the_search_shell(geometry) -> None:
    """Normal parenchyma (+100 HU) all around the zone beyond 1 mm: the shell picks it up,
    but the component continues beyond the shell and lies outside the zone."""
    g, _pts, r = geometry
    pre, post = _ct(g, np.where(r > ZONE_R + 1.0, 100.0, 0.0), seed=25)
    comps = enhancing_components(pre, post, _mask(g, r <= ZONE_R))
    assert len(comps) == 1
    assert comps[0].reaches_search_limit
    assert comps[0].fraction_in_zone < 0.1


def test_components_refuse_mr(geometry) -> None:
    g, _pts, r = geometry
    pre, post = _ct(g, np.zeros(len(r)), seed=26, modality="MR")
    with pytest.raises(ModalityError):
        enhancing_components(pre, post, _mask(g, r <= ZONE_R))


@pytest.mark.parametrize(
    ("delta", "expected"),
    [(20, "yes"), (19, "equivocal"), (10, "equivocal"), (9, "no"), (-5, "no")],
)
def test_ct_threshold_boundaries_are_inclusive(geometry, delta: int, expected: str) -> None:
    """Noise-free ΔHU exactly at the thresholds: ≥ 20 enhancing, 10–19 equivocal, < 10 no."""
    g, _pts, r = geometry
    lesion = r <= 6.0
    pre, post = _ct(g, np.where(lesion, float(delta), 0.0), seed=0, noise=0.0)
    res = ct_enhancement(pre, post, _mask(g, lesion))
    assert res.delta_hu == float(delta)
    assert res.classification == expected


def _mr_dead_zone_on_thick_slabs(centre_dz_mm: float) -> tuple[Volume, Volume, Volume]:
    """Pre, post and mask of a 10 mm-radius dead zone (T1 fat-sat 520 → 525 AU, +1 %) in
    fat (60 → 64) on 1.25 × 1.25 × 5 mm slabs (the slab tests' box-filtered rendering),
    the slice grid ``centre_dz_mm`` off the zone's centre. The pre-contrast anatomy lies
    2.5 mm along the slices away and is moved back by linear interpolation between the
    slabs, as the phase alignment does. Mask: voxel centres inside the zone."""
    g = _slab_grid((1.25, 1.25, 5.0), 25.0, z_offset_mm=centre_dz_mm)

    def tissue(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inside = np.linalg.norm(p - SLAB_CENTRE, axis=1) <= 10.0
        return np.where(inside, 520.0, 60.0), np.where(inside, 525.0, 64.0)

    post = np.asarray(_render(g, tissue, 1, sub=(2, 2, 8)).array, np.float64)
    moved = np.asarray(_render(g, tissue, 0, shift_mm=(0.0, 0.0, 2.5), sub=(2, 2, 8)).array,
                       np.float64)
    pre = 0.5 * moved + 0.5 * np.concatenate([moved[1:], moved[-1:]])
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.array.shape), indexing="ij")
    centres = g.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    inside = (np.linalg.norm(centres - SLAB_CENTRE, axis=1) <= 10.0).reshape(g.array.shape)
    rng = np.random.default_rng(3)

    def mr(arr: np.ndarray) -> Volume:
        return g.with_array((arr + rng.normal(0, 8, arr.shape)).astype(np.float32),
                            modality="MR")

    return mr(pre), mr(post), g.with_array(inside.astype(np.uint8), modality="MR")


@pytest.mark.parametrize("centre_dz_mm", [0.0, 1.5, 2.5])
def test_mr_enhancement_leaves_the_outer_slabs_out(centre_dz_mm: float) -> None:
    """Its outer slabs mix zone and fat differently in the two phases: read over all slabs
    the dead zone enhanced by +2.9 to +3.9 % (a 12-month zone of seed 47 read +18 %, "yes");
    between the outer slabs, within 1 point of +1 %."""
    pre, post, mask = _mr_dead_zone_on_thick_slabs(centre_dz_mm)
    res = mr_enhancement(pre, post, mask)
    # noise 8 AU on ~520 (1.5 % a voxel), median over > 100 voxels: ~0.2 points; the
    # rest of the 1 point is the interpolated slabs' residual mixture
    assert res.enhancement_pct == pytest.approx(100.0 * (525.0 / 520.0 - 1.0), abs=1.0)
    assert res.classification == EnhancementClass.NO


def _mr_zone_in_fat(zone_post: float, post_gain: float, fat: tuple[float, float] = (60.0, 64.0)
                    ) -> tuple[Volume, Volume, Volume]:
    """Pre, post and mask (MR, 1.4 × 1.4 × 5 mm) of a 10 mm zone (520 AU pre-contrast,
    ``zone_post`` after) in fat (``fat``: pre, post; fat-suppressed by default) beside a
    kidney slab (420 → 950) 14 mm from its centre; the post-contrast series' receive
    sensitivity is ``post_gain`` × the pre-contrast one's, varying ±10 % across the field
    (a coil's smooth profile); Rician noise σ 10 AU."""
    g = grid(CENTRE, 40.0, (1.4, 1.4, 5.0), offset_vox=(0.2, 0.1, 0.3))
    pts = voxel_centres_lps(g)
    r = np.linalg.norm(pts - CENTRE, axis=1)
    kidney = pts[:, 0] - CENTRE[0] > 14.0
    zone = r <= 10.0
    pre = np.where(kidney, 420.0, np.where(zone, 520.0, fat[0]))
    post = np.where(kidney, 950.0, np.where(zone, zone_post, fat[1]))
    post = post * post_gain * (1.0 + 0.1 * (pts[:, 1] - CENTRE[1]) / 40.0)
    rng = np.random.default_rng(5)

    def rician(values: np.ndarray) -> Volume:
        noisy = np.hypot(values + rng.normal(0, 10, values.shape), rng.normal(0, 10, values.shape))
        return g.with_array(noisy.reshape(g.array.shape).astype(np.float32), modality="MR")

    mask = g.with_array(zone.reshape(g.array.shape).astype(np.uint8), modality="MR")
    return rician(pre), rician(post), mask


def test_mr_percent_is_read_against_the_fat_when_the_series_sensitivities_differ() -> None:
    """Held-out seed 207's MR 12-month zone (+1 % dead tissue) read +24 %, "yes": the
    post-contrast series' receive sensitivity was a fifth higher there (the fat around it
    rose ×1.27). Against the fat the zone reads (525/520)/(64/60) − 1 = −5.3 % (the
    phantom's fat-suppressed fat itself rises 6.7 %), "no"; raw, +26 %, "yes"."""
    pre, post, mask = _mr_zone_in_fat(525.0, post_gain=1.25)
    ratio = mr_fat_signal_ratio(pre, post, mask)
    assert ratio is not None
    # Rician noise lifts a 60 AU median by ~1.5 %, alike in both phases
    assert ratio == pytest.approx(1.25 * 64.0 / 60.0, rel=0.03)
    raw = mr_enhancement(pre, post, mask)
    assert raw.classification == EnhancementClass.YES  # the reading without the reference
    res = mr_enhancement(pre, post, mask, reference_ratio=ratio)
    # the fat ratio reads within ~1 % (measured −0.7 %): about 1 point of the 95 %
    # left; the zone's noise ~0.2 (measured +0.3 points)
    assert res.enhancement_pct == pytest.approx(100.0 * (525.0 / 520.0 / (64.0 / 60.0) - 1.0),
                                                abs=2.0)
    assert res.classification == EnhancementClass.NO
    assert res.reference_ratio == ratio


def test_mr_enhancing_zone_stays_enhancing_against_the_fat() -> None:
    """An enhancing zone (+80 %) with the post-contrast sensitivity 0.8 times the
    pre-contrast one's: +44 % raw, +69 % against the fat; "yes" either way."""
    pre, post, mask = _mr_zone_in_fat(936.0, post_gain=0.8)
    ratio = mr_fat_signal_ratio(pre, post, mask)
    assert ratio is not None
    res = mr_enhancement(pre, post, mask, reference_ratio=ratio)
    # the fat ratio reads within ~1 % here (its Rician lift nearly cancels between the
    # phases; measured +0.5 %), 1 % of 169 is 1.7 points; the zone's own noise (σ 10 on
    # 936, median of 134 voxels) ~0.2: measured −1.4 points
    assert res.enhancement_pct == pytest.approx(100.0 * (1.8 / (64.0 / 60.0) - 1.0), abs=3.0)
    assert res.classification == EnhancementClass.YES


def test_mr_fat_reference_needs_dark_fat_and_coverage() -> None:
    """Without fat suppression (fat 600 AU, brighter than the zone) no reference is read;
    nor where the pre-contrast series does not cover the ring (NaN); a reference ratio
    that is not positive is refused."""
    pre, post, mask = _mr_zone_in_fat(525.0, post_gain=1.0, fat=(600.0, 640.0))
    assert mr_fat_signal_ratio(pre, post, mask) is None
    pre, post, mask = _mr_zone_in_fat(525.0, post_gain=1.0)
    r = np.asarray(pre.array, np.float32).copy()
    r[:, :, :] = np.where(np.asarray(mask.array, bool), r, np.nan)
    assert mr_fat_signal_ratio(pre.with_array(r), post, mask) is None
    # partly covered (the pre-contrast series ends halfway through the ring): read on
    # what it covers
    half = np.asarray(pre.array, np.float32).copy()
    half[: half.shape[0] // 3] = np.nan
    assert mr_fat_signal_ratio(pre.with_array(half), post, mask) == pytest.approx(
        64.0 / 60.0, rel=0.03)
    with pytest.raises(ValueError, match="positive"):
        mr_enhancement(pre, post, mask, reference_ratio=0.0)
    with pytest.raises(ModalityError):
        mr_fat_signal_ratio(pre.with_array(pre.array, modality="CT"), post, mask)
