"""A nodule regrowing from the ablation zone's pole along the slice axis (12-month
progression): it starts on the slice past the zone, a whole slice (3 mm) from it by
centre distance, and must still count as touching the zone. Analytic scenes, fast."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.image import Volume
from segmentation import ablation_zone, segment_ablation_zone
from segmentation._common import dice
from segmentation.ablation_zone import _from_zone_mm

_SPACING = (0.8, 0.8, 3.0)  # i, j, k (mm)
_SHAPE = (20, 90, 90)  # k, j, i


def _pole_scene(z_offset_mm: float, nodule: bool, seed: int = 0):
    """Fat; a kidney slab (x > 41 mm); a flat zone (ellipsoid 7.5 × 7.5 × 5 mm, two probes'
    late involuted zone) touching it; optionally a 7 mm enhancing nodule centred on the
    zone's pole along the slice axis (the thinnest margin lay along the probes). 3 mm
    slices with partial volume (2 × 2 × 6 sub-samples per voxel, as the phantom's box
    filter). Returns (pre, post, lesion truth by voxel centre, nodule truth, centre)."""
    centre = np.array([36.0, 36.0, 27.0 + z_offset_mm])
    nodule_centre = centre + np.array([0.0, 0.0, 5.0])
    k, j, i = np.mgrid[: _SHAPE[0], : _SHAPE[1], : _SHAPE[2]].astype(np.float32)

    def inside(x, y, z):
        zone = (((x - centre[0]) / 7.5) ** 2 + ((y - centre[1]) / 7.5) ** 2
                + ((z - centre[2]) / 5.0) ** 2) <= 1.0
        nod = (((x - nodule_centre[0]) ** 2 + (y - nodule_centre[1]) ** 2
                + (z - nodule_centre[2]) ** 2) <= 49.0) if nodule else np.zeros_like(zone)
        return zone & ~nod, nod

    zone_f, nodule_f, kidney_f = (np.zeros(_SHAPE, np.float32) for _ in range(3))
    in_plane, along = (np.arange(2) + 0.5) / 2 - 0.5, (np.arange(6) + 0.5) / 6 - 0.5
    for a in in_plane:
        for b in in_plane:
            for c in along:
                x, y, z = (i + a) * _SPACING[0], (j + b) * _SPACING[1], (k + c) * _SPACING[2]
                zone, nod = inside(x, y, z)
                zone_f += zone
                nodule_f += nod
                kidney_f += (x > centre[0] + 5.0) & ~zone & ~nod
    n = len(in_plane) ** 2 * len(along)
    zone_f, nodule_f, kidney_f = zone_f / n, nodule_f / n, kidney_f / n
    fat_f = 1.0 - zone_f - nodule_f - kidney_f
    zone, nod = inside(i * _SPACING[0], j * _SPACING[1], k * _SPACING[2])
    rng = np.random.default_rng(seed)
    out = []
    for fat, kidney, zone_hu, nodule_hu in ((-100.0, 33.0, 30.0, 38.0),
                                            (-100.0, 170.0, 32.0, 98.0)):
        arr = fat_f * fat + kidney_f * kidney + zone_f * zone_hu + nodule_f * nodule_hu
        out.append(Volume.from_geometry((arr + rng.normal(0.0, 10.0, _SHAPE)).astype(np.float32),
                                        origin_lps=(0, 0, 0), spacing_mm=_SPACING,
                                        modality="CT"))
    return out[0], out[1], zone | nod, nod, centre


def test_from_zone_mm_next_slice_touches() -> None:
    """The slice next to the zone lies against it (0 mm); two slices away is one slice
    thickness of gap; in-plane distances are unchanged."""
    spacing = np.array(_SPACING)
    hull = np.zeros((7, 9, 9), dtype=bool)
    hull[3, 4, 4] = True
    d = _from_zone_mm(hull, spacing)
    assert d[3, 4, 4] == 0.0 and d[2, 4, 4] == 0.0 and d[4, 4, 4] == 0.0
    assert d[5, 4, 4] == pytest.approx(3.0) and d[1, 4, 4] == pytest.approx(3.0)
    assert d[3, 4, 6] == pytest.approx(1.6) and d[4, 4, 6] == pytest.approx(1.6)


@pytest.mark.parametrize("z_offset_mm", [1.0, 1.5, 2.0])
def test_segment_ablation_zone_finds_a_nodule_regrowing_from_the_pole(z_offset_mm: float
                                                                     ) -> None:
    """Where the zone's last slice holds a sliver of it, the nodule's body (opened by a
    ball, so inside its border) starts on the next slice, 2.3-3 mm from the zone by centre
    distance: a 2 mm touching test dropped the whole nodule and most of the zone with it
    (Dice 0.002-0.16 on the old code; seed 23 progression at 12 months: 0.58).

    The zone holds 0.90-0.98 of the nodule with the phases aligned exactly (the scene has
    no breathing shift; the organ search of session 19 finds it within 0.05 mm). The old
    local phase fit put them 0.4-0.6 mm apart along the slices, and the zone then held
    0.94-0.97. The bar of 0.85 sits far above what the bug left (nothing)."""
    pre, post, lesion, nodule, centre = _pole_scene(z_offset_mm, nodule=True)
    res = segment_ablation_zone(post, pre, centre, modality="CT", half_size_mm=30.0)
    got = res.zone_mask.array.astype(bool)
    assert len(res.nodule_volumes_ml) == 1
    assert dice(res.enhancing_mask.array, nodule) >= 0.8
    assert (got & nodule).sum() >= 0.85 * nodule.sum()
    assert dice(got, lesion) >= 0.85


@pytest.mark.parametrize("z_offset_mm", [0.0, 1.0, 1.5, 2.0])
def test_segment_ablation_zone_pole_against_the_kidney_is_no_nodule(z_offset_mm: float
                                                                   ) -> None:
    """The same zone without the nodule: its partial-volume poles (zone with fat and
    kidney on the next slice) are no nodule body, now that the next slice touches."""
    pre, post, lesion, _, centre = _pole_scene(z_offset_mm, nodule=False)
    res = segment_ablation_zone(post, pre, centre, modality="CT", half_size_mm=30.0)
    assert res.nodule_volumes_ml == []
    assert int(res.enhancing_mask.array.sum()) == 0
    assert dice(res.zone_mask.array, lesion) >= 0.9


def test_nodule_bodies_thick_slice_disc_past_the_pole_is_no_nodule() -> None:
    """On 5 mm slices a nodule body may be a disc on one slice; a disc enhancing like a
    nodule on the slice past the zone's pole is then the pole's partial volume with the
    enhancing tissue beyond it, not a nodule touching the zone (MR 5 mm, seed 23 at 3
    months: 0.09 ml discs at both poles of a clean zone when the next slice counted as
    touching). A nodule beside the zone on its own slices still is one."""
    spacing = np.array([1.4, 1.4, 5.0])
    k, j, i = np.mgrid[:12, :40, :40].astype(np.float32)
    x, y, z = i * spacing[0], j * spacing[1], k * spacing[2]
    hull = ((x - 28.0) ** 2 + (y - 28.0) ** 2 + ((z - 27.5) / 1.2) ** 2) <= 100.0
    last = int(np.nonzero(hull.any(axis=(1, 2)))[0].max())
    level = np.zeros(hull.shape, np.float32)
    disc = (k == last + 1) & (((x - 28.0) ** 2 + (y - 28.0) ** 2) <= 25.0)
    level[disc] = 50.0
    bodies = ablation_zone._nodule_bodies(level, level, hull, 20.0, 200.0, spacing, 2.5)
    assert not bodies.any()
    side = (np.abs(k - 5) <= 1) & (((x - 28.0 - 12.0) ** 2 + (y - 28.0) ** 2) <= 25.0)
    level[side] = 50.0
    bodies = ablation_zone._nodule_bodies(level, level, hull, 20.0, 200.0, spacing, 2.5)
    assert bodies[side].sum() >= 0.8 * side.sum() and not bodies[disc].any()
