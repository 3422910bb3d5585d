"""Group header records into series, and split mixed series the way dcm2niix does.

Grouping key: SeriesInstanceUID, never SeriesNumber (two studies can share a number).
Files without a SeriesInstanceUID (over-zealous anonymisers blank it) are grouped by a
fallback key ``nouid-<sha1>`` over patient ID, StudyInstanceUID, FrameOfReferenceUID,
Modality, SeriesNumber, SeriesDescription and SliceThickness.

A UID is split into parts when its instances mix:

1. SOP classes, orientations (ImageOrientationPatient differing by > 1e-3), image sizes
   (Rows × Columns) or MR echo numbers; then
2. acquisitions: when a part has duplicate slice positions and splitting it by
   AcquisitionNumber gives parts of ≥ 2 instances with no duplicate positions (repeated
   volumes; single slices at one position stay together as a "not a volume" series).

``series_key`` is the UID for an unsplit series. When split, the largest part (ties: the
lowest InstanceNumber) keeps the plain UID and the others are ``UID_2``, ``UID_3``, ... in
decreasing size; each part's ``split_note`` says why it was split.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["SeriesGroup", "group_series", "fallback_series_key"]

_IOP_TOL = 1e-3


@dataclass
class SeriesGroup:
    """The instances of one series (or one part of a split SeriesInstanceUID)."""

    series_key: str
    series_instance_uid: str
    records: list[dict[str, Any]] = field(default_factory=list)
    split_note: str = ""


def fallback_series_key(record: dict[str, Any]) -> str:
    """Stable key for an instance without SeriesInstanceUID (see module docstring)."""
    parts = [
        record.get("patient_id"), record.get("study_instance_uid"),
        record.get("frame_of_reference_uid"), record.get("modality"),
        record.get("series_number"), record.get("series_description"),
        record.get("slice_thickness_mm"),
    ]
    digest = hashlib.sha1("|".join(str(p) for p in parts).encode()).hexdigest()[:16]
    return f"nouid-{digest}"


def _same_iop(a: tuple[float, ...] | None, b: tuple[float, ...] | None) -> bool:
    if a is None or b is None:
        return a is b
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) <= _IOP_TOL


def _split_by_signature(records: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], str]]:
    """Split on SOP class, orientation, size, echo: [(records, what differed)]."""
    clusters: list[tuple[tuple[Any, ...], tuple[float, ...] | None, list[dict[str, Any]]]] = []
    for rec in records:
        sig = (
            rec["sop_class_uid"], rec["rows"], rec["columns"],
            rec["echo_number"] if rec["modality"] == "MR" else None,
        )
        for csig, ciop, members in clusters:
            if csig == sig and _same_iop(ciop, rec["iop"]):
                members.append(rec)
                break
        else:
            clusters.append((sig, rec["iop"], [rec]))
    if len(clusters) == 1:
        return [(clusters[0][2], "")]
    what = []
    sigs = [c[0] for c in clusters]
    if len({s[0] for s in sigs}) > 1:
        what.append("SOP classes")
    if len({(s[1], s[2]) for s in sigs}) > 1:
        what.append("image sizes")
    if len({s[3] for s in sigs}) > 1:
        what.append("echo numbers")
    iops = [c[1] for c in clusters]
    if any(not _same_iop(iops[0], other) for other in iops[1:]):
        what.append("orientations")
    note = "mixed " + " and ".join(what)
    return [(c[2], note) for c in clusters]


def _positions_key(rec: dict[str, Any]) -> tuple[float, ...] | None:
    ipp = rec["ipp"]
    return None if ipp is None else tuple(round(v, 2) for v in ipp)


def _has_duplicates(records: list[dict[str, Any]]) -> bool:
    keys = [_positions_key(r) for r in records if r["ipp"] is not None]
    return len(keys) != len(set(keys))


def _split_by_acquisition(records: list[dict[str, Any]]) -> list[tuple[list[dict[str, Any]], str]]:
    if len(records) < 2 or not _has_duplicates(records):
        return [(records, "")]
    by_acq: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_acq[rec["acquisition_number"]].append(rec)
    if len(by_acq) < 2 or any(
        len(part) < 2 or _has_duplicates(part) for part in by_acq.values()
    ):
        return [(records, "")]
    return [(part, "repeated acquisitions") for part in by_acq.values()]


def _min_instance(records: list[dict[str, Any]]) -> int:
    numbers = [r["instance_number"] for r in records if r["instance_number"] is not None]
    return min(numbers) if numbers else 0


def group_series(records: Iterable[dict[str, Any]]) -> list[SeriesGroup]:
    """Group header records (from :func:`pipeline.dicom.headers.read_header`) into series.

    Returns the groups sorted by patient, study date, series number and key.
    """
    by_uid: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in records:
        by_uid[rec["series_instance_uid"] or fallback_series_key(rec)].append(rec)
    groups: list[SeriesGroup] = []
    for uid, members in by_uid.items():
        parts: list[tuple[list[dict[str, Any]], str]] = []
        for sig_part, sig_note in _split_by_signature(members):
            for acq_part, acq_note in _split_by_acquisition(sig_part):
                note = "; ".join(n for n in (sig_note, acq_note) if n)
                parts.append((acq_part, note))
        parts.sort(key=lambda p: (-len(p[0]), _min_instance(p[0])))
        real_uid = members[0]["series_instance_uid"]
        for n, (part, note) in enumerate(parts, start=1):
            key = uid if n == 1 else f"{uid}_{n}"
            split_note = f"part {n}/{len(parts)} of split UID ({note})" if len(parts) > 1 else ""
            groups.append(SeriesGroup(key, real_uid, part, split_note))
    groups.sort(key=lambda g: (
        g.records[0]["patient_id"], g.records[0]["study_date"],
        g.records[0]["study_instance_uid"], g.records[0]["series_number"] or 0, g.series_key,
    ))
    return groups
