"""Minimal ablative margin and tumour coverage by the ice ball.

Definitions:

* **Surfaces.** Tumour and ice-ball surfaces are the 0.5 iso-surfaces (marching cubes) of
  the masks after a light Gaussian smoothing (``smooth_mm``, default half the largest voxel
  size), placed in LPS mm with the affine, so anisotropic, oblique and flipped grids are
  measured in true millimetres. The smoothing removes the staircase of thick slices (a
  binary mask's own iso-surface is off by up to half a slice at the poles of a sphere,
  which would bias the minimum over the surface by up to a whole slice); it moves a
  surface of radius ρ inwards by only about smooth_mm²/ρ (0.1 mm for 1.25 mm and 12 mm).
* **Distance to a surface.** Exact point-to-triangle distance to the ice-ball mesh (over
  the triangles around the nearest mesh vertices), not the distance to the nearest vertex.
* **Signed margin at a tumour surface point.** The Euclidean distance to the nearest
  ice-ball surface point, positive when the point lies inside the ice ball (trilinear
  value of the ice mask ≥ 0.5), negative outside.
* **Minimal margin.** The minimum of the signed margin over the tumour surface: the
  thinnest layer of ice around the tumour, or minus the largest protrusion of tumour
  beyond the ice. For a tumour sphere of radius r offset by o inside an ice sphere of
  radius R it is ``R - r - o``.
* **Coverage.** Tumour voxels inside the ice mask / tumour voxels × 100 (voxel count on
  the shared grid).

**Distance maps.** A mask on thick slices only tells on which slice its surface ends, so
its pole is known to ±half a slice, and the minimum over the surface picks the worst of
these errors (a sphere's margin on 3 mm slices read 1-2 mm low). When the structures are
known better than the grid — the ice-ball model is analytic, the tumour comes from a
baseline series with thinner slices — they are passed as signed distance maps (mm,
positive inside), whose zero level interpolates linearly between slices:
:func:`ablative_margin_from_distances`.

Accuracy is limited by the masks, not the method: a surface is known to about half a voxel
along each axis (±1.25 mm along 2.5 mm slices). Both masks must be on the same grid (the
baseline tumour registered and resampled into the intraprocedural scan).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from measurements._common import (
    EmptyMaskError,
    _bbox_kji,
    _bool_mask,
    _check_grids,
    _crop_padded,
    _kji_to_lps,
    _nearest_surface_points,
    _surface_mesh_kji,
    curvature_kept_blur,
)
from pipeline.image import Volume

__all__ = ["Margin", "ablative_margin", "ablative_margin_from_distances", "coverage_pct",
           "signed_distance_mm"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Margin:
    """Minimal ablative margin and coverage.

    Attributes:
        min_margin_mm: minimal signed distance from the tumour surface to the ice-ball
            surface (negative where the tumour extends outside the ice ball).
        coverage_pct: percentage of tumour voxels inside the ice-ball mask.
        closest_tumour_point_lps: tumour surface point where the minimum is reached.
        closest_ice_surface_point_lps: the nearest ice-ball surface point to it.
    """

    min_margin_mm: float
    coverage_pct: float
    closest_tumour_point_lps: FloatArray
    closest_ice_surface_point_lps: FloatArray


def coverage_pct(tumour_mask: Volume, ice_mask: Volume) -> float:
    """Percentage of tumour voxels inside the ice-ball mask (same grid required)."""
    _check_grids(tumour_mask, "tumour_mask", ice_mask=ice_mask)
    tumour = _bool_mask(tumour_mask, "tumour_mask")
    ice = _bool_mask(ice_mask, "ice_mask", allow_empty=True)
    return 100.0 * float(np.count_nonzero(tumour & ice)) / float(np.count_nonzero(tumour))


def ablative_margin(
    tumour_mask: Volume,
    ice_mask: Volume,
    *,
    smooth_mm: float | None = None,
) -> Margin:
    """Minimal signed tumour-to-ice-surface distance and tumour coverage.

    Args:
        tumour_mask: binary tumour mask on the intraprocedural grid.
        ice_mask: binary ice-ball mask on the same grid.
        smooth_mm: Gaussian sigma (mm) applied to both masks before extracting surfaces;
            default half the largest voxel size; 0 uses the binary masks' own surfaces.

    Raises:
        GeometryError: the masks are not on the same grid.
        EmptyMaskError: either mask is empty.
    """
    _check_grids(tumour_mask, "tumour_mask", ice_mask=ice_mask)
    tumour = _bool_mask(tumour_mask, "tumour_mask")
    ice = _bool_mask(ice_mask, "ice_mask")
    if smooth_mm is None:
        smooth_mm = float(tumour_mask.spacing_mm.max()) / 2.0
    if not np.isfinite(smooth_mm) or smooth_mm < 0:
        raise ValueError(f"smooth_mm must be finite and >= 0, got {smooth_mm}")
    coverage = 100.0 * float(np.count_nonzero(tumour & ice)) / float(np.count_nonzero(tumour))

    lo, hi = _bbox_kji(tumour | ice)
    pad = 1 + int(np.ceil(3 * smooth_mm / tumour_mask.spacing_mm.min()))
    (t_crop, i_crop), affine = _crop_padded([tumour, ice], tumour_mask, lo, hi, pad)
    sigma_vox = smooth_mm / np.linalg.norm(affine[:3, :3], axis=0)[::-1]
    _t_field, t_verts, _t_faces = _smoothed_surface(t_crop, sigma_vox)
    i_field, i_verts, i_faces = _smoothed_surface(i_crop, sigma_vox)
    return _margin_of_surfaces(t_verts, i_field, 0.5, i_verts, i_faces, affine, coverage)


def signed_distance_mm(mask: Volume, *, reach_mm: float = 15.0, smooth: bool = False
                       ) -> Volume:
    """Signed distance map (float32 mm, positive inside) of a binary mask's surface — the
    surface halfway between inside and outside voxel centres — at every voxel centre,
    clipped to ±``reach_mm``.

    ``smooth``: the map smoothed with a Gaussian of σ = one voxel along the finely sampled
    axes (those whose spacing rounds to the smallest), the blur's curvature shrink
    ½ Σ σ_a² ∂²d/∂a² added back on the field, as the 3D caliper's surface is
    (:func:`measurements.size.max_3d_diameter_mm`). The halfway surface lies within ±half a
    voxel of the solid's and is unbiased on average, but a minimal margin is a minimum
    over the surface and picks the outermost of those errors: a 10 mm sphere's margin to
    a concentric or offset ice ball on 0.75 × 0.75 × 1 mm voxels reads 0.27 mm short on
    average from the halfway surface, 0.10 mm short from the smoothed one; on truth
    masks of the synthetic archives' tumours −0.26 → −0.05 mm (mesophytic), −0.38 →
    −0.29 mm (spheres, whose uniform margin leaves the minimum anywhere on the surface).

    The distances are measured on the mask upsampled to near-isotropic voxels (each voxel
    split into round(spacing / smallest spacing) parts per axis), where the halfway
    surface lies half a voxel from the nearest voxel centre on either side; measured on
    the thick-slice grid itself, a voxel next to the surface in-plane would read as close
    as a slice neighbour and pull the zero level towards it.
    """
    from scipy.ndimage import distance_transform_edt, map_coordinates

    inside = _bool_mask(mask, "mask", allow_empty=True)
    out = np.full(inside.shape, -reach_mm, dtype=np.float32)
    if not inside.any():
        return mask.with_array(out, modality="")
    spacing = np.linalg.norm(mask.affine_lps[:3, :3], axis=0)[::-1]  # (k, j, i)
    lo, hi = _bbox_kji(inside)
    pad = np.ceil(reach_mm / spacing).astype(int) + 1
    lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, inside.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    factor = np.maximum(np.rint(spacing / spacing.min()), 1).astype(int)
    fine = inside[box]
    for axis, f in enumerate(factor):
        fine = np.repeat(fine, int(f), axis=axis)
    fine_spacing = spacing / factor
    half = fine_spacing.min() / 2.0
    d_in = distance_transform_edt(fine, sampling=fine_spacing)
    d_out = distance_transform_edt(~fine, sampling=fine_spacing)
    field = np.where(fine, d_in - half, half - d_out)
    coarse_shape = hi - lo
    centres = [(np.arange(n) * f + (f - 1) / 2.0) for n, f in zip(coarse_shape, factor,
                                                                   strict=True)]
    grid = np.meshgrid(*centres, indexing="ij")
    values = map_coordinates(field, [g.ravel() for g in grid], order=1, mode="nearest")
    values = values.reshape(tuple(int(n) for n in coarse_shape))
    if smooth:
        sigma_vox = np.where(factor == 1, 1.0, 0.0)  # one voxel of this grid, fine axes only
        values = curvature_kept_blur(values, sigma_vox)
    out[box] = np.clip(values, -reach_mm, reach_mm)
    return mask.with_array(out, modality="")


def ablative_margin_from_distances(tumour_distance: Volume, ice_distance: Volume) -> Margin:
    """Minimal signed margin and coverage from signed distance maps (mm, positive inside).

    The surfaces are the zero levels of the maps (marching cubes, linear interpolation
    between voxel centres), so a surface known better than the grid — an analytic ice-ball
    model, a tumour carried from thinner baseline slices — keeps its position between
    thick slices. Coverage counts the voxels where both maps are positive.

    Raises:
        GeometryError: the maps are not on the same grid.
        EmptyMaskError: either map is nowhere positive.
    """
    _check_grids(tumour_distance, "tumour_distance", ice_distance=ice_distance)
    t_field = np.asarray(tumour_distance.array, dtype=np.float32)
    i_field = np.asarray(ice_distance.array, dtype=np.float32)
    tumour, ice = t_field > 0, i_field > 0
    if not tumour.any():
        raise EmptyMaskError("tumour_distance is nowhere positive (empty tumour)")
    if not ice.any():
        raise EmptyMaskError("ice_distance is nowhere positive (empty ice ball)")
    coverage = 100.0 * float(np.count_nonzero(tumour & ice)) / float(np.count_nonzero(tumour))
    lo, hi = _bbox_kji(tumour | ice)
    # one voxel of padding, outside both structures, closes the surfaces at the crop edge
    lo, hi = lo - 1, hi + 1
    outside = np.float32(-1.0e3)
    t_crop = _crop_constant(t_field, lo, hi, outside)
    i_crop = _crop_constant(i_field, lo, hi, outside)
    affine = tumour_distance.affine_lps.copy()
    affine[:3, 3] = _kji_to_lps(lo[None, :].astype(np.float64), tumour_distance.affine_lps)[0]
    t_verts, _ = _zero_surface(t_crop)
    i_verts, i_faces = _zero_surface(i_crop)
    return _margin_of_surfaces(t_verts, i_crop, 0.0, i_verts, i_faces, affine, coverage)


def _crop_constant(arr: npt.NDArray[np.float32], lo: npt.NDArray[np.int64],
                   hi: npt.NDArray[np.int64], fill: np.float32) -> npt.NDArray[np.float32]:
    """arr[lo:hi] (array order), ``fill`` beyond the array."""
    out = np.full(tuple(int(v) for v in hi - lo), fill, dtype=np.float32)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, arr.shape)
    dst = tuple(slice(int(a - b), int(c - b)) for a, b, c in zip(src_lo, lo, src_hi, strict=True))
    src = tuple(slice(int(a), int(c)) for a, c in zip(src_lo, src_hi, strict=True))
    out[dst] = arr[src]
    return out


def _zero_surface(field: npt.NDArray[np.float32]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Marching-cubes zero level of a signed distance map, index units (k, j, i)."""
    from skimage.measure import marching_cubes

    verts, faces, _normals, _values = marching_cubes(field, level=0.0, allow_degenerate=False)
    return verts.astype(np.float64), faces.astype(np.int64)


def _margin_of_surfaces(
    t_verts: FloatArray,
    i_field: npt.NDArray[np.float32],
    i_level: float,
    i_verts: FloatArray,
    i_faces: npt.NDArray[np.int64],
    affine: FloatArray,
    coverage: float,
) -> Margin:
    """Minimum over the tumour surface vertices of the signed distance to the ice surface
    (inside: the ice field at the vertex, trilinear, at or above ``i_level``)."""
    from scipy.ndimage import map_coordinates

    t_lps = _kji_to_lps(t_verts, affine)
    i_lps = _kji_to_lps(i_verts, affine)
    dist, closest = _nearest_surface_points(t_lps, i_lps, i_faces)
    inside = map_coordinates(i_field, t_verts.T, order=1, mode="nearest") >= i_level
    signed = np.where(inside, dist, -dist)
    best = int(np.argmin(signed))
    return Margin(
        min_margin_mm=float(signed[best]),
        coverage_pct=coverage,
        closest_tumour_point_lps=t_lps[best],
        closest_ice_surface_point_lps=closest[best],
    )


def _smoothed_surface(
    crop: npt.NDArray[np.bool_], sigma_vox: FloatArray
) -> tuple[npt.NDArray[np.float32], FloatArray, npt.NDArray[np.int64]]:
    """Gaussian-smoothed mask and its 0.5 iso-surface (index units, k, j, i).

    A structure too thin to survive the smoothing (its smoothed maximum below 0.5) keeps
    its binary surface instead of vanishing.
    """
    from scipy.ndimage import gaussian_filter

    field = crop.astype(np.float32)
    if np.any(sigma_vox > 0):
        smoothed = gaussian_filter(field, sigma_vox, mode="constant")
        if smoothed.max() > 0.5:
            field = smoothed
    verts, faces = _surface_mesh_kji(field)
    return field, verts, faces
