"""Series classification from headers: what a series is and whether later stages can use it.

:func:`describe_series` turns one :class:`~pipeline.dicom.grouping.SeriesGroup` into a
``series.csv`` row (geometry, orientation, header contrast phase, ``usable`` and
``reason``); :func:`apply_study_rules` then applies the rules that compare series of one
study (derived reformats, ``preferred`` reconstruction).

``usable=false`` reasons (all that apply, joined by "; "):

- non-image or non-volume SOP classes (SR incl. dose reports, PR, KO, SEG, RT, waveforms,
  PDFs, ...), secondary captures, modalities other than CT/MR;
- localizers/scouts: ImageType LOCALIZER, a description naming a scout/topogram/
  localizer/surview, or ≤ 3 slices split off a UID that mixes orientations (3-plane
  scout);
- dose pages: "dose" / "patient protocol" in the description;
- derived projections (ImageType MIP/MINIP/VRT/PROJECTION IMAGE or such a description);
- derived reformats (ImageType DERIVED/SECONDARY with REFORMATTED/MPR, or a derived
  coronal/sagittal/oblique series) when a primary axial series of the same study and phase
  exists (its final or its header phase: reformats get no content check), else usable,
  noted;
- fewer than ``min_slices`` slices (default 10);
- unsupported transfer syntax (no installed pydicom decoder);
- geometry: missing ImagePositionPatient / ImageOrientationPatient / PixelSpacing,
  duplicate slice positions, gaps (a step > 1.5 × the median step) or uneven spacing
  (steps differing by > 10 % of the median), no Rows/Columns.

Gantry tilt (angle between the slice normal and the line through the slice origins
> 0.5°) is recorded in ``tilt_deg`` and ``notes``; the series stays usable (the loader
resamples it).

``preferred``: among usable series of one patient, study, modality, phase and
orientation (for MR also the description without digits; for an unknown phase also the
acquisition minute) exactly one is preferred: slice thickness closest to the 1–3 mm
range (distance 0 inside it), then original over derived, then more slices, then the
lower SeriesNumber.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

from pipeline.dicom.contrast import header_phase
from pipeline.dicom.geometry import orientation_label, positions_along_normal_mm, tilt_angle_deg
from pipeline.dicom.grouping import SeriesGroup
from pipeline.dicom.headers import decoder_available

__all__ = [
    "DEFAULT_MIN_SLICES",
    "VOLUME_SOP_CLASSES",
    "describe_series",
    "apply_study_rules",
    "sop_class_reason",
    "series_text",
]

DEFAULT_MIN_SLICES = 10
_TILT_LIMIT_DEG = 0.5
_GAP_FACTOR = 1.5
_UNEVEN_FRACTION = 0.10
_DUPLICATE_MM = 0.01

VOLUME_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.2": "CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.1": "Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.2.2": "Legacy Converted Enhanced CT Image Storage",
    "1.2.840.10008.5.1.4.1.1.4": "MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.1": "Enhanced MR Image Storage",
    "1.2.840.10008.5.1.4.1.1.4.4": "Legacy Converted Enhanced MR Image Storage",
}
_SOP_PREFIX_REASONS = (
    ("1.2.840.10008.5.1.4.1.1.88.67", "radiation dose structured report"),
    ("1.2.840.10008.5.1.4.1.1.88.68", "radiation dose structured report"),
    ("1.2.840.10008.5.1.4.1.1.88.59", "key object selection (not an image)"),
    ("1.2.840.10008.5.1.4.1.1.88.", "structured report (not an image)"),
    ("1.2.840.10008.5.1.4.1.1.11.", "presentation state (not an image)"),
    ("1.2.840.10008.5.1.4.1.1.66.4", "segmentation object (not a source image)"),
    ("1.2.840.10008.5.1.4.1.1.66.7", "segmentation object (not a source image)"),
    ("1.2.840.10008.5.1.4.1.1.66", "raw data / registration object (not an image)"),
    ("1.2.840.10008.5.1.4.1.1.481.", "radiotherapy object (not a diagnostic image)"),
    ("1.2.840.10008.5.1.4.1.1.7", "secondary capture (screenshot, no patient geometry)"),
    ("1.2.840.10008.5.1.4.1.1.104.", "encapsulated document (not an image)"),
    ("1.2.840.10008.5.1.4.1.1.9.", "waveform (not an image)"),
)
_LOCALIZER_TEXT = re.compile(
    r"(?<![a-z])(scout|topogram|topo|localizer|localiser|locator|surview|scanogram|survey|"
    r"pilot|3[- ]?plane|tri[- ]?pilot|aahscout|scano)(?![a-z])"
)
_DOSE_TEXT = re.compile(r"(?<![a-z])(dose|patient protocol|dosis|exposure report)(?![a-z])")
_PROJECTION_TOKENS = {"MIP", "MINIP", "MIN IP", "VRT", "VR", "PROJECTION IMAGE", "SSD", "CPR",
                      "CURVED"}
_PROJECTION_TEXT = re.compile(r"(?<![a-z])(mip|minip|vrt|volume rendering|3d|cpr)(?![a-z])")
_REFORMAT_TOKENS = {"REFORMATTED", "MPR", "MPR THICK", "RESAMPLED", "CSA MPR", "CSAMPR"}
_REFORMAT_TEXT = re.compile(r"(?<![a-z])(mpr|reformat\w*|refo|cor|coronal|sag|sagittal)"
                            r"(?![a-z])")


def series_text(row: dict[str, Any]) -> str:
    """The free text phase words are searched in: description, protocol, comments."""
    parts = [row.get("series_description", ""), row.get("protocol_name", ""),
             row.get("image_comments", "")]
    return " ".join(p for p in parts if p)


def sop_class_reason(sop_class_uid: str, modality: str) -> str:
    """'' when the SOP class can hold a CT/MR volume, else why not."""
    if sop_class_uid in VOLUME_SOP_CLASSES:
        return ""
    for prefix, reason in _SOP_PREFIX_REASONS:
        if sop_class_uid.startswith(prefix):
            return reason
    if not sop_class_uid:
        return "no SOP Class UID"
    from pydicom.uid import UID

    name = UID(sop_class_uid).name
    return f"{name} ({modality or 'no modality'}): only CT and MR volumes are used"


def _tokens(image_type: str) -> set[str]:
    return {t.strip() for t in image_type.upper().split("\\") if t.strip()}


def _geometry(records: list[dict[str, Any]], row: dict[str, Any], reasons: list[str],
              notes: list[str]) -> None:
    n = len(records)
    missing = [name for name, key in (("ImagePositionPatient", "ipp"),
                                      ("ImageOrientationPatient", "iop"),
                                      ("PixelSpacing", "pixel_spacing_row_mm"))
               if any(r[key] is None for r in records)]
    for name in missing:
        k = sum(1 for r in records if r[{"ImagePositionPatient": "ipp",
                                         "ImageOrientationPatient": "iop",
                                         "PixelSpacing": "pixel_spacing_row_mm"}[name]] is None)
        reasons.append(f"missing {name} in {k}/{n} instances")
    if any(r["rows"] is None or r["columns"] is None for r in records):
        reasons.append("missing Rows/Columns")
    iop = records[0]["iop"]
    if iop is None:
        return
    try:
        row["orientation"] = orientation_label(iop)
    except ValueError as exc:
        reasons.append(f"invalid ImageOrientationPatient: {exc}")
        return
    if "ImagePositionPatient" in missing:
        return
    if n == 1 and records[0]["frame_ipps"]:
        positions = np.asarray(records[0]["frame_ipps"], dtype=np.float64)
    else:
        positions = np.asarray([r["ipp"] for r in records], dtype=np.float64)
    proj = positions_along_normal_mm(positions, iop)
    row["n_slices"] = len(proj)
    row["tilt_deg"] = round(tilt_angle_deg(positions, iop), 3)
    if row["tilt_deg"] > _TILT_LIMIT_DEG:
        notes.append(f"gantry tilt {row['tilt_deg']:.1f}° (resampled on load)")
    if len(proj) < 2:
        return
    steps = np.diff(np.sort(proj))
    n_dup = int(np.sum(steps < _DUPLICATE_MM))
    if n_dup:
        reasons.append(f"duplicate slice positions ({n_dup} of {len(proj)} slices)")
    steps = steps[steps >= _DUPLICATE_MM]
    if steps.size == 0:
        return
    median = float(np.median(steps))
    row["slice_spacing_mm"] = round(median, 4)
    if float(steps.max()) > _GAP_FACTOR * median:
        reasons.append(f"slice gap: step {median:.3g} mm with gaps up to {steps.max():.3g} mm "
                       f"({int(np.sum(steps > _GAP_FACTOR * median))} gaps)")
    elif float(steps.max() - steps.min()) > _UNEVEN_FRACTION * median:
        reasons.append(f"uneven slice spacing {steps.min():.3g}–{steps.max():.3g} mm")


def describe_series(group: SeriesGroup, *, min_slices: int = DEFAULT_MIN_SLICES
                    ) -> dict[str, Any]:
    """One ``series.csv`` row for a series group (headers only; no study-level rules)."""
    recs = group.records
    first = min(recs, key=lambda r: (r["instance_number"] is None, r["instance_number"] or 0))
    image_type = first["image_type"]
    tokens = _tokens(image_type)
    row: dict[str, Any] = {
        "patient_id": first["patient_id"],
        "study_instance_uid": first["study_instance_uid"],
        "study_date": first["study_date"],
        "study_description": first["study_description"],
        "series_instance_uid": group.series_instance_uid,
        "series_key": group.series_key,
        "series_number": first["series_number"],
        "series_description": first["series_description"],
        "protocol_name": first["protocol_name"],
        "image_comments": first["image_comments"],
        "modality": first["modality"],
        "sop_class_uid": first["sop_class_uid"],
        "n_instances": len(recs),
        "n_slices": sum(r["number_of_frames"] for r in recs),
        "rows": first["rows"],
        "columns": first["columns"],
        "pixel_spacing_mm": _spacing_text(first),
        "slice_thickness_mm": first["slice_thickness_mm"],
        "slice_spacing_mm": None,
        "orientation": "unknown",
        "tilt_deg": 0.0,
        "patient_position": first["patient_position"],
        "image_type": image_type,
        "derived": bool(tokens & {"DERIVED", "SECONDARY"}),
        "contrast_agent_tag": first["contrast_agent"],
        "contrast_start_time": first["contrast_start_time"],
        "acquisition_time": min((r["acquisition_time"] for r in recs if r["acquisition_time"]),
                                default=""),
        "series_time": first["series_time"],
        "manufacturer": first["manufacturer"],
        "manufacturer_model": first["manufacturer_model"],
        "convolution_kernel": first["convolution_kernel"],
        "body_part": first["body_part"],
        "frame_of_reference_uid": first["frame_of_reference_uid"],
        "transfer_syntax": ",".join(sorted({r["transfer_syntax"] for r in recs})),
        "echo_number": first["echo_number"],
        "split_note": group.split_note,
    }
    reasons: list[str] = []
    notes: list[str] = [group.split_note] if group.split_note else []
    text = series_text(row).lower()

    sop_reason = sop_class_reason(row["sop_class_uid"], row["modality"])
    if sop_reason:
        reasons.append(sop_reason)
    elif row["modality"] not in ("CT", "MR"):
        reasons.append(f"modality {row['modality'] or '(none)'}: only CT and MR are used")
    orthogonal_scout = "mixed orientations" in group.split_note and len(recs) <= 3
    if "LOCALIZER" in tokens or _LOCALIZER_TEXT.search(text) or orthogonal_scout:
        reasons.append("localizer/scout")
    if _DOSE_TEXT.search(text) and "dose" not in " ".join(reasons):
        reasons.append("dose report page")
    if tokens & _PROJECTION_TOKENS or (row["derived"] and _PROJECTION_TEXT.search(text)):
        reasons.append("derived projection (MIP/MinIP/VRT), not a measurable volume")
    row["reformat"] = row["derived"] and bool(
        tokens & _REFORMAT_TOKENS or _REFORMAT_TEXT.search(text))
    for ts in sorted({r["transfer_syntax"] for r in recs}):
        if ts and not decoder_available(ts):
            from pydicom.uid import UID

            reasons.append(f"unsupported transfer syntax {UID(ts).name} ({ts}): no decoder")
    if not sop_reason:
        _geometry(recs, row, reasons, notes)
        if row["n_slices"] < min_slices:
            reasons.append(f"too few slices for a volume ({row['n_slices']} < {min_slices})")
    if row["derived"] and row["orientation"] in ("coronal", "sagittal", "oblique"):
        row["reformat"] = True

    call = header_phase(row["modality"], series_text(row), first["contrast_agent"],
                        first["contrast_start_time"], row["acquisition_time"])
    row.update(contrast=call.contrast, phase=call.phase, contrast_basis=call.basis,
               header_contrast=call.contrast, header_phase=call.phase, aorta_hu=None)
    row["usable"] = not reasons
    row["reason"] = "; ".join(reasons)
    row["notes"] = "; ".join(notes)
    row["preferred"] = False
    return row


def _spacing_text(rec: dict[str, Any]) -> str:
    if rec["pixel_spacing_row_mm"] is None:
        return ""
    return f"{rec['pixel_spacing_row_mm']:.6g}\\{rec['pixel_spacing_col_mm']:.6g}"


def _recon_group(row: dict[str, Any]) -> tuple[Any, ...]:
    key: tuple[Any, ...] = (row["patient_id"], row["study_instance_uid"], row["modality"],
                            row["phase"], row["orientation"])
    if row["modality"] == "MR":
        key += (re.sub(r"[\d.]+\s*(mm)?", "", row["series_description"].lower()).strip(),)
    if row["phase"] == "unknown":
        key += (row["acquisition_time"][:4],)
    return key


def _thickness_distance_mm(row: dict[str, Any]) -> float:
    t = row["slice_thickness_mm"] or row["slice_spacing_mm"]
    if t is None:
        return float("inf")
    return max(0.0, 1.0 - t, t - 3.0)


def apply_study_rules(rows: list[dict[str, Any]]) -> None:
    """Derived-reformat and ``preferred`` rules across the series of each study (in place).

    Call after the final contrast/phase is known (reformats are compared per phase).
    """
    # Reformats get no content check (not axial): compare both the final and the header
    # phase, so a reformat of a series whose phase content corrected is still matched.
    primary_axial: set[tuple[Any, ...]] = set()
    for row in rows:
        if row["usable"] and not row["derived"] and row["orientation"] == "axial":
            for phase in (row["phase"], row["header_phase"]):
                primary_axial.add((row["study_instance_uid"], row["modality"], phase))
    for row in rows:
        if not row["reformat"]:
            continue
        if (row["study_instance_uid"], row["modality"], row["phase"]) in primary_axial:
            if row["usable"]:
                row["usable"] = False
                row["reason"] = ("derived reformat; a primary axial series of the same study "
                                 "and phase exists")
        else:
            row["notes"] = "; ".join(n for n in (row["notes"], "derived reformat, no primary "
                                                 "axial series of this phase") if n)
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        row["preferred"] = False
        if row["usable"]:
            groups[_recon_group(row)].append(row)
    for members in groups.values():
        best = min(members, key=lambda r: (_thickness_distance_mm(r), r["derived"],
                                           -r["n_slices"], r["series_number"] or 0,
                                           r["series_key"]))
        best["preferred"] = True
