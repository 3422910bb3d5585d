"""Ablative margin and coverage against concentric and offset spheres (closed form).

Tumour sphere r = 12 mm, ice ball R = 20 mm, tumour centre offset o along one axis: the
minimal margin is R − r − o (negative when the tumour protrudes), the coverage is the
sphere-sphere intersection volume over the tumour volume.

Tolerance 1.0 mm on the margin at 0.7 × 0.7 × 2.5 mm voxels: each surface is known from
the masks to about half a voxel along each axis (±1.25 mm across 2.5 mm slices); the
smoothed iso-surfaces bring the worst case seen over random grid offsets and orientations
to 0.66 mm (the minimum over thousands of surface points picks the unluckiest one, so the
error is biased negative). Coverage tolerance 1.5 percentage points: voxel-count
discretisation of a ~4 % cap (seen ≤ 0.5 point).
"""

from __future__ import annotations

import numpy as np
import pytest

from measurements import (
    EmptyMaskError,
    ablative_margin,
    ablative_margin_from_distances,
    coverage_pct,
    signed_distance_mm,
)
from pipeline.image import GeometryError, Volume
from tests.test_measure_shapes import grid, lens_volume_mm3, rasterize, rotation, sphere

R_ICE, R_TUMOUR = 20.0, 12.0
CENTRE = np.array([-30.0, 15.0, 120.0])
SPACING = (0.7, 0.7, 2.5)


def _pair(offset_mm: float, direction: np.ndarray | None, offset_vox: tuple[float, ...],
          axis: np.ndarray | None = None) -> tuple[Volume, Volume]:
    shift = (np.array([1.0, 0, 0]) if axis is None else axis) * offset_mm
    g = grid(CENTRE, R_ICE + 3, SPACING, direction, offset_vox)
    return rasterize(g, sphere(CENTRE + shift, R_TUMOUR)), rasterize(g, sphere(CENTRE, R_ICE))


@pytest.mark.parametrize(
    ("direction", "offset_vox"),
    [(None, (0.0, 0.0, 0.0)), (None, (0.31, -0.17, 0.43)), (rotation(3), (0.1, 0.2, 0.3))],
    ids=["axial-centred", "axial-offset", "oblique"],
)
def test_concentric_spheres(direction: np.ndarray | None, offset_vox: tuple[float, ...]) -> None:
    tumour, ice = _pair(0.0, direction, offset_vox)
    m = ablative_margin(tumour, ice)
    assert m.min_margin_mm == pytest.approx(R_ICE - R_TUMOUR, abs=1.0)
    assert m.coverage_pct == 100.0
    assert np.linalg.norm(m.closest_tumour_point_lps - CENTRE) == pytest.approx(R_TUMOUR, abs=1.3)
    assert np.linalg.norm(m.closest_ice_surface_point_lps - CENTRE) == pytest.approx(R_ICE, abs=1.3)
    gap = np.linalg.norm(m.closest_ice_surface_point_lps - m.closest_tumour_point_lps)
    assert gap == pytest.approx(m.min_margin_mm, abs=1e-9)


@pytest.mark.parametrize("offset_mm", [5.0, 10.0, 14.0])
def test_offset_spheres_margin_and_coverage(offset_mm: float) -> None:
    """Tumour shifted along a direction oblique to the grid (so thick slices matter)."""
    axis = np.array([1.0, 0.0, 1.0]) / np.sqrt(2)
    tumour, ice = _pair(offset_mm, None, (0.2, 0.1, 0.37), axis)
    m = ablative_margin(tumour, ice)
    truth = R_ICE - R_TUMOUR - offset_mm
    assert m.min_margin_mm == pytest.approx(truth, abs=1.0)
    expected_cov = 100 * lens_volume_mm3(R_ICE, R_TUMOUR, offset_mm) / (4 / 3 * np.pi * 12**3)
    assert m.coverage_pct == pytest.approx(expected_cov, abs=1.5)
    assert coverage_pct(tumour, ice) == m.coverage_pct
    # the reported point is on the tumour surface and its true margin is the minimum
    p = m.closest_tumour_point_lps
    assert np.linalg.norm(p - (CENTRE + axis * offset_mm)) == pytest.approx(R_TUMOUR, abs=1.3)
    assert R_ICE - np.linalg.norm(p - CENTRE) == pytest.approx(truth, abs=1.0)
    if truth < 0:
        assert m.coverage_pct < 100.0


def test_identical_masks_have_zero_margin() -> None:
    """Tumour = ice: the two surfaces coincide, margin 0 to rounding, coverage 100 %."""
    _tumour, ice = _pair(0.0, rotation(8), (0.0, 0.0, 0.0))
    m = ablative_margin(ice, ice)
    assert m.min_margin_mm == pytest.approx(0.0, abs=1e-6)
    assert m.coverage_pct == 100.0


def test_tumour_entirely_outside_the_ice() -> None:
    """Disjoint spheres (o = 40 mm): margin = −(o + r − R) = −32 mm, coverage 0."""
    x = np.array([1.0, 0.0, 0.0])
    g = grid(CENTRE + 20.0 * x, 40.0, (1.0, 1.0, 2.0))
    tumour = rasterize(g, sphere(CENTRE + 40.0 * x, R_TUMOUR))
    ice = rasterize(g, sphere(CENTRE, R_ICE))
    m = ablative_margin(tumour, ice)
    assert m.min_margin_mm == pytest.approx(-(40 + R_TUMOUR - R_ICE), abs=1.0)
    assert m.coverage_pct == 0.0


def test_grid_mismatch_and_empty_masks_are_refused() -> None:
    tumour, ice = _pair(0.0, None, (0.0, 0.0, 0.0))
    shifted = Volume(ice.array, ice.affine_lps + np.pad(np.eye(3, 4, 3) * 0.5, ((0, 1), (0, 0))))
    with pytest.raises(GeometryError, match="ice_mask is not on the grid of tumour_mask"):
        ablative_margin(tumour, shifted)
    with pytest.raises(EmptyMaskError, match="ice_mask is empty"):
        ablative_margin(tumour, ice.with_array(np.zeros_like(ice.array)))
    with pytest.raises(EmptyMaskError, match="tumour_mask is empty"):
        coverage_pct(tumour.with_array(np.zeros_like(tumour.array)), ice)


def _distance_map(g: Volume, centre: np.ndarray, radius_mm: float) -> Volume:
    from tests.test_measure_shapes import voxel_centres_lps

    pts = voxel_centres_lps(g)
    d = radius_mm - np.linalg.norm(pts - centre, axis=1)
    return g.with_array(d.reshape(g.array.shape).astype(np.float32))


@pytest.mark.parametrize("offset_vox", [(0.0, 0.0, 0.0), (0.2, -0.1, 0.45), (0.0, 0.0, 0.5)])
def test_margin_from_distances_between_thick_slices(offset_vox: tuple[float, ...]) -> None:
    """On 3 mm slices the masks' poles sit on slices (margin off by up to a slice along S);
    the zero levels of signed distance maps keep the surfaces between them."""
    g = grid(CENTRE, R_ICE + 3, (0.7, 0.7, 3.0), None, offset_vox)
    shift = np.array([0.0, 0.0, 2.0])  # tumour towards the pole: minimum along S
    tumour = _distance_map(g, CENTRE + shift, R_TUMOUR)
    ice = _distance_map(g, CENTRE, R_ICE)
    m = ablative_margin_from_distances(tumour, ice)
    assert m.min_margin_mm == pytest.approx(R_ICE - R_TUMOUR - 2.0, abs=0.2)
    assert m.coverage_pct == pytest.approx(100.0)
    protruding = _distance_map(g, CENTRE + np.array([0.0, 0.0, 10.0]), R_TUMOUR)
    assert ablative_margin_from_distances(protruding, ice).min_margin_mm == pytest.approx(
        R_ICE - R_TUMOUR - 10.0, abs=0.2)


def test_signed_distance_of_a_mask_has_the_mask_surface() -> None:
    """The zero level runs halfway between inside and outside voxel centres (along the
    slice axis too); the margin between two masks' maps is as good as the masks'."""
    g = grid(CENTRE, R_ICE + 3, SPACING)
    ice = rasterize(g, sphere(CENTRE, R_ICE))
    tumour = rasterize(g, sphere(CENTRE, R_TUMOUR))
    field = np.asarray(signed_distance_mm(tumour).array)
    inside = np.asarray(tumour.array)
    i, j, _ = np.rint(g.lps_to_index(CENTRE)).astype(int)
    column, col_inside = field[:, j, i], inside[:, j, i]
    ks = np.nonzero(col_inside)[0]
    assert column[ks.max()] == pytest.approx(SPACING[2] / 2, abs=0.05)
    assert column[ks.max() + 1] == pytest.approx(-SPACING[2] / 2, abs=0.05)
    assert field[inside].min() > 0 > field[~inside].max()
    by_maps = ablative_margin_from_distances(signed_distance_mm(tumour),
                                             signed_distance_mm(ice)).min_margin_mm
    assert by_maps == pytest.approx(R_ICE - R_TUMOUR, abs=1.0)
    with pytest.raises(EmptyMaskError):
        ablative_margin_from_distances(g.with_array(np.full(g.array.shape, -1.0, np.float32)),
                                       signed_distance_mm(ice))


@pytest.mark.parametrize("direction", [None, rotation(5)], ids=["axial", "oblique"])
def test_smoothed_signed_distance_reads_the_minimal_margin_without_the_staircase(
        direction: np.ndarray | None) -> None:
    """A 10 mm tumour sphere 3 mm off the centre of a 16 mm ice sphere (the ice an exact
    distance map, as the ice-ball model's), rasterised at eight random sub-voxel offsets
    on 0.75 × 0.75 × 1 mm voxels: the minimal margin (3 mm) from the mask's halfway
    surface picks its outermost half-voxel steps (−0.27 mm on average, axial); smoothed
    with the curvature kept it is within 0.15 mm on average (−0.10 seen) and every
    reading within 0.3 mm, inside the tumour's own half-voxel uncertainty."""
    rng = np.random.default_rng(11)
    raw_err, smooth_err = [], []
    for _ in range(8):
        direction_mm = rng.normal(size=3)
        direction_mm /= np.linalg.norm(direction_mm)
        g = grid(CENTRE, 19.0, (0.75, 0.75, 1.0), direction, tuple(rng.uniform(-0.5, 0.5, 3)))
        tumour = rasterize(g, sphere(CENTRE + 3.0 * direction_mm, 10.0))
        ice = _distance_map(g, CENTRE, 16.0)
        raw_err.append(ablative_margin_from_distances(
            signed_distance_mm(tumour), ice).min_margin_mm - 3.0)
        smooth_err.append(ablative_margin_from_distances(
            signed_distance_mm(tumour, smooth=True), ice).min_margin_mm - 3.0)
    assert abs(np.mean(smooth_err)) <= 0.15
    assert np.max(np.abs(smooth_err)) <= 0.3
    assert np.mean(raw_err) < np.mean(smooth_err) - 0.1  # the staircase's bias, removed


def test_smoothed_signed_distance_keeps_the_surface_of_a_sphere() -> None:
    """The blur's curvature shrink is added back: the smoothed map's zero level has the
    sphere's radius on average (within 0.03 mm; a plain σ = one voxel blur pulls it in by
    ½ Σ σ_a² / R ≈ 0.06 mm), and its minimal margin to a concentric ice sphere is no
    shorter than the halfway surface's (a uniform margin leaves the minimum anywhere on
    the surface: 7.69 vs 7.63 mm for 8 mm, the digitised sphere's flat facets remain)."""
    from measurements._common import _kji_to_lps
    from measurements.margin import _zero_surface

    g = grid(CENTRE, R_ICE + 3, (0.75, 0.75, 1.0), None, (0.2, -0.3, 0.1))
    tumour = rasterize(g, sphere(CENTRE, R_TUMOUR))
    smoothed = signed_distance_mm(tumour, smooth=True)
    verts, _ = _zero_surface(np.asarray(smoothed.array))
    radius = np.linalg.norm(_kji_to_lps(verts, g.affine_lps) - CENTRE, axis=1)
    assert radius.mean() == pytest.approx(R_TUMOUR, abs=0.03)
    ice = _distance_map(g, CENTRE, R_ICE)
    raw = ablative_margin_from_distances(signed_distance_mm(tumour), ice).min_margin_mm
    smooth = ablative_margin_from_distances(smoothed, ice).min_margin_mm
    assert raw - 0.02 <= smooth <= R_ICE - R_TUMOUR
