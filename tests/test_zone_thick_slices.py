"""Small late ablation zones on thick slices, where a few voxels of border decide the
volume: analytic scenes with the phantom's box-filter partial volume (sub-sampled), fast.

* A zone spanning three 5 mm MR slices has no shell 1.5-3 mm deep inside it: the border
  refinement used to give up and keep the zone window's core (half the zone).
* The level of the tissue outside the border is read on the unsmoothed image: smoothed,
  the parenchyma next to a small zone reads 15-25 HU darker (the zone blurred into it), the
  half level moved into the zone and its pole slices were cut (-4 to -13 % of volume).
* The per-voxel border leaves one-voxel bumps and dents (noise) that lengthen calipers:
  the zone is regularised as the tumour is.
* A small zone inside the kidney on 2.5 mm slices: its partial-volume voxels read above the
  zone window, the core lies far inside the border, and two more refinement passes follow
  when the first two grew it by over 30 % (phantom zones: tests/test_segment_phantom.py).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import ndimage as ndi

from measurements import volume_ml
from pipeline.image import Volume
from segmentation import segment_ablation_zone
from segmentation._common import dice
from tests.test_segment_common import _partial_volume


def _scene(semi_mm: tuple[float, float, float], spacing_mm: tuple[float, float, float],
           shape_kji: tuple[int, int, int], modality: str, tissue_beyond_x_mm: float,
           seed: int, z_offset_mm: float = 0.0):
    """An ellipsoidal zone (semi-axes ``semi_mm``) at the volume's centre, shifted by
    ``z_offset_mm`` along the slices; on one side of the plane ``tissue_beyond_x_mm`` from
    its centre fat, on the other kidney. CT: HU (fat −100, kidney 33 → 170, zone 30 → 32);
    MR: T1 units (fat 60 → 64, kidney 420 → 950, zone 520 → 525). Partial volume by
    sub-sampling (2 or 3 in-plane × 8 or 10 along the slices), Gaussian noise.
    Returns (pre, post, truth by voxel centre, centre LPS)."""
    centre = np.array(shape_kji[::-1], float) * np.array(spacing_mm) / 2
    centre[2] += z_offset_mm
    k, j, i = np.mgrid[: shape_kji[0], : shape_kji[1], : shape_kji[2]].astype(np.float32)

    def inside(x, y, z):
        return (((x - centre[0]) / semi_mm[0]) ** 2 + ((y - centre[1]) / semi_mm[1]) ** 2
                + ((z - centre[2]) / semi_mm[2]) ** 2) <= 1.0

    n_in, n_along = (3, 10) if modality == "MR" else (2, 8)
    samples = (n_in, n_in, n_along)
    zone_f = _partial_volume(lambda x, y, z: inside(x, y, z).astype(float), shape_kji,
                             spacing_mm, samples)
    kidney_f = _partial_volume(
        lambda x, y, z: ((x > centre[0] + tissue_beyond_x_mm) & ~inside(x, y, z)).astype(float),
        shape_kji, spacing_mm, samples)
    fat_f = 1.0 - zone_f - kidney_f
    truth = inside(i * spacing_mm[0], j * spacing_mm[1], k * spacing_mm[2])
    rng = np.random.default_rng(seed)
    if modality == "MR":
        levels, sd = ((60.0, 420.0, 520.0), (64.0, 950.0, 525.0)), 12.0
    else:
        levels, sd = ((-100.0, 33.0, 30.0), (-100.0, 170.0, 32.0)), 10.0
    pre, post = (
        Volume.from_geometry(
            (fat_f * fat + kidney_f * kidney + zone_f * zone
             + rng.normal(0.0, sd, shape_kji)).astype(np.float32),
            origin_lps=(0, 0, 0), spacing_mm=spacing_mm, modality=modality)
        for fat, kidney, zone in levels)
    return pre, post, truth, centre


@pytest.mark.parametrize(("semi_mm", "kidney_beyond_mm", "min_dice"),
                         [((6.0, 6.0, 6.0), 2.0, 0.85), ((7.0, 7.0, 6.0), 4.0, 0.965)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_zone_on_three_5mm_mr_slices_is_refined(semi_mm, kidney_beyond_mm, min_dice,
                                                   seed) -> None:
    """1.5 mm pixels, 5 mm slices, the zone centred on a slice (held-out seed 109's
    12-month MR zone: Dice 0.52, volume −66 %). With the window's core kept: Dice
    0.64-0.69 (6 mm zone) and 0.91-0.94 (7 mm); refined: 0.90-0.92 and 0.97-1.00. The
    bars leave room for the pole slices, each a third of such a zone, where the partial
    volume with fat and kidney decides a few voxels."""
    pre, post, truth, centre = _scene(semi_mm, (1.5, 1.5, 5.0), (9, 50, 50), "MR",
                                      kidney_beyond_mm, seed=seed)
    res = segment_ablation_zone(post, pre, centre, modality="MR", half_size_mm=35.0)
    assert dice(res.zone_mask.array, truth) >= min_dice


def test_a_small_ct_zone_keeps_its_pole_slices() -> None:
    """A 7.5 × 7.5 × 6.5 mm zone (1.5 ml, a 12-month zone) on 0.76 × 2.5 mm voxels,
    kidney from 5 mm beyond its centre, six noise and slice-position draws. With the
    outside level read on the smoothed image: volume −4.9 % on average (−8.3 % worst),
    Dice 0.970; on the unsmoothed image −2.5 % (−4.4 %), Dice 0.983."""
    errors_pct, dices = [], []
    for seed, z_offset_mm in itertools.product((0, 1, 2), (0.0, 0.9)):
        pre, post, truth, centre = _scene((7.5, 7.5, 6.5), (0.76, 0.76, 2.5), (24, 92, 92),
                                          "CT", 5.0, seed, z_offset_mm)
        res = segment_ablation_zone(post, pre, centre, modality="CT", half_size_mm=35.0)
        zone = res.zone_mask.array > 0
        true_ml = 4.0 / 3.0 * np.pi * 7.5 * 7.5 * 6.5 / 1000.0
        errors_pct.append(100.0 * (volume_ml(res.zone_mask.with_array(zone)) / true_ml - 1.0))
        dices.append(dice(zone, truth))
    # bars between old and new: mean 3 % (old −4.9, new −2.5), worst draw 5 % (old
    # −8.3, new −4.4; one pole slice of this zone is ~6 % of it), Dice 0.98 (0.970 / 0.983)
    assert abs(float(np.mean(errors_pct))) <= 3.0, errors_pct
    assert min(errors_pct) >= -5.0, errors_pct
    assert float(np.mean(dices)) >= 0.98, dices


def test_the_zone_border_has_no_one_voxel_bumps() -> None:
    """A 3-month zone (15 mm radius) against kidney and fat on 2.5 mm slices: the
    per-voxel border left 24-29 single-voxel bumps (voxels with at most one in-plane
    neighbour inside) and 14-15 dents, Dice 0.990; regularised, at most one (a pole
    slice's corner), Dice 0.994-0.995."""
    pre, post, truth, centre = _scene((15.0, 15.0, 14.0), (0.75, 0.75, 2.5), (24, 93, 93),
                                      "CT", 6.0, seed=0, z_offset_mm=0.5)
    res = segment_ablation_zone(post, pre, centre, modality="CT", half_size_mm=35.0)
    zone = res.zone_mask.array > 0
    cross = np.zeros((1, 3, 3), int)
    cross[0, 1, :] = cross[0, :, 1] = 1
    neighbours = ndi.convolve(zone.astype(int), cross, mode="constant") - zone
    # two of each allowed: a pole slice's last few voxels can keep a corner (one seen);
    # the old border had an order of magnitude more. Dice 0.992 lies between the old
    # 0.990 and the new 0.994 (this zone's border ring is ~4 % of its voxels)
    assert int((zone & (neighbours <= 1)).sum()) <= 2
    assert int((~zone & (neighbours >= 3)).sum()) <= 2
    assert dice(zone, truth) >= 0.992
