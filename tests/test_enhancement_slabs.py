"""Zone enhancement measured on the unenhanced series' own thick slices, and the benign
peripheral rim, on analytic scenes rendered with partial volume (each voxel the mean of
its box: slice thickness along z, pixel in-plane).

Scene: a flattened dead zone (unenhanced 30 HU, +2 HU with contrast, as an ablation zone)
with fat (−100 HU, no enhancement) above it and enhancing parenchyma (30 → 170 HU)
below and around it; unenhanced series 5 mm slices, contrast series 1 mm slices.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from measurements import (
    EnhancementClass,
    ct_enhancement,
    ct_enhancement_at_pre_slabs,
    peripheral_rim,
)
from pipeline.image import Volume

CENTRE = np.array([10.0, -20.0, 50.0])
ZONE_AXES_MM = np.array([9.0, 9.0, 6.0])  # 1.8 cm wide, 1.2 cm high
ZONE_HU = (30.0, 32.0)
FAT_HU = (-100.0, -100.0)
PARENCHYMA_HU = (30.0, 170.0)


def _grid(spacing: tuple[float, float, float], half_mm: float, z_offset_mm: float = 0.0
          ) -> Volume:
    sp = np.asarray(spacing, float)
    n = np.ceil(2 * half_mm / sp).astype(int)
    origin = CENTRE - (n - 1) / 2.0 * sp + np.array([0.0, 0.0, z_offset_mm])
    return Volume.from_geometry(np.zeros((n[2], n[1], n[0]), np.float32), origin_lps=origin,
                                spacing_mm=sp, direction=np.eye(3), modality="CT")


def _render(g: Volume, tissue, phase: int, shift_mm=(0.0, 0.0, 0.0), sub=(3, 3, 5)
            ) -> Volume:
    """Box-filtered rendering: each voxel the mean of tissue() over its box; ``shift_mm``
    moves the anatomy (breathing between the phases)."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.array.shape), indexing="ij")
    centres = g.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    sp = g.spacing_mm
    total = np.zeros(len(centres))
    offsets = [np.linspace(-0.5, 0.5, 2 * s + 1)[1::2] * sp[a] for a, s in enumerate(sub)]
    for dx in offsets[0]:
        for dy in offsets[1]:
            for dz in offsets[2]:
                total += tissue(centres + np.array([dx, dy, dz]) - np.asarray(shift_mm))[phase]
    n_sub = int(np.prod(sub))
    return g.with_array((total / n_sub).reshape(g.array.shape).astype(np.float32))


def _zone_inside(p: npt.NDArray[np.float64]) -> npt.NDArray[np.bool_]:
    return np.sum(((p - CENTRE) / ZONE_AXES_MM) ** 2, axis=1) <= 1.0


def _scene(rim_hu: float = 0.0, fat_side: str = "above"):
    """tissue(points) → (unenhanced HU, contrast HU); fat above (z > centre + 1 mm; and
    2-3 mm beyond two sides), on
    one side (x > centre + 6 mm) or nowhere, parenchyma elsewhere, the zone inside; optional
    2 mm peripheral rim enhancing by ``rim_hu``."""
    def tissue(p: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
        if fat_side == "above":
            # and beyond two sides in-plane, so that the phases can be aligned in-plane
            # the interface oblique (as anatomy is) and fat also beyond two sides in-plane,
            # so that the phases can be aligned along every axis
            d = p - CENTRE
            fat = ((d[:, 2] + 0.4 * d[:, 1] > 1.0) | (d[:, 0] > 11.0) | (d[:, 1] < -12.0))
        elif fat_side == "side":
            fat = p[:, 0] > CENTRE[0] + 6.0
        else:
            fat = np.zeros(len(p), dtype=bool)
        pre = np.where(fat, FAT_HU[0], PARENCHYMA_HU[0])
        post = np.where(fat, FAT_HU[1], PARENCHYMA_HU[1])
        zone = _zone_inside(p)
        pre = np.where(zone, ZONE_HU[0], pre)
        post = np.where(zone, ZONE_HU[1], post)
        if rim_hu:
            inner = np.sum(((p - CENTRE) / (ZONE_AXES_MM - 2.0)) ** 2, axis=1) <= 1.0
            post = np.where(zone & ~inner, ZONE_HU[1] + rim_hu, post)
        return pre, post
    return tissue


def _zone_in_parenchyma(axes_mm, centre_dz_mm: float):
    """tissue(points) → (unenhanced HU, contrast HU): an ellipsoidal dead zone of semi-axes
    ``axes_mm`` (x, y, z), centred ``centre_dz_mm`` above CENTRE, inside enhancing
    parenchyma everywhere (an endophytic zone)."""
    axes = np.asarray(axes_mm, float)
    centre = CENTRE + np.array([0.0, 0.0, centre_dz_mm])

    def tissue(p: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
        zone = np.sum(((p - centre) / axes) ** 2, axis=1) <= 1.0
        return (np.where(zone, ZONE_HU[0], PARENCHYMA_HU[0]),
                np.where(zone, ZONE_HU[1], PARENCHYMA_HU[1]))
    return tissue


def _noisy_readings(post0: Volume, pre0: Volume, draws: int = 20) -> list[float]:
    """ΔHU of the zone segmented on the noise-free contrast image (voxels below the
    zone/parenchyma midpoint), read on the slabs over ``draws`` draws of scanner noise:
    SD 12 HU on the contrast series, 8 HU on the unenhanced one (fixed seed)."""
    segmented = np.asarray(post0.array) < 0.5 * (ZONE_HU[1] + PARENCHYMA_HU[1])
    rng = np.random.default_rng(7)
    readings = []
    for _ in range(draws):
        post = post0.with_array(np.asarray(post0.array)
                                + rng.normal(0, 12.0, post0.array.shape).astype(np.float32))
        pre = pre0.with_array(np.asarray(pre0.array)
                              + rng.normal(0, 8.0, pre0.array.shape).astype(np.float32))
        res = ct_enhancement_at_pre_slabs(pre, post, post.with_array(segmented, modality=""),
                                          refine_alignment=False, erode_mm=0.5)
        assert res.delta_hu is not None
        readings.append(res.delta_hu)
    return readings


@pytest.fixture(scope="module")
def phases() -> tuple[Volume, Volume, Volume]:
    tissue = _scene()
    post = _render(_grid((0.8, 0.8, 1.0), 26.0), tissue, 1, sub=(2, 2, 3))
    pre = _render(_grid((0.8, 0.8, 5.0), 28.0, z_offset_mm=1.3), tissue, 0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in post.array.shape), indexing="ij")
    centres = post.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    mask = post.with_array(_zone_inside(centres).reshape(post.array.shape), modality="")
    return pre, post, mask


def test_zone_read_on_the_thick_slices_has_no_fat_partial_volume(phases) -> None:
    """Resampled onto the thin contrast slices, the 5 mm unenhanced slabs lend fat from
    above the zone to its upper part (the dead zone reads several HU high: +8.5 here, 1.2
    cm high, equivocal on the real 1.5-2 cm zones seen); compared slab by slab, only slabs
    inside the zone are used and the zone reads its true +2 HU."""
    from segmentation import resample_to

    pre, post, mask = phases
    resampled = resample_to(pre, post, None)
    old = ct_enhancement(resampled, post, mask, erode_mm=1.5)
    assert old.delta_hu is not None and old.delta_hu > 6.0  # the bias being fixed
    new = ct_enhancement_at_pre_slabs(pre, post, mask, refine_alignment=False)
    assert new.delta_hu == pytest.approx(2.0, abs=1.0)
    assert new.classification is EnhancementClass.NO
    assert new.n_voxels >= 100


def test_phase_offset_refined_at_the_slab_resolution(phases) -> None:
    """The anatomy moved 3 mm along z between the phases (breathing): started from no
    offset, the mutual-information search finds it (within 0.6 mm) and the zone reads
    +2 HU."""
    _pre, post, mask = phases
    tissue = _scene()
    shifted = _render(_grid((0.8, 0.8, 5.0), 28.0, z_offset_mm=1.3), tissue, 0,
                      shift_mm=(0.0, 0.0, 3.0))
    found = ct_enhancement_at_pre_slabs(shifted, post, mask)
    assert found.offset_mm is not None
    np.testing.assert_allclose(found.offset_mm, [0.0, 0.0, 3.0], atol=0.6)
    assert found.delta_hu == pytest.approx(2.0, abs=2.0)


def test_zone_thinner_than_a_slab_is_not_assessable(phases) -> None:
    pre, post, mask = phases
    arr = np.asarray(mask.array).copy()
    centre_k = int(np.argwhere(arr).mean(axis=0)[0])
    arr[: centre_k - 1] = False
    arr[centre_k + 2 :] = False  # 3 mm of zone: no 5 mm slab fits
    res = ct_enhancement_at_pre_slabs(pre, post, mask.with_array(arr), refine_alignment=False)
    assert res.classification is EnhancementClass.NOT_ASSESSABLE
    assert res.delta_hu is None


# ------------------------------------------------------------------------ benign rim


def _rim_case(rim_hu: float, fat_side: str = "side") -> tuple[Volume, Volume, Volume]:
    tissue = _scene(rim_hu=rim_hu, fat_side=fat_side)
    g = _grid((0.7, 0.7, 2.5), 16.0)
    post = _render(g, tissue, 1)
    pre = _render(g, tissue, 0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.array.shape), indexing="ij")
    centres = g.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    mask = g.with_array(_zone_inside(centres).reshape(g.array.shape), modality="")
    return pre, post, mask


def test_rim_found_where_the_zone_borders_fat() -> None:
    pre, post, mask = _rim_case(rim_hu=30.0)
    rim = peripheral_rim(post, mask, pre)
    assert rim.present
    assert rim.excess_hu is not None and rim.excess_hu >= 15.0
    assert 0.1 < rim.fat_edge_fraction < 0.6


def test_parenchyma_partial_volume_is_not_a_rim() -> None:
    """Without a rim the zone's edge beside enhancing parenchyma reads enhancing by
    partial volume; only the fat-bordered edge is judged, and there the zone does not
    brighten towards its edge."""
    pre, post, mask = _rim_case(rim_hu=0.0)
    from scipy.ndimage import binary_erosion

    zone = np.asarray(mask.array)
    edge = zone & ~binary_erosion(zone)
    k, j, i = np.nonzero(edge)
    beside_parenchyma = mask.index_to_lps(np.stack([i, j, k], 1).astype(float))[:, 0] < (
        CENTRE[0] - 3.0)
    diff = np.asarray(post.array) - np.asarray(pre.array)
    # the band that fooled the old rim note: enhancing by partial volume
    assert np.median(diff[edge][beside_parenchyma]) > 10.0
    rim = peripheral_rim(post, mask, pre)
    assert not rim.present
    assert rim.excess_hu is not None and rim.excess_hu < 5.0


def test_no_fat_border_no_rim_judgement() -> None:
    """A zone wholly inside enhancing parenchyma: its edge cannot be told from partial
    volume, so no rim is claimed (even when there is one)."""
    pre, post, mask = _rim_case(rim_hu=30.0, fat_side="none")
    rim = peripheral_rim(post, mask, pre)
    assert not rim.present
    assert rim.excess_hu is None


@pytest.mark.parametrize(("axes_mm", "centre_dz_mm", "slab_mm", "contrast_slice_mm"), [
    ((5.0, 5.0, 4.5), 0.7, 3.0, 3.0),
    ((5.0, 5.0, 4.5), 1.5, 3.0, 3.0),
    ((6.0, 6.0, 4.5), 1.5, 3.0, 3.0),
    ((8.0, 8.0, 6.0), 0.0, 3.0, 3.0),
    ((4.0, 7.0, 3.5), 1.5, 3.0, 3.0),
    ((6.0, 6.0, 4.5), 1.5, 5.0, 1.0),
])
def test_small_zone_in_parenchyma_reads_its_own_enhancement(
        axes_mm, centre_dz_mm, slab_mm, contrast_slice_mm) -> None:
    """A zone of a few slices inside enhancing parenchyma (endophytic), segmented as the
    voxels reading closer to the zone than to the parenchyma: its first and last contrast
    slices and its outer pixel ring are partly parenchyma, whose +140 HU shows on the
    subtraction while it reads like the zone unenhanced. Measured on the whole slab these
    geometries read +9 to +30 HU (a dead zone called equivocal or enhancing); from the
    mask's interior they read the true +2."""
    tissue = _zone_in_parenchyma(axes_mm, centre_dz_mm)
    post = _render(_grid((0.8, 0.8, contrast_slice_mm), 14.0), tissue, 1, sub=(2, 2, 6))
    pre = _render(_grid((0.8, 0.8, slab_mm), 16.0), tissue, 0, sub=(2, 2, 6))
    segmented = np.asarray(post.array) < 0.5 * (ZONE_HU[1] + PARENCHYMA_HU[1])
    res = ct_enhancement_at_pre_slabs(pre, post, post.with_array(segmented, modality=""),
                                      refine_alignment=False, erode_mm=0.5)
    # noise-free: the interior reading is exact (+2.0 seen); 0.5 HU leaves room for the
    # box-sampled rendering only, far below the 8.7-30 HU bias being fixed
    assert res.delta_hu == pytest.approx(ZONE_HU[1] - ZONE_HU[0], abs=0.5)
    assert res.classification is EnhancementClass.NO


def test_small_zone_in_parenchyma_with_noise_is_not_called_enhancing() -> None:
    """The same 3-slice zone (3 mm slices, pole 1.5 mm off the slice centres) with
    scanner noise (SD 12 HU contrast, 8 HU on the thicker unenhanced slices): over 20
    noise draws it reads its true +2 on average (within 1.5 HU) and never reaches the
    equivocal level (the whole-slab reading averaged +15)."""
    tissue = _zone_in_parenchyma((6.0, 6.0, 4.5), 1.5)
    post0 = _render(_grid((0.8, 0.8, 3.0), 14.0), tissue, 1, sub=(2, 2, 6))
    pre0 = _render(_grid((0.8, 0.8, 3.0), 16.0), tissue, 0, sub=(2, 2, 6))
    readings = _noisy_readings(post0, pre0)
    # 20 readings of ~100 voxels each (median SE ~1.3 HU): their mean lies within 1.5 HU
    # of the truth unless biased; no single one may reach the equivocal level (10 HU)
    assert np.mean(readings) == pytest.approx(2.0, abs=1.5), readings
    assert max(readings) < 10.0, readings


@pytest.mark.parametrize("centre_dz_mm, pre_offset_mm", [
    (1.0, 0.0),  # three contrast slices
    (1.0, 1.4),
    (0.5, 0.7),  # two contrast slices: no slice between two others
])
def test_late_zone_on_other_grids_is_not_called_equivocal(centre_dz_mm,
                                                          pre_offset_mm) -> None:
    """A 9-month endophytic zone (0.42 ml, 11 × 8.6 × 8.4 mm) on 3 mm slices of both
    phases, whose pixels differ (0.75 and 0.81 mm) as two reconstructions' do (held-out
    seed 113's, read +18.5 HU, equivocal, for a true +2). Unenhanced voxels landing on
    the zone's outer pixel ring find only edge contrast voxels in their slab, partly
    parenchyma (+140 HU): such a slab has no interior sub-sample to be read on instead,
    and a fifth of the slabs read 40-80 HU. Noise-free the median ignores them; with
    scanner noise they lift it (20 draws averaged +4 to +12 HU, up to +14.5). A slab on
    the edge alone that reads brighter is not read; a zone on two contrast slices (no
    interior along the slices) takes its in-plane interior as the reference."""
    tissue = _zone_in_parenchyma((5.5, 4.3, 4.2), centre_dz_mm)
    post0 = _render(_grid((0.75, 0.75, 3.0), 14.0), tissue, 1, sub=(2, 2, 6))
    pre0 = _render(_grid((0.81, 0.81, 3.0), 16.0, z_offset_mm=pre_offset_mm), tissue, 0,
                   sub=(2, 2, 6))
    readings = _noisy_readings(post0, pre0)
    # the fixed readings average +2.6 to +4.0 (20 draws of ~70-130 voxels; the two-slice
    # zone keeps some z partial volume in its in-plane interior) and peak at +7.6; before,
    # +4.7 to +11.9 and +14.5: a mean within 2.5 HU of the truth and no single reading at
    # the equivocal level separate them
    assert np.mean(readings) == pytest.approx(2.0, abs=2.5), readings
    assert max(readings) < 10.0, readings


@pytest.mark.parametrize(("axes_mm", "expected_class"), [
    ((4.2, 3.5, 3.0), EnhancementClass.NOT_ASSESSABLE),
    ((4.5, 3.5, 3.4), EnhancementClass.NO),
])
def test_two_slice_zone_under_enhancing_parenchyma_is_an_upper_bound(
        axes_mm, expected_class) -> None:
    """A 12-month endophytic zone of 0.19-0.22 ml (held-out seed 163's read +22 HU for a
    true +2, and its lesion was called a local progression) on 3 mm slices of both
    phases, segmented on two contrast slices: no voxel lies between two others, and the
    parenchyma beyond its poles (+140 HU) is mixed into every contrast value. Noise-free
    the 6 mm tall zone reads +13.5 HU (was "equivocal"), the 6.8 mm one +2: a reading
    that can only be too high is an upper bound; under 10 HU it still says "no", above
    it the zone's own enhancement cannot be told and it is not assessable."""
    tissue = _zone_in_parenchyma(axes_mm, 0.0)
    post = _render(_grid((0.77, 0.77, 3.0), 14.0), tissue, 1, sub=(2, 2, 6))
    pre = _render(_grid((0.68, 0.68, 3.0), 16.0), tissue, 0, sub=(2, 2, 6))
    segmented = np.asarray(post.array) < 0.5 * (ZONE_HU[1] + PARENCHYMA_HU[1])
    assert segmented.any(axis=(1, 2)).sum() == 2
    res = ct_enhancement_at_pre_slabs(pre, post, post.with_array(segmented, modality=""),
                                      refine_alignment=False, erode_mm=0.5)
    assert res.upper_bound
    # a bound is never below the truth: 0.5 HU for the box-sampled rendering only (as the
    # noise-free interior readings above)
    assert res.delta_hu is not None and res.delta_hu >= ZONE_HU[1] - ZONE_HU[0] - 0.5
    assert res.classification is expected_class


def test_three_slice_zone_or_fat_beyond_the_poles_is_not_a_bound() -> None:
    """With a slice between two others the interior is read as before (no bound); a
    two-slice zone with fat, not enhancing tissue, beyond its poles is not bounded
    either: fat adds no enhancement."""
    tissue = _zone_in_parenchyma((4.5, 3.5, 3.4), 1.5)
    post = _render(_grid((0.77, 0.77, 3.0), 14.0), tissue, 1, sub=(2, 2, 6))
    pre = _render(_grid((0.68, 0.68, 3.0), 16.0, z_offset_mm=0.5), tissue, 0, sub=(2, 2, 6))
    segmented = np.asarray(post.array) < 0.5 * (ZONE_HU[1] + PARENCHYMA_HU[1])
    assert segmented.any(axis=(1, 2)).sum() == 3
    res = ct_enhancement_at_pre_slabs(pre, post, post.with_array(segmented, modality=""),
                                      refine_alignment=False, erode_mm=0.5)
    assert not res.upper_bound and res.classification is EnhancementClass.NO

    def in_fat(p: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
        pre_hu, post_hu = _zone_in_parenchyma((4.2, 3.5, 3.0), 0.0)(p)
        fat = np.abs(p[:, 2] - CENTRE[2]) > 2.5
        return np.where(fat, FAT_HU[0], pre_hu), np.where(fat, FAT_HU[1], post_hu)

    post = _render(_grid((0.77, 0.77, 3.0), 14.0), in_fat, 1, sub=(2, 2, 6))
    pre = _render(_grid((0.68, 0.68, 3.0), 16.0), in_fat, 0, sub=(2, 2, 6))
    segmented = ((np.asarray(post.array) < 0.5 * (ZONE_HU[1] + PARENCHYMA_HU[1]))
                 & (np.asarray(post.array) > 0.5 * (ZONE_HU[1] + FAT_HU[1])))
    assert segmented.any(axis=(1, 2)).sum() == 2
    res = ct_enhancement_at_pre_slabs(pre, post, post.with_array(segmented, modality=""),
                                      refine_alignment=False, erode_mm=0.5)
    assert not res.upper_bound
