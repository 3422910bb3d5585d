"""Helpers shared by the measurement modules: mask validation, cropping, surfaces, calipers.

Everything here is private to :mod:`measurements`. Geometry stays in LPS millimetres: voxel
indices are converted with the volume's affine (direction and spacing included), so a
prone, flipped or oblique acquisition gives the same millimetres as an axial supine one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.image import GeometryError, Volume, check_same_grid, normalize_spacing_mm

__all__ = [
    "EmptyMaskError",
    "ModalityError",
]

FloatArray = npt.NDArray[np.float64]

_PAIRWISE_CHUNK = 512


class EmptyMaskError(ValueError):
    """Raised when a mask given to a measurement has no voxel inside (nothing to measure)."""


class ModalityError(ValueError):
    """Raised when a measurement is applied to the wrong modality (HU rules on MR, ...)."""


def _bool_mask(mask: Volume, name: str, *, allow_empty: bool = False) -> npt.NDArray[np.bool_]:
    """The mask's voxels as a bool array; integer masks must hold only 0 and 1.

    A label map with several labels or a float probability map is refused rather than
    guessed at (threshold or select the label first).
    """
    if not isinstance(mask, Volume):
        raise TypeError(f"{name} must be a pipeline.image.Volume, got {type(mask).__name__}")
    arr = mask.array
    if arr.dtype == np.bool_:
        out = arr
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise ValueError(
                f"{name} must be binary (0/1); found values {int(arr.min())}..{int(arr.max())}"
                " (select one label first)"
            )
        out = arr.astype(bool)
    else:
        raise ValueError(f"{name} must be a bool or 0/1 integer mask, got dtype {arr.dtype}")
    if not allow_empty and not out.any():
        raise EmptyMaskError(f"{name} is empty: no voxel inside (shape {arr.shape})")
    return out


def _check_grids(reference: Volume, ref_name: str, **others: Volume) -> None:
    """check_same_grid for several volumes, naming the offending one."""
    for name, vol in others.items():
        try:
            check_same_grid(reference, vol)
        except GeometryError as exc:
            raise GeometryError(f"{name} is not on the grid of {ref_name}: {exc}") from exc


def _check_orthogonal(vol: Volume, name: str) -> None:
    """Distance transforms with per-axis sampling need orthogonal grid axes."""
    d = vol.direction
    gram = d.T @ d
    if not np.allclose(gram, np.eye(3), atol=1e-4):
        raise GeometryError(
            f"{name} has non-orthogonal grid axes (e.g. uncorrected gantry tilt); "
            "resample it to an orthogonal grid before measuring distances"
        )


def _spacing_kji(vol: Volume) -> FloatArray:
    """Voxel size along the array axes (k, j, i) in mm, validated."""
    return normalize_spacing_mm(vol.spacing_mm[::-1])


def _bbox_kji(arr: npt.NDArray[Any]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Inclusive-exclusive bounding box (lo, hi) of the nonzero voxels in array order."""
    nz = [np.flatnonzero(arr.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
    lo = np.array([n[0] for n in nz], dtype=np.int64)
    hi = np.array([n[-1] + 1 for n in nz], dtype=np.int64)
    return lo, hi


def _crop_padded(
    arrays: list[npt.NDArray[Any]],
    vol: Volume,
    lo_kji: npt.NDArray[np.int64],
    hi_kji: npt.NDArray[np.int64],
    pad_vox: int,
) -> tuple[list[npt.NDArray[Any]], FloatArray]:
    """Crop arrays of ``vol``'s grid to [lo-pad, hi+pad), zero-padding beyond the grid.

    Returns the cropped arrays and the affine (index (i, j, k) → LPS) of the crop, so the
    geometry stays exact. Padding outside the grid is zeros (the mask ends there).
    """
    shape = np.array(vol.array.shape)
    want_lo = lo_kji - pad_vox
    want_hi = hi_kji + pad_vox
    src_lo = np.maximum(want_lo, 0)
    src_hi = np.minimum(want_hi, shape)
    before = src_lo - want_lo
    after = want_hi - src_hi
    sl = tuple(slice(int(a), int(b)) for a, b in zip(src_lo, src_hi, strict=True))
    widths = [(int(b), int(a)) for b, a in zip(before, after, strict=True)]
    out = [np.pad(a[sl], widths, mode="constant", constant_values=0) for a in arrays]
    affine = vol.affine_lps.copy()
    affine[:3, 3] = vol.index_to_lps(want_lo[::-1].astype(np.float64))
    return out, affine


def _kji_to_lps(points_kji: FloatArray, affine: FloatArray) -> FloatArray:
    """Continuous array indices (k, j, i) → LPS mm with a 4×4 index (i, j, k) affine."""
    ijk = np.asarray(points_kji, dtype=np.float64)[:, ::-1]
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _surface_mesh_kji(mask: npt.NDArray[Any]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    """Marching-cubes iso-surface at 0.5 of a zero-padded bool array, in index units (k, j, i).

    On a binary mask the vertices sit at the midpoints between inside and outside voxel
    centres (the same surface pyradiomics meshes).
    """
    from skimage.measure import marching_cubes

    verts, faces, _normals, _values = marching_cubes(
        mask.astype(np.float32), level=0.5, allow_degenerate=False
    )
    return verts.astype(np.float64), faces.astype(np.int64)


def _mesh_volume_mm3(verts_lps: FloatArray, faces: npt.NDArray[np.int64]) -> float:
    """Enclosed volume of a closed triangle mesh (divergence theorem), mm³."""
    a, b, c = (verts_lps[faces[:, n]] for n in range(3))
    centre = verts_lps.mean(axis=0)
    a, b, c = a - centre, b - centre, c - centre
    return float(abs(np.einsum("ij,ij->i", a, np.cross(b, c)).sum()) / 6.0)


def _closest_points_on_triangles(
    p: FloatArray, a: FloatArray, b: FloatArray, c: FloatArray
) -> FloatArray:
    """Closest point to each p[n] on triangle (a[n], b[n], c[n]) (vectorised; Ericson 5.1.5)."""
    ab, ac, ap = b - a, c - a, p - a
    d1 = np.einsum("ij,ij->i", ab, ap)
    d2 = np.einsum("ij,ij->i", ac, ap)
    bp = p - b
    d3 = np.einsum("ij,ij->i", ab, bp)
    d4 = np.einsum("ij,ij->i", ac, bp)
    cp = p - c
    d5 = np.einsum("ij,ij->i", ab, cp)
    d6 = np.einsum("ij,ij->i", ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        denom = va + vb + vc
        v_in = vb / denom
        w_in = vc / denom
        out = a + v_in[:, None] * ab + w_in[:, None] * ac  # interior (default)
        # edge regions
        w_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
        out = np.where(on_bc[:, None], b + w_bc[:, None] * (c - b), out)
        w_ac = d2 / (d2 - d6)
        on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        out = np.where(on_ac[:, None], a + w_ac[:, None] * ac, out)
        v_ab = d1 / (d1 - d3)
        on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        out = np.where(on_ab[:, None], a + v_ab[:, None] * ab, out)
    # vertex regions
    out = np.where(((d6 >= 0) & (d5 <= d6))[:, None], c, out)
    out = np.where(((d3 >= 0) & (d4 <= d3))[:, None], b, out)
    out = np.where(((d1 <= 0) & (d2 <= 0))[:, None], a, out)
    bad = ~np.all(np.isfinite(out), axis=1)  # degenerate triangle: fall back to vertex a
    out[bad] = a[bad]
    return out


def _nearest_surface_points(
    query: FloatArray, verts: FloatArray, faces: npt.NDArray[np.int64], k: int = 8
) -> tuple[FloatArray, FloatArray]:
    """Distance from each query point to a triangle mesh and the closest mesh point.

    The ``k`` nearest vertices (KD-tree) select candidate triangles (those incident to
    them); the exact point-triangle distance is taken over the candidates. On a mesh whose
    triangles are small compared to the distances this finds the true closest triangle;
    it never reports more than the nearest-vertex distance.
    """
    from scipy.spatial import cKDTree

    k = min(k, len(verts))
    _d, nbr = cKDTree(verts).query(query, k=k)
    nbr = np.asarray(nbr).reshape(len(query), k)
    # vertex → incident triangles (CSR)
    vert_of = faces.ravel()
    tri_of = np.repeat(np.arange(len(faces)), 3)
    order = np.argsort(vert_of, kind="stable")
    tri_sorted = tri_of[order]
    start = np.searchsorted(vert_of[order], np.arange(len(verts)))
    count = np.bincount(vert_of, minlength=len(verts))
    flat_v = nbr.ravel()
    flat_q = np.repeat(np.arange(len(query)), k)
    n_per = count[flat_v]
    pair_q = np.repeat(flat_q, n_per)
    offsets = np.arange(n_per.sum()) - np.repeat(np.cumsum(n_per) - n_per, n_per)
    pair_t = tri_sorted[np.repeat(start[flat_v], n_per) + offsets]
    tri = verts[faces[pair_t]]
    closest = _closest_points_on_triangles(query[pair_q], tri[:, 0], tri[:, 1], tri[:, 2])
    d2 = np.einsum("ij,ij->i", closest - query[pair_q], closest - query[pair_q])
    # per query: the candidate with the smallest distance
    order = np.lexsort((d2, pair_q))
    first = np.searchsorted(pair_q[order], np.arange(len(query)))
    best = order[first]
    return np.sqrt(d2[best]), closest[best]


def curvature_kept_blur(field: npt.NDArray[np.floating[Any]], sigma_vox: Any
                        ) -> npt.NDArray[np.float64]:
    """G_σ ∗ d − ½ Σ_a σ_a² ∂_aa(G_σ ∗ d) of a signed distance map ``d`` (σ per array axis,
    voxels; 0 leaves an axis alone): a Gaussian blur that takes the one-voxel steps off a
    digitised surface without pulling a curved zero level inwards (the blur moves it by
    ½ Σ σ_a² ∂²d/∂a², heat flow to time σ²/2, which is added back on the field itself;
    second order: exact for the quadratic part of d, which is what the curvature is)."""
    from scipy.ndimage import gaussian_filter

    sigma = np.asarray(sigma_vox, dtype=np.float64)
    d = np.asarray(field, dtype=np.float64)
    out = gaussian_filter(d, sigma, mode="nearest")
    for axis in np.flatnonzero(sigma > 0):
        order = [0] * d.ndim
        order[axis] = 2
        out -= 0.5 * float(sigma[axis]) ** 2 * gaussian_filter(d, sigma, order=order,
                                                               mode="nearest")
    return out


def _farthest_pair(points: FloatArray) -> tuple[float, int, int]:
    """Largest distance between two of ``points`` (N, D) and the indices of the pair.

    Only convex-hull vertices can realise the maximum, so the brute force runs on them
    (chunked to bound memory).
    """
    from scipy.spatial import ConvexHull, QhullError

    pts = np.asarray(points, dtype=np.float64)
    n, dim = pts.shape
    if n < 2:
        return 0.0, 0, 0
    cand = np.arange(n)
    if n > dim + 1:
        try:
            cand = ConvexHull(pts).vertices
        except QhullError:  # flat or collinear: all points are candidates
            cand = np.arange(n)
    p = pts[cand] - pts[cand].mean(axis=0)
    sq = np.einsum("ij,ij->i", p, p)
    best, bi, bj = -1.0, 0, 0
    for start in range(0, len(p), _PAIRWISE_CHUNK):
        stop = min(start + _PAIRWISE_CHUNK, len(p))
        d2 = sq[start:stop, None] + sq[None, :] - 2.0 * (p[start:stop] @ p.T)
        flat = int(np.argmax(d2))
        r, c = divmod(flat, d2.shape[1])
        if d2[r, c] > best:
            best, bi, bj = float(d2[r, c]), int(cand[start + r]), int(cand[c])
    return float(np.linalg.norm(pts[bi] - pts[bj])), bi, bj


def _depth_mm(mask: npt.NDArray[np.bool_], spacing_kji: FloatArray) -> FloatArray:
    """Depth (mm) of every voxel centre below the mask's boundary (0 outside the mask).

    The boundary lies half-way between an inside and an outside voxel centre, so the
    depth is the Euclidean distance (``distance_transform_edt`` with ``sampling``) to the
    nearest outside voxel centre minus half the voxel's extent in that direction, or the
    same measured along each grid axis alone, whichever is smaller (on anisotropic grids the
    nearest outside centre is not always across the nearest boundary: the edge slice of
    2.5 mm slices is 1.25 mm deep even when an in-plane outside voxel is 2.1 mm away).
    Computed on the mask's bounding box.
    """
    from scipy.ndimage import distance_transform_edt

    out = np.zeros(mask.shape, dtype=np.float64)
    if not mask.any():
        return out
    lo, hi = _bbox_kji(mask)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    padded = np.pad(mask[box], 1)
    dist, nearest = distance_transform_edt(padded, sampling=spacing_kji, return_indices=True)
    inside = np.argwhere(padded)
    vec = (nearest[:, padded].T - inside) * spacing_kji
    unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    with np.errstate(divide="ignore"):
        half_extent = np.min((spacing_kji / 2.0) / np.abs(unit), axis=1)
    depth = np.zeros(padded.shape, dtype=np.float64)
    depth[padded] = dist[padded] - half_extent
    for axis in range(3):  # along one axis only: other axes made "infinitely" far
        along = np.full(3, 1e6 * float(spacing_kji.max()))
        along[axis] = spacing_kji[axis]
        axial_depth = distance_transform_edt(padded, sampling=along) - spacing_kji[axis] / 2.0
        depth[padded] = np.minimum(depth[padded], axial_depth[padded])
    out[box] = depth[1:-1, 1:-1, 1:-1]
    return out


def _eroded(mask: npt.NDArray[np.bool_], spacing_kji: FloatArray, erode_mm: float) -> Any:
    """Voxels of ``mask`` whose centre lies at least ``erode_mm`` below its boundary.

    Depth as in :func:`_depth_mm` (Euclidean mm, the same physical depth along every axis
    of an anisotropic grid). ``erode_mm == 0`` returns the mask unchanged.
    """
    if not np.isfinite(erode_mm) or erode_mm < 0:
        raise ValueError(f"erode_mm must be finite and >= 0, got {erode_mm}")
    if erode_mm == 0 or not mask.any():
        return mask.copy()
    return mask & (_depth_mm(mask, spacing_kji) >= erode_mm)


def _require_modality(image: Volume, name: str, allowed: tuple[str, ...], rule: str) -> None:
    """Refuse an image whose known modality is not one of ``allowed`` ("" = unknown: ok)."""
    modality = (image.modality or "").upper()
    if modality and modality not in allowed:
        raise ModalityError(
            f"{name} has modality {modality!r}; {rule} applies to {'/'.join(allowed)} only"
        )
