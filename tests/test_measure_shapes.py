"""Analytic test shapes for the measurement tests, and checks of the analytic formulas.

Shapes are defined in continuous patient space (LPS mm) by an implicit function and
rasterised by sampling each voxel centre of a grid of any orientation. Ground truth comes
from closed forms (checked here against dense sampling of the continuous shape, never
against voxels).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
import pytest

from pipeline.image import Volume

FloatArray = npt.NDArray[np.float64]
InsideFn = Callable[[FloatArray], npt.NDArray[np.bool_]]

PRONE = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # IOP [-1,0,0,0,-1,0]
CORONAL = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])  # IOP [1,0,0,0,0,-1]


def rotation(seed: int) -> FloatArray:
    """A random proper rotation matrix (columns: rotated axes), reproducible."""
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


def grid(
    center_lps: FloatArray,
    half_extent_mm: float,
    spacing_mm: tuple[float, float, float],
    direction: FloatArray | None = None,
    offset_vox: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> Volume:
    """An empty bool volume of any orientation covering a ball of ``half_extent_mm``."""
    spacing = np.asarray(spacing_mm, dtype=np.float64)
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64)
    n = np.ceil(2.0 * half_extent_mm / spacing).astype(int) + 4
    origin = np.asarray(center_lps, float) - d @ ((n - 1) / 2.0 * spacing)
    origin = origin + d @ (np.asarray(offset_vox, float) * spacing)
    arr = np.zeros((n[2], n[1], n[0]), dtype=bool)
    return Volume.from_geometry(arr, origin_lps=origin, spacing_mm=spacing, direction=d)


def voxel_centres_lps(vol: Volume) -> FloatArray:
    """LPS of every voxel centre, in array order (k, j, i) flattened."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in vol.array.shape), indexing="ij")
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], axis=1).astype(np.float64)
    return vol.index_to_lps(ijk)


def rasterize(vol: Volume, inside: InsideFn) -> Volume:
    """Mask of the voxels whose centre is inside the shape."""
    return vol.with_array(inside(voxel_centres_lps(vol)).reshape(vol.array.shape))


def ellipsoid(center_lps: FloatArray, semi_axes_mm: FloatArray, rot: FloatArray) -> InsideFn:
    c = np.asarray(center_lps, float)
    a = np.asarray(semi_axes_mm, float)

    def inside(p: FloatArray) -> npt.NDArray[np.bool_]:
        q = (p - c) @ rot  # coordinates along the ellipsoid axes
        return np.sum((q / a) ** 2, axis=1) <= 1.0

    return inside


def sphere(center_lps: FloatArray, radius_mm: float) -> InsideFn:
    return ellipsoid(center_lps, np.full(3, radius_mm), np.eye(3))


def ellipsoid_axial_axes(
    center_lps: FloatArray, semi_axes_mm: FloatArray, rot: FloatArray, s_mm: float
) -> tuple[float, float]:
    """Exact (long, short) RECIST axes of the ellipse cut by the axial plane S = s_mm.

    The ellipsoid is xᵀAx ≤ 1 with A = R diag(a⁻²) Rᵀ. Cutting at x_S = h gives the ellipse
    (p − p0)ᵀ A_LP (p − p0) ≤ 1 − h² / (A⁻¹)_SS (Schur complement), whose longest chord is
    its major axis and whose longest chord perpendicular to it is its minor axis.
    Returns (0, 0) when the plane misses the ellipsoid.
    """
    a = np.asarray(semi_axes_mm, float)
    amat = rot @ np.diag(1.0 / a**2) @ rot.T
    h = s_mm - float(center_lps[2])
    scale2 = 1.0 - h * h / np.linalg.inv(amat)[2, 2]
    if scale2 <= 0:
        return 0.0, 0.0
    lam = np.linalg.eigvalsh(amat[:2, :2])
    return 2.0 * float(np.sqrt(scale2 / lam[0])), 2.0 * float(np.sqrt(scale2 / lam[1]))


def ellipsoid_max_axial_long_mm(semi_axes_mm: FloatArray, rot: FloatArray) -> float:
    """Largest axial long axis over all planes (the plane through the centre)."""
    return ellipsoid_axial_axes(np.zeros(3), semi_axes_mm, rot, 0.0)[0]


def lens_volume_mm3(r_big: float, r_small: float, d: float) -> float:
    """Volume of the intersection of two spheres with radii r_big, r_small, centres d apart."""
    if d >= r_big + r_small:
        return 0.0
    if d <= abs(r_big - r_small):
        return 4.0 / 3.0 * np.pi * min(r_big, r_small) ** 3
    big, small = r_big, r_small
    return float(
        np.pi
        * (big + small - d) ** 2
        * (d * d + 2 * d * small - 3 * small**2 + 2 * d * big + 6 * small * big - 3 * big**2)
        / (12.0 * d)
    )


# ----------------------------------------------------------------------------- checks


def test_ellipsoid_cross_section_formula_matches_dense_sampling() -> None:
    """The closed-form cross-section agrees with a dense sample of the continuous shape.

    1e6 points of the plane S = s are tested against the implicit function; the in-plane
    Feret diameter of the inside points (0.04 mm sampling step) must equal the formula
    within 0.1 mm (two sampling steps plus hull discretisation).
    """
    from scipy.spatial import ConvexHull
    from scipy.spatial.distance import pdist

    rot = rotation(7)
    semi = np.array([20.0, 12.0, 7.0])
    center = np.array([3.0, -4.0, 10.0])
    s = 13.0
    long_mm, short_mm = ellipsoid_axial_axes(center, semi, rot, s)
    g = np.linspace(-25, 25, 1251)
    x, y = np.meshgrid(g + center[0], g + center[1])
    pts = np.column_stack([x.ravel(), y.ravel(), np.full(x.size, s)])
    inside = pts[ellipsoid(center, semi, rot)(pts)][:, :2]
    hull = inside[ConvexHull(inside).vertices]
    assert pdist(hull).max() == pytest.approx(long_mm, abs=0.1)
    # short axis of an ellipse = minor axis: the inside area is π·(long/2)·(short/2)
    area = inside.shape[0] * (g[1] - g[0]) ** 2
    assert area == pytest.approx(np.pi * long_mm * short_mm / 4.0, rel=0.01)


def test_lens_volume_matches_monte_carlo() -> None:
    """Closed-form sphere-sphere intersection vs 2e6 random points (≈0.3 % MC error)."""
    rng = np.random.default_rng(0)
    r_big, r_small, d = 20.0, 12.0, 14.0
    pts = rng.uniform(-12.0, 12.0, size=(2_000_000, 3))
    in_small = np.sum(pts**2, axis=1) <= r_small**2
    in_both = in_small & (np.sum((pts - [d, 0, 0]) ** 2, axis=1) <= r_big**2)
    frac_mc = in_both.sum() / in_small.sum()
    frac = lens_volume_mm3(r_big, r_small, d) / (4 / 3 * np.pi * r_small**3)
    assert frac_mc == pytest.approx(frac, abs=0.005)


def test_rasterized_sphere_has_the_sphere_volume() -> None:
    """Voxel-centre sampling of r = 10 mm at 0.5 mm: count × voxel volume within 1 %."""
    vol = rasterize(grid(np.zeros(3), 12.0, (0.5, 0.5, 0.5)), sphere(np.zeros(3), 10.0))
    measured = vol.array.sum() * vol.voxel_volume_mm3
    assert measured == pytest.approx(4 / 3 * np.pi * 1000.0, rel=0.01)


def test_grid_orientation_places_voxels_in_patient_space() -> None:
    """The same sphere on a prone and an oblique grid has its centroid at the same LPS."""
    centre = np.array([12.0, -30.0, 55.0])
    for d in (PRONE, CORONAL, rotation(3)):
        vol = rasterize(grid(centre, 14.0, (0.8, 0.8, 1.5), d), sphere(centre, 10.0))
        pts = voxel_centres_lps(vol)[vol.array.ravel()]
        np.testing.assert_allclose(pts.mean(axis=0), centre, atol=0.2)
