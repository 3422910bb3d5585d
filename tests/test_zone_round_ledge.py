"""A round ablation zone's ledge along a thin muscle band
(segmentation.ablation_zone._without_ledge_beyond_round).

Where a 3-month zone meets a thin band or wedge of body-wall muscle, the muscle's partial
volume with the fat behind it reads at the zone's level, and the border ran 2-3 voxels
along it: the 3-D diameter of such zones read 1.7-3.3 mm long, one per archive (seeds
131-187). A round zone's voxels over _ROUND_LEDGE_MM (0.35 mm) outside the ellipsoid
fitted robustly to its own surface are that ledge. Zones whose surface strays from the
fit (lobes, nodules) are left alone.
"""

from __future__ import annotations

import numpy as np

from segmentation.ablation_zone import _ROUND_LEDGE_MM, _without_ledge_beyond_round

_SPACING_MM = np.array([0.8, 0.8, 2.0])  # i, j, k
_SHAPE = (40, 80, 80)


def _offsets_mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    k, j, i = np.indices(_SHAPE)
    return ((k - 20) * _SPACING_MM[2], (j - 40) * _SPACING_MM[1], (i - 40) * _SPACING_MM[0])


def _sphere(radius_mm: float = 16.0) -> np.ndarray:
    z, y, x = _offsets_mm()
    return np.sqrt(x**2 + y**2 + z**2) <= radius_mm


def test_ledge_along_a_band_is_trimmed_and_the_sphere_kept() -> None:
    """A 16 mm sphere with a 2-voxel ledge along a plane tangent to it (the muscle band's
    partial volume): the ledge beyond 1 mm goes, every sphere voxel stays."""
    z, y, x = _offsets_mm()
    sphere = _sphere()
    # a sheet 1.6 mm thick lying on the sphere's side x ≈ 16 mm, over a 10 × 4 mm patch
    ledge = (x > 15.0) & (x <= 17.6) & (np.abs(y) <= 5.0) & (np.abs(z) <= 2.0) & ~sphere
    zone = sphere | ledge
    out = _without_ledge_beyond_round(zone, _SPACING_MM)
    assert (out & sphere).sum() == sphere.sum()
    # the bar (_ROUND_LEDGE_MM) lies beyond the fit through the halfway surface (radius
    # ≈ 16 mm); the ledge is checked 1 mm past it, more than a pixel (0.8 mm) clear of
    # the fit's error
    far = ledge & (x > 16.0 + _ROUND_LEDGE_MM + 1.0)
    assert far.any() and not (out & far).any()


def test_lobulated_zone_keeps_its_lobe() -> None:
    """A sphere with a 6 mm lobe on its side is not round: nothing is trimmed."""
    z, y, x = _offsets_mm()
    lobe = np.sqrt((x - 16.0) ** 2 + y**2 + z**2) <= 6.0
    zone = _sphere() | lobe
    out = _without_ledge_beyond_round(zone, _SPACING_MM)
    assert (out == zone).all()


def test_round_zone_without_ledge_is_unchanged() -> None:
    """A voxelised ellipsoid (18 × 14 × 12 mm) loses no voxel: the fit goes through the
    surface halfway between inside and outside voxel centres, so no inside centre lies
    beyond it by the bar (_ROUND_LEDGE_MM)."""
    z, y, x = _offsets_mm()
    zone = (x / 18.0) ** 2 + (y / 14.0) ** 2 + (z / 12.0) ** 2 <= 1.0
    out = _without_ledge_beyond_round(zone, _SPACING_MM)
    assert (out == zone).all()
