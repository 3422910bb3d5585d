"""Small ablation zones keep their outline through the band opening: the skin a 3.5 mm
ball shaves off a rasterised 0.5-1.4 ml outline is given back, a band is not. Fast
(about 5 s)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.image import Volume
from segmentation import segment_ablation_zone
from segmentation._common import dice, distance_from_index_mm
from segmentation.ablation_zone import _without_bands
from tests.test_regularised_small import _SP_MM, _ellipsoid
from tests.test_segment_common import _partial_volume

_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndi.generate_binary_structure(2, 1)
_VOXEL_MM3 = float(np.prod(_SP_MM))


@pytest.mark.parametrize("semi_mm", [(6.5, 5.0, 5.0), (5.0, 5.0, 5.0), (8.0, 7.0, 6.0)])
def test_band_opening_keeps_a_small_ellipsoid(semi_mm) -> None:
    """0.5-1.4 ml voxelised ellipsoids on 2 mm slices come through the band opening whole
    (within 0.5 %); the opening alone took 6 % of the 0.5-0.7 ml ones, 2 % at 1.4 ml."""
    rng = np.random.default_rng(7)
    for _ in range(3):
        mask, _ = _ellipsoid(semi_mm, rng.uniform(-0.5, 0.5, 3))
        kept = _without_bands(mask, _SP_MM, _IN_PLANE, _VOXEL_MM3, np.zeros_like(mask))
        assert not (kept & ~mask).any()
        # 0 voxels lost in these nine; 0.5 % (2-5 voxels) leaves room for a corner voxel
        # the opening takes beyond the one-voxel reach, a tenth of what it took before
        assert kept.sum() >= 0.995 * mask.sum()


def _with_band(semi_mm, pad_i: int = 10):
    """(ellipsoid mask, band mask): a voxelised ellipsoid of ``semi_mm`` and a band two
    pixels (1.6 mm) wide running 8 pixels (6.3 mm) out from its side along i on its two
    middle slices, the grid padded by ``pad_i`` columns along i."""
    mask, _ = _ellipsoid(semi_mm, (0.0, 0.0, 0.0))
    mask = np.pad(mask, ((0, 0), (0, 0), (0, pad_i)))  # room for the band along i
    k0, j0, i0 = (np.asarray(mask.shape) // 2 - (0, 0, pad_i // 2)).tolist()
    edge_i = i0 + int(np.flatnonzero(mask[k0, j0, i0:] == 0)[0])  # first outside column
    band = np.zeros_like(mask)
    band[k0 - 1 : k0 + 1, j0 : j0 + 2, edge_i : edge_i + 8] = True
    return mask, band


@pytest.mark.parametrize("semi_mm", [(8.0, 7.0, 6.0), (6.5, 5.0, 5.0)], ids=["1.4ml", "0.7ml"])
def test_band_opening_still_takes_a_band_off_a_small_zone(semi_mm) -> None:
    """A 1.4 or 0.7 ml ellipsoid with a band running 6 mm out from its side (a
    partial-volume line the zone window followed): the band goes whole, base included,
    and the ellipsoid stays whole (the 1.4 ml one lost 2 % before). On the 0.7 ml zone
    the opening takes over a fifth (22 %), too much for its share to be trusted: the band
    stayed until what the opening took was also judged by its reach (_BAND_REACH_MM)."""
    mask, band = _with_band(semi_mm)
    kept = _without_bands(mask | band, _SP_MM, _IN_PLANE, _VOXEL_MM3, np.zeros_like(mask))
    assert not (kept & band).any()
    # 2 voxels lost of 1130 (1.4 ml) and of 550 (0.7 ml), next to the band's base, which
    # goes whole; 1 % is half of what the opening took from the 1.4 ml one before
    assert kept.sum() >= 0.99 * mask.sum()


@pytest.mark.parametrize(("radius_mm", "band_stays"), [(3.5, True), (2.0, False)],
                         ids=["tissue", "speck"])
def test_band_opening_keeps_a_far_part_beside_enhancing_tissue(radius_mm: float,
                                                                band_stays: bool) -> None:
    """The 0.7 ml ellipsoid and its band (the opening's share untrusted) with enhancing
    tissue touching the band's far end: a 3.5 mm ball (0.18 ml: a nodule, the kidney) keeps
    the band, which may be the zone's own crescent or thin end beside it (without this,
    three progression zones' crescents around their nodules lost 14-25 % of their volume
    on the screened archives); a 2 mm speck (0.03 ml, like the blobs the subtraction's
    noise leaves after the 1.5 mm opening: under the 0.1 ml a body needs) does not."""
    mask, band = _with_band((6.5, 5.0, 5.0), pad_i=24)
    kb, jb, ib = np.argwhere(band).max(axis=0)  # the band's far end
    centre_kji = (kb, jb, ib + radius_mm / _SP_MM[0])  # the ball reaches the band's end
    enhancing = ((distance_from_index_mm(mask.shape, centre_kji, np.asarray(_SP_MM))
                  <= radius_mm) & ~(mask | band))
    kept = _without_bands(mask | band, _SP_MM, _IN_PLANE, _VOXEL_MM3, enhancing)
    assert (kept & band).any() == band_stays
    assert kept.sum() >= 0.99 * mask.sum()


def test_small_zone_in_parenchyma_keeps_its_volume() -> None:
    """A 0.7 ml ellipsoidal zone (semi-axes 6.5 × 5 × 5 mm, 35 HU) inside a kidney (175 HU
    after contrast, 35 before) in fat, on 0.79 mm pixels and 2 mm slices, box-filter
    partial volume and 10 HU noise: the zone reads within 5 % of its volume and Dice
    ≥ 0.93 (seed 187's endophytic 9-month zone, this size and place, read -11 % before
    the skin was given back and the regularisation's distance map was taken from the
    surface)."""
    spacing = np.array([0.79, 0.79, 2.0])
    shape = (30, 80, 80)
    centre = np.array([31.9, 31.2, 29.3])  # mm, off the voxel grid
    semi = np.array([6.5, 5.0, 5.0])
    kidney_centre = centre + np.array([4.0, 0.0, 0.0])

    def zone(x, y, z):
        return (((x - centre[0]) / semi[0]) ** 2 + ((y - centre[1]) / semi[1]) ** 2
                + ((z - centre[2]) / semi[2]) ** 2) <= 1.0

    def image(kidney_hu):
        def tissue(x, y, z):
            kidney = ((x - kidney_centre[0]) ** 2 + (y - kidney_centre[1]) ** 2
                      + (z - kidney_centre[2]) ** 2) <= 20.0**2
            return np.where(zone(x, y, z), 35.0, np.where(kidney, kidney_hu, -100.0))
        return _partial_volume(tissue, shape, spacing, (3, 3, 5))

    frac = _partial_volume(lambda x, y, z: zone(x, y, z).astype(float), shape, spacing,
                           (3, 3, 5))
    rng = np.random.default_rng(3)

    def volume(arr):
        arr = arr + rng.normal(0.0, 10.0, shape)
        return Volume.from_geometry(arr.astype(np.float32), origin_lps=(0.0, 0.0, 0.0),
                                    spacing_mm=tuple(spacing), modality="CT")

    res = segment_ablation_zone(volume(image(175.0)), volume(image(35.0)), centre,
                                modality="CT", half_size_mm=30.0)
    got = res.zone_mask.array.astype(bool)
    # −4.3 % and Dice 0.980 seen: the border placed at the half level in 10 HU noise on
    # 0.79 mm pixels; 5 % is the target's half, and well clear of the −12 % before
    assert abs(got.sum() / frac.sum() - 1.0) < 0.05
    assert dice(got, frac >= 0.5) >= 0.93
    assert res.nodule_volumes_ml == []
