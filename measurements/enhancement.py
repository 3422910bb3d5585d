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

The images must already be aligned on the mask's grid (registration is another stage).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from measurements._common import (
    _bool_mask,
    _check_grids,
    _eroded,
    _require_modality,
    _spacing_kji,
)
from pipeline.image import Volume

__all__ = [
    "EnhancementClass",
    "Enhancement",
    "MREnhancement",
    "ct_enhancement",
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
    """

    delta_hu: float | None
    mean_delta_hu: float | None
    classification: EnhancementClass
    n_voxels: int
    n_excluded: int
    pre_hu: float | None
    post_hu: float | None


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
    n_excluded = int(np.count_nonzero(~keep))
    pre, post = pre[keep], post[keep]
    if pre.size < min_voxels:
        return Enhancement(
            None, None, EnhancementClass.NOT_ASSESSABLE, int(pre.size), n_excluded, None, None
        )
    delta = post - pre
    median = float(np.median(delta))
    return Enhancement(
        delta_hu=median,
        mean_delta_hu=float(delta.mean()),
        classification=_classify(median, enhancing_hu, equivocal_hu),
        n_voxels=int(pre.size),
        n_excluded=n_excluded,
        pre_hu=float(np.median(pre)),
        post_hu=float(np.median(post)),
    )


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

