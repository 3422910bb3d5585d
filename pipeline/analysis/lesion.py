"""Measure one lesion in one study: the chain image → registration → segmentation →
measurements, returning the timepoint row plus what the report and DICOM outputs need.

Every function works on a crop around the lesion (``crop_half_size_mm``) once the lesion
has been located, so heavy filters never run on the whole 512² volume.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from measurements import (
    Z_95,
    EmptyMaskError,
    Enhancement,
    EnhancementClass,
    ablative_margin_from_distances,
    axial_diameters,
    ct_enhancement,
    ct_enhancement_at_pre_slabs,
    ct_enhancement_partial_slabs,
    max_3d_diameter_mm,
    mean_attenuation_hu,
    mr_enhancement,
    mr_fat_signal_ratio,
    peripheral_rim,
    rim_parts,
    signed_distance_mm,
    slab_partial_volume_parts,
    volume_ml,
)
from pipeline.assessment.criteria import AssessmentCriteria
from pipeline.image import Volume
from segmentation import (
    IceballResult,
    distance_from_index_mm,
    load_external_mask,
    ncc,
    paste_into,
    register_phases,
    resample_to,
    segment_ablation_zone,
    segment_iceball,
    segment_tumour,
)

__all__ = ["StudyMeasurement", "measure_tumour", "measure_iceball", "measure_zone", "Size"]

log = logging.getLogger("cryotrack.lesion")

_FAR_MM = 50.0  # signed distance given to voxels outside a distance map's box
_DISTANCE_PAD_MM = 15.0  # distance maps reach this far beyond the tumour
#: local NCC of the aligned phases below which the enhancement is flagged as doubtful
#: (well-matched breath-hold phases read 0.75-0.95 in a soft-tissue window)
_PHASE_NCC_DOUBTFUL = 0.6
#: in-plane erosion (mm) of the zone measured on the unenhanced series' grid: both phases
#: then see the same partial volume at the edge, so only in-plane misregistration and
#: pixel-size differences (under a pixel) must be kept out
_SLAB_ERODE_MM = 0.5
#: thickest benign peripheral rim (mm): enhancing components within it that do not enhance
#: above the rim are part of it; beneath it the zone's own enhancement is measured
_RIM_LAYER_MM = 3.0
#: the zone's ΔHU is read beneath a benign rim only when that keeps this fraction of its
#: slab voxels (an interior of twice the layer's radius); less is a few noisy voxels
_BENEATH_RIM_MIN_FRACTION = 0.25
#: MR: the fat's own post/pre change taken as within this fraction of 1 (its small
#: gadolinium uptake, imperfect suppression: the phantom's fat rises 6.7 %); only a ratio
#: beyond it is the two series' receive sensitivity, and only that excess is divided out
#: (the fat around six screened MR zones read ×0.94 to ×1.28; dividing by the whole
#: ratio read every dead zone 6 % low and would call a zone enhancing by 15-22 % "no")
_MR_FAT_OWN_CHANGE = 0.1


@dataclass
class Size:
    long_axis_mm: float | None = None
    short_axis_mm: float | None = None
    max_3d_diameter_mm: float | None = None
    volume_ml: float | None = None
    long_endpoints_lps: npt.NDArray[np.float64] | None = None
    short_endpoints_lps: npt.NDArray[np.float64] | None = None


@dataclass
class StudyMeasurement:
    """Values of one lesion in one study, and the crop/masks shown in the report.

    ``masks`` are on the grid of ``image`` (a crop of the measured series);
    ``full_masks`` on the whole measured series grid (for DICOM SEG).
    """

    values: dict[str, Any] = field(default_factory=dict)
    qc: list[str] = field(default_factory=list)
    image: Volume | None = None
    masks: dict[str, Volume] = field(default_factory=dict)
    full_masks: dict[str, Volume] = field(default_factory=dict)
    size: Size = field(default_factory=Size)
    extra: dict[str, dict[str, float]] = field(default_factory=dict)


def _size(mask: Volume) -> Size:
    diam = axial_diameters(mask)
    return Size(
        long_axis_mm=float(diam.long_axis_mm),
        short_axis_mm=float(diam.short_axis_mm),
        max_3d_diameter_mm=float(max_3d_diameter_mm(mask)),
        volume_ml=float(volume_ml(mask)),
        long_endpoints_lps=np.asarray(diam.long_endpoints_lps, float),
        short_endpoints_lps=np.asarray(diam.short_endpoints_lps, float),
    )


def _crop_like(volume: Volume, center_lps: npt.NDArray[np.float64], half_mm: float) -> Volume:
    return volume.crop_around_lps(center_lps, half_mm)


def _as_bool(mask: Volume) -> Volume:
    return mask.with_array(np.asarray(mask.array) > 0, modality="")


def _aligned_pre(pre: Volume, post_crop: Volume, center_lps: npt.NDArray[np.float64],
                 qc: list[str], *, ball_mm: float = 35.0) -> Volume:
    """The unenhanced phase aligned onto the contrast crop (see :func:`_aligned_pre_how`)."""
    return _aligned_pre_how(pre, post_crop, center_lps, qc, ball_mm=ball_mm)[0]


def _aligned_pre_how(pre: Volume, post_crop: Volume, center_lps: npt.NDArray[np.float64],
                     qc: list[str], *, ball_mm: float = 35.0) -> tuple[Volume, Any]:
    """The unenhanced phase aligned (local translation for breathing) onto the contrast crop,
    and the transform used (contrast → unenhanced LPS points; None: the scanner frame).

    A registration that passes its own checks (:func:`register_phases`: the lesion's
    organ found, quality on that organ, the fit a clear optimum) is kept. Only a doubtful
    one is compared with the unregistered (same patient frame) resampling by normalised
    cross-correlation in a ball around the lesion (soft tissue and bone edges are where
    both phases agree), and the better one kept, so a failed phase registration never
    makes things worse than the scanner's own frame. That comparison is not the rule: the
    ball holds mostly static tissue (body wall, muscle, spine), and it preferred the
    scanner frame at 13 of 34 lesion studies of a held-out archive whose organ the
    registration had found within 0.3-1.9 mm (the scanner frame 3-7 mm off). Voxels the
    unenhanced series does not cover are NaN (excluded from every ΔHU measurement),
    never a fill value that would read as a 1000 HU enhancement.
    """
    reg = register_phases(post_crop, pre, center_lps)
    nan = float("nan")
    registered = resample_to(pre, post_crop, reg.transform, default_value=nan)
    identity = resample_to(pre, post_crop, None, default_value=nan)
    post = np.asarray(post_crop.array, dtype=np.float32)
    ball = distance_from_index_mm(post.shape, post_crop.lps_to_index(center_lps)[::-1],
                                  post_crop.spacing_mm) <= ball_mm
    # compare in a soft-tissue window so metal/bone extremes do not dominate
    window = np.clip(post, -200, 400)
    scores = []
    for candidate in (registered, identity):
        arr = np.asarray(candidate.array, dtype=np.float32)
        valid = ball & np.isfinite(arr)
        scores.append(ncc(window[valid], np.clip(arr[valid], -200, 400))
                      if valid.sum() >= 100 else -1.0)
    best = registered if reg.ok or scores[0] >= scores[1] else identity
    if max(scores) < _PHASE_NCC_DOUBTFUL:
        # only a warning when neither frame matches the phases well: keeping the scanner
        # frame because it matches better is the normal case of a breath-hold study
        qc.append(f"phases poorly matched at the lesion (NCC {max(scores):.2f} at best): "
                  "enhancement doubtful")
    elif best is registered and not reg.ok:
        qc.extend(reg.qc or ["phase alignment doubtful"])
    if not np.isfinite(np.asarray(best.array)).all():
        qc.append("unenhanced series does not cover the whole lesion region")
    return best, (reg.transform if best is registered else None)


def _neutral_fill(pre: Volume, post: Volume) -> Volume:
    """Uncovered (NaN) unenhanced voxels replaced by the contrast value (ΔHU 0), for the
    segmentation, which needs finite images."""
    a = np.asarray(pre.array, dtype=np.float32)
    return pre.with_array(np.where(np.isfinite(a), a, np.asarray(post.array, np.float32)))


def _covered(mask: Volume, pre: Volume) -> Volume:
    """The mask restricted to voxels the unenhanced series covers."""
    return mask.with_array(np.asarray(mask.array, bool) & np.isfinite(np.asarray(pre.array)))


def measure_tumour(
    contrast: Volume | None,
    unenhanced: Volume | None,
    seed_lps: npt.NDArray[np.float64],
    criteria: AssessmentCriteria,
    half_mm: float,
    external: dict[str, Path] | None = None,
) -> StudyMeasurement:
    """Baseline: segment the tumour from the seed on the contrast phase (or the unenhanced
    one if that is all there is), measure size and enhancement. An external ``tumour``
    mask (NIfTI) replaces the automatic segmentation."""
    m = StudyMeasurement()
    image = contrast if contrast is not None else unenhanced
    if image is None:
        m.qc.append("no usable series to segment the tumour")
        return m
    if contrast is None:
        m.qc.append("no contrast phase: tumour segmented on the unenhanced CT")
    if external and "tumour" in external:
        tumour_full = _as_bool(load_external_mask(external["tumour"], image))
        m.qc.append(f"tumour mask supplied by the user ({external['tumour'].name})")
    else:
        tumour_full = _as_bool(segment_tumour(image, seed_lps, unenhanced=unenhanced
                                              if contrast is not None else None))
    m.full_masks["tumour"] = tumour_full
    crop = _crop_like(image, seed_lps, half_mm)
    tumour = _crop_like(tumour_full, seed_lps, half_mm)
    m.image, m.masks["tumour"] = crop, tumour
    m.size = _size(tumour)
    if image.modality == "CT":
        m.extra["tumour"] = {"mean_attenuation_hu": mean_attenuation_hu(crop, tumour)}
    if contrast is not None and unenhanced is not None:
        if contrast.modality == "MR":
            pre = _aligned_pre(unenhanced, crop, seed_lps, m.qc)
            mr = mr_enhancement(_neutral_fill(pre, crop), crop, _covered(tumour, pre),
                                threshold_pct=criteria.mr_enhancing_pct,
                                reference_ratio=_mr_fat_reference(pre, crop, tumour, m.qc))
            m.values["enhancement_pct"] = mr.enhancement_pct
            m.values["enhancing"] = mr.classification.value
        else:
            pre = _aligned_pre(unenhanced, crop, seed_lps, m.qc)
            enh = ct_enhancement(pre, crop, tumour, enhancing_hu=criteria.enhancing_hu,
                                 equivocal_hu=criteria.equivocal_hu)
            m.values["enhancement_hu"] = enh.delta_hu
            m.values["enhancing"] = enh.classification.value
    return m


def measure_iceball(
    intra: Volume,
    center_lps: npt.NDArray[np.float64],
    tumour_on_intra: Volume | None,
    half_mm: float,
    external: dict[str, Path] | None = None,
    iceball: IceballResult | None = None,
) -> StudyMeasurement:
    """Intra-procedural: probes and ice ball; margin and coverage of the registered tumour
    (``tumour_on_intra``: the baseline tumour carried onto the lesion crop of ``intra`` as
    a signed distance map from :func:`tumour_into`, or a binary mask). An external
    ``iceball`` mask replaces the automatic ice ball; ``iceball``: the automatic one
    already segmented at ``center_lps`` (else it is segmented here)."""
    m = StudyMeasurement()
    result = iceball if iceball is not None else segment_iceball(intra, center_lps)
    m.qc.extend(result.qc)
    ice_full = _as_bool(result.mask)
    external_ice = bool(external and "iceball" in external)
    if external and "iceball" in external:
        ice_full = _as_bool(load_external_mask(external["iceball"], intra))
        m.qc.append(f"ice-ball mask supplied by the user ({external['iceball'].name})")
    m.full_masks["iceball"] = ice_full
    crop = _crop_like(intra, center_lps, half_mm)
    ice = _crop_like(ice_full, center_lps, half_mm)
    m.image, m.masks["iceball"] = crop, ice
    m.masks["probes"] = _crop_like(_as_bool(result.probe_mask), center_lps, half_mm)
    m.size = _size(ice)
    m.values.update(iceball_long_axis_mm=m.size.long_axis_mm,
                    iceball_short_axis_mm=m.size.short_axis_mm,
                    iceball_volume_ml=m.size.volume_ml)
    if tumour_on_intra is not None:
        # the registered tumour arrives on the lesion crop; the SEG needs the full grid
        tumour_mm = _crop_like(tumour_on_intra, center_lps, half_mm)
        tumour = _as_bool(tumour_mm)
        m.full_masks["tumour"] = _paste(intra, tumour)
        m.masks["tumour"] = tumour
        # margins between the surfaces' sub-slice positions (signed distance maps): the
        # ice-ball model's, else the mask's own
        ice_mm = (_distance_on(result.distance_mm, crop)
                  if result.distance_mm is not None and not external_ice
                  else signed_distance_mm(ice))
        if tumour_on_intra.array.dtype == bool or np.issubdtype(tumour_on_intra.array.dtype,
                                                                np.integer):
            tumour_mm = signed_distance_mm(tumour)
        try:
            margin = ablative_margin_from_distances(tumour_mm, ice_mm)
            m.values["min_margin_mm"] = margin.min_margin_mm
            m.values["tumour_coverage_pct"] = margin.coverage_pct
        except EmptyMaskError as exc:
            m.qc.append(f"margin not measurable: {exc}")
    # the size panel shows the ice ball's calipers
    return m


def measure_zone(
    post: Volume,
    pre: Volume | None,
    center_lps: npt.NDArray[np.float64],
    criteria: AssessmentCriteria,
    half_mm: float,
    external: dict[str, Path] | None = None,
) -> StudyMeasurement:
    """Follow-up: the ablation zone, its size, and any enhancing component in or at its
    edge (nodular/crescentic → enhancing; a thin smooth rim is reported, not called)."""
    m = StudyMeasurement()
    crop = _crop_like(post, center_lps, half_mm)
    pre_crop, lesion_transform = (_aligned_pre_how(pre, crop, center_lps, m.qc)
                                  if pre is not None else (None, None))
    zone_result = segment_ablation_zone(
        crop, _neutral_fill(pre_crop, crop) if pre_crop is not None else None, center_lps,
        modality=post.modality, pre_spacing_mm=pre.spacing_mm if pre is not None else None)
    zone = _as_bool(zone_result.zone_mask)
    m.qc.extend(zone_result.qc)
    if external and "ablation_zone" in external:
        zone = _as_bool(load_external_mask(external["ablation_zone"], crop))
        m.qc.append(f"ablation-zone mask supplied by the user "
                    f"({external['ablation_zone'].name})")
    m.image, m.masks["ablation_zone"] = crop, zone
    m.size = _size(zone)
    if pre_crop is None:
        m.values["enhancing"] = "not_assessable"
        m.qc.append("no unenhanced/pre-contrast series: enhancement not assessable")
    elif post.modality == "MR":
        enhancing = _mr_nodules(_as_bool(zone_result.enhancing_mask), zone, pre_crop, crop,
                                m.qc)
        target = enhancing if enhancing.array.any() else zone
        mr = mr_enhancement(_neutral_fill(pre_crop, crop), crop, _covered(target, pre_crop),
                            threshold_pct=criteria.mr_enhancing_pct,
                            erode_mm=0.0 if target is enhancing else 1.5,
                            reference_ratio=_mr_fat_reference(pre_crop, crop, zone, m.qc))
        m.values["enhancement_pct"] = mr.enhancement_pct
        m.values["enhancing"] = mr.classification.value
        if enhancing.array.any():
            m.masks["enhancing"] = enhancing
    else:
        if zone_result.pre_aligned is not None:
            # the segmentation aligned the phases at the zone itself (finer than the
            # lesion-wide alignment): measure the enhancement on that
            pre_crop = resample_to(zone_result.pre_aligned, crop, None,
                                   default_value=float("nan"))
        assert pre is not None
        _classify_ct_zone(m, pre_crop, crop, zone, zone_result, criteria,
                          pre_native=pre, lesion_transform=lesion_transform)
    m.full_masks = {name: _paste(post, mask) for name, mask in m.masks.items()}
    return m


def _mr_fat_reference(pre: Volume, post: Volume, mask: Volume, qc: list[str]) -> float | None:
    """The two MR series' relative receive sensitivity at ``mask`` for
    :func:`mr_enhancement`: the post/pre ratio of the fat around it
    (:func:`mr_fat_signal_ratio`) where it lies beyond the fat's own change
    (_MR_FAT_OWN_CHANGE), the excess only; None (the raw ratio) within it or when no fat
    reference can be read. The qc notes a sensitivity divided out, and a missing
    reference."""
    ratio = mr_fat_signal_ratio(pre, post, mask)
    if ratio is None:
        qc.append("no dark fat around the lesion to check the MR series' sensitivity "
                  "against (no fat suppression, or the pre-contrast series does not cover "
                  "it): percent enhancement read on the raw signal ratio")
        return None
    own = float(np.clip(ratio, 1.0 / (1.0 + _MR_FAT_OWN_CHANGE), 1.0 + _MR_FAT_OWN_CHANGE))
    if own == ratio:
        return None
    sensitivity = ratio / own
    qc.append(f"MR series' receive sensitivity differs around the lesion (fat post/pre "
              f"×{ratio:.2f}): the pre-contrast signal scaled by ×{sensitivity:.2f}, the "
              f"part beyond the fat's own change of up to {100 * _MR_FAT_OWN_CHANGE:.0f} %")
    return sensitivity


def _mr_nodules(enhancing: Volume, zone: Volume, pre: Volume, post: Volume,
                qc: list[str]) -> Volume:
    """The MR enhancing components without those that are the partial volume of the
    zone with the tissue beyond its surface on thick slices
    (:func:`measurements.slab_partial_volume_parts`):
    MR slices are as thick as a nodule's radius, so the zone's outermost slab mixes
    the dead zone with the enhancing parenchyma beyond its surface and enhances like a
    nodule on the subtraction (both phases are equally thick); measured with no erosion,
    such a disc called a dead zone enhancing (+55 %)."""
    if not np.asarray(enhancing.array).any():
        return enhancing
    parts, slabs = slab_partial_volume_parts(enhancing, zone, pre, post)
    for part in parts:
        if part.is_partial_volume:
            qc.append(f"enhancing component of {part.volume_ml:.2f} ml at the zone's edge "
                      f"reads as {part.post_fraction:.0%} zone mixed with the brighter "
                      "tissue beyond it on both phases: partial volume, not a nodule")
    return enhancing.with_array(np.asarray(enhancing.array, bool)
                                & ~np.asarray(slabs.array, bool))


def _classify_ct_zone(m: StudyMeasurement, pre: Volume, post: Volume, zone: Volume,
                      zone_result: Any, criteria: AssessmentCriteria, *,
                      pre_native: Volume | None = None, lesion_transform: Any = None) -> None:
    """Enhancing = a nodular/crescentic component found by the zone segmentation (thick,
    compact, brighter than the zone, below the parenchyma level); a thin smooth rim is
    not called; otherwise the zone's median ΔHU (eroded; unless the zone is too small to
    erode) is classified.

    A thin smooth peripheral rim is reported in qc (benign early finding), never called
    enhancing. It is judged only where the zone borders fat
    (:func:`measurements.peripheral_rim`): the thin enhancing band the segmentation finds
    at the edge is as large next to enhancing parenchyma (partial volume) as on a true
    rim, so that band alone would report a rim on nearly every follow-up. When a rim is
    present, an enhancing component lying within the rim layer and not enhancing above the
    rim is part of it (:func:`measurements.rim_parts`: the rim cut tangentially by a
    thick slice at a pole looks like a nodule), and the zone's own ΔHU is measured beneath
    the rim layer.

    The zone's own ΔHU is measured on the unenhanced series' grid when it has a slab
    entirely inside the zone (:func:`ct_enhancement_at_pre_slabs`: no partial volume from
    beyond a small zone's poles, phases aligned at that resolution), otherwise on the
    resampled unenhanced image below; a zone with no such slab (thinner than one
    unenhanced slice) is read on its partly filled slabs unmixed and called within its
    noise interval (:func:`measurements.ct_enhancement_partial_slabs`)."""
    enhancing = _as_bool(zone_result.enhancing_mask)
    rim = peripheral_rim(post, zone, pre, exclude_mask=enhancing)
    # with a benign rim, the zone's own enhancement is that of the tissue beneath it (the
    # rim is up to 40 % of an early zone's volume and would lift its median towards 10 HU)
    native = None
    if pre_native is not None:
        native = _zone_enhancement_at_pre_slabs(pre_native, post, zone, enhancing, zone_result,
                                                lesion_transform, criteria)
        if rim.present and native is not None and native.delta_hu is not None:
            # beneath the rim only when the zone has an interior there: at least a quarter
            # of its voxels (a zone of twice the layer's radius); a smaller one would be
            # read on a few noisy voxels
            # (at the phase alignment just refined for the whole zone: the same phases)
            beneath = _zone_enhancement_at_pre_slabs(pre_native, post, zone, enhancing,
                                                     zone_result, lesion_transform, criteria,
                                                     erode_mm=_RIM_LAYER_MM,
                                                     aligned_offset_mm=native.offset_mm)
            if (beneath is not None and beneath.delta_hu is not None
                    and beneath.standard_error_hu is None
                    and beneath.n_voxels >= _BENEATH_RIM_MIN_FRACTION * native.n_voxels):
                native = beneath
    # measured in an eroded zone, free of the partial-volume edge: along the slice axis
    # that takes a whole slice (a 1.5 mm ball removes none of 2-3 mm slices, whose
    # outermost ones mix the zone with enhancing parenchyma); a zone of a few mm keeps
    # less: then 1.5 mm, at least one in-plane voxel
    overall = None
    # the zone includes its nodules whole: the dead zone's own reading (the bias a nodule
    # is judged against) is taken without them
    own = np.asarray(zone.array, bool) & ~np.asarray(enhancing.array, bool)
    dead = zone.with_array(own) if own.any() else zone
    for erode_mm in (max(1.5, float(post.spacing_mm[2])), 1.5, float(max(post.spacing_mm[:2]))):
        overall = ct_enhancement(pre, post, dead, erode_mm=erode_mm,
                                 enhancing_hu=criteria.enhancing_hu,
                                 equivocal_hu=criteria.equivocal_hu)
        if overall.delta_hu is not None:
            break
    assert overall is not None
    if native is not None and native.delta_hu is not None:
        overall = native
        if native.upper_bound:
            m.qc.append(
                f"zone on at most two contrast slices with enhancing tissue beyond its "
                f"poles: every contrast value mixes it in, so ΔHU {native.delta_hu:+.0f} "
                f"HU is an upper bound → {native.classification.value}")
        if native.standard_error_hu is not None and np.isfinite(native.standard_error_hu):
            m.qc.append(
                f"zone thinner than one unenhanced slice: ΔHU {native.delta_hu:+.0f} ± "
                f"{Z_95 * native.standard_error_hu:.0f} HU (95 % noise interval) from the "
                f"partly filled slabs unmixed → {native.classification.value}")
    nodule_volumes_ml = list(zone_result.nodule_volumes_ml)
    if rim.present and rim.excess_hu is not None:
        delta = "" if rim.delta_excess_hu is None else f", {rim.delta_excess_hu:+.0f} HU ΔHU"
        m.qc.append(f"thin smooth peripheral rim enhancement at the zone edge "
                    f"({rim.excess_hu:+.0f} HU over the zone beneath{delta}): benign "
                    "early post-ablation finding, not residual tumour")
        if enhancing.array.any():
            # a thick slice cutting the rim tangentially (at a pole) shows it as a disc
            # the segmentation takes for a nodule: judged against the rim it sits in
            parts, rim_pieces = rim_parts(enhancing, zone, pre, post, rim,
                                          enhancing_hu=criteria.enhancing_hu,
                                          rim_max_thickness_mm=_RIM_LAYER_MM)
            for part in parts:
                if part.is_rim:
                    m.qc.append(
                        f"enhancing component of {part.volume_ml:.2f} ml within the rim "
                        f"layer ({part.depth_mm:.1f} mm deep, layer {part.layer_depth_mm:.1f}"
                        f" mm) and not enhancing above the rim ({part.above_rim_hu:+.0f} HU "
                        "ΔHU): part of the benign rim, not a nodule")
            if np.asarray(rim_pieces.array).any():
                enhancing = enhancing.with_array(np.asarray(enhancing.array, bool)
                                                 & ~np.asarray(rim_pieces.array, bool))
                nodule_volumes_ml = [p.volume_ml for p in parts if not p.is_rim]
    if enhancing.array.any():
        nodule = ct_enhancement(pre, post, enhancing, erode_mm=0.0,
                                enhancing_hu=criteria.enhancing_hu,
                                equivocal_hu=criteria.equivocal_hu)
        delta = nodule.delta_hu
        # a dead zone reads ~0 HU on the subtraction; when it reads higher (residual
        # misalignment, beam hardening near metal) the nodule is judged relative to it
        # (a zone that is all nodule has no dead part to read a bias on)
        bias = overall.delta_hu if (own.any() and overall.delta_hu is not None
                                    and overall.delta_hu > 0 and
                                    overall.classification is not EnhancementClass.NOT_ASSESSABLE
                                    ) else 0.0
        if delta is not None and bias:
            delta -= bias
            m.qc.append(f"zone reads {bias:+.0f} HU on the subtraction: nodule enhancement "
                        "measured relative to it")
        m.masks["enhancing"] = enhancing
        m.values["enhancing"] = criteria.classify_ct_delta_hu(delta).value
        m.values["enhancement_hu"] = delta
        volumes = ", ".join(f"{v:.2f} ml" for v in nodule_volumes_ml)
        m.qc.append(f"enhancing component(s) at the zone: {volumes}; "
                    f"ΔHU {nodule.delta_hu if nodule.delta_hu is not None else float('nan'):+.0f}")
    else:
        m.values["enhancing"] = overall.classification.value
        m.values["enhancement_hu"] = overall.delta_hu


def _zone_enhancement_at_pre_slabs(pre_native: Volume, post: Volume, zone: Volume,
                                   enhancing: Volume, zone_result: Any, lesion_transform: Any,
                                   criteria: AssessmentCriteria, erode_mm: float = _SLAB_ERODE_MM,
                                   aligned_offset_mm: Any = None,
                                   ) -> Enhancement | None:
    """The zone's ΔHU (nodules excluded) on the unenhanced series' own grid, starting from
    the phase alignment the lesion and the zone segmentation found (lesion-wide, then at
    the zone), refined there — or at ``aligned_offset_mm`` (LPS mm, contrast → unenhanced)
    when an earlier call refined it already; None when the zone has no voxel left."""
    own = np.asarray(zone.array, bool) & ~np.asarray(enhancing.array, bool)
    if not own.any():
        return None
    centre = post.index_to_lps(np.argwhere(own).mean(axis=0)[::-1])
    point = tuple(float(v) for v in centre)
    if zone_result.pre_aligned is not None and zone_result.pre_transform is not None:
        point = tuple(zone_result.pre_transform.TransformPoint(point))
    if lesion_transform is not None:
        point = tuple(lesion_transform.TransformPoint(point))
    refine = aligned_offset_mm is None
    whole = ct_enhancement_at_pre_slabs(
        pre_native, post, zone.with_array(own),
        offset_mm=np.asarray(point) - centre if refine else aligned_offset_mm,
        refine_alignment=refine, erode_mm=erode_mm, enhancing_hu=criteria.enhancing_hu,
        equivocal_hu=criteria.equivocal_hu)
    if whole.delta_hu is not None or whole.offset_mm is None:
        return whole
    # no slab wholly inside (a zone thinner than one unenhanced slice): the partly filled
    # slabs unmixed, at the alignment just refined, called within its noise interval
    return ct_enhancement_partial_slabs(
        pre_native, post, zone.with_array(own), offset_mm=whole.offset_mm,
        erode_mm=erode_mm, enhancing_hu=criteria.enhancing_hu,
        equivocal_hu=criteria.equivocal_hu)


def _paste(reference: Volume, crop: Volume) -> Volume:
    """A crop mask back onto the full grid of the series it was cut from (bool)."""
    return _as_bool(paste_into(reference, crop, np.asarray(crop.array)))


def tumour_into(tumour_full: Volume, target: Volume, transform_baseline_to_target: Any) -> Volume:
    """The baseline tumour carried into another study's grid through the registration, as a
    signed distance map (float32 mm, positive inside; ``> 0`` is the mask).

    The map is computed on the baseline grid (around the tumour) and interpolated
    linearly, so the tumour surface keeps its baseline position between the target's
    thick slices (a nearest-neighbour mask would move each pole to a slice, by up to
    half a slice). It is smoothed on the baseline grid with its curvature kept
    (:func:`measurements.margin.signed_distance_mm` ``smooth``): the minimal margin is a
    minimum over the surface and picks the outermost half-voxel steps of the raw map."""
    tumour = np.asarray(tumour_full.array) > 0
    if not tumour.any():
        return target.with_array(np.full(target.array.shape, -_FAR_MM, np.float32), modality="")
    kji = np.argwhere(tumour)
    lo, hi = tumour_full.index_to_lps(kji.min(axis=0)[::-1]), tumour_full.index_to_lps(
        kji.max(axis=0)[::-1])
    half = float(np.max(np.abs(hi - lo))) / 2.0 + _DISTANCE_PAD_MM
    around = _as_bool(tumour_full).crop_around_lps((lo + hi) / 2.0, half)
    distance = signed_distance_mm(around, smooth=True)
    inverse = transform_baseline_to_target.GetInverse()
    return resample_to(distance, target, inverse, default_value=-_FAR_MM)


def _distance_on(distance: Volume, grid: Volume) -> Volume:
    """A signed distance map resampled (linear) onto ``grid``; far outside beyond its box."""
    if distance.same_grid(grid):
        return distance
    return resample_to(distance, grid, None, default_value=-_FAR_MM)
