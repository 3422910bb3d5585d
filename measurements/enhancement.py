"""Enhancement of a lesion or ablation zone: CT (HU difference) and MR (percent increase).

CT (Bosniak 2019 / ACR): ΔHU = HU(contrast) − HU(unenhanced) at matched voxels, summarised
by the median over the mask eroded by ``erode_mm`` (voxel centres at least that deep below
the mask boundary, Euclidean mm: no partial-volume edge), excluding
calcification/metal (unenhanced HU above ``exclude_unenhanced_above_hu`` or either image
above ``exclude_above_hu``). ΔHU ≥ 20 enhancing ('yes'), 10–19 'equivocal', < 10 'no';
'not_assessable' when fewer than ``min_voxels`` voxels remain.

MR (ACR): percent signal increase 100 × (median(post) − median(pre)) / median(pre) over the
eroded mask, ≥ 15 % enhancing. MR intensities are arbitrary units: HU rules refuse MR
images and MR rules refuse CT images (when ``Volume.modality`` is known).

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

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

from measurements._common import (
    _bool_mask,
    _check_grids,
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
    "mr_enhancement",
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
    """

    delta_hu: float | None
    mean_delta_hu: float | None
    classification: EnhancementClass
    n_voxels: int
    n_excluded: int
    pre_hu: float | None
    post_hu: float | None
    offset_mm: npt.NDArray[np.float64] | None = None


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
    """

    enhancement_pct: float | None
    classification: EnhancementClass
    n_voxels: int
    subtraction_median: float | None
    pre_median: float | None
    post_median: float | None


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


#: step (mm) of the sub-samples that average the contrast image over an unenhanced slab
_SLAB_STEP_MM = 0.4
#: mutual-information search of the phase offset: coarse grid half-widths (mm; x, y, z)
#: and steps, then a fine grid around the best coarse offset
_SEARCH_SPAN_MM = np.array([1.0, 1.0, 4.0])
_SEARCH_STEP_MM = np.array([1.0, 1.0, 1.0])
_FINE_STEP_MM = np.array([0.5, 0.5, 0.25])
_MI_BINS = 32
_MI_RANGE_HU = (-150.0, 300.0)  # fat to enhancing parenchyma; bone and metal clipped


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
    with the mean contrast HU over that slab: both then average the same tissue, whatever
    lies beyond the mask. ΔHU = median over those voxels; calcification/metal excluded as
    in :func:`ct_enhancement`. Not assessable when fewer than ``min_voxels`` remain (a
    zone thinner than one unenhanced slab).
    """
    _require_modality(pre_hu, "pre_hu", _CT, "HU enhancement")
    _require_modality(post_hu, "post_hu", _CT, "HU enhancement")
    _check_grids(mask, "mask", post_hu=post_hu)
    if not equivocal_hu <= enhancing_hu:
        raise ValueError(f"equivocal_hu {equivocal_hu} must be <= enhancing_hu {enhancing_hu}")
    offset = np.asarray(offset_mm, dtype=np.float64).reshape(3)
    inside = _eroded_in_plane(_bool_mask(mask, "mask"), _spacing_kji(mask), erode_mm)
    na = EnhancementClass.NOT_ASSESSABLE
    if not inside.any():
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    post = np.asarray(post_hu.array, dtype=np.float32)
    centre = post_hu.index_to_lps(np.argwhere(inside).mean(axis=0)[::-1])
    if refine_alignment:
        offset = _refine_offset_mi(pre_hu, post, post_hu, centre, offset, align_radius_mm)
    # unenhanced voxels around the mask (its bounding box carried into the pre grid)
    kji = np.argwhere(inside)
    corners = np.array([[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], float)
    lo, hi = kji.min(axis=0), kji.max(axis=0)
    box_lps = post_hu.index_to_lps((lo + corners * (hi - lo))[:, ::-1]) + offset
    pre_ijk = pre_hu.lps_to_index(box_lps)
    i0 = np.maximum(np.floor(pre_ijk.min(axis=0)).astype(int) - 1, 0)
    i1 = np.minimum(np.ceil(pre_ijk.max(axis=0)).astype(int) + 2, pre_hu.array.shape[::-1])
    if np.any(i1 <= i0):
        return Enhancement(None, None, na, 0, 0, None, None, offset)
    grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(i0, i1, strict=True)],
                                indexing="ij"), axis=-1).reshape(-1, 3)  # (i, j, k)
    points = pre_hu.index_to_lps(grid.astype(np.float64)) - offset  # on the contrast grid
    post_inv = np.linalg.inv(post_hu.affine_lps)
    shape = np.asarray(post.shape)
    # candidates: voxel centre inside the mask (the slab test below is stricter)
    centre_kji = np.rint(points @ post_inv[:3, :3].T + post_inv[:3, 3]).astype(int)[:, ::-1]
    ok = np.all((centre_kji >= 0) & (centre_kji < shape), axis=1)
    ok[ok] = inside[tuple(centre_kji[ok].T)]
    grid, points = grid[ok], points[ok]
    pre_vals = np.asarray(pre_hu.array)[grid[:, 2], grid[:, 1], grid[:, 0]].astype(np.float64)
    normal = pre_hu.affine_lps[:3, 2] / np.linalg.norm(pre_hu.affine_lps[:3, 2])
    slab_mm = float(pre_hu.spacing_mm[2])
    n_sub = int(np.ceil(slab_mm / _SLAB_STEP_MM)) + 1
    all_in = np.ones(len(grid), dtype=bool)
    post_sum = np.zeros(len(grid), dtype=np.float64)
    post_max = np.full(len(grid), -np.inf)
    for u_mm in np.linspace(-slab_mm / 2.0, slab_mm / 2.0, n_sub):
        q = points + u_mm * normal
        ijk = np.rint(q @ post_inv[:3, :3].T + post_inv[:3, 3]).astype(int)
        kji_q = ijk[:, ::-1]
        ok = np.all((kji_q >= 0) & (kji_q < shape), axis=1)
        kji_q = np.where(ok[:, None], kji_q, 0)
        values = post[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]].astype(np.float64)
        all_in &= ok & inside[kji_q[:, 0], kji_q[:, 1], kji_q[:, 2]]
        post_sum += values
        post_max = np.maximum(post_max, values)
    post_box = post_sum / n_sub
    pre_limit = min(exclude_unenhanced_above_hu, exclude_above_hu)
    keep = all_in & (pre_vals <= pre_limit) & (post_max <= exclude_above_hu)
    return _summary(pre_vals, post_box, keep, int(np.count_nonzero(all_in & ~keep)),
                    enhancing_hu, equivocal_hu, min_voxels, offset)


def _eroded_in_plane(mask: npt.NDArray[np.bool_], spacing_kji: Any, erode_mm: float
                     ) -> npt.NDArray[np.bool_]:
    """Voxels more than ``erode_mm`` (in-plane Euclidean) from the mask's outside in their
    own slice; along the slices the slab test does the work."""
    from scipy.ndimage import distance_transform_edt

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
) -> MREnhancement:
    """MR percent signal increase over an eroded mask, ≥ ``threshold_pct`` enhancing.

    Not assessable when too few voxels remain or the pre-contrast signal is not positive
    (the ratio is meaningless). Raises ModalityError for CT images.
    """
    _require_modality(pre, "pre", _MR, "percent signal enhancement")
    _require_modality(post, "post", _MR, "percent signal enhancement")
    _check_grids(mask, "mask", pre=pre, post=post)
    inside = _eroded(_bool_mask(mask, "mask"), _spacing_kji(mask), erode_mm)
    n = int(np.count_nonzero(inside))
    if n < min_voxels:
        return MREnhancement(None, EnhancementClass.NOT_ASSESSABLE, n, None, None, None)
    pre_v = pre.array[inside].astype(np.float64)
    post_v = post.array[inside].astype(np.float64)
    pre_med, post_med = float(np.median(pre_v)), float(np.median(post_v))
    sub_med = float(np.median(post_v - pre_v))
    if pre_med <= 0:
        return MREnhancement(None, EnhancementClass.NOT_ASSESSABLE, n, sub_med, pre_med, post_med)
    pct = 100.0 * (post_med - pre_med) / pre_med
    cls = EnhancementClass.YES if pct >= threshold_pct else EnhancementClass.NO
    return MREnhancement(pct, cls, n, sub_med, pre_med, post_med)


def _classify(delta_hu: float, enhancing_hu: float, equivocal_hu: float) -> EnhancementClass:
    if delta_hu >= enhancing_hu:
        return EnhancementClass.YES
    if delta_hu >= equivocal_hu:
        return EnhancementClass.EQUIVOCAL
    return EnhancementClass.NO

