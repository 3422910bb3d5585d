"""Enhancement of a lesion or ablation zone: CT (HU difference) and MR (percent increase).

CT (Bosniak 2019 / ACR): ΔHU = HU(contrast) − HU(unenhanced) at matched voxels, summarised
by the median over the mask eroded by ``erode_mm`` (voxel centres at least that deep below
the mask boundary, Euclidean mm: no partial-volume edge), excluding
calcification/metal (unenhanced HU above ``exclude_unenhanced_above_hu`` or either image
above ``exclude_above_hu``). ΔHU ≥ 20 enhancing ('yes'), 10–19 'equivocal', < 10 'no';
'not_assessable' when fewer than ``min_voxels`` voxels remain.

MR (ACR): percent signal increase 100 × (median(post) − median(pre)) / median(pre) over the
eroded mask, ≥ 15 % enhancing, optionally with the pre-contrast median scaled by the two
series' relative receive sensitivity (``reference_ratio``, read on the fat around the
lesion by :func:`mr_fat_signal_ratio`). MR intensities are arbitrary units: HU rules
refuse MR images and MR rules refuse CT images (when ``Volume.modality`` is known).

The images must already be aligned on the mask's grid (registration is another stage),
except for :func:`ct_enhancement_at_pre_slabs`, which measures on the unenhanced series'
own grid: a thick unenhanced slice averages its whole slab (box profile), so resampled onto
a thinner contrast grid it lends fat or parenchyma from beyond a small zone's poles to the
zone (and is noisier where only one slab crosses it). That function compares each
unenhanced voxel with the contrast image averaged over the same slab, keeps only slabs
that lie entirely inside the mask, and first refines the phase alignment by mutual
information at that matched resolution.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import distance_transform_edt, gaussian_filter
from scipy.stats import median_abs_deviation

from measurements._common import (
    _bool_mask,
    _check_grids,
    _check_orthogonal,
    _eroded,
    _require_modality,
    _spacing_kji,
)
from pipeline.image import Volume
from segmentation._sitk import mutual_information, quantize  # the registration's MI

__all__ = [
    "EnhancementClass",
    "Enhancement",
    "MREnhancement",
    "ct_enhancement",
    "ct_enhancement_at_pre_slabs",
    "ct_enhancement_partial_slabs",
    "classify_with_uncertainty",
    "mr_enhancement",
    "mr_fat_signal_ratio",
    "mean_attenuation_hu",
    "subtraction_image",
]

_CT = ("CT",)
_MR = ("MR",)


class EnhancementClass(StrEnum):
    """Enhancement call; values are the registry's strings."""

    YES = "yes"
    NO = "no"
    EQUIVOCAL = "equivocal"
    NOT_ASSESSABLE = "not_assessable"


@dataclass(frozen=True)
class Enhancement:
    """CT enhancement over an eroded mask.

    Attributes:
        delta_hu: median of post − pre over the measured voxels (None if not assessable).
        mean_delta_hu: mean of post − pre over the same voxels (None if not assessable).
        classification: yes / no / equivocal / not_assessable.
        n_voxels: voxels measured (after erosion and exclusions).
        n_excluded: voxels of the eroded mask excluded as calcification/metal.
        pre_hu: median unenhanced HU over the measured voxels (None if not assessable).
        post_hu: median contrast HU over the measured voxels (None if not assessable).
        offset_mm: for :func:`ct_enhancement_at_pre_slabs`, the phase offset used (LPS mm,
            contrast point + offset = unenhanced point); None otherwise.
        standard_error_hu: noise standard error of ``delta_hu`` where estimated
            (:func:`ct_enhancement_partial_slabs`); None otherwise.
        upper_bound: ``delta_hu`` is only an upper bound: the mask has no voxel off its
            edge along the slices and enhancing tissue lies beyond its poles
            (:func:`ct_enhancement_at_pre_slabs`), so every contrast value mixes some of
            it in.
    """

    delta_hu: float | None
    mean_delta_hu: float | None
    classification: EnhancementClass
    n_voxels: int
    n_excluded: int
    pre_hu: float | None
    post_hu: float | None
    offset_mm: npt.NDArray[np.float64] | None = None
    standard_error_hu: float | None = None
    upper_bound: bool = False


@dataclass(frozen=True)
class MREnhancement:
    """MR enhancement over an eroded mask (signal in arbitrary units).

    Attributes:
        enhancement_pct: 100 × (median post − median pre) / median pre (None if not
            assessable).
        classification: yes / no / not_assessable.
        n_voxels: voxels measured.
        subtraction_median: median of post − pre (arbitrary units; None if not assessable).
        pre_median: median pre-contrast signal.
        post_median: median post-contrast signal.
        reference_ratio: the two series' relative receive sensitivity (post/pre) that
            was divided out (None: none, the raw ratio).
    """

    enhancement_pct: float | None
    classification: EnhancementClass
    n_voxels: int
    subtraction_median: float | None
    pre_median: float | None
    post_median: float | None
    reference_ratio: float | None = None


def subtraction_image(pre: Volume, post: Volume) -> Volume:
    """post − pre as float32 on the shared grid (ΔHU for CT, arbitrary units for MR)."""
    _check_grids(pre, "pre", post=post)
    if pre.modality and post.modality and pre.modality.upper() != post.modality.upper():
        raise ValueError(f"pre is {pre.modality!r} but post is {post.modality!r}")
    diff = post.array.astype(np.float32) - pre.array.astype(np.float32)
    return post.with_array(diff, source={**post.source, "derived": "subtraction post-pre"})


def mean_attenuation_hu(image: Volume, mask: Volume, erode_mm: float = 1.5) -> float:
    """Mean HU of a CT image over ``mask`` eroded by ``erode_mm`` (mm, Euclidean).

    Raises ModalityError for an MR image and ValueError when nothing is left after erosion.
    """
    _require_modality(image, "image", _CT, "HU attenuation")
    _check_grids(image, "image", mask=mask)
    inside = _eroded(_bool_mask(mask, "mask"), _spacing_kji(mask), erode_mm)
    if not inside.any():
        raise ValueError(f"mask is empty after erosion by {erode_mm} mm (too small to measure)")
    return float(image.array[inside].astype(np.float64).mean())


def ct_enhancement(
    pre_hu: Volume,
    post_hu: Volume,
    mask: Volume,
    *,
    erode_mm: float = 1.5,
    exclude_unenhanced_above_hu: float = 300.0,
    exclude_above_hu: float = 1000.0,
    enhancing_hu: float = 20.0,
    equivocal_hu: float = 10.0,
    min_voxels: int = 10,
) -> Enhancement:
    """CT enhancement (post − pre HU) of a lesion, classified by the Bosniak/ACR thresholds.

    Args:
        pre_hu: unenhanced CT in HU.
        post_hu: contrast CT in HU, on the same grid.
        mask: binary lesion mask on the same grid.
        erode_mm: erosion depth (mm) removing the partial-volume edge.
        exclude_unenhanced_above_hu: calcification/metal on the unenhanced image.
        exclude_above_hu: metal/streak on either image.
        enhancing_hu: ΔHU at or above which the lesion enhances.
        equivocal_hu: ΔHU at or above which (and below ``enhancing_hu``) it is equivocal.
        min_voxels: fewer measured voxels than this → not_assessable.
    """
    _require_modality(pre_hu, "pre_hu", _CT, "HU enhancement")
    _require_modality(post_hu, "post_hu", _CT, "HU enhancement")
    _check_grids(mask, "mask", pre_hu=pre_hu, post_hu=post_hu)
    if not equivocal_hu <= enhancing_hu:
        raise ValueError(f"equivocal_hu {equivocal_hu} must be <= enhancing_hu {enhancing_hu}")
    inside = _eroded(_bool_mask(mask, "mask"), _spacing_kji(mask), erode_mm)
    pre = pre_hu.array[inside].astype(np.float64)
    post = post_hu.array[inside].astype(np.float64)
    pre_limit = min(exclude_unenhanced_above_hu, exclude_above_hu)
    keep = (pre <= pre_limit) & (post <= exclude_above_hu)
    return _summary(pre, post, keep, int(np.count_nonzero(~keep)), enhancing_hu,
                    equivocal_hu, min_voxels)


def _summary(
    pre_hu: npt.NDArray[np.float64],
    post_hu: npt.NDArray[np.float64],
    keep: npt.NDArray[np.bool_],
    n_excluded: int,
    enhancing_hu: float,
    equivocal_hu: float,
    min_voxels: int,
    offset_mm: npt.NDArray[np.float64] | None = None,
) -> Enhancement:
    """The median ΔHU over the ``keep`` voxels of paired unenhanced/contrast values,
    classified; not assessable below ``min_voxels``."""
    n_kept = int(np.count_nonzero(keep))
    if n_kept < min_voxels:
        return Enhancement(None, None, EnhancementClass.NOT_ASSESSABLE, n_kept, n_excluded,
                           None, None, offset_mm)
    pre, post = pre_hu[keep], post_hu[keep]
    delta = post - pre
    median = float(np.median(delta))
    return Enhancement(
        delta_hu=median,
        mean_delta_hu=float(delta.mean()),
        classification=_classify(median, enhancing_hu, equivocal_hu),
        n_voxels=n_kept,
        n_excluded=n_excluded,
        pre_hu=float(np.median(pre)),
        post_hu=float(np.median(post)),
        offset_mm=offset_mm,
    )


#: contrast HU by which a slab's sub-samples on the mask's edge must exceed the mask
#: interior's median for the slab to be read on its interior sub-samples only
_EDGE_BRIGHTER_HU = 10.0
#: step (mm) of the sub-samples that average the contrast image over an unenhanced slab
_SLAB_STEP_MM = 0.4
#: mutual-information search of the phase offset: coarse grid half-widths (mm; x, y, z)
#: and steps, then a fine grid around the best coarse offset
_SEARCH_SPAN_MM = np.array([1.0, 1.0, 4.0])
_SEARCH_STEP_MM = np.array([1.0, 1.0, 1.0])
_FINE_STEP_MM = np.array([0.5, 0.5, 0.25])
_MI_BINS = 32
_MI_RANGE_HU = (-150.0, 300.0)  # fat to enhancing parenchyma; bone and metal clipped
#: two-sided 95 % normal quantile: a thin zone's ΔHU noise interval
Z_95 = 1.959964
#: standard error of a median relative to that of a mean of normal samples (√(π/2))
_MEDIAN_SE_FACTOR = float(np.sqrt(np.pi / 2.0))


def ct_enhancement_at_pre_slabs(
    pre_hu: Volume,
    post_hu: Volume,
    mask: Volume,
    *,
    offset_mm: Any = (0.0, 0.0, 0.0),
    refine_alignment: bool = True,
    align_radius_mm: float = 20.0,
    erode_mm: float = 1.0,
    exclude_unenhanced_above_hu: float = 300.0,
    exclude_above_hu: float = 1000.0,
    enhancing_hu: float = 20.0,
    equivocal_hu: float = 10.0,
    min_voxels: int = 10,
) -> Enhancement:
    """CT enhancement of ``mask`` measured on the unenhanced series' own grid.

    Args:
        pre_hu: unenhanced CT in HU on its own (thick-slice) grid.
        post_hu: contrast CT in HU; ``mask`` is on its grid.
        mask: binary zone/lesion mask on the contrast grid.
        offset_mm: phase offset (LPS mm) such that a contrast point p is at p + offset
            in the unenhanced series (breathing between the phases).
        refine_alignment: search the offset within ±1.5 mm in-plane and ±4.5 mm along
            the slices around ``offset_mm`` (a phase registration errs mostly along the
            thick slices) by mutual information between the unenhanced
            voxels of a ball of ``align_radius_mm`` around the mask and the contrast image
            averaged over each voxel's slab (the thick slices compared at their own
            resolution; the contrast series' sharper slices bias an ordinary fit along z).
        erode_mm: in-plane erosion of the mask (mm) against in-plane partial volume.

    Each unenhanced voxel whose slab (its slice thickness along the slice normal, sampled
    every 0.4 mm, contrast voxels looked up by nearest neighbour so each is weighted by
    its overlap with the slab) lies entirely inside the in-plane-eroded mask is compared
    with the mean contrast HU over that slab: the slab's thickness then adds no tissue
    from beyond the mask. A segmented mask's outermost voxels are themselves partial
    volume with the tissue beyond (and each contrast voxel reaches past the slab): fat
    there enhances no more than the zone (analytic zones in fat read up to 10 HU low,
    never high), but enhancing parenchyma (around a small endophytic zone) shows its
    enhancement on the subtraction (a fifth of a voxel of it, +28 HU) while unenhanced it
    reads close to the zone; analytic 3-slice zones of 3 mm slices read +9 to +30 HU for a
    true +2. So where
    a slab's sub-samples on the mask's edge (not :func:`_interior`: the first or last
    slice along the slices, the outer pixel ring) average over ``_EDGE_BRIGHTER_HU``
    above the median of the mask's interior on the contrast image, the slab's contrast
    mean is taken over its interior sub-samples only (reading every slab that way lifted
    other dead zones of the synthetic archives by up to 5 HU, one to "equivocal"; the
    slabs are then read as before wherever nothing brighter borders them). A slab whose
    sub-samples all lie on the edge (an unenhanced voxel on the outer pixel ring when the
    two series' pixels differ) and read brighter is not read at all: a fifth of a 3-slice
    zone's slabs read 40-80 HU that way, and with noise they lifted the median of a
    0.42 ml dead zone to +18.5 HU (equivocal; held-out seed 113). A zone on two contrast
    slices has no interior along the slices: its in-plane interior is the reference then.
    ΔHU = median over those voxels; calcification/metal excluded as in
    :func:`ct_enhancement`. Not
    assessable when fewer than ``min_voxels`` remain (a zone thinner than one unenhanced
    slab).
    """
    _require_modality(pre_hu, "pre_hu", _CT, "HU enhancement")
    _require_modality(post_hu, "post_hu", _CT, "HU enhancement")
    _check_grids(mask, "mask", post_hu=post_hu)
    if not equivocal_hu <= enhancing_hu:
        raise ValueError(f"equivocal_hu {equivocal_hu} must be <= enhancing_hu {enhancing_hu}")
    offset = np.asarray(offset_mm, dtype=np.float64).reshape(3)
    raw, spacing_kji = _bool_mask(mask, "mask"), _spacing_kji(mask)
    inside = _eroded_in_plane(raw, spacing_kji, erode_mm)
    na = EnhancementClass.NOT_ASSESSABLE
    if not inside.any():
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    post = np.asarray(post_hu.array, dtype=np.float32)
    centre = post_hu.index_to_lps(np.argwhere(inside).mean(axis=0)[::-1])
    if refine_alignment:
        offset = _refine_offset_mi(pre_hu, post, post_hu, centre, offset, align_radius_mm)
    # unenhanced voxels around the mask (its bounding box carried into the pre grid)
    box = _pre_box_around(pre_hu, post_hu, inside, offset, pad_low=(1, 1, 1),
                          pad_high=(2, 2, 2))
    if box is None:
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    grid, points, _ = box
    # candidates: voxel centre inside the mask (the slab test below is stricter)
    ((_, centre_kji, ok),) = _slab_lookups(points, pre_hu, post_hu, at_centre_only=True)
    ok[ok] = inside[tuple(centre_kji[ok].T)]
    grid, points = grid[ok], points[ok]
    pre_vals = np.asarray(pre_hu.array)[grid[:, 2], grid[:, 1], grid[:, 0]].astype(np.float64)
    interior = _interior(raw, spacing_kji)
    bounded = False
    if not interior.any():  # two contrast slices: none between two others
        pixel_mm = float(max(spacing_kji[1:]))
        interior = _eroded_in_plane(raw, spacing_kji, pixel_mm)
        bounded = _brighter_beyond_poles(raw, post, interior)
    all_in = np.ones(len(grid), dtype=bool)
    post_sum = np.zeros(len(grid), dtype=np.float64)
    interior_sum = np.zeros(len(grid), dtype=np.float64)
    n_interior = np.zeros(len(grid), dtype=np.int64)
    post_max = np.full(len(grid), -np.inf)
    n_sub = 0
    for _, kji_q, ok in _slab_lookups(points, pre_hu, post_hu):
        values = post[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]].astype(np.float64)
        all_in &= ok & inside[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]]
        post_sum += values
        hit = ok & interior[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]]
        interior_sum += np.where(hit, values, 0.0)
        n_interior += hit
        post_max = np.maximum(post_max, values)
        n_sub += 1
    post_box = post_sum / n_sub
    if interior.any():
        # a slab whose sub-samples on the mask's edge read brighter than the zone's
        # interior mixes in enhancing tissue: its contrast value from the interior ones
        n_edge = n_sub - n_interior
        edge_mean = (post_sum - interior_sum) / np.maximum(n_edge, 1)
        brighter = ((n_edge > 0)
                    & (edge_mean > float(np.median(post[interior])) + _EDGE_BRIGHTER_HU))
        post_box = np.where(brighter, interior_sum / np.maximum(n_interior, 1), post_box)
        # a slab on the edge alone (no interior sub-sample) that reads brighter has no
        # contrast value of the zone itself
        unreadable = brighter & (n_interior == 0)
    else:
        unreadable = np.zeros(len(grid), dtype=bool)
    pre_limit = min(exclude_unenhanced_above_hu, exclude_above_hu)
    keep = all_in & ~unreadable & (pre_vals <= pre_limit) & (post_max <= exclude_above_hu)
    result = _summary(pre_vals, post_box, keep,
                      int(np.count_nonzero(all_in & ~unreadable & ~keep)),
                      enhancing_hu, equivocal_hu, min_voxels, offset)
    if bounded and result.delta_hu is not None:
        # every contrast value mixes in the enhancing tissue beyond the poles, which only
        # lifts it: a reading under the equivocal threshold still says "no"; above it,
        # the zone's own enhancement cannot be told from the mixture
        call = (result.classification if result.delta_hu < equivocal_hu
                else EnhancementClass.NOT_ASSESSABLE)
        result = replace(result, classification=call, upper_bound=True)
    return result


def ct_enhancement_partial_slabs(
    pre_hu: Volume,
    post_hu: Volume,
    mask: Volume,
    *,
    offset_mm: Any = (0.0, 0.0, 0.0),
    erode_mm: float = 1.0,
    min_fraction: float = 0.5,
    exclude_unenhanced_above_hu: float = 300.0,
    exclude_above_hu: float = 1000.0,
    enhancing_hu: float = 20.0,
    equivocal_hu: float = 10.0,
    min_voxels: int = 10,
) -> Enhancement:
    """CT enhancement of a mask thinner than one unenhanced slab, unmixing each partly
    filled slab.

    Why: when no slab of the unenhanced series lies wholly inside the mask
    (:func:`ct_enhancement_at_pre_slabs` not assessable), the unenhanced value of the zone
    exists only mixed with the tissue beyond it within the same slab; resampled onto the
    contrast grid that mixture reads as zone, biased by whatever lies beyond (enhancing
    parenchyma above and below a small endophytic zone) and measured on a handful of
    voxels. The contrast series' thin slices show where the mask ends within each slab,
    so each unenhanced voxel v whose slab is at least ``min_fraction`` inside the
    in-plane-eroded mask (fraction f, sampled along the slab normal every 0.4 mm as in
    :func:`ct_enhancement_at_pre_slabs`) is modelled as
    pre_v = f · pre_zone + (1 − f) · pre_beyond, with pre_beyond read on the neighbouring
    slab(s) on the side(s) where the slab leaves the mask, at the same in-plane position
    (used only when that slab lies wholly outside the mask). Then
    ΔHU_v = mean contrast HU over the slab's inside part − pre_zone, the contrast read
    only on mask voxels with mask neighbours on both sides along the slices (the zone's
    first and last contrast slices are partial volume themselves). Only the unenhanced
    image needs unmixing, and unenhanced soft tissues differ little, so an imperfect
    pre_beyond costs (1 − f)/f times its error, not the full enhancement of the tissue
    beyond. The call is :func:`classify_with_uncertainty` (a zone this small is often
    noise-limited). ΔHU = median over those voxels weighted by their inverse noise variance
    f² / (1 + (1 − f)²); ``standard_error_hu`` is 1.25 × (median vs mean) the standard
    error of that weighted mean from each phase's noise SD and in-plane correlation
    (:func:`_noise`): the unmixing gain (1 + (1 − f)²) / f² on the unenhanced noise, and
    as many independent samples as independent noise areas the voxels cover per slab
    (per contrast slice for the contrast image). ``offset_mm`` as in
    :func:`ct_enhancement_at_pre_slabs` (no search here: pass the refined one).
    """
    _require_modality(pre_hu, "pre_hu", _CT, "HU enhancement")
    _require_modality(post_hu, "post_hu", _CT, "HU enhancement")
    _check_grids(mask, "mask", post_hu=post_hu)
    if not 0.0 < min_fraction <= 1.0:
        raise ValueError(f"min_fraction must be in (0, 1], got {min_fraction}")
    offset = np.asarray(offset_mm, dtype=np.float64).reshape(3)
    inside = _eroded_in_plane(_bool_mask(mask, "mask"), _spacing_kji(mask), erode_mm)
    na = EnhancementClass.NOT_ASSESSABLE
    if not inside.any():
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    post = np.asarray(post_hu.array, dtype=np.float32)
    kji = np.argwhere(inside)
    # one more slab each way along the normal: the neighbours that hold pre_beyond
    box = _pre_box_around(pre_hu, post_hu, inside, offset, pad_low=(1, 1, 2),
                          pad_high=(2, 2, 3))
    if box is None:
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    grid, points, (i0, i1) = box
    dims = i1 - i0
    # the contrast value of the zone from its voxels not at its slice-axis edge: those
    # are partial volume with the tissue beyond, as thin as the contrast slices are
    core = _between_slices(inside)
    n_in = np.zeros(len(grid))
    n_core = np.zeros(len(grid))
    out_up = np.zeros(len(grid))
    out_down = np.zeros(len(grid))
    post_in_sum = np.zeros(len(grid))
    post_max = np.full(len(grid), -np.inf)
    n_sub = _n_slab_samples(pre_hu)
    for u_mm, kji_q, ok in _slab_lookups(points, pre_hu, post_hu):
        values = post[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]].astype(np.float64)
        hit = ok & inside[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]]
        n_in += hit
        in_core = ok & core[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]]
        n_core += in_core
        post_in_sum += np.where(in_core, values, 0.0)
        post_max = np.maximum(post_max, np.where(ok, values, -np.inf))
        if u_mm > 0:
            out_up += ~hit
        elif u_mm < 0:
            out_down += ~hit
    fraction = n_in / n_sub
    pre_vals = np.asarray(pre_hu.array)[grid[:, 2], grid[:, 1], grid[:, 0]].astype(np.float64)
    frac3 = fraction.reshape(dims)
    pre3 = pre_vals.reshape(dims)
    local = grid - i0

    def beyond(step: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
        k = local[:, 2] + step
        ok = (k >= 0) & (k < dims[2])
        k = np.clip(k, 0, dims[2] - 1)
        usable = ok & (frac3[local[:, 0], local[:, 1], k] == 0.0)
        return pre3[local[:, 0], local[:, 1], k], usable

    up_vals, up_ok = beyond(1)
    down_vals, down_ok = beyond(-1)
    pre_limit = min(exclude_unenhanced_above_hu, exclude_above_hu)
    # a neighbour slab lends its unenhanced value only on the side the zone leaves by:
    # it is tested (free of the zone, below the calcification/metal limit) only there
    measured = ((fraction >= min_fraction) & (n_core > 0)
                & ((out_up == 0) | up_ok) & ((out_down == 0) | down_ok))
    clean = ((pre_vals <= pre_limit) & (post_max <= exclude_above_hu)
             & ((out_up == 0) | (up_vals <= pre_limit))
             & ((out_down == 0) | (down_vals <= pre_limit)))
    keep = measured & clean
    n_excluded = int(np.count_nonzero(measured & ~clean))
    n_kept = int(np.count_nonzero(keep))
    if n_kept < min_voxels:
        return Enhancement(None, None, na, n_kept, n_excluded, None, None, offset)
    f = fraction[keep]
    w_up, w_down = out_up[keep], out_down[keep]
    out_total = w_up + w_down
    pre_beyond = np.where(out_total > 0, (w_up * up_vals[keep] + w_down * down_vals[keep])
                          / np.maximum(out_total, 1.0), 0.0)
    pre_zone = (pre_vals[keep] - (1.0 - f) * pre_beyond) / f
    post_zone = post_in_sum[keep] / n_core[keep]
    delta = post_zone - pre_zone
    weights = f ** 2 / (1.0 + (1.0 - f) ** 2)
    median = _weighted_median(delta, weights)
    # noise: each phase's per-voxel SD and in-plane area per independent sample; the
    # unenhanced slabs' voxels count once per independent area, each slab independent
    sd_pre, area_pre = _noise(pre_hu, grid[keep][:, ::-1])
    sd_post, area_post = _noise(post_hu, kji)
    kept_k = grid[keep][:, 2]
    n_pre = sum(max(np.count_nonzero(kept_k == k) / area_pre, 1.0) for k in np.unique(kept_k))
    n_post = sum(max(np.count_nonzero(kji[:, 0] == k) / area_post, 1.0)
                 for k in np.unique(kji[:, 0]))
    gain = float(np.average((1.0 + (1.0 - f) ** 2) / f ** 2, weights=weights))
    se = _MEDIAN_SE_FACTOR * float(np.sqrt(sd_pre ** 2 * gain / n_pre + sd_post ** 2 / n_post))
    return Enhancement(
        delta_hu=median,
        mean_delta_hu=float(np.average(delta, weights=weights)),
        classification=classify_with_uncertainty(median, se, enhancing_hu, equivocal_hu),
        n_voxels=n_kept,
        n_excluded=n_excluded,
        pre_hu=_weighted_median(pre_zone, weights),
        post_hu=_weighted_median(post_zone, weights),
        offset_mm=offset,
        standard_error_hu=se,
    )


def _pre_box_around(pre_hu: Volume, post_hu: Volume, inside: npt.NDArray[np.bool_],
                    offset_mm: npt.NDArray[np.float64], pad_low: tuple[int, int, int],
                    pad_high: tuple[int, int, int],
                    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64],
                               tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]] | None:
    """The unenhanced voxels around a contrast-grid mask: the mask's bounding box carried
    into the unenhanced grid through ``offset_mm`` (LPS), widened by ``pad_low`` /
    ``pad_high`` voxels (i, j, k) and clipped. Returns their indices (n, 3; i, j, k), their
    centres moved onto the contrast grid (LPS mm) and the box's (i, j, k) corners [i0, i1);
    None when the box misses the unenhanced series."""
    kji = np.argwhere(inside)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    lo, hi = kji.min(axis=0), kji.max(axis=0)
    box_lps = post_hu.index_to_lps((lo + corners * (hi - lo))[:, ::-1]) + offset_mm
    pre_ijk = pre_hu.lps_to_index(box_lps)
    i0 = np.maximum(np.floor(pre_ijk.min(axis=0)).astype(int) - np.asarray(pad_low), 0)
    i1 = np.minimum(np.ceil(pre_ijk.max(axis=0)).astype(int) + np.asarray(pad_high),
                    np.asarray(pre_hu.array.shape[::-1]))
    if np.any(i1 <= i0):
        return None
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(i0, i1, strict=True)],
                                indexing="ij"), axis=-1).reshape(-1, 3)  # (i, j, k)
    points_lps = pre_hu.index_to_lps(grid.astype(np.float64)) - offset_mm
    return grid, points_lps, (i0, i1)


def _n_slab_samples(pre_hu: Volume) -> int:
    """Sub-samples across one unenhanced slab: its thickness every ``_SLAB_STEP_MM``, ends
    included."""
    return int(np.ceil(float(pre_hu.spacing_mm[2]) / _SLAB_STEP_MM)) + 1


def _slab_lookups(points_lps: npt.NDArray[np.float64], pre_hu: Volume, post_hu: Volume, *,
                  at_centre_only: bool = False,
                  ) -> Iterator[tuple[float, npt.NDArray[np.int64], npt.NDArray[np.bool_]]]:
    """For each sub-sample across the unenhanced slab (from −½ to +½ slice thickness along
    its normal, :func:`_n_slab_samples` of them; the centre alone with
    ``at_centre_only``): its offset (mm along the normal), the contrast voxel (k, j, i)
    nearest to each point moved there,
    and whether it lies in the contrast array (the index of one that does not is 0, for
    safe lookups). Nearest neighbour: each contrast voxel then counts by its overlap with
    the slab."""
    post_inv = np.linalg.inv(post_hu.affine_lps)
    shape = np.asarray(post_hu.array.shape)
    normal = pre_hu.affine_lps[:3, 2] / np.linalg.norm(pre_hu.affine_lps[:3, 2])
    slab_mm = float(pre_hu.spacing_mm[2])
    steps_mm = ([0.0] if at_centre_only
                else np.linspace(-slab_mm / 2.0, slab_mm / 2.0, _n_slab_samples(pre_hu)))
    for u_mm in steps_mm:
        q = points_lps + u_mm * normal
        kji_q = np.rint(q @ post_inv[:3, :3].T + post_inv[:3, 3]).astype(int)[:, ::-1]
        ok = np.all((kji_q >= 0) & (kji_q < shape), axis=1)
        if not at_centre_only:
            kji_q = np.where(ok[:, None], kji_q, 0)
        yield float(u_mm), kji_q, ok

def _weighted_median(values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64]
                     ) -> float:
    """The weighted median: the smallest value whose cumulative weight reaches half."""
    return float(np.quantile(values, 0.5, weights=weights, method="inverted_cdf"))


#: noise SD: in-plane Gaussian (pixels) smoothing the slice difference to find anatomy
#: steps, and how many of the smoothed difference's MADs a calm pixel stays within
_CALM_SMOOTH_PX = 2.0
_CALM_MADS = 3.0


def _noise(image: Volume, kji: Any) -> tuple[float, float]:
    """Noise SD (HU) of an image around voxels ``kji`` and the in-plane area (pixels) per
    independent noise sample.

    CT noise is correlated in-plane (reconstruction kernel) and nearly independent
    between slices, so both are read on differences of neighbouring slices over the
    voxels' box (grown by 15 pixels in-plane and 2 slices), where anatomy mostly
    cancels: SD = normal-scaled MAD / √2 over the calm pixels; the lag-1 in-plane
    correlation ρ of the difference gives a Gaussian correlation width
    σ_c² = −1 / (4 ln ρ) px and an area of 4π σ_c² px per independent sample (at least 1).

    Between thick slices anatomy does not cancel everywhere: organ edges move from one
    slice to the next, and where a quarter of the pixels carry such a step the MAD of the
    difference overstates the noise by a third to a half (seed-5 endophytic patient, 5 mm
    unenhanced slices: 12.6-16.8 HU read vs 9.0 HU rendered), and the thin zone's noise
    interval with it (1.8 × the spread of its ΔHU over fresh noise on that patient's
    noise-free images; 1.2 × now, 98.5 % coverage).
    Those steps are smooth in-plane and the noise is not, so the calm pixels are those
    where the difference smoothed in-plane (Gaussian, ``_CALM_SMOOTH_PX``) lies within
    ``_CALM_MADS`` of its own normal-scaled MADs: pure noise keeps > 99 % of its pixels
    (no bias low), residual anatomy can only raise the estimate."""
    idx = np.asarray(kji)
    shape = np.asarray(image.array.shape)
    lo = np.maximum(idx.min(axis=0) - np.array([2, 15, 15]), 0)
    hi = np.minimum(idx.max(axis=0) + np.array([3, 16, 16]), shape)
    sub = np.asarray(image.array, dtype=np.float64)[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if sub.shape[0] < 2 or sub.shape[2] < 2:
        return float("nan"), 1.0
    diff = np.diff(sub, axis=0)
    centred = diff - np.median(diff)
    smooth = gaussian_filter(centred, (0.0, _CALM_SMOOTH_PX, _CALM_SMOOTH_PX))
    smooth -= np.median(smooth)
    calm_px = np.abs(smooth) <= _CALM_MADS * float(
        median_abs_deviation(smooth, axis=None, scale="normal"))
    sd = float(median_abs_deviation(centred[calm_px], scale="normal")) / float(np.sqrt(2.0))
    # robust lag-1 correlation: only calm pairs within 3 robust SDs (edges excluded)
    a, b = centred[:, :, :-1].ravel(), centred[:, :, 1:].ravel()
    calm = ((np.abs(a) < 3.0 * sd * np.sqrt(2.0)) & (np.abs(b) < 3.0 * sd * np.sqrt(2.0))
            & calm_px[:, :, :-1].ravel() & calm_px[:, :, 1:].ravel())
    rho = float(np.corrcoef(a[calm], b[calm])[0, 1]) if calm.sum() > 10 else 0.0
    area = 4.0 * np.pi * (-1.0 / (4.0 * np.log(rho))) if 0.0 < rho < 1.0 else 1.0
    return sd, max(float(area), 1.0)


def _between_slices(mask: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The mask's voxels (k, j, i) with mask neighbours on both sides along the slices."""
    along = mask.copy()
    along[1:] &= mask[:-1]
    along[:-1] &= mask[1:]
    along[0] = along[-1] = False
    return along


def _brighter_beyond_poles(mask: npt.NDArray[np.bool_], post: npt.NDArray[np.float32],
                           reference: npt.NDArray[np.bool_]) -> bool:
    """Whether the contrast image one slice beyond the mask's first and last slices,
    under their in-plane interior, reads more than ``_EDGE_BRIGHTER_HU`` above the
    ``reference`` voxels' median (enhancing tissue across the poles of a mask with no
    slice between two others: its partial volume is in every slice of the mask)."""
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    beyond = []
    for k, step in ((int(slices[0]), -1), (int(slices[-1]), 1)):
        if 0 <= k + step < mask.shape[0]:
            under = reference[k] if reference[k].any() else mask[k]
            beyond.append(post[k + step][under])
    if not beyond:
        return False
    values = np.concatenate(beyond)
    return bool(np.median(values) > float(np.median(post[reference])) + _EDGE_BRIGHTER_HU)


def _interior(mask: npt.NDArray[np.bool_], spacing_kji: Any) -> npt.NDArray[np.bool_]:
    """The mask's voxels off its edge: :func:`_between_slices` and more than one pixel
    (the coarser in-plane spacing, mm) from its outside in their slice (the outermost
    voxels of a segmented mask are partial volume with the tissue beyond it)."""
    pixel_mm = float(max(spacing_kji[1:]))
    return _between_slices(mask) & _eroded_in_plane(mask, spacing_kji, pixel_mm)


def _eroded_in_plane(mask: npt.NDArray[np.bool_], spacing_kji: Any, erode_mm: float
                     ) -> npt.NDArray[np.bool_]:
    """Voxels more than ``erode_mm`` (in-plane Euclidean) from the mask's outside in their
    own slice; along the slices the slab test does the work."""
    if erode_mm <= 0:
        return mask.copy()
    out = np.zeros_like(mask)
    for k in np.flatnonzero(mask.any(axis=(1, 2))):
        depth = distance_transform_edt(np.pad(mask[k], 1), sampling=spacing_kji[1:])
        out[k] = depth[1:-1, 1:-1] > erode_mm
    return out


def _refine_offset_mi(pre_hu: Volume, post: npt.NDArray[np.float32], post_hu: Volume,
                      centre_lps: npt.NDArray[np.float64], offset: npt.NDArray[np.float64],
                      radius_mm: float) -> npt.NDArray[np.float64]:
    """The phase offset maximising the mutual information between the unenhanced voxels in
    a ball around ``centre_lps`` and the contrast image averaged over their slabs (the
    contrast slices upsampled by nearest neighbour along z, box-filtered over the slab
    thickness, then read by linear interpolation): coarse grid, then a fine one. The
    given offset is a candidate, so the result never matches worse than it."""
    from scipy.ndimage import map_coordinates, uniform_filter1d

    post_slice_mm = float(post_hu.spacing_mm[2])
    slab_mm = float(pre_hu.spacing_mm[2])
    up = max(1, round(post_slice_mm / 0.5))  # contrast slices upsampled to ≤ 0.5 mm
    reach_mm = radius_mm + float(np.max(_SEARCH_SPAN_MM)) + slab_mm + 2.0 * post_slice_mm
    c_kji = post_hu.lps_to_index(centre_lps)[::-1]
    half = np.ceil(reach_mm / post_hu.spacing_mm[::-1]).astype(int)
    lo = np.maximum(np.floor(c_kji).astype(int) - half, 0)
    hi = np.minimum(np.ceil(c_kji).astype(int) + half + 1, post.shape)
    sub = post[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
    if min(sub.shape) < 2:
        return offset
    fine = sub[np.clip(np.rint(np.arange(0, sub.shape[0] - 1 + 1e-6, 1.0 / up)).astype(int),
                       0, sub.shape[0] - 1)]
    boxed = uniform_filter1d(fine, max(1, round(slab_mm * up / post_slice_mm)), axis=0,
                             mode="nearest")
    # unenhanced voxels in the ball
    c_pre = centre_lps + offset
    p_kji = pre_hu.lps_to_index(c_pre)[::-1]
    r = np.ceil(radius_mm / pre_hu.spacing_mm[::-1]).astype(int)
    plo = np.maximum(np.floor(p_kji).astype(int) - r, 0)
    phi = np.minimum(np.ceil(p_kji).astype(int) + r + 1, pre_hu.array.shape)
    if np.any(phi <= plo):
        return offset
    # every other row and column: the joint histogram needs thousands of voxels, not all
    steps = (1, 2, 2)
    kji = np.stack(np.meshgrid(*[np.arange(a, b, st) for a, b, st in zip(
        plo, phi, steps, strict=True)], indexing="ij"), axis=-1).reshape(-1, 3)
    lps = pre_hu.index_to_lps(kji[:, ::-1].astype(np.float64))
    ball = np.linalg.norm(lps - c_pre, axis=1) <= radius_mm
    inv = np.linalg.inv(post_hu.affine_lps)
    # only points the contrast box holds for every candidate offset (a slab and the search
    # span inside its border)
    ijk0 = (lps - offset) @ inv[:3, :3].T + inv[:3, 3]
    margin = (float(np.max(_SEARCH_SPAN_MM)) + 1.0 + slab_mm / 2.0) / post_hu.spacing_mm
    sub_lo = np.array([lo[2], lo[1], lo[0]], float) + margin
    sub_hi = np.array([hi[2], hi[1], hi[0]], float) - 1.0 - margin
    ball &= np.all((ijk0 >= sub_lo) & (ijk0 <= sub_hi), axis=1)
    kji, lps = kji[ball], lps[ball]
    if len(kji) < 500:
        return offset
    pre_vals = np.asarray(pre_hu.array)[kji[:, 0], kji[:, 1], kji[:, 2]].astype(np.float32)
    pre_bins = quantize(pre_vals, *_MI_RANGE_HU, _MI_BINS)

    def score(off: npt.NDArray[np.float64]) -> float:
        ijk = (lps - off) @ inv[:3, :3].T + inv[:3, 3]
        coords = np.stack([(ijk[:, 2] - lo[0]) * up, ijk[:, 1] - lo[1], ijk[:, 0] - lo[2]])
        vals = map_coordinates(boxed, coords, order=1, mode="constant", cval=np.nan)
        ok = np.isfinite(vals)
        if ok.sum() < 0.9 * len(vals):
            return -np.inf
        return mutual_information(pre_bins[ok] * _MI_BINS + quantize(vals[ok], *_MI_RANGE_HU,
                                                                   _MI_BINS), _MI_BINS)

    def grid_search(centre: npt.NDArray[np.float64], span: npt.NDArray[np.float64],
                    step: npt.NDArray[np.float64]) -> tuple[float, npt.NDArray[np.float64]]:
        axes = [np.arange(-s, s + 1e-6, st) if s > 0 else np.zeros(1)
                for s, st in zip(span, step, strict=True)]
        best = (score(centre), centre)
        for dx in axes[0]:
            for dy in axes[1]:
                for dz in axes[2]:
                    cand = centre + np.array([dx, dy, dz])
                    value = score(cand)
                    if value > best[0]:
                        best = (value, cand)
        return best

    _value, coarse = grid_search(offset, _SEARCH_SPAN_MM, _SEARCH_STEP_MM)
    _value, refined = grid_search(coarse, _SEARCH_STEP_MM / 2.0 + 1e-9, _FINE_STEP_MM)
    return np.asarray(refined, dtype=np.float64)


def mr_enhancement(
    pre: Volume,
    post: Volume,
    mask: Volume,
    *,
    threshold_pct: float = 15.0,
    erode_mm: float = 1.5,
    min_voxels: int = 10,
    reference_ratio: float | None = None,
) -> MREnhancement:
    """MR percent signal increase over an eroded mask, ≥ ``threshold_pct`` enhancing.

    ``reference_ratio``: the two series' relative receive sensitivity (post/pre,
    dimensionless: coil, receiver gain), divided out as 100 × (median post / (ratio ×
    median pre) − 1). Read on a tissue that does not enhance, e.g. the fat around the
    lesion (:func:`mr_fat_signal_ratio`); the pipeline passes only the part of the fat's
    ratio beyond the fat's own change (``pipeline.analysis.lesion._mr_fat_reference``).

    With an erosion, the mask's first and last slices are left out too where enough
    voxels lie between them (:func:`_between_slices`): on slices thicker than the erosion
    the ball does not reach along them, and those outermost slabs are partial volume with
    the tissue beyond the mask's poles, mixed differently in the two phases when the
    breath holds differ (a 12-month 20 mm zone on 5 mm slices read +20 % and +26 % on its
    two outer slabs and +7 % between them, +18 % in all, "yes", for a truth of +1 %).

    Not assessable when too few voxels remain or the pre-contrast signal is not positive
    (the ratio is meaningless). Raises ModalityError for CT images.
    """
    _require_modality(pre, "pre", _MR, "percent signal enhancement")
    _require_modality(post, "post", _MR, "percent signal enhancement")
    _check_grids(mask, "mask", pre=pre, post=post)
    ratio = 1.0 if reference_ratio is None else float(reference_ratio)
    if not np.isfinite(ratio) or ratio <= 0:
        raise ValueError(f"mr_enhancement: reference_ratio must be positive, got {ratio}")
    mask_arr = _bool_mask(mask, "mask")
    inside = _eroded(mask_arr, _spacing_kji(mask), erode_mm)
    if erode_mm > 0:
        between = inside & _between_slices(mask_arr)
        if np.count_nonzero(between) >= min_voxels:
            inside = between
    n = int(np.count_nonzero(inside))
    if n < min_voxels:
        return MREnhancement(None, EnhancementClass.NOT_ASSESSABLE, n, None, None, None)
    pre_v = pre.array[inside].astype(np.float64)
    post_v = post.array[inside].astype(np.float64)
    pre_med, post_med = float(np.median(pre_v)), float(np.median(post_v))
    sub_med = float(np.median(post_v - pre_v))
    if pre_med <= 0:
        return MREnhancement(None, EnhancementClass.NOT_ASSESSABLE, n, sub_med, pre_med, post_med)
    pct = 100.0 * (post_med / (ratio * pre_med) - 1.0)
    cls = EnhancementClass.YES if pct >= threshold_pct else EnhancementClass.NO
    return MREnhancement(pct, cls, n, sub_med, pre_med, post_med,
                         None if reference_ratio is None else ratio)


def mr_fat_signal_ratio(
    pre: Volume,
    post: Volume,
    mask: Volume,
    *,
    ring_mm: tuple[float, float] = (5.0, 30.0),
    dark_fraction: float = 0.3,
    floor_fraction: float = 0.05,
    min_voxels: int = 200,
) -> float | None:
    """Post/pre ratio of the median signal of the fat around ``mask`` on fat-suppressed
    T1, or None.

    Fat: voxels between ``ring_mm`` (min, max) from the mask whose signal is under
    ``dark_fraction`` of the mask's median in both phases and, pre-contrast, above
    ``floor_fraction`` of it (air and signal voids read only noise); voxels either phase
    does not cover (NaN) are left out. Fat takes up little gadolinium, so its ratio is
    the two series' relative receive sensitivity there (smooth over the ring) times its
    own small rise (the phantom's fat: +6.7 %): the caller decides how much of it to
    trust as sensitivity (``pipeline.analysis.lesion``: only a difference beyond a
    tenth). Other dark tissue in the ring counts too (urine, bowel fluid: a few percent
    of a perirenal ring; the median keeps them from deciding). None when fewer than
    ``min_voxels`` qualify (a sequence without fat suppression: fat is not dark) or the
    mask's own signal is not positive. Raises EmptyMaskError for an empty mask and
    GeometryError for a grid with non-orthogonal axes.

    Why: the percent increase is a ratio of two acquisitions' arbitrary units; with
    their sensitivities differing by a fifth, a dead 12-month zone (+1 %) read +24 %,
    "yes" (held-out seed 207: the fat around it rose ×1.27)."""
    _require_modality(pre, "pre", _MR, "MR fat signal ratio")
    _require_modality(post, "post", _MR, "MR fat signal ratio")
    _check_grids(mask, "mask", pre=pre, post=post)
    _check_orthogonal(mask, "mask")
    mask_arr = _bool_mask(mask, "mask")
    pre_arr = np.asarray(pre.array, dtype=np.float64)
    post_arr = np.asarray(post.array, dtype=np.float64)
    covered = np.isfinite(pre_arr) & np.isfinite(post_arr)
    own = mask_arr & covered
    if not own.any():
        return None
    pre_level, post_level = float(np.median(pre_arr[own])), float(np.median(post_arr[own]))
    if pre_level <= 0 or post_level <= 0:
        return None
    from_mask_mm = distance_transform_edt(~mask_arr, sampling=_spacing_kji(mask))
    with np.errstate(invalid="ignore"):
        fat = (covered & (from_mask_mm > ring_mm[0]) & (from_mask_mm <= ring_mm[1])
               & (pre_arr > floor_fraction * pre_level) & (pre_arr < dark_fraction * pre_level)
               & (post_arr < dark_fraction * post_level))
    if np.count_nonzero(fat) < min_voxels:
        return None
    return float(np.median(post_arr[fat]) / np.median(pre_arr[fat]))


def classify_with_uncertainty(delta_hu: float, standard_error_hu: float, enhancing_hu: float,
                              equivocal_hu: float, z: float = Z_95) -> EnhancementClass:
    """The Bosniak/ACR class of ΔHU, unless its 95 % noise interval (± ``z`` standard
    errors) reaches from below the equivocal threshold to the enhancing one: then not
    assessable (the measurement cannot tell enhancing from non-enhancing tissue).

    The classes' equivocal band (10-19 HU by default) is itself the allowance for an ROI
    reading's uncertainty (noise, pseudo-enhancement), so an interval that crosses one
    threshold only does not change the call: a reading below 10 HU whose interval stays
    under 20 HU excludes enhancement, one of 20 HU or more whose interval stays at or
    above 10 HU shows it. (Equivocal whenever the interval crossed one threshold, a dead
    zone read to ± 8 HU was called equivocal from +2 HU up: held-out seed 151, +4 ± 8 HU
    at 12 months, truth not enhancing.)"""
    if not np.isfinite(standard_error_hu):
        return EnhancementClass.NOT_ASSESSABLE
    low = _classify(delta_hu - z * standard_error_hu, enhancing_hu, equivocal_hu)
    high = _classify(delta_hu + z * standard_error_hu, enhancing_hu, equivocal_hu)
    if low is EnhancementClass.NO and high is EnhancementClass.YES:
        return EnhancementClass.NOT_ASSESSABLE
    return _classify(delta_hu, enhancing_hu, equivocal_hu)


def _classify(delta_hu: float, enhancing_hu: float, equivocal_hu: float) -> EnhancementClass:
    if delta_hu >= enhancing_hu:
        return EnhancementClass.YES
    if delta_hu >= equivocal_hu:
        return EnhancementClass.EQUIVOCAL
    return EnhancementClass.NO

