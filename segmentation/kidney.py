"""Kidney segmentation around a lesion on a contrast-enhanced CT (nephrographic best).

The enhancing parenchyma level is the brightest prominent soft-tissue mode within 40 mm
of the seed (kidney parenchyma outshines liver, spleen, bowel wall and muscle in the
nephrographic phase). The kidney is the parenchyma component nearest the seed after an
opening that cuts the renal vessels, with its enclosed structures (sinus fat, pelvis,
medulla, an endophytic tumour) filled and a closing for the hilum; an exophytic tumour
given as ``tumour_mask`` is added.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage as ndi

from pipeline.image import Volume, check_same_grid
from segmentation._common import (
    as_point_lps,
    ball_structure,
    fill_holes_3d_and_slices,
    nearest_component,
    paste_into,
    point_index_kji,
    require_inside,
)
from segmentation.registration import resample_to
from segmentation.tumour import tissue_levels_hu

__all__ = ["segment_kidney"]

_WORK_SPACING_MM = 1.5


def segment_kidney(
    image: Volume,
    seed_lps: Any,
    *,
    tumour_mask: Volume | None = None,
    half_size_mm: float = 90.0,
) -> Volume:
    """Mask (uint8, image grid) of the kidney bearing the lesion at ``seed_lps`` (LPS mm).

    Raises ValueError when no enhancing parenchyma is found near the seed (e.g. an
    unenhanced image: use the contrast phase).
    """
    seed = as_point_lps(seed_lps, "seed_lps")
    require_inside(image, seed, "segment_kidney: seed")
    if tumour_mask is not None:
        check_same_grid(image, tumour_mask)
    full_crop = image.crop_around_lps(seed, half_size_mm)
    crop = _coarse(full_crop, _WORK_SPACING_MM)  # the kidney is big: work at 1.5 mm
    spacing = crop.spacing_mm
    sigma_vox = [1.0 / s if 1.0 / s >= 0.3 else 0.0 for s in spacing[::-1]]
    smooth = np.asarray(ndi.gaussian_filter(crop.array.astype(np.float32), sigma_vox))
    seed_kji = point_index_kji(crop, seed)
    fat_hu, lesion_hu, _, paren_hu = tissue_levels_hu(smooth, seed_kji, spacing)
    if paren_hu is None:
        raise ValueError(
            "segment_kidney: no enhancing parenchyma brighter than the lesion within 40 mm "
            f"of {np.round(seed, 1).tolist()} (LPS mm); is this a contrast phase?"
        )
    # parenchyma vs everything else: above the midpoint with the next tissue down (the
    # lesion or, for a bright lesion, generic soft tissue at ~60 HU)
    floor_hu = min(lesion_hu, 60.0) if lesion_hu < paren_hu else 60.0
    threshold = 0.5 * (paren_hu + max(floor_hu, fat_hu))
    parenchyma = smooth > max(threshold, paren_hu - 60.0)
    parenchyma &= smooth < 400.0  # not bone, not excreted contrast
    opened = ndi.binary_opening(parenchyma, structure=ball_structure(spacing, 3.0))
    kidney = nearest_component(opened, seed_kji, spacing, max_distance_mm=40.0)
    if not kidney.any():
        raise ValueError(
            f"segment_kidney: no parenchyma component within 40 mm of "
            f"{np.round(seed, 1).tolist()} (LPS mm)"
        )
    kidney = kidney | (parenchyma & ndi.binary_dilation(kidney, structure=ball_structure(
        spacing, 3.5)))
    kidney = ndi.binary_closing(
        np.pad(kidney, 8), structure=ball_structure(spacing, 6.0))[8:-8, 8:-8, 8:-8]
    kidney = fill_holes_3d_and_slices(kidney)
    fine = resample_to(crop.with_array(kidney.astype(np.uint8)), full_crop, None,
                       interpolator="nearest", default_value=0).array > 0
    if tumour_mask is not None:
        fine |= tumour_mask.crop_around_lps(seed, half_size_mm).array > 0
        fine = fill_holes_3d_and_slices(fine)
    return paste_into(image, full_crop, fine)


def _coarse(image: Volume, spacing_mm: float) -> Volume:
    """The image smoothed and resampled to spacing ≥ ``spacing_mm`` (same orientation)."""
    old = image.spacing_mm
    new = np.maximum(old, spacing_mm)
    if np.allclose(new, old):
        return image
    sigma_vox = [float(np.sqrt(max(n**2 - o**2, 0.0)) / 2.0 / o) for n, o in zip(
        new[::-1], old[::-1], strict=True)]
    smooth = ndi.gaussian_filter(image.array.astype(np.float32), sigma_vox)
    shape_ijk = np.maximum(np.floor(np.asarray(image.shape_ijk) * old / new), 1).astype(int)
    ref = Volume.from_geometry(
        np.zeros(tuple(shape_ijk[::-1]), np.float32), origin_lps=image.origin_lps,
        spacing_mm=new, direction=image.direction, modality=image.modality,
    )
    return resample_to(image.with_array(smooth), ref, None, default_value=-1024.0)
