"""A zone of 0.4 ml inside enhancing parenchyma on 3 mm slices: its level is read without
the noise its few calm voxels were chosen for, and it keeps its volume. Fast (about 5 s)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pipeline.image import Volume
from segmentation import segment_ablation_zone
from segmentation._common import dice
from tests.test_segment_common import _partial_volume

_SPACING_MM = np.array([0.84, 0.84, 3.0])
_SHAPE = (16, 70, 70)
_CENTRE_MM = np.array([29.3, 28.9, 22.6])  # off the voxel grid
_SEMI_MM = np.array([5.5, 4.4, 4.0])


def _inside_zone(x, y, z):
    return (((x - _CENTRE_MM[0]) / _SEMI_MM[0]) ** 2 + ((y - _CENTRE_MM[1]) / _SEMI_MM[1]) ** 2
            + ((z - _CENTRE_MM[2]) / _SEMI_MM[2]) ** 2) <= 1.0


def _image(zone_hu: float, kidney_hu: float) -> np.ndarray:
    """Box-filter partial volume of the zone in a kidney (semi-axes 18, 18, 27 mm, its
    centre 3 mm to the side) in fat (-100 HU)."""
    kidney_centre = _CENTRE_MM + np.array([3.0, 0.0, 0.0])

    def tissue(x, y, z):
        kidney = ((x - kidney_centre[0]) ** 2 + (y - kidney_centre[1]) ** 2
                  + ((z - kidney_centre[2]) / 1.5) ** 2) <= 18.0**2
        return np.where(_inside_zone(x, y, z), zone_hu, np.where(kidney, kidney_hu, -100.0))

    return _partial_volume(tissue, _SHAPE, _SPACING_MM, (3, 3, 5))


def _ct(array: np.ndarray, rng: np.random.Generator, sd_hu: float) -> Volume:
    """CT noise as the phantom draws it: correlated in-plane (a Gaussian of 1.1 pixels),
    independent between slices. Drawn here per slice rather than with
    :func:`fixtures.render.add_ct_noise` (a bank of 12 slices, rolled and flipped): with
    that bank none of the twelve draws left the zone so few calm voxels (the old code's
    worst read −8.4 %), and the test would not see the failure it guards against."""
    noise = ndi.gaussian_filter(rng.normal(0.0, 1.0, _SHAPE), (0.0, 1.1, 1.1))
    noise *= sd_hu / noise.std()
    return Volume.from_geometry((array + noise).astype(np.float32), origin_lps=(0.0, 0.0, 0.0),
                                spacing_mm=tuple(_SPACING_MM), modality="CT")


def test_small_zone_level_and_volume_in_correlated_noise() -> None:
    """Seed 191's endophytic 9-month zone, this size and place: 0.40 ml (32 HU after
    contrast, 30 before) inside the kidney (170 HU, 33 before), 0.84 mm pixels, 3 mm
    slices, 14 HU correlated noise on the post image and 10 HU on the pre image, twelve
    draws. The subtraction, blurred over 1.5 mm, reads 40-50 HU on so small a zone: only
    its darkest few dozen voxels are calm, and their distance-weighted histogram peak read
    16 HU in one draw; the border placed against it cut the partial-volume rim (−14 % of
    volume). The level is now the median of the least-enhancing tenth: every draw within
    10 % of the partial-volume volume."""
    frac = _partial_volume(lambda x, y, z: _inside_zone(x, y, z).astype(float), _SHAPE,
                           _SPACING_MM, (3, 3, 5))
    post_hu, pre_hu = _image(32.0, 170.0), _image(30.0, 33.0)
    errors_pct = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        res = segment_ablation_zone(_ct(post_hu, rng, 14.0), _ct(pre_hu, rng, 10.0),
                                    _CENTRE_MM, modality="CT", half_size_mm=25.0)
        got = res.zone_mask.array.astype(bool)
        errors_pct.append(100.0 * (got.sum() / frac.sum() - 1.0))
        # Dice 0.950-0.984 seen (0.937 in the draw that failed before)
        assert dice(got, frac >= 0.5) >= 0.94, seed
        assert res.nodule_volumes_ml == [], seed
    # −7.9 % at worst seen (−14.2 % before: draw 5); 10 % is the target
    assert min(errors_pct) > -10.0, errors_pct
    assert max(errors_pct) < 10.0, errors_pct
    # mean −2.8 % seen (−3.6 % before)
    assert abs(float(np.mean(errors_pct))) < 5.0, errors_pct
