"""Ablation-zone outline steps on analytic masks: the slice-axis give-back after the
opening, and the surface regularisation (calipers are maxima: bumps lengthen them)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from measurements import max_3d_diameter_mm
from pipeline.image import Volume
from segmentation._common import dice
from segmentation.ablation_zone import _beside_opened, _surface_regularised

_SPACING = np.array([0.75, 0.75, 2.5])  # i, j, k (mm)
_SHAPE = (24, 80, 80)  # k, j, i


def _sphere(radius_mm: float, centre_mm=(30.0, 30.0, 30.0)) -> np.ndarray:
    k, j, i = np.mgrid[: _SHAPE[0], : _SHAPE[1], : _SHAPE[2]].astype(float)
    return ((i * _SPACING[0] - centre_mm[0]) ** 2 + (j * _SPACING[1] - centre_mm[1]) ** 2
            + (k * _SPACING[2] - centre_mm[2]) ** 2) <= radius_mm**2


def _diameter_mm(mask: np.ndarray) -> float:
    vol = Volume.from_geometry(mask.astype(np.uint8), origin_lps=(0, 0, 0),
                               spacing_mm=tuple(_SPACING), modality="")
    return max_3d_diameter_mm(vol)


def test_give_back_keeps_the_shaved_border_not_a_lip_over_a_wider_slice() -> None:
    """A 14 mm sphere whose opening shaved its outline by a voxel, plus a 3 mm lip on a
    slice near the pole that lies over the wider slice next to it (a muscle band along
    the zone): the slice-axis reconstruction restored the lip (it is in the hull and
    above the opened zone); only the voxel-wide border is given back."""
    zone = _sphere(14.0)
    opened = ndi.binary_erosion(zone, structure=np.ones((1, 3, 3), bool))
    lip = np.zeros_like(zone)
    k_lip = int(np.flatnonzero(zone.any(axis=(1, 2)))[1])  # second slice from the pole
    ring = ndi.binary_dilation(zone[k_lip], iterations=4) & ~zone[k_lip]
    lip[k_lip] = ring & (np.arange(_SHAPE[2])[None, :] > 45)  # one side of it
    hull = zone | lip
    along = np.zeros((3, 3, 3), bool)
    along[:, 1, 1] = True
    plain = hull & ndi.binary_dilation(opened, structure=along)
    assert (plain & lip).sum() > 10  # the old reconstruction gives the lip back
    kept = _beside_opened(plain, opened)
    assert not (kept & lip).any()
    assert np.array_equal(kept & zone, plain & zone)  # the zone's own voxels as before


def test_regularised_outline_drops_bumps_and_keeps_the_size() -> None:
    """A 14 mm sphere with one-voxel bumps on 3 % of its surface voxels' outside
    neighbours: the 3-D diameter reads long (a caliper is a maximum); the regularised
    outline is within 0.5 mm of the clean sphere's and its volume within 1.5 %."""
    zone = _sphere(14.0)
    rng = np.random.default_rng(3)
    shell = ndi.binary_dilation(zone, structure=np.ones((1, 3, 3), bool)) & ~zone
    bumps = shell & (rng.random(zone.shape) < 0.03)
    rough = zone | bumps
    clean_mm = _diameter_mm(zone)
    assert _diameter_mm(rough) > clean_mm + 0.5
    smooth = _surface_regularised(rough, np.zeros_like(rough), _SPACING)
    assert abs(_diameter_mm(smooth) - clean_mm) <= 0.5
    assert abs(smooth.sum() / zone.sum() - 1.0) <= 0.015
    assert dice(smooth, zone) >= 0.98


def test_regularised_outline_keeps_a_nodule_whole() -> None:
    """An enhancing nodule at the zone edge stays in the zone whatever the smoothing does
    to its narrow neck."""
    zone = _sphere(14.0)
    nodule = _sphere(3.0, (30.0, 46.0, 30.0)) & ~zone
    smooth = _surface_regularised(zone | nodule, nodule, _SPACING)
    assert smooth[nodule].all()
    assert _surface_regularised(zone, np.zeros_like(zone), _SPACING)[zone].sum() > (
        0.97 * zone.sum())
