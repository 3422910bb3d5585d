"""Size measurements against closed-form truth on spheres and rotated ellipsoids.

Truth comes from the continuous shape (tests/test_measure_shapes.py), never from voxels.
Tolerances follow from the rasterisation: every boundary point of a voxel-centre-sampled
mask lies within half a voxel diagonal of the true surface, so a diameter (two end points)
is within one voxel diagonal. On grids whose slices are axial the in-plane measurements
only see the in-plane pixel, so the bound is the pixel diagonal; on coronal or oblique
grids the thick slice direction lies partly in the axial plane and the bound is the full
voxel diagonal.
"""

from __future__ import annotations

import numpy as np
import pytest

from measurements import (
    EmptyMaskError,
    axial_diameters,
    max_3d_diameter,
    max_3d_diameter_mm,
    mesh_volume_ml,
    size,
    volume_ml,
)
from pipeline.image import Volume
from tests.test_measure_shapes import (
    CORONAL,
    PRONE,
    ellipsoid,
    ellipsoid_axial_axes,
    ellipsoid_max_axial_long_mm,
    grid,
    rasterize,
    rotation,
    sphere,
)

CENTRE = np.array([5.0, -12.0, 40.0])
SEMI = np.array([18.0, 11.0, 7.0])  # a > b > c

ORIENTATIONS = {
    "axial": np.eye(3),
    "prone": PRONE,
    "coronal": CORONAL,
    "oblique11": rotation(11),
    "oblique12": rotation(12),
}
SPACINGS = {"iso0.7": (0.7, 0.7, 0.7), "0.8x2": (0.8, 0.8, 2.0), "0.7x5": (0.7, 0.7, 5.0)}


def _is_axial(direction: np.ndarray) -> bool:
    return bool(abs(direction[2, 0]) < 1e-6 and abs(direction[2, 1]) < 1e-6)


def _diag(spacing: tuple[float, float, float]) -> float:
    return float(np.linalg.norm(spacing))


def _pixel_diag(spacing: tuple[float, float, float]) -> float:
    return float(np.hypot(spacing[0], spacing[1]))


@pytest.mark.parametrize("r_mm", [6.0, 15.0])
def test_sphere_axes_diameter_and_volume(r_mm: float) -> None:
    """Sphere r on 0.7 mm voxels: long = short = 3-D = 2r within one pixel diagonal (0.99 mm)
    at the slice through the centre; volume 4/3πr³ within 2 % (r = 6 mm: 12 voxels across)."""
    vol = rasterize(grid(CENTRE, r_mm + 2, (0.7, 0.7, 0.7), offset_vox=(0.3, 0.1, 0.0)),
                    sphere(CENTRE, r_mm))
    axes = axial_diameters(vol)
    tol = _pixel_diag((0.7, 0.7, 0.7))
    assert axes.slice_position_mm == pytest.approx(CENTRE[2], abs=0.36)
    assert axes.long_axis_mm == pytest.approx(2 * r_mm, abs=tol)
    assert axes.short_axis_mm == pytest.approx(2 * r_mm, abs=tol)
    assert not axes.resampled_to_axial
    assert max_3d_diameter_mm(vol) == pytest.approx(2 * r_mm, abs=_diag((0.7, 0.7, 0.7)))
    truth_ml = 4 / 3 * np.pi * r_mm**3 / 1000
    assert volume_ml(vol) == pytest.approx(truth_ml, rel=0.02)
    assert mesh_volume_ml(vol) == pytest.approx(truth_ml, rel=0.03)


@pytest.mark.parametrize("orient", list(ORIENTATIONS))
@pytest.mark.parametrize("spacing_name", list(SPACINGS))
def test_rotated_ellipsoid_any_grid(orient: str, spacing_name: str) -> None:
    """Ellipsoid 36×22×14 mm rotated in 3-D, on axial/prone/coronal/oblique grids.

    Long/short axis vs the exact ellipse cut by the reported axial plane (pixel diagonal on
    axial grids, voxel diagonal otherwise: worst seen 3.3 mm with 5 mm slices tilted into
    the plane, bound 5.1 mm); the reported plane's long axis is within the same tolerance of
    the best plane; 3-D diameter = 2a within one voxel diagonal; volume within 2 % (≤ 2 mm
    voxels) or 8 % (5 mm slices: the boundary voxels are a large share of a 14 mm thick
    ellipsoid; worst seen 5.2 %).
    """
    spacing = SPACINGS[spacing_name]
    direction = ORIENTATIONS[orient]
    rot = rotation(100)
    vol = rasterize(grid(CENTRE, 20.0, spacing, direction, (0.21, -0.33, 0.12)),
                    ellipsoid(CENTRE, SEMI, rot))
    axes = axial_diameters(vol)
    tol = _pixel_diag(spacing) if _is_axial(direction) else _diag(spacing)
    assert axes.resampled_to_axial is not _is_axial(direction)
    long_true, short_true = ellipsoid_axial_axes(CENTRE, SEMI, rot, axes.slice_position_mm)
    assert axes.long_axis_mm == pytest.approx(long_true, abs=tol)
    assert axes.short_axis_mm == pytest.approx(short_true, abs=tol)
    assert axes.long_axis_mm == pytest.approx(ellipsoid_max_axial_long_mm(SEMI, rot), abs=tol)
    assert max_3d_diameter_mm(vol) == pytest.approx(2 * SEMI[0], abs=_diag(spacing))
    rel = 0.08 if max(spacing) > 2 else 0.02
    assert volume_ml(vol) == pytest.approx(4 / 3 * np.pi * SEMI.prod() / 1000, rel=rel)


def test_endpoints_are_consistent_with_the_axes() -> None:
    """End points lie on the reported slice, realise the lengths, and the short axis is
    perpendicular to the long axis (|cos| < 1e-9)."""
    rot = rotation(5)
    vol = rasterize(grid(CENTRE, 20.0, (0.7, 0.7, 2.0), rotation(9)),
                    ellipsoid(CENTRE, SEMI, rot))
    axes = axial_diameters(vol)
    lp, sp = axes.long_endpoints_lps, axes.short_endpoints_lps
    np.testing.assert_allclose(lp[:, 2], axes.slice_position_mm)
    np.testing.assert_allclose(sp[:, 2], axes.slice_position_mm)
    assert np.linalg.norm(lp[1] - lp[0]) == pytest.approx(axes.long_axis_mm)
    assert np.linalg.norm(sp[1] - sp[0]) == pytest.approx(axes.short_axis_mm)
    u, v = lp[1] - lp[0], sp[1] - sp[0]
    assert abs(u @ v) / (np.linalg.norm(u) * np.linalg.norm(v)) < 1e-9
    cal = max_3d_diameter(vol)
    assert np.linalg.norm(cal.endpoints_lps[1] - cal.endpoints_lps[0]) == pytest.approx(
        cal.diameter_mm
    )


def test_prone_and_flipped_grids_give_identical_millimetres() -> None:
    """The same voxels indexed supine or prone (array flipped, affine updated) measure the
    same to 1e-9 mm: the slices are axial in both, no resampling is involved."""
    rot = rotation(21)
    supine = rasterize(grid(CENTRE, 20.0, (0.7, 0.7, 2.5)), ellipsoid(CENTRE, SEMI, rot))
    # re-index: i' = ni-1-i, j' = nj-1-j  (prone IOP [-1,0,0,0,-1,0])
    flipped = supine.array[:, ::-1, ::-1].copy()
    ni, nj = supine.shape_ijk[0], supine.shape_ijk[1]
    origin = supine.index_to_lps([ni - 1, nj - 1, 0])
    prone = Volume.from_geometry(flipped, origin_lps=origin, spacing_mm=supine.spacing_mm,
                                 direction=PRONE)
    a, b = axial_diameters(supine), axial_diameters(prone)
    assert a.long_axis_mm == pytest.approx(b.long_axis_mm, abs=1e-9)
    assert a.short_axis_mm == pytest.approx(b.short_axis_mm, abs=1e-9)
    assert a.slice_position_mm == pytest.approx(b.slice_position_mm, abs=1e-9)
    assert max_3d_diameter_mm(supine) == pytest.approx(max_3d_diameter_mm(prone), abs=1e-9)
    assert volume_ml(supine) == pytest.approx(volume_ml(prone), rel=1e-12)


def test_short_axis_is_a_chord_not_the_width() -> None:
    """An L of two 20 × 6 mm bars (0.5 mm pixels): the long axis is the 28.3 mm diagonal of
    the 20 × 20 mm bounding square; every line perpendicular to it crosses the L as one
    chord of at most 6·√2 = 8.5 mm (through the corner square), while the L's width across
    the diagonal (projection extent, the wrong definition) is 18.4 mm. Tolerance: one
    pixel diagonal (0.71 mm) for the 0.5 iso-line bevelling the corners. Measured on the
    binary iso-line (``inplane_sigma_px=0``); the default blurred outline rounds each 90°
    corner inward by 0.77σ along its bisector (Φ(−t/σ)² = 0.5 → t = 0.545σ per axis), so
    its diagonal is at most 2 × 0.77σ shorter.
    """
    arr = np.zeros((3, 50, 50), dtype=bool)
    arr[1, 5:45, 5:17] = True  # 40 × 12 px = 20 × 6 mm
    arr[1, 33:45, 5:45] = True  # 12 × 40 px
    vol = Volume.from_geometry(arr, origin_lps=(0, 0, 0), spacing_mm=(0.5, 0.5, 3.0))
    axes = axial_diameters(vol, inplane_sigma_px=0.0)
    blurred = axial_diameters(vol)
    sigma_mm = 0.5 * size._INPLANE_SMOOTH_PX
    assert axes.long_axis_mm - 1.54 * sigma_mm <= blurred.long_axis_mm < axes.long_axis_mm
    assert blurred.short_axis_mm == pytest.approx(axes.short_axis_mm, abs=0.71)
    assert axes.long_axis_mm == pytest.approx(20 * np.sqrt(2), abs=0.71)
    assert axes.short_axis_mm == pytest.approx(6 * np.sqrt(2), abs=0.71)
    u = axes.long_endpoints_lps[1, :2] - axes.long_endpoints_lps[0, :2]
    v = np.array([-u[1], u[0]]) / np.linalg.norm(u)
    inside_xy = np.argwhere(arr[1])[:, ::-1] * 0.5  # (x, y) of inside voxel centres
    width = np.ptp(inside_xy @ v)
    assert width > 17.0 > axes.short_axis_mm


def test_volume_counts_voxels_times_voxel_volume() -> None:
    """Exact: 7 voxels of 0.7 × 0.8 × 2.5 mm on an oblique grid = 7 × 1.4 mm³."""
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[1, 1, 1:3] = 1
    arr[2, 1:3, 1:3] = 1
    arr[2, 3, 3] = 1
    vol = Volume.from_geometry(arr, origin_lps=(1, 2, 3), spacing_mm=(0.7, 0.8, 2.5),
                               direction=rotation(4))
    assert volume_ml(vol) == pytest.approx(7 * 0.7 * 0.8 * 2.5 / 1000, rel=1e-12)


def test_mask_touching_the_grid_border_still_closes() -> None:
    """A cube filling the whole array: contours close at the (padded) border, 10 × 0.5 mm
    cube → long axis = diagonal of the 0.5 iso-square ((10-1)·0.5 + 0.5 = 5 mm side)."""
    vol = Volume.from_geometry(np.ones((3, 10, 10), bool), origin_lps=(0, 0, 0),
                               spacing_mm=(0.5, 0.5, 1.0))
    axes = axial_diameters(vol, inplane_sigma_px=0.0)
    # the 0.5 iso-line of a binary square cuts its corners: 4.5 mm edges + corner bevels
    assert 4.5 * np.sqrt(2) <= axes.long_axis_mm <= 5.0 * np.sqrt(2)
    # blurred: the corners round inward by 0.77σ each (see the L-shape test), still closed
    blurred_mm = axial_diameters(vol).long_axis_mm
    assert axes.long_axis_mm - 1.54 * 0.5 * size._INPLANE_SMOOTH_PX <= blurred_mm
    assert volume_ml(vol) == pytest.approx(300 * 0.25 / 1000)


def test_empty_and_non_binary_masks_are_refused() -> None:
    empty = Volume.from_geometry(np.zeros((4, 4, 4), bool), origin_lps=(0, 0, 0),
                                 spacing_mm=(1, 1, 1))
    with pytest.raises(EmptyMaskError, match="mask is empty"):
        axial_diameters(empty)
    with pytest.raises(EmptyMaskError):
        max_3d_diameter_mm(empty)
    assert volume_ml(empty) == 0.0
    labels = empty.with_array(np.full((4, 4, 4), 2, dtype=np.int16))
    with pytest.raises(ValueError, match="binary"):
        volume_ml(labels)
    probs = empty.with_array(np.full((4, 4, 4), 0.7))
    with pytest.raises(ValueError, match="dtype"):
        max_3d_diameter_mm(probs)


def _axial_errors_over_offsets(n_offsets: int,
                               spacing: tuple[float, float, float] = (0.7, 0.7, 1.0),
                               sigma_px: float | None = None,
                               solids: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(long, short) axis errors (mm) of spheres and rotated ellipsoids rendered on
    ``spacing`` (default 0.7 mm pixels × 1 mm axial slices) at random sub-voxel offsets, vs
    the continuous solid's RECIST axes (fixtures.measure: any axial plane, so thin slices
    keep the slice-sampling deficit small and the in-plane estimator dominates the error)."""
    from fixtures import measure
    from fixtures.shapes import Ellipsoid
    from tests.test_measure_diameter3d import _render

    if solids is None:
        solids = [(Ellipsoid.make([0, 0, 0], [12, 12, 12]),),
                  (Ellipsoid.make([0, 0, 0], [18, 11, 7], rotation(1)),),
                  (Ellipsoid.make([0, 0, 0], [15, 9, 12], rotation(4)),)]
    rng = np.random.default_rng(11)
    long_err, short_err = [], []
    for parts in solids:
        truth_long, truth_short, _z = measure.recist_axial_mm(parts)
        for n in range(n_offsets):
            offset = np.array([*rng.uniform(0, 1, 2), (n + rng.uniform()) / n_offsets])
            axes = axial_diameters(_render(parts, spacing, np.eye(3), offset), sigma_px)
            long_err.append(axes.long_axis_mm - truth_long)
            short_err.append(axes.short_axis_mm - truth_short)
    return np.array(long_err), np.array(short_err)



def test_axial_axes_are_not_biased_long_by_the_pixel_staircase() -> None:
    """The long axis is a maximum over directions and slices of outline diameters; on the
    binary 0.5 iso-line each end scatters ±half a pixel, and the maximum picks the outermost
    ends: seen mean +0.47 mm here. On the in-plane blurred outline the mean is ≤ 0.3 mm
    (seen +0.26 with the blur shrink added back, +0.18 without: the sphere keeps some,
    every direction being a candidate maximum) and the short axis (one chord, not a maximum
    over directions) stays unbiased."""
    long_err, short_err = _axial_errors_over_offsets(6)
    print(f"long {long_err.mean():+.3f} [{long_err.min():+.2f}, {long_err.max():+.2f}] "
          f"short {short_err.mean():+.3f} [{short_err.min():+.2f}, {short_err.max():+.2f}]")
    assert long_err.mean() <= 0.3
    assert abs(short_err.mean()) <= 0.15
    assert np.abs(long_err).max() <= 0.7 and np.abs(short_err).max() <= 0.7


def test_blur_shrink_is_added_back_on_coarse_pixels() -> None:
    """On 1.5 mm MR pixels the σ = 1 px blur pulls a curved outline in by σ²κ/2 (0.2–0.5 mm
    over the two ends of an axis here); without adding it back the short axis read −0.23 mm
    on average (spheres and rotated ellipsoids, 1 mm slices so the slice sampling costs
    little), with it −0.04. The long axis keeps a small upward bias from the maximum over
    directions (+0.24 here: flat pixel rows longer than the blur), which the shrink used to
    hide (−0.13)."""
    from fixtures.shapes import Ellipsoid

    solids = [(Ellipsoid.make([0, 0, 0], [9, 9, 9]),),
              (Ellipsoid.make([0, 0, 0], [14, 8, 7], rotation(1)),),
              (Ellipsoid.make([0, 0, 0], [11, 7, 9], rotation(4)),)]
    long_err, short_err = _axial_errors_over_offsets(6, (1.5, 1.5, 1.0), solids=solids)
    print(f"long {long_err.mean():+.3f} short {short_err.mean():+.3f}")
    assert abs(short_err.mean()) <= 0.12
    assert -0.05 <= long_err.mean() <= 0.35
    assert np.abs(short_err).max() <= 0.9 and np.abs(long_err).max() <= 0.8


def test_blur_shrink_of_an_ellipse() -> None:
    """σ²κ/2 at each end: long axis ends κ = a/b², short axis ends κ = b/a² (a ≥ b the
    semi-axes); a disc of radius R loses σ²/R per diameter; capped at σ for slivers."""
    grow_long, grow_short = size._blur_shrink_mm(30.0, 20.0, 1.0)
    assert grow_long == pytest.approx(1.0 * 15 / 10**2)
    assert grow_short == pytest.approx(1.0 * 10 / 15**2)
    assert size._blur_shrink_mm(20.0, 20.0, 0.7) == pytest.approx((0.49 / 10, 0.49 / 10))
    assert size._blur_shrink_mm(30.0, 1.0, 0.7) == pytest.approx((0.7, 2 * 0.49 * 1 / 900))


@pytest.mark.parametrize("spacing", [(0.7, 0.7, 3.0), (1.5, 1.5, 5.0)])
def test_axial_axes_of_masks_the_blur_erases(spacing: tuple[float, float, float]) -> None:
    """A single voxel and a one-voxel diagonal line fade under 0.5 in the in-plane blur
    (σ = 1 pixel) that RECIST is read on: that raised "no axial cross-section" and lost the
    lesion's measurement. Their binary outline is measured instead: a voxel reads its
    pixel, the line its length along the diagonal plus the half-pixel corners."""
    px = spacing[0]
    single = Volume.from_geometry(np.ones((1, 1, 1), dtype=bool), origin_lps=(0, 0, 0),
                                  spacing_mm=spacing, modality="")
    d = axial_diameters(single)
    assert d.long_axis_mm == pytest.approx(px, abs=1e-6)
    line = Volume.from_geometry(np.eye(6, dtype=bool)[None], origin_lps=(0, 0, 0),
                                spacing_mm=spacing, modality="")
    d = axial_diameters(line)
    assert d.long_axis_mm == pytest.approx(axial_diameters(line, inplane_sigma_px=0).long_axis_mm)
    assert 5 * np.sqrt(2) * px < d.long_axis_mm <= 6 * np.sqrt(2) * px
