"""Ice ball and cryoprobe segmentation on the intra-procedural (unenhanced, prone) CT.

1. Probes: metal (> ``metal_hu``) components that are elongated (≥ 15 mm along their
   principal axis) and pass near the expected centre; the tip is the end nearer to it.
2. Visible ice: after replacing metal by the surrounding level and a median filter
   (streak artefacts), voxels between the fat/frozen-fat and ice/tissue iso-levels (the
   ice level is sampled around the probe tips), connected to the probe tips, opened and
   closed with a 2.5 mm ball (streak spurs), holes filled.
3. Ice in fat is invisible (fat does not change attenuation when frozen) and streaks
   corrupt the rest, so the border comes from a per-probe ellipsoidal iso-therm model
   (radius across the probe, elongated along it, extending beyond the tip) fitted to
   the visible ice (every voxel that can tell counts: frozen fat reads ~40 HU above
   unfrozen fat, so the fat around the ball is evidence too; air, and voxels darker or
   brighter than any unfrozen soft tissue — metal streaks — tell nothing); the final mask
   is the model (the visible ice alone when no model fits), and its signed distance map
   gives the surface between slices for the margin.
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
#: ... or the share of the visible ice around the model that lies inside it, when streaks
#: leave the visible ice a fragment of the model (see _fit_isotherm_model)
_MIN_VISIBLE_INSIDE = 0.9
_TISSUE_HU = 35.0
#: frozen fat reads this much above unfrozen fat. Where the ice-ball border lies in fat a
#: voxel half frozen reads halfway between the two, so that is where the fat-side level
#: of the visible ice sits. The midpoint between fat and the ice in tissue (−75 HU for ice
#: at −50) is 5 HU higher: a voxel there had to be 62 % frozen to read as ice, and the
#: model fitted to that ice came out 1.0 % small in volume on 55 phantom ice balls
#: (0.1 mm of radius; minimal margin 0.08 mm short on average). At the midpoint −0.1 %,
#: and −0.3 % with the radius searched in _MODEL_R_STEP_MM steps
_FROZEN_FAT_RISE_HU = 40.0
#: radius step (mm) of the iso-therm model search. At 0.25 mm the fitted radius moved in
#: steps that changed the volume by 3-4 % (mean |volume error| 1.4 %; 1.05 % at 0.1 mm,
#: mean |margin error| of the truth tumour to the model 0.165 → 0.142 mm), at no
#: measurable cost in time (the counts per radius come from one sort)
_MODEL_R_STEP_MM = 0.1
_MODEL_R_MM = (6.0, 36.0)  # range of iso-therm radii searched
#: filtered HU outside this range tell nothing about freezing: darker than unfrozen fat
#: is air/gas (unchanged when frozen: an ice ball reaching the skin is not cut at it) or
#: a dark metal streak; brighter than unfrozen soft tissue is bone or a bright streak
_INFORMATIVE_HU = (-115.0, 80.0)
_FAR_MM = 50.0  # distance map value far from the ice ball
_FIT_REACH_MM = 6.0  # in-band voxels this close to the visible ice ball count for the fit
#: the iso-therm model may move this far (mm, at most half a slab) along the slice
#: normal, in _NORMAL_SHIFT_STEP_MM steps (see _normal_shifts_mm): a shaft 1.5 mm across
#: lies wholly within a slab up to (slab − 1.5) / 2 from its centre: 0.75 mm on 3 mm
#: slices (the phantoms' thickest intra-procedural ones, where the search was checked),
#: 1.75 mm on 5 mm slices, which the cap bounds (not checked on 5 mm ice-ball scans)
_NORMAL_SHIFT_MM = 1.5
_NORMAL_SHIFT_STEP_MM = 0.25


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
        distance_mm: signed distance map of the fitted iso-therm model (float32 mm,
            positive inside) on a crop of the intra-procedural grid around the ice ball:
            its zero level lies between slices where the surface does; None when the mask
            is the visible ice (no model fitted).
    """

    mask: Volume
    probe_mask: Volume
    probe_tips_lps: npt.NDArray[np.float64]
    probe_axes_lps: npt.NDArray[np.float64]
    ice_hu: float
    qc: list[str]
    distance_mm: Volume | None


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
    # the fat-side level: halfway to frozen fat (the border in fat), or to the ice in
    # tissue when that reads lower (a half-frozen voxel in fat reads the former)
    lo = min(_FAT_HU + 0.5 * _FROZEN_FAT_RISE_HU, 0.5 * (_FAT_HU + ice_hu))
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
    distance = None
    if model_in_fat and visible.any():
        # frozen fat reads ~40 HU above unfrozen fat, so fat outside the visible ice is
        # evidence too: every voxel that can tell counts, else the model swells into the
        # fat for free (see _informative)
        distance = _fit_isotherm_model(crop, visible, candidate & ~probes,
                                       _informative(filtered), tips, axes)
        if distance is not None:
            # the fitted iso-therm is smoother and more reliable than streak-ridden
            # visible ice; visible ice beyond it is streak, probe shaft or partial volume
            # (adding it back lengthened the calipers by 2-4 mm on the phantoms)
            mask = fill_holes_3d_and_slices(distance > 0)
    if model_in_fat and distance is None:
        qc.append("ice-ball model did not fit the visible ice: the visible ice is used "
                  "(streaks, frozen fat and the probe shaft make its border unreliable)")
    return IceballResult(
        mask=paste_into(intra_ct, crop, mask),
        probe_mask=paste_into(intra_ct, crop, probes),
        probe_tips_lps=tips,
        probe_axes_lps=axes,
        ice_hu=ice_hu,
        qc=qc,
        distance_mm=None if distance is None else crop.with_array(distance, modality=""),
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


def _informative(filtered: npt.NDArray[np.float32]) -> npt.NDArray[np.bool_]:
    """Voxels whose attenuation can show whether they are frozen (see _INFORMATIVE_HU)."""
    return (filtered > _INFORMATIVE_HU[0]) & (filtered < _INFORMATIVE_HU[1])


def _within_mm(mask: npt.NDArray[np.bool_], spacing_mm: npt.NDArray[np.float64],
               reach_mm: float) -> npt.NDArray[np.bool_]:
    """Voxels within ``reach_mm`` of ``mask`` (a distance transform on the mask's box grown
    by the reach: a ball dilation of the whole crop took seconds)."""
    out = np.zeros_like(mask)
    idx = np.argwhere(mask)
    if idx.shape[0] == 0:
        return out
    pad = np.ceil(reach_mm / np.asarray(spacing_mm)[::-1]).astype(int) + 1
    lo = np.maximum(idx.min(axis=0) - pad, 0)
    hi = np.minimum(idx.max(axis=0) + pad + 1, mask.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    out[box] = ndi.distance_transform_edt(~mask[box], sampling=spacing_mm[::-1]) <= reach_mm
    return out


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
    in_band: npt.NDArray[np.bool_],
    informative: npt.NDArray[np.bool_],
    tips: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
) -> npt.NDArray[np.float32] | None:
    """Signed distance map (mm, positive inside; on the crop grid, −_FAR_MM away from the
    ice) of the union of per-probe ellipsoids (radius r across the probe, aspect·r along
    it, centre ``aspect·r − beyond`` behind the tip) best matching the voxels that read as
    ice (``in_band``) within _FIT_REACH_MM of the visible ice ball, where the image can
    show ice: search of r, aspect and tip extension on the box around them (every voxel:
    a subsampled box made the optimum depend on the crop's phase); None when nothing fits
    (Dice with the visible ice < 0.5 and less than 90 % of it inside the model).

    Why the in-band voxels and not the visible ice ball: the latter is cleaned by an
    opening that, in the slices the probes cross, eats the streak-fragmented border
    (inside the ice there only 20-40 % of the voxels survive it, against ~70 % that read
    as ice): fitted to it the model came out 1.5-2 mm small. Staying near the visible ice
    keeps other in-band structures (another ice ball, partial-volume fat edges) out.

    The match is the likelihood of the labels under the model: inside it a voxel reads
    as ice with probability p_in, outside (near the ice) with p_out — streaks and partial
    volume make both differ from 1 and 0 by amounts that vary between patients (inside
    0.7-0.9, outside 0.1-0.3). A shell of voxels joins the model when its share of ice
    exceeds log((1−p_out)/(1−p_in)) / log(p_in(1−p_out) / (p_out(1−p_in))), ~0.4-0.5; the
    rates are re-estimated from the fit (three rounds, starting from the Dice optimum).
    Dice alone puts that share at Dice/2: 0.45 on clean ice balls, but 0.35-0.4 where
    streaks or partial-volume fat lower the agreement, which swelled the model by ~1 mm.

    The rates are then estimated slice by slice (three more rounds): metal streaks are
    drawn across the whole reconstructed slice the probe crosses, and there voxels inside
    and outside the ice read as ice about equally often (0.39-0.51 against 0.40-0.51 on
    the slices of the shaft in the phantoms), below the share at which a shell joins. With
    one pair of rates for the ball those slices voted against every model voxel in them
    and the model lost the ice they hold: 3.7 mm of its back end along the shaft, volume
    −7.9 % (and a streak band at or above the share swelled it instead). With each
    slice's own rates a slice that cannot tell ice from its surroundings (p_in ≤ p_out)
    has no say and the clean slices set the shape, also when the pooled rates of the
    first rounds could not tell ice at all. A slice's rates are its counts shrunk
    towards the whole ball's with the weight of a median slice of the model
    (:func:`_slice_rates`), so that the poles' few voxels do not decide alone.

    Where the shafts lie within about one slab (nearly in the slices' plane) their
    position across the slices is known only to the slab, and the model is also moved
    along the slice normal by up to half a slice (:func:`_normal_shifts_mm`), scored by
    the slices' rates; the rates are then re-estimated where the model lies and the
    search repeated (up to three rounds) until the shift stays.

    A voxel at depth t past the tip plane along the shaft (t + beyond > 0) and ρ from the
    shaft lies inside a probe's ellipsoid exactly when r ≥ (aspect²·ρ² + (t + beyond)²) /
    (2·aspect·(t + beyond)): the model grows monotonically with r, so for each (aspect,
    beyond) the counts of every r follow from one sort of these thresholds."""
    near = _within_mm(visible, crop.spacing_mm, _FIT_REACH_MM)
    target = in_band & near
    idx = np.argwhere(target)
    if idx.shape[0] < 20:
        return None
    margin = np.ceil(25.0 / crop.spacing_mm[::-1]).astype(int)
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, target.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    pts = _box_points_lps(crop, lo, hi)
    counted = informative[box].ravel()
    box_shape = tuple(int(v) for v in hi - lo)
    # the slice (index k within the box, C order) of each counted voxel
    slice_s = np.flatnonzero(counted) // (box_shape[1] * box_shape[2])
    pts_s, target_s = pts[counted], target[box].ravel()[counted]
    near_s = near[box].ravel()[counted]
    visible_s = visible[box].ravel()[counted]
    n_target, n_near = int(target_s.sum()), int(near_s.sum())
    if n_target < 20:
        return None
    along = np.stack([(pts_s - tip) @ axis for tip, axis in zip(tips, axes, strict=True)])
    across2 = np.stack([np.einsum("ij,ij->i", pts_s - tip, pts_s - tip)
                        for tip in tips]) - along**2
    step = _MODEL_R_STEP_MM
    radii = np.arange(_MODEL_R_MM[0], _MODEL_R_MM[1], step)
    n_slices, n_radii = box_shape[0], len(radii)

    # each voxel's row in a (slice, radius + 1) count table, flattened
    slice_offset = slice_s * (n_radii + 1)

    def inside_per_slice(first: npt.NDArray[np.int64],
                         which: npt.NDArray[np.bool_] | None) -> npt.NDArray[np.int64]:
        # (slice, radius): how many of the ``which`` voxels (None: all) of each slice the
        # model of each radius holds (cumulative over the radius at which each voxel joins)
        cell = slice_offset + first if which is None else slice_offset[which] + first[which]
        counts = np.bincount(cell, minlength=n_slices * (n_radii + 1))
        return np.cumsum(counts.reshape(n_slices, n_radii + 1)[:, :-1], axis=1)

    aspects, beyonds = np.arange(1.0, 1.61, 0.1), np.arange(0.0, 16.1, 1.0)
    # (shape, slice, radius) counts; int32: 119 shapes × 200 slices (0.6 mm slices) × 300
    # radii is 29 MB per array
    gk, hk, nink = (np.zeros((len(aspects) * len(beyonds), n_slices, n_radii), np.int32)
                    for _ in range(3))
    shapes = []

    def first_radius(along: npt.NDArray[np.float64], across2: npt.NDArray[np.float64],
                     aspect: float, beyond: float) -> npt.NDArray[np.int64]:
        # first radius of the grid at which each voxel is inside the model
        u = along + beyond
        with np.errstate(divide="ignore", invalid="ignore"):
            r_in = np.where(u > 0, (aspect**2 * across2 + u**2) / (2.0 * aspect * u), np.inf)
        first = np.clip(np.ceil((r_in.min(axis=0) - radii[0]) / step), 0, n_radii)
        return first.astype(np.int64)

    for aspect in aspects:
        for beyond in beyonds:
            first = first_radius(along, across2, aspect, beyond)
            n = len(shapes)
            shapes.append((float(aspect), float(beyond)))
            gk[n], hk[n] = inside_per_slice(first, None), inside_per_slice(first, target_s)
            nink[n] = inside_per_slice(first, near_s)
    # summed over the slices: (shape, radius)
    g, h, nin = (a.sum(axis=1, dtype=np.float64) for a in (gk, hk, nink))
    dice = 2.0 * h / (g + n_target)
    best = np.unravel_index(int(np.argmax(dice)), dice.shape)
    for _ in range(3):
        p_in, p_out = _label_rates(g[best], h[best], nin[best], n_target, n_near)
        if p_in <= p_out:
            break  # the ball's pooled labels cannot tell ice: go on from the Dice optimum
        score = np.log(p_in / p_out) * h - np.log((1.0 - p_out) / (1.0 - p_in)) * (g - h)
        best = np.unravel_index(int(np.argmax(score)), score.shape)
    target_k = np.bincount(slice_s[target_s], minlength=n_slices).astype(np.float64)
    near_k = np.bincount(slice_s[near_s], minlength=n_slices).astype(np.float64)
    # the slices' own rates, also when the pooled ones could not tell: streaks crossing
    # most slices pool to p_in ≤ p_out while the slices clear of them still tell
    # (SYN2030007: the nine slices the two probes cross read as ice 30-59 % inside the
    # ball and 41-62 % around it, the five below 82-97 % and 9-12 %; the Dice optimum, fitted
    # to visible "ice" that ran into streak-lit fat, was 2.6 times the ball)
    for _ in range(3):
        gain_in, cost_out = _slice_rates(gk[best[0], :, best[1]], hk[best[0], :, best[1]],
                                         nink[best[0], :, best[1]], target_k, near_k)
        if not np.any(gain_in > 0):
            break  # no slice tells ice from its surroundings: keep the fit so far
        # Σ_k gain_k·hits − cost_k·(model − hits)
        score = (np.einsum("k,skr->sr", gain_in + cost_out, hk)
                 - np.einsum("k,skr->sr", cost_out, gk))
        best = np.unravel_index(int(np.argmax(score)), score.shape)
    aspect, beyond = shapes[int(best[0])]
    radius = float(radii[best[1]])
    # the slices' normal (unit, LPS) and the slab along it: the grid's k axis and its
    # spacing (the loader's grids are orthogonal, as the fit's per-axis distances assume)
    normal = crop.slice_normal_lps
    slab_mm = float(crop.spacing_mm[2])
    shifts = _normal_shifts_mm(slab_mm)
    # how far the shafts rise across the slices over the model's length along them
    rise_mm = float(np.max(np.abs(axes @ normal))) * 2.0 * aspect * radius
    if np.any(gain_in > 0) and len(shifts) > 1 and rise_mm < slab_mm:
        # the shafts lie within about one slab, which reads the same wherever they lie in
        # it: their line is known across the slices only to the slab. The ice ball's
        # slices tell where the ball is (_normal_shifts_mm); a tip moved by s along the
        # normal moves each voxel's depth along the shaft by −s·(axis·n) and its squared
        # distance from the tip by s² − 2s·(voxel − tip)·n
        axis_dot_normal = axes @ normal  # per probe, dimensionless
        towards_mm = np.stack([(pts_s - tip) @ normal for tip in tips])
        dist2_mm2 = across2 + along**2
        shift = 0.0
        for _ in range(3):
            best_score, previous = -np.inf, shift
            for candidate in shifts:
                along_m = along - candidate * axis_dot_normal[:, None]
                across2_m = dist2_mm2 - 2.0 * candidate * towards_mm + candidate**2 - along_m**2
                first = first_radius(along_m, across2_m, aspect, beyond)
                in_model = inside_per_slice(first, None)
                hits = inside_per_slice(first, target_s)
                score_r = (gain_in + cost_out) @ hits - cost_out @ in_model
                r_best = int(np.argmax(score_r))
                if score_r[r_best] > best_score + 1e-9:
                    best_score, shift, radius = (float(score_r[r_best]), float(candidate),
                                                 float(radii[r_best]))
                    chosen = (in_model[:, r_best], hits[:, r_best],
                              inside_per_slice(first, near_s)[:, r_best])
            if shift == previous:
                break
            # the slices' rates of the model where it now lies: the poles' slices, which
            # place it, were rated against a model up to half a slice off
            gain_in, cost_out = _slice_rates(*chosen, target_k, near_k)
            if not np.any(gain_in > 0):
                break
        tips = tips + shift * normal
    field = _ellipsoids_distance(pts, tips, axes, radius, aspect, beyond)
    # the model must account for the visible ice around it; visible "ice" farther than
    # _FIT_REACH_MM from it is what the model replaces (partial-volume fat edges and the
    # probe shaft joined to the ice ball), not evidence against it
    model_s, around_s = field[counted] > 0, field[counted] > -_FIT_REACH_MM
    # (accepted when they agree, Dice ≥ 0.5, or when the model holds nearly all of it:
    # where streaks cross most slices the visible ice is a fragment of the ball, 31 % of
    # a model of the right size (r 18.25 against 18.28 mm) lying 97 % inside it, Dice
    # 0.47, and the fragment was kept; a sheet of ice, no iso-therm, lies 29 % inside.
    # The model still cannot outgrow the fragment by more than _FIT_REACH_MM: beyond it
    # no voxel counts as reading ice, every model voxel there against it)
    seen_s = visible_s & around_s
    both = np.count_nonzero(model_s & seen_s)
    agreement = 2.0 * both / max(np.count_nonzero(model_s) + np.count_nonzero(seen_s), 1)
    inside = both / max(np.count_nonzero(seen_s), 1)
    if agreement < _MIN_MODEL_DICE and inside < _MIN_VISIBLE_INSIDE:
        return None
    out = np.full(visible.shape, -_FAR_MM, dtype=np.float32)
    out[box] = field.reshape(box_shape)
    return out


def _normal_shifts_mm(slab_mm: float) -> npt.NDArray[np.float64]:
    """Shifts (mm) of the probe tips along the slice normal that the ice-ball fit tries,
    zero first: up to half a slab (``slab_mm``: slice spacing along the normal) each way,
    at most _NORMAL_SHIFT_MM.

    A probe shaft lying nearly in the slices' plane falls within one slab, which reads
    the same wherever the shaft lies in it, so its detected line sits at the slab's
    centre: up to half a slice off across the shaft (the phantom's SYN2110004: both probes
    0.9 mm off on 3 mm slices, the model fitted around them 0.6 mm off, the minimal
    margin 0.7 mm short; with the shift searched, 0.2 mm). The slice spacing stands in
    for the slab: on overlapping reconstructions the slab is thicker and the search
    reaches less far than the slab could hide.

    The search runs only when every shaft rises less than a slab across the slices over
    the model's length (its length along the probe, not the shaft's, which is a
    conservative stand-in: the threshold was checked at rises of 0.8 mm, searched, and
    ~6.8 mm, not searched, not in between). A shaft crossing slices is found to within
    0.1 mm (0.01-0.09 mm on the phantoms' probes), and there a free shift only lets
    noise trade position for size (SYN2110001, probes 0.17 out of the plane on 2 mm
    slices: a 0.25 mm shift and a 0.2 mm larger radius, volume +4 % → +8 %). Zero wins
    ties; between −s and +s the one tried first, −s."""
    reach = min(_NORMAL_SHIFT_MM, 0.5 * slab_mm)
    n = int(np.floor(reach / _NORMAL_SHIFT_STEP_MM + 1e-9))
    steps = np.arange(1, n + 1) * _NORMAL_SHIFT_STEP_MM
    return np.concatenate([[0.0], np.ravel(np.column_stack([-steps, steps]))])


def _label_rates(model: float, hits: float, near_in: float, target: float,
                 near: float) -> tuple[float, float]:
    """(p_in, p_out) of a model, clipped to [0.02, 0.98]: the share of its voxels reading
    as ice, and of the near voxels outside it (``near`` − ``near_in``) reading as ice (the
    ``target`` − ``hits`` voxels reading as ice are all near ones outside it)."""
    p_in = hits / max(model, 1.0)
    p_out = (target - hits) / max(near - near_in, 1.0)
    return float(np.clip(p_in, 0.02, 0.98)), float(np.clip(p_out, 0.02, 0.98))


def _slice_rates(
    model_k: npt.NDArray[np.float64],
    hits_k: npt.NDArray[np.float64],
    near_in_k: npt.NDArray[np.float64],
    target_k: npt.NDArray[np.float64],
    near_k: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per-slice weights (log p_in/p_out, log (1−p_out)/(1−p_in)) of the ice-ball fit's
    likelihood, from one model's per-slice counts: voxels inside the model, those of them
    reading as ice, near voxels inside it; reading-as-ice and near voxels of each slice.

    Each slice's rates are shrunk towards the whole ball's by a prior as strong as the
    model's median slice, for both rates (beta prior: a slice with a median slice's voxels
    weighs as much as the ball's rates, the poles' few voxels little; screened against
    fixed priors of 50 and 1000 voxels on 35 phantom ice balls: with 50 single slices
    decided and two more balls came out 3.6-4.2 % small, the median and 1000 agreed, mean
    volume error −0.8 and −0.9 %); a slice whose rates cannot tell ice from its
    surroundings (p_in ≤ p_out: streaks) gets weight zero."""
    p_in, p_out = _label_rates(model_k.sum(), hits_k.sum(), near_in_k.sum(), target_k.sum(),
                               near_k.sum())
    prior = float(np.median(model_k[model_k > 0])) if np.any(model_k > 0) else 1.0
    pin_k = np.clip((hits_k + prior * p_in) / (model_k + prior), 0.02, 0.98)
    pout_k = np.clip((target_k - hits_k + prior * p_out)
                     / (np.maximum(near_k - near_in_k, 0.0) + prior), 0.02, 0.98)
    tells = pin_k > pout_k
    gain_in = np.where(tells, np.log(pin_k / pout_k), 0.0)
    cost_out = np.where(tells, np.log((1.0 - pout_k) / (1.0 - pin_k)), 0.0)
    return gain_in, cost_out


def _box_points_lps(crop: Volume, lo: npt.NDArray[np.int64],
                    hi: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """(N, 3) LPS mm of the voxel centres of the box [lo, hi) (array order k, j, i), in C
    order of the box."""
    k, j, i = (np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi, strict=True))
    affine = crop.affine_lps
    pts = (affine[:3, 3][None, None, None, :]
           + i[None, None, :, None] * affine[:3, 0]
           + j[None, :, None, None] * affine[:3, 1]
           + k[:, None, None, None] * affine[:3, 2])
    return pts.reshape(-1, 3)


def _ellipsoids_distance(
    pts: npt.NDArray[np.float64],
    tips: npt.NDArray[np.float64],
    axes: npt.NDArray[np.float64],
    r: float,
    aspect: float,
    beyond: float,
) -> npt.NDArray[np.float32]:
    """Approximate signed distance (mm, positive inside) to the union of the probes'
    ellipsoids: r·(1 − √q) of each ellipsoid's normalised radius √q (exact on a sphere,
    zero exactly on the surface), the largest over the probes."""
    field = np.full(pts.shape[0], -np.inf)
    for tip, axis in zip(tips, axes, strict=True):
        d = pts - (tip + axis * (aspect * r - beyond))
        along = d @ axis
        across2 = np.einsum("ij,ij->i", d, d) - along**2
        q = across2 / r**2 + along**2 / (aspect * r) ** 2
        field = np.maximum(field, r * (1.0 - np.sqrt(q)))
    return np.maximum(field, -_FAR_MM).astype(np.float32)
