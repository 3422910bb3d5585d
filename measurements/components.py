"""Enhancing components in or at the edge of an ablation zone (CT, ΔHU).

After ablation what matters is any nodular or crescentic enhancing tissue, not the mean
over the whole zone. Method:

1. ΔHU = post − pre on the shared grid, smoothed with a Gaussian of ``smooth_mm`` (mm,
   same physical width on every axis) to suppress noise.
2. Search region: the zone plus a shell of ``search_shell_mm`` around it (Euclidean mm).
   Calcification/metal voxels (unenhanced > ``exclude_unenhanced_above_hu`` or either
   image > ``exclude_above_hu``) are excluded.
3. Voxels with smoothed ΔHU ≥ ``threshold_hu`` are grouped into 26-connected components;
   components smaller than ``min_volume_mm3`` are dropped.
4. Each component is described (size, thickness, position relative to the zone edge) and
   given a shape:

   * ``rim``: thin (thickness ≤ ``rim_max_thickness_mm``), peripheral (≥ 80 % of its
     voxels within thickness + one voxel of the zone edge) and covering at least
     ``rim_min_coverage`` of the zone's boundary: the benign early peripheral rim.
   * ``crescentic``: peripheral and elongated along the edge (3-D diameter ≥ 2 ×
     thickness) but not a rim (thicker, or covering less of the circumference).
   * ``nodular``: everything else (compact, or away from the edge).

   Thickness is twice the largest inscribed distance: for each voxel the Euclidean
   distance (mm) to the nearest voxel outside the component, minus half the voxel's own
   extent in that direction; thickness = 2 × (max of that) (exact for slabs aligned with
   the grid, within about one voxel otherwise).

Enhancing tissue just outside the zone (normal parenchyma) also appears in the shell; such
components usually reach the outer limit of the search shell (``reaches_search_limit``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt

from measurements._common import (
    _bbox_kji,
    _bool_mask,
    _check_grids,
    _check_orthogonal,
    _crop_padded,
    _farthest_pair,
    _kji_to_lps,
    _require_modality,
    _surface_mesh_kji,
)
from pipeline.image import Volume

__all__ = ["ComponentShape", "Component", "enhancing_components"]

FloatArray = npt.NDArray[np.float64]

_PERIPHERAL_FRACTION = 0.8


class ComponentShape(StrEnum):
    NODULAR = "nodular"
    RIM = "rim"
    CRESCENTIC = "crescentic"


@dataclass(frozen=True)
class Component:
    """One connected enhancing component.

    Attributes:
        volume_ml: voxel-count volume.
        max_diameter_mm: 3-D maximum caliper diameter.
        thickness_mm: twice the largest inscribed half-thickness (see module docstring).
        mean_delta_hu: mean of the unsmoothed ΔHU over the component.
        centroid_lps: centre of mass, LPS mm.
        shape: nodular / rim / crescentic.
        touches_zone_edge: some voxel lies within one voxel of the zone boundary or outside
            the zone.
        reaches_search_limit: some voxel lies in the outermost voxel layer of the search
            shell (or at the image border): the component may continue outside (e.g.
            normal enhancing parenchyma).
        fraction_in_zone: fraction of its voxels inside the zone mask.
        edge_coverage: fraction of the zone's boundary voxels within one voxel of it.
        n_voxels: number of voxels.
    """

    volume_ml: float
    max_diameter_mm: float
    thickness_mm: float
    mean_delta_hu: float
    centroid_lps: FloatArray
    shape: ComponentShape
    touches_zone_edge: bool
    reaches_search_limit: bool
    fraction_in_zone: float
    edge_coverage: float
    n_voxels: int


def enhancing_components(
    pre_hu: Volume,
    post_hu: Volume,
    zone_mask: Volume,
    *,
    threshold_hu: float = 20.0,
    min_volume_mm3: float = 30.0,
    search_shell_mm: float = 3.0,
    smooth_mm: float = 1.0,
    exclude_unenhanced_above_hu: float = 300.0,
    exclude_above_hu: float = 1000.0,
    rim_max_thickness_mm: float = 3.0,
    rim_min_coverage: float = 0.5,
) -> list[Component]:
    """Connected enhancing components (ΔHU ≥ threshold) in the zone and a shell around it.

    Returns the components sorted by decreasing volume (empty list: nothing enhancing).
    Raises ModalityError for MR images, GeometryError for grid mismatch.
    """
    from scipy.ndimage import distance_transform_edt, gaussian_filter, label

    _require_modality(pre_hu, "pre_hu", ("CT",), "HU enhancement")
    _require_modality(post_hu, "post_hu", ("CT",), "HU enhancement")
    _check_grids(zone_mask, "zone_mask", pre_hu=pre_hu, post_hu=post_hu)
    _check_orthogonal(zone_mask, "zone_mask")
    for name, value in (("search_shell_mm", search_shell_mm), ("smooth_mm", smooth_mm)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    zone_full = _bool_mask(zone_mask, "zone_mask")
    spacing = zone_mask.spacing_mm[::-1].copy()  # (k, j, i)
    pad = 1 + int(np.ceil((search_shell_mm + 3.0 * smooth_mm) / spacing.min()))
    lo, hi = _bbox_kji(zone_full)
    valid_full = np.ones(zone_full.shape, dtype=bool)
    (zone, pre, post, valid), affine = _crop_padded(
        [zone_full, pre_hu.array, post_hu.array, valid_full], zone_mask, lo, hi, pad
    )
    pre = pre.astype(np.float32)
    post = post.astype(np.float32)
    delta = np.where(valid, post - pre, np.float32(0.0))
    smoothed = gaussian_filter(delta, smooth_mm / spacing, mode="nearest") if smooth_mm else delta

    dist_out = distance_transform_edt(~zone, sampling=spacing)  # 0 inside the zone
    dist_in = distance_transform_edt(zone, sampling=spacing)  # 0 outside the zone
    search = (zone | (dist_out <= search_shell_mm)) & valid
    limit = (~zone & (dist_out > search_shell_mm - spacing.max())) | ~_interior(valid)
    excluded = (pre > min(exclude_unenhanced_above_hu, exclude_above_hu)) | (
        post > exclude_above_hu
    )
    candidate = search & ~excluded & (smoothed >= threshold_hu)
    labels, n = label(candidate, structure=np.ones((3, 3, 3), dtype=bool))
    if n == 0:
        return []
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    boundary = _zone_boundary(zone)
    out = []
    for lab in range(1, n + 1):
        if sizes[lab] * voxel_mm3 < min_volume_mm3:
            continue
        comp = labels == lab
        out.append(
            _describe(
                comp, delta, zone, dist_in, limit, boundary, affine, spacing,
                rim_max_thickness_mm, rim_min_coverage,
            )
        )
    out.sort(key=lambda c: -c.volume_ml)
    return out


def _describe(
    comp: npt.NDArray[np.bool_],
    delta: npt.NDArray[np.float32],
    zone: npt.NDArray[np.bool_],
    dist_in: FloatArray,
    limit: npt.NDArray[np.bool_],
    boundary: npt.NDArray[np.bool_],
    affine: FloatArray,
    spacing: FloatArray,
    rim_max_thickness_mm: float,
    rim_min_coverage: float,
) -> Component:
    from scipy.ndimage import distance_transform_edt

    n_vox = int(np.count_nonzero(comp))
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    idx = np.argwhere(comp).astype(np.float64)
    centroid = _kji_to_lps(idx.mean(axis=0, keepdims=True), affine)[0]
    sub_lo, sub_hi = _bbox_kji(comp)
    sub = comp[tuple(slice(a, b) for a, b in zip(sub_lo, sub_hi, strict=True))]
    verts, _faces = _surface_mesh_kji(np.pad(sub, 1))
    diameter, _a, _b = _farthest_pair(_kji_to_lps(verts + (sub_lo - 1.0), affine))
    thickness = _thickness_mm(sub, spacing)
    in_zone = comp & zone
    fraction_in_zone = float(np.count_nonzero(in_zone)) / n_vox
    touches = bool(np.any(comp & ~zone)) or bool(np.any(dist_in[in_zone] <= spacing.max() + 1e-6))
    band = thickness + spacing.max()
    peripheral_vox = np.count_nonzero(comp & ~zone) + np.count_nonzero(dist_in[in_zone] <= band)
    peripheral = peripheral_vox >= _PERIPHERAL_FRACTION * n_vox
    near_comp = distance_transform_edt(~comp, sampling=spacing) <= spacing.max() + 1e-6
    n_boundary = int(np.count_nonzero(boundary))
    coverage = float(np.count_nonzero(near_comp & boundary)) / n_boundary if n_boundary else 0.0
    if peripheral and thickness <= rim_max_thickness_mm and coverage >= rim_min_coverage:
        shape = ComponentShape.RIM
    elif peripheral and diameter >= 2.0 * thickness:
        shape = ComponentShape.CRESCENTIC
    else:
        shape = ComponentShape.NODULAR
    return Component(
        volume_ml=n_vox * voxel_mm3 / 1000.0,
        max_diameter_mm=float(diameter),
        thickness_mm=float(thickness),
        mean_delta_hu=float(delta[comp].mean()),
        centroid_lps=centroid,
        shape=shape,
        touches_zone_edge=touches,
        reaches_search_limit=bool(np.any(comp & limit)),
        fraction_in_zone=fraction_in_zone,
        edge_coverage=coverage,
        n_voxels=n_vox,
    )


def _thickness_mm(comp: npt.NDArray[np.bool_], spacing: FloatArray) -> float:
    """2 × max over voxels of (distance to the nearest outside voxel − half voxel extent)."""
    from scipy.ndimage import distance_transform_edt

    padded = np.pad(comp, 1)
    dist, nearest = distance_transform_edt(padded, sampling=spacing, return_indices=True)
    inside = np.argwhere(padded)
    d = dist[padded]
    vec = (nearest[:, padded].T - inside) * spacing  # mm, (N, 3)
    unit = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
    with np.errstate(divide="ignore"):
        half_extent = np.min((spacing / 2.0) / np.abs(unit), axis=1)
    return float(2.0 * np.max(d - half_extent))


def _zone_boundary(zone: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Zone voxels with at least one 6-neighbour outside the zone."""
    return zone & ~_eroded_6(zone)


def _eroded_6(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, border_value=0)


def _interior(valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """Voxels of ``valid`` not on its outer face (the image border inside the crop)."""
    return _eroded_6(valid) | ~valid
