"""Ice ball and cryoprobe segmentation on the intra-procedural (unenhanced, prone) CT.

1. Probes: metal (> ``metal_hu``) components that are elongated (≥ 15 mm along their
   principal axis) and pass near the expected centre; the tip is the end nearer to it.
2. Visible ice: after replacing metal by the surrounding level and a median filter
   (streak artefacts), voxels between the fat/ice and ice/tissue iso-levels (the ice
   level is sampled around the probe tips), connected to the probe tips, opened and
   closed with a 2.5 mm ball (streak spurs), holes filled.
3. Ice in fat is invisible (fat does not change attenuation when frozen) and streaks
   corrupt the rest, so the border comes from a per-probe ellipsoidal iso-therm model
   (radius across the probe, elongated along it, extending beyond the tip) fitted to
   the visible ice (every voxel counts: frozen fat reads ~40 HU above unfrozen fat, so
   the fat around the ball is evidence too); the final mask is the model (the visible
   ice alone when no model fits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage as ndi

from pipeline.image import Volume
from segmentation._common import (
    as_point_lps,
    fill_holes_3d_and_slices,
    paste_into,
    require_inside,
    smooth_mask,
)

__all__ = ["IceballResult", "segment_iceball", "detect_probes"]

_FAT_HU = -100.0
_MIN_MODEL_DICE = 0.5  # agreement of the fitted model with the visible ice to accept it
_TISSUE_HU = 35.0


@dataclass(frozen=True)
class IceballResult:
    """Ice ball, probes and probe tips on the intra-procedural CT grid.

    Attributes:
        mask: uint8 ice-ball mask (probes inside it included).
        probe_mask: uint8 metal of the detected probes.
        probe_tips_lps: (N, 3) LPS mm of the probe tips (deep ends).
        probe_axes_lps: (N, 3) unit vectors from each tip back along its shaft.
        ice_hu: median attenuation of the visible ice.
        qc: warnings.
    """

    mask: Volume
    probe_mask: Volume
    probe_tips_lps: npt.NDArray[np.float64]
    probe_axes_lps: npt.NDArray[np.float64]
    ice_hu: float
    qc: list[str]


def detect_probes(
    crop: Volume,
    center_lps: npt.NDArray[np.float64],
    *,
    metal_hu: float = 1200.0,
    min_length_mm: float = 15.0,
    max_distance_mm: float = 40.0,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Metal mask of elongated components near ``center_lps``, their tips and axes (LPS)."""
    metal = np.asarray(crop.array) > metal_hu
    labels, n = ndi.label(metal, structure=np.ones((3, 3, 3), bool))
    keep = np.zeros_like(metal)
    tips, axes = [], []
    for lab in range(1, n + 1):
        kji = np.argwhere(labels == lab)
        if kji.shape[0] < 3:
            continue
        pts = crop.index_to_lps(kji[:, ::-1].astype(float))
        mean = pts.mean(axis=0)
        _, _, vt = np.linalg.svd(pts - mean, full_matrices=False)
        axis = vt[0]
        proj = (pts - mean) @ axis
        length = float(proj.max() - proj.min())
        if length < min_length_mm:
            continue
        ends = [mean + axis * proj.min(), mean + axis * proj.max()]
        dist = [float(np.linalg.norm(e - center_lps)) for e in ends]
        # distance of the centre from the probe segment
        t = np.clip((center_lps - mean) @ axis, proj.min(), proj.max())
        if np.linalg.norm(mean + axis * t - center_lps) > max_distance_mm:
            continue
        tip = ends[int(np.argmin(dist))]
        back = ends[int(np.argmax(dist))] - tip
        keep |= labels == lab
        tips.append(tip)
        axes.append(back / max(np.linalg.norm(back), 1e-9))
    return keep, np.array(tips, float).reshape(-1, 3), np.array(axes, float).reshape(-1, 3)


def segment_iceball(
    intra_ct: Volume,
    approx_center_lps: Any,
    *,
    half_size_mm: float = 60.0,
    metal_hu: float = 1200.0,
    model_in_fat: bool = True,
) -> IceballResult:
    """Segment the ice ball around ``approx_center_lps`` (LPS mm) on the intra-procedural CT.

    Raises ValueError when no probe is found near the centre.
    """
    center = as_point_lps(approx_center_lps, "approx_center_lps")
    require_inside(intra_ct, center, "segment_iceball: approx_center_lps")
    crop = intra_ct.crop_around_lps(center, half_size_mm)
    spacing = crop.spacing_mm
    probes, tips, axes = detect_probes(crop, center, metal_hu=metal_hu)
    if tips.shape[0] == 0:
        raise ValueError(
            f"segment_iceball: no cryoprobe (elongated metal > {metal_hu:.0f} HU) within 40 mm "
            f"of {np.round(center, 1).tolist()} (LPS mm)"
        )
    qc: list[str] = []
    arr = np.asarray(crop.array, dtype=np.float32)
    filtered = _despeckled(arr, probes, spacing)
    tip_kji = [tuple(int(v) for v in np.clip(np.rint(crop.lps_to_index(t))[::-1], 0,
                                               np.asarray(arr.shape) - 1)) for t in tips]
    dist_tip = _distance_to_points_mm(arr.shape, tip_kji, spacing)
    near_tips = (dist_tip < 8.0) & ~ndi.binary_dilation(probes, iterations=2)
    ice_hu = float(np.median(filtered[near_tips])) if near_tips.any() else -50.0
    if not -90.0 < ice_hu < 0.0:
        qc.append(f"ice ball doubtful: attenuation near the probe tips is {ice_hu:.0f} HU")
        ice_hu = float(np.clip(ice_hu, -80.0, -20.0))
    lo = 0.5 * (_FAT_HU + ice_hu)
    hi = 0.5 * (ice_hu + _TISSUE_HU)
    candidate = ((filtered > lo) & (filtered < hi)) | probes
    labels, _ = ndi.label(candidate, structure=np.ones((3, 3, 3), bool))
    touching = np.unique(labels[(dist_tip < 4.0) & candidate])
    visible = np.isin(labels, touching[touching > 0])
    visible = smooth_mask(visible, spacing, 2.5)
    labels, _ = ndi.label(visible, structure=np.ones((3, 3, 3), bool))
    touching = np.unique(labels[(dist_tip < 6.0) & visible])
    visible = np.isin(labels, touching[touching > 0])
    visible = fill_holes_3d_and_slices(visible | (probes & (dist_tip < 60.0) & visible.any()))
    mask = visible
    if model_in_fat and visible.any():
        # frozen fat reads ~40 HU above unfrozen fat, so fat outside the visible ice is
        # evidence too: every voxel counts, else the model swells into the fat for free
        model = _fit_isotherm_model(crop, visible, np.ones_like(visible), tips, axes)
        if model is not None:
            # the fitted iso-therm is smoother and more reliable than streak-ridden
            # visible ice; visible ice beyond it is streak, probe shaft or partial volume
            # (adding it back lengthened the calipers by 2-4 mm on the phantoms)
            mask = fill_holes_3d_and_slices(model)
    return IceballResult(
        mask=paste_into(intra_ct, crop, mask),
        probe_mask=paste_into(intra_ct, crop, probes),
        probe_tips_lps=tips,
        probe_axes_lps=axes,
        ice_hu=ice_hu,
        qc=qc,
    )


# --------------------------------------------------------------------------- internals
def _despeckled(
    arr: npt.NDArray[np.float32], metal: npt.NDArray[np.bool_], spacing_mm: npt.NDArray[np.float64]
) -> npt.NDArray[np.float32]:
    """Metal replaced by the nearby median level, then a ~3 mm in-plane median filter."""
    work = arr.copy()
    if metal.any():
        ring = ndi.binary_dilation(metal, iterations=3) & ~ndi.binary_dilation(metal,
                                                                               iterations=1)
        fill = float(np.median(work[ring])) if ring.any() else -50.0
        work[ndi.binary_dilation(metal, iterations=1)] = min(fill, 0.0)
    size_ij = [max(3, round(3.0 / s) | 1) for s in spacing_mm[1::-1]]
    return np.asarray(ndi.median_filter(work, size=(1, *size_ij)))


def _distance_to_points_mm(
    shape: tuple[int, ...], points_kji: list[tuple[int, ...]], spacing_mm: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    seeds = np.ones(shape, dtype=bool)
    for p in points_kji:
        seeds[p] = False
    return np.asarray(ndi.distance_transform_edt(seeds, sampling=spacing_mm[::-1]))


def _fit_isotherm_model(
    crop: Volume,
    visible: npt.NDArray[np.bool_],
    informative: npt.NDArray[np.bool_],
    tips: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
) -> npt.NDArray[np.bool_] | None:
    """Union of per-probe ellipsoids (radius r across the probe, aspect·r along it, centre
    ``aspect·r − beyond`` behind the tip) best matching the visible ice where the image
    can show ice (outside fat, which does not change when frozen): Dice-maximising grid
    search of r, aspect and tip extension on a 2× subsampled box around the visible ice;
    None when nothing fits (Dice < 0.5)."""
    idx = np.argwhere(visible)
    margin = np.ceil(25.0 / crop.spacing_mm[::-1]).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, visible.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    kji = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi, strict=True)],
                               indexing="ij"), axis=-1)
    pts = crop.index_to_lps(kji[..., ::-1].reshape(-1, 3).astype(float)).reshape(
        *kji.shape[:3], 3)
    sub = (slice(None, None, 2),) * 3
    inf_s, pts_s = informative[box][sub], pts[sub]
    target_s = visible[box][sub] & inf_s
    n_target = int(target_s.sum())
    if n_target < 20:
        return None
    best: tuple[float, float, float, float] | None = None
    for aspect in (1.0, 1.3, 1.6):
        for beyond in (4.0, 8.0, 12.0):
            for r in np.arange(6.0, 36.0, 0.5):
                model = _ellipsoids(pts_s, tips, axes, float(r), aspect, beyond)
                inter = int((model & target_s).sum())
                score = 2.0 * inter / (int((model & inf_s).sum()) + n_target)
                if best is None or score > best[0]:
                    best = (score, float(r), aspect, beyond)
    if best is None or best[0] < _MIN_MODEL_DICE:
        return None
    out = np.zeros(visible.shape, dtype=bool)
    out[box] = _ellipsoids(pts, tips, axes, best[1], best[2], best[3])
    return out


def _ellipsoids(
    pts: npt.NDArray[np.float64],
    tips: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
    r: float,
    aspect: float,
    beyond: float,
) -> npt.NDArray[np.bool_]:
    model = np.zeros(pts.shape[:-1], dtype=bool)
    for tip, axis in zip(tips, axes, strict=True):
        d = pts - (tip + axis * (aspect * r - beyond))
        along = d @ axis
        across2 = np.einsum("...i,...i->...", d, d) - along**2
        model |= across2 / r**2 + along**2 / (aspect * r) ** 2 <= 1.0
    return model
