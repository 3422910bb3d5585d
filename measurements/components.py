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

   Thickness is a layer thickness: the component is cut at half its peak smoothed ΔHU
   (so the smoothing blur does not widen thin layers), each voxel's depth below the cut's
   boundary is measured in mm (Euclidean, half-voxel corrected, anisotropy-aware) and
   thickness = 2 × the 90th percentile of the depths. The percentile
   (not the maximum) ignores the few places where a thin layer parallel to thick slices
   spans two slices. For a layer of thickness t it gives ≈ t within about one in-plane
   voxel (seen at 0.7 × 0.7 × 2.5 mm: 2.35 mm for a 2 mm rim, 2.5 mm for 2.5 and 3 mm
   rims); a compact ball of diameter D reads ≈ 0.4 D, which is why a rim must also cover
   much of the zone's edge.

Enhancing tissue just outside the zone (normal parenchyma) also appears in the shell; such
a component continues beyond the search region (``reaches_search_limit``) and lies mostly
outside the zone (``fraction_in_zone``): the shape says what it looks like, these two flags
say whether it belongs to the zone.
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
    _depth_mm,
    _farthest_pair,
    _kji_to_lps,
    _require_modality,
    _spacing_kji,
    _surface_mesh_kji,
)
from pipeline.image import Volume

__all__ = ["ComponentShape", "Component", "enhancing_components", "PeripheralRim",
           "peripheral_rim", "RimPart", "rim_parts", "SlabPart", "slab_partial_volume_parts"]

FloatArray = npt.NDArray[np.float64]

_PERIPHERAL_FRACTION = 0.8
_CONN26 = np.ones((3, 3, 3), dtype=bool)
_THICKNESS_QUANTILE = 0.9


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
        thickness_mm: layer thickness (see module docstring; meaningful for thin layers).
        mean_delta_hu: mean of the unsmoothed ΔHU over the component.
        centroid_lps: centre of mass, LPS mm.
        shape: nodular / rim / crescentic.
        touches_zone_edge: some voxel lies within one voxel of the zone boundary or outside
            the zone.
        reaches_search_limit: the enhancement continues beyond the search region (a
            26-neighbour outside it is also enhancing) or reaches the image border: e.g.
            normal enhancing parenchyma around the zone.
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
    from scipy.ndimage import binary_erosion, distance_transform_edt, gaussian_filter, label

    _require_modality(pre_hu, "pre_hu", ("CT",), "HU enhancement")
    _require_modality(post_hu, "post_hu", ("CT",), "HU enhancement")
    _check_grids(zone_mask, "zone_mask", pre_hu=pre_hu, post_hu=post_hu)
    _check_orthogonal(zone_mask, "zone_mask")
    for name, value in (("search_shell_mm", search_shell_mm), ("smooth_mm", smooth_mm)):
        if not np.isfinite(value) or value < 0:
            raise ValueError(f"{name} must be finite and >= 0, got {value}")
    zone_full = _bool_mask(zone_mask, "zone_mask")
    spacing = zone_mask.spacing_mm[::-1].copy()  # (k, j, i)
    pad = 2 + int(np.ceil((search_shell_mm + 3.0 * smooth_mm) / spacing.min()))
    lo, hi = _bbox_kji(zone_full)
    valid_full = np.ones(zone_full.shape, dtype=bool)
    (zone, pre, post, valid), affine = _crop_padded(
        [zone_full, pre_hu.array, post_hu.array, valid_full], zone_mask, lo, hi, pad
    )
    pre = pre.astype(np.float32)
    post = post.astype(np.float32)
    delta = np.where(valid, post - pre, np.float32(0.0))
    smoothed = gaussian_filter(delta, smooth_mm / spacing, mode="nearest") if smooth_mm else delta
    excluded = (pre > min(exclude_unenhanced_above_hu, exclude_above_hu)) | (
        post > exclude_above_hu
    )
    enhancing = valid & ~excluded & (smoothed >= threshold_hu)
    dist_out = distance_transform_edt(~zone, sampling=spacing)  # 0 inside the zone
    search = (zone | (dist_out <= search_shell_mm)) & valid
    labels, n = label(enhancing & search, structure=_CONN26)
    if n == 0:
        return []
    ctx = _Context(
        zone=zone,
        dist_in=distance_transform_edt(zone, sampling=spacing),
        boundary=zone & ~binary_erosion(zone, border_value=0),
        beyond=(enhancing & ~search) | ~binary_erosion(valid, border_value=0),
        delta=delta,
        smoothed=smoothed,
        threshold_hu=threshold_hu,
        affine=affine,
        spacing=spacing,
    )
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    out = [
        _describe(labels == lab, ctx, rim_max_thickness_mm, rim_min_coverage)
        for lab in range(1, n + 1)
        if sizes[lab] * voxel_mm3 >= min_volume_mm3
    ]
    out.sort(key=lambda c: -c.volume_ml)
    return out


@dataclass(frozen=True)
class _Context:
    """Arrays of the cropped search box shared by every component's description."""

    zone: npt.NDArray[np.bool_]
    dist_in: FloatArray  # mm from a zone voxel to the nearest voxel outside the zone
    boundary: npt.NDArray[np.bool_]  # zone voxels with a 6-neighbour outside
    beyond: npt.NDArray[np.bool_]  # enhancing outside the search region, or image border
    delta: npt.NDArray[np.float32]
    smoothed: npt.NDArray[np.float32]
    threshold_hu: float
    affine: FloatArray
    spacing: FloatArray  # (k, j, i)


def _describe(
    comp: npt.NDArray[np.bool_], ctx: _Context, rim_max_thickness_mm: float,
    rim_min_coverage: float,
) -> Component:
    from scipy.ndimage import binary_dilation, distance_transform_edt

    spacing, zone = ctx.spacing, ctx.zone
    n_vox = int(np.count_nonzero(comp))
    voxel_mm3 = float(abs(np.linalg.det(ctx.affine[:3, :3])))
    centroid = _kji_to_lps(np.argwhere(comp).mean(axis=0, keepdims=True), ctx.affine)[0]
    sub_lo, sub_hi = _bbox_kji(comp)
    box = tuple(slice(a, b) for a, b in zip(sub_lo, sub_hi, strict=True))
    verts, _faces = _surface_mesh_kji(np.pad(comp[box], 1))
    diameter, _a, _b = _farthest_pair(_kji_to_lps(verts + (sub_lo - 1.0), ctx.affine))
    # thickness at half the component's peak (robust 95th percentile) of the smoothed ΔHU:
    # the fixed threshold would add the smoothing blur to thin layers
    peak = float(np.percentile(ctx.smoothed[comp], 95))
    core = comp & (ctx.smoothed >= max(ctx.threshold_hu, peak / 2.0))
    thickness = _thickness_mm((core if core.any() else comp)[box], spacing)
    in_zone = comp & zone
    outside_vox = int(np.count_nonzero(comp & ~zone))
    touches = outside_vox > 0 or bool(np.any(ctx.dist_in[in_zone] <= spacing.max() + 1e-6))
    band = thickness + spacing.max()
    peripheral_vox = outside_vox + int(np.count_nonzero(ctx.dist_in[in_zone] <= band))
    peripheral = peripheral_vox >= _PERIPHERAL_FRACTION * n_vox
    near_comp = distance_transform_edt(~comp, sampling=spacing) <= spacing.max() + 1e-6
    n_boundary = int(np.count_nonzero(ctx.boundary))
    coverage = float(np.count_nonzero(near_comp & ctx.boundary)) / max(n_boundary, 1)
    if peripheral and thickness <= rim_max_thickness_mm and coverage >= rim_min_coverage:
        shape = ComponentShape.RIM
    elif peripheral and diameter >= 2.0 * thickness:
        shape = ComponentShape.CRESCENTIC
    else:
        shape = ComponentShape.NODULAR
    grown = binary_dilation(comp, structure=_CONN26)
    return Component(
        volume_ml=n_vox * voxel_mm3 / 1000.0,
        max_diameter_mm=float(diameter),
        thickness_mm=float(thickness),
        mean_delta_hu=float(ctx.delta[comp].mean()),
        centroid_lps=centroid,
        shape=shape,
        touches_zone_edge=touches,
        reaches_search_limit=bool(np.any(grown & ctx.beyond)),
        fraction_in_zone=float(np.count_nonzero(in_zone)) / n_vox,
        edge_coverage=coverage,
        n_voxels=n_vox,
    )


def _thickness_mm(
    comp: npt.NDArray[np.bool_], spacing: FloatArray, quantile: float = _THICKNESS_QUANTILE
) -> float:
    """2 × quantile over the component's voxels of their depth below its boundary (mm)."""
    return float(2.0 * np.quantile(_depth_mm(comp, spacing)[comp], quantile))


@dataclass(frozen=True)
class PeripheralRim:
    """Thin enhancement along the inside of the zone's edge where the zone borders fat.

    Attributes:
        excess_hu: median contrast HU of the band ``band_mm`` inside the edge minus the
            median of the zone just beneath it (``reference_mm``), both on the
            fat-bordered part of the edge (None when either has too few voxels).
        delta_excess_hu: the same on the subtraction (contrast − unenhanced; None without
            an unenhanced image or too few voxels).
        fat_edge_fraction: fraction of the zone's edge band that borders fat.
        n_band_voxels: voxels in the fat-bordered band.
        present: both excesses (the second when measured) reach ``min_excess_hu``.
        band_delta_hu: median subtraction (contrast − unenhanced) over the fat-bordered
            band: the rim's own ΔHU level (None when not measured).
    """

    excess_hu: float | None
    delta_excess_hu: float | None
    fat_edge_fraction: float
    n_band_voxels: int
    present: bool
    band_delta_hu: float | None = None


def peripheral_rim(
    post_hu: Volume,
    zone_mask: Volume,
    pre_hu: Volume | None = None,
    *,
    exclude_mask: Volume | None = None,
    band_mm: tuple[float, float] = (1.0, 2.5),
    reference_mm: tuple[float, float] = (3.5, 6.0),
    outer_mm: tuple[float, float] = (1.5, 4.0),
    fat_below_hu: float = -40.0,
    min_excess_hu: float = 10.0,
    min_voxels: int = 50,
) -> PeripheralRim:
    """A thin smooth peripheral rim: the zone's outer layer brighter than the zone beneath.

    Why only where the zone borders fat: next to enhancing parenchyma the zone's edge
    voxels take on the parenchyma's enhancement by partial volume (as large as a true
    rim), while fat, which does not enhance, can only darken them; so enhancement of the
    edge band there is the rim's own. Depths are in-plane (per slice, Euclidean mm) and
    only the slices whose zone section is at least half the largest are used: there the
    edge runs across the slices and the in-plane resolution resolves a 2 mm layer, while
    the thick slices at the zone's poles mix it with what lies above and below. Each
    band voxel is assigned to the nearest tissue 1.5-4 mm outside the zone (fat: below
    ``fat_below_hu`` on the contrast image smoothed by 1 mm, and on the unenhanced one
    when given). The medians over the whole fat-bordered band make the test one of a
    layer along most of that edge (smooth), not of a focal spot (nodules are found
    elsewhere; ``exclude_mask`` voxels are left out). ``pre_hu`` must be aligned on the
    contrast grid (NaN where it does not cover).
    """
    from scipy.ndimage import binary_dilation, distance_transform_edt, gaussian_filter

    _require_modality(post_hu, "post_hu", ("CT",), "HU enhancement")
    grids: dict[str, Volume] = {"post_hu": post_hu}
    if pre_hu is not None:
        grids["pre_hu"] = pre_hu
    if exclude_mask is not None:
        grids["exclude_mask"] = exclude_mask
    _check_grids(zone_mask, "zone_mask", **grids)
    zone_full = _bool_mask(zone_mask, "zone_mask")
    spacing = zone_mask.spacing_mm[::-1].copy()  # (k, j, i)
    pad = 2 + int(np.ceil((outer_mm[1] + 2.0) / spacing[1:].min()))
    lo, hi = _bbox_kji(zone_full)
    lo = np.array([lo[0], max(lo[1] - pad, 0), max(lo[2] - pad, 0)])
    hi = np.array([hi[0], min(hi[1] + pad, zone_full.shape[1]),
                   min(hi[2] + pad, zone_full.shape[2])])
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    zone = zone_full[box]
    post = np.asarray(post_hu.array, dtype=np.float32)[box]
    pre = None if pre_hu is None else np.asarray(pre_hu.array, dtype=np.float32)[box]
    excluded = np.zeros_like(zone) if exclude_mask is None else binary_dilation(
        np.asarray(exclude_mask.array, bool)[box], iterations=2)
    sigma = [0.0, 1.0 / spacing[1], 1.0 / spacing[2]]
    fat = gaussian_filter(post, sigma) < fat_below_hu
    if pre is not None:
        fat &= gaussian_filter(np.nan_to_num(pre, nan=0.0), sigma) < fat_below_hu
    areas = zone.reshape(zone.shape[0], -1).sum(axis=1)
    band = np.zeros_like(zone)
    reference = np.zeros_like(zone)
    edge = np.zeros_like(zone)
    for k in np.flatnonzero(areas >= 0.5 * areas.max()):
        depth_in = distance_transform_edt(zone[k], sampling=spacing[1:])
        depth_out = distance_transform_edt(~zone[k], sampling=spacing[1:])
        shell = (depth_out >= outer_mm[0]) & (depth_out <= outer_mm[1])
        to_fat = distance_transform_edt(~(shell & fat[k]), sampling=spacing[1:]) if (
            shell & fat[k]).any() else np.full(zone.shape[1:], np.inf)
        to_other = distance_transform_edt(~(shell & ~fat[k]), sampling=spacing[1:]) if (
            shell & ~fat[k]).any() else np.full(zone.shape[1:], np.inf)
        by_fat = to_fat < to_other
        in_band = zone[k] & ~excluded[k] & (depth_in > band_mm[0]) & (depth_in <= band_mm[1])
        edge[k] = in_band
        band[k] = in_band & by_fat
        reference[k] = (zone[k] & ~excluded[k] & by_fat & (depth_in > reference_mm[0])
                        & (depth_in <= reference_mm[1]))
    n_band = int(np.count_nonzero(band))
    fat_fraction = n_band / max(int(np.count_nonzero(edge)), 1)
    if n_band < min_voxels or np.count_nonzero(reference) < min_voxels:
        return PeripheralRim(None, None, fat_fraction, n_band, False)
    excess = float(np.median(post[band]) - np.median(post[reference]))
    delta_excess = band_delta = None
    if pre is not None:
        diff = post - pre
        ok_band, ok_ref = band & np.isfinite(diff), reference & np.isfinite(diff)
        if np.count_nonzero(ok_band) >= min_voxels and np.count_nonzero(ok_ref) >= min_voxels:
            band_delta = float(np.median(diff[ok_band]))
            delta_excess = band_delta - float(np.median(diff[ok_ref]))
    present = excess >= min_excess_hu and (pre is None or (
        delta_excess is not None and delta_excess >= min_excess_hu))
    return PeripheralRim(excess, delta_excess, fat_fraction, n_band, present, band_delta)


@dataclass(frozen=True)
class RimPart:
    """One enhancing component judged against a benign peripheral rim of its zone.

    Attributes:
        volume_ml: voxel-count volume.
        delta_hu: median subtraction (contrast − unenhanced) over its voxels (None when
            the unenhanced image does not cover it).
        above_rim_hu: ``delta_hu`` minus the rim band's median ΔHU (None without a
            measured rim).
        depth_mm: how deep it reaches below the zone's edge: the ``_PERIPHERAL_FRACTION``
            quantile over its voxels of their depth inside the zone (Euclidean mm, 0 for
            voxels outside the zone).
        layer_depth_mm: the depth a rim layer can reach on this grid (see
            :func:`rim_parts`).
        is_rim: part of the rim (within the layer, not enhancing above it).
    """

    volume_ml: float
    delta_hu: float | None
    above_rim_hu: float | None
    depth_mm: float
    layer_depth_mm: float
    is_rim: bool


def rim_parts(
    enhancing_mask: Volume,
    zone_mask: Volume,
    pre_hu: Volume,
    post_hu: Volume,
    rim: PeripheralRim,
    *,
    enhancing_hu: float = 20.0,
    rim_max_thickness_mm: float = 3.0,
) -> tuple[list[RimPart], Volume]:
    """Which enhancing components of a zone that has a benign peripheral rim are pieces of
    that rim rather than nodules; returns one :class:`RimPart` per 26-connected component
    (array order of their first voxel) and the mask of the rim pieces.

    Why: where a thick slice cuts a thin concentric rim tangentially (at the zone's poles,
    or where the edge runs nearly parallel to the slices), the rim fills a whole slab and
    reads as a disc many mm wide: a component as thick in-plane as a nodule. What it
    cannot do is reach deeper below the zone's edge than the layer itself seen through
    one voxel (``rim_max_thickness_mm`` + the largest voxel spacing), nor enhance more
    than the rest of the rim. A residual nodule is focal tissue enhancing against what it
    sits in: on a rim, that is the rim, so a component is a nodule when its median ΔHU
    exceeds the rim band's (:attr:`PeripheralRim.band_delta_hu`) by ``enhancing_hu``
    (the same Bosniak threshold as against a dead zone), or when it reaches deeper than
    the layer. Without a present rim (``rim.present`` False or no ΔHU measured) every
    component stays a nodule. ``pre_hu`` is aligned on the contrast grid (NaN where it
    does not cover).
    """
    from scipy.ndimage import distance_transform_edt, label

    _require_modality(post_hu, "post_hu", ("CT",), "HU enhancement")
    _check_grids(zone_mask, "zone_mask", enhancing_mask=enhancing_mask, pre_hu=pre_hu,
                 post_hu=post_hu)
    enhancing = _bool_mask(enhancing_mask, "enhancing_mask", allow_empty=True)
    zone = _bool_mask(zone_mask, "zone_mask", allow_empty=True)
    out = np.zeros(enhancing.shape, dtype=bool)
    if not enhancing.any():
        return [], enhancing_mask.with_array(out)
    spacing = _spacing_kji(zone_mask)
    layer_mm = float(rim_max_thickness_mm + spacing.max())
    voxel_ml = zone_mask.voxel_volume_mm3 / 1000.0
    lo, hi = _bbox_kji(enhancing)
    pad = 2 + int(np.ceil(layer_mm / spacing.min()))
    lo, hi = np.maximum(lo - pad, 0), np.minimum(hi + pad, enhancing.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    # depth below the edge: distance to the nearest voxel outside the zone, with the
    # zone continued beyond the box (a box face is not the zone's edge)
    if zone[box].all():
        # no edge within the box: every voxel lies deeper than the pad (> the layer)
        depth = np.full(zone[box].shape, np.inf)
    else:
        depth = distance_transform_edt(np.pad(zone[box], 1, mode="edge"),
                                       sampling=spacing)[1:-1, 1:-1, 1:-1]
    diff = (np.asarray(post_hu.array, np.float32)[box]
            - np.asarray(pre_hu.array, np.float32)[box])
    labels, n = label(enhancing[box], structure=_CONN26)
    usable = rim.present and rim.band_delta_hu is not None
    parts: list[RimPart] = []
    for lab in range(1, n + 1):
        comp = labels == lab
        values = diff[comp]
        values = values[np.isfinite(values)]
        delta = float(np.median(values)) if values.size else None
        above = (delta - rim.band_delta_hu if delta is not None and usable
                 and rim.band_delta_hu is not None else None)
        reach = float(np.quantile(depth[comp], _PERIPHERAL_FRACTION))
        is_rim = bool(usable and above is not None and above < enhancing_hu
                      and reach <= layer_mm)
        if is_rim:
            out[box] |= comp
        parts.append(RimPart(int(np.count_nonzero(comp)) * voxel_ml, delta, above, reach,
                             layer_mm, is_rim))
    return parts, enhancing_mask.with_array(out)


@dataclass(frozen=True)
class SlabPart:
    """One enhancing component judged against the tissue around it.

    Attributes:
        volume_ml: voxel-count volume.
        slice_index: the slice (array axis k) it lies on; None when it spans several.
        post_fraction: the fraction f of the zone side in the mixture
            f · zone side + (1 − f) · beyond that reproduces its median contrast signal
            (None when it does not lie between zone and brighter tissue).
        pre_mismatch_pct: 100 × |pre − the same mixture of the two sides' pre-contrast
            medians| / that mixture (None as above).
        is_partial_volume: explained as that mixture (not a nodule).
    """

    volume_ml: float
    slice_index: int | None
    post_fraction: float | None
    pre_mismatch_pct: float | None
    is_partial_volume: bool


def slab_partial_volume_parts(
    enhancing_mask: Volume,
    zone_mask: Volume,
    pre: Volume,
    post: Volume,
    *,
    tolerance_pct: float = 15.0,
    min_side_voxels: int = 5,
    min_zone_fraction: float = 0.3,
) -> tuple[list[SlabPart], Volume]:
    """Which enhancing components of a zone are the partial volume of the zone with the
    brighter tissue beyond its surface (thick slices), not nodules; returns one
    :class:`SlabPart` per 26-connected component (array order of their first voxel) and
    the mask of those explained so.

    Why: on slices as thick as a nodule's radius (MR, 4-5 mm) the zone's outermost slabs
    hold the zone and, beyond its curved surface, enhancing parenchyma, and read as a
    disc enhancing by a fraction of the parenchyma's enhancement (+55 % on the seed-17
    MR follow-up, a dead zone). The subtraction cannot tell: both phases are equally
    thick, so the mixture is there in both and enhances. Where the surface runs
    obliquely through the slabs against the kidney, the mixture is a band 3-5 voxels
    wide in-plane over two slices (seed 29 at 3 months: two 2-slice bodies, 0.4 zone,
    0.4 cortex, 0.2 medulla, read +58 % on a dead zone), so the two tissues lie around
    it in 3-D, not along the slice axis. The tissue around the component can tell: its
    26-ring holds the zone side (ring voxels in the zone) and the tissue beyond (ring
    voxels outside it, kept only where brighter on the contrast image than the
    component: a mixture lies between its two tissues, and the ring's own mixture voxels
    would dilute "beyond" towards the zone). The component is that mixture when one
    fraction f reproduces its median signal on both phases: f from the contrast image
    (where zone and parenchyma differ most), and the unenhanced signal within
    ``tolerance_pct`` (the enhancement threshold) of the same mixture of the two sides'
    unenhanced medians. A nodule is tissue of its own: darker than both before contrast
    (MR nodule 380 vs zone 520 and cortex 420), it misses that mixture by more (21 %
    against cortex). A component with fewer than ``min_side_voxels`` on either side
    (inside the zone; in fat, where nothing beyond is brighter) stays a nodule, and so
    does one whose mixture would be less than ``min_zone_fraction`` zone: a body at the
    zone's edge is at least about half zone (0.3 leaves room for a curved surface and a
    border a voxel off), whereas a nodule that reads like the tissue beyond (renal
    medulla: pre-contrast 330-380, post 680-720 on the phantom) would be taken for a
    mixture of 18 % zone. Known limit: a nodule only half inside its body (a 50/50
    nodule-zone median against cortex) misses the mixture by about 10 % and is dropped.
    ``pre`` is aligned on the contrast grid (NaN where it does not cover)."""
    from scipy.ndimage import binary_dilation, find_objects, label

    _check_grids(zone_mask, "zone_mask", enhancing_mask=enhancing_mask, pre=pre, post=post)
    enhancing = _bool_mask(enhancing_mask, "enhancing_mask", allow_empty=True)
    zone = _bool_mask(zone_mask, "zone_mask", allow_empty=True) & ~enhancing
    out = np.zeros(enhancing.shape, dtype=bool)
    parts: list[SlabPart] = []
    if not enhancing.any():
        return parts, enhancing_mask.with_array(out)
    pre_a = np.asarray(pre.array, np.float64)
    post_a = np.asarray(post.array, np.float64)
    voxel_ml = zone_mask.voxel_volume_mm3 / 1000.0
    labels, _ = label(enhancing, structure=_CONN26)
    for lab, box in enumerate(find_objects(labels), start=1):
        # the component's box grown by one voxel (clipped at the array's edge)
        box = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        comp = labels[box] == lab
        volume_ml = int(np.count_nonzero(comp)) * voxel_ml
        slices = np.flatnonzero(comp.any(axis=(1, 2)))
        k = int(slices[0]) + box[0].start if len(slices) == 1 else None
        post_b, pre_b = post_a[box], pre_a[box]
        ring = binary_dilation(comp, structure=_CONN26) & ~comp
        post_k, pre_k = float(np.nanmedian(post_b[comp])), float(np.nanmedian(pre_b[comp]))
        inner = ring & zone[box]
        outer = ring & ~zone[box] & ~enhancing[box] & (post_b > post_k)
        f = mismatch = None
        explained = False
        if (np.count_nonzero(inner) >= min_side_voxels
                and np.count_nonzero(outer) >= min_side_voxels):
            post_in, post_out = (float(np.nanmedian(post_b[s])) for s in (inner, outer))
            pre_in, pre_out = (float(np.nanmedian(pre_b[s])) for s in (inner, outer))
            if post_in != post_out and np.all(np.isfinite([pre_k, pre_in, pre_out])):
                f = (post_k - post_out) / (post_in - post_out)
                mix_pre = f * pre_in + (1.0 - f) * pre_out
                if mix_pre > 0:
                    mismatch = 100.0 * abs(pre_k - mix_pre) / mix_pre
                explained = bool(min_zone_fraction <= f <= 1.0 and mismatch is not None
                                 and mismatch < tolerance_pct)
        if explained:
            out[box] |= comp
        parts.append(SlabPart(volume_ml, k, f, mismatch, explained))
    return parts, enhancing_mask.with_array(out)
