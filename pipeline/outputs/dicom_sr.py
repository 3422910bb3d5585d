"""DICOM SR output: the measurements of one lesion in one study (TID 1500 Measurement Report).

A Comprehensive 3D SR holds one measurement group per structure that has values:

- the lesion: "tumour" (baseline, intraprocedural) or "ablation_zone" (follow-up) with
  long/short axis, 3D maximum diameter, volume, enhancement (HU or %) and, outside the
  procedure day, the qualitative evaluation "enhancing tissue present"
  (yes/no/equivocal/not assessable);
- "iceball" (procedure day): long/short axis, volume, minimal ablative margin and tumour
  coverage (the margin and coverage describe the ice ball relative to the tumour);
- any structure given in ``extra`` (e.g. mean attenuation of the kidney).

A group whose structure is a segment of the SEG is a TID 1411 volumetric group that
references that segment (built with ``source_series`` per NOTES.md); otherwise a TID 1501
group. Every group carries the structure's tracking identifier/UID
(:func:`pipeline.outputs.dicom_seg.structure_tracking`), identical in every study of the
lesion. Values that are None are not written; every value has an explicit UCUM unit.
Codes: :mod:`pipeline.outputs.dicom_codes`.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import highdicom as hd
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from pipeline import __version__
from pipeline.assessment.records import LesionTimepoint, Role
from pipeline.outputs.dicom_codes import (
    ENHANCING_CONCEPT,
    ENHANCING_VALUES,
    MEASURES,
    STRUCTURES,
    UNIT_HU,
    coding_scheme_identification,
)
from pipeline.outputs.dicom_seg import (
    DicomOutputError,
    check_tracking_uid,
    derived_uid,
    save_atomically,
    segment_numbers,
    structure_tracking,
)

__all__ = [
    "ICEBALL_FIELDS",
    "LESION_FIELDS",
    "lesion_structure",
    "sr_groups",
    "write_lesion_sr",
    "read_lesion_sr",
    "read_lesion_sr_tracking",
]

#: LesionTimepoint field → measurement key, for the lesion group (tumour / ablation zone).
LESION_FIELDS = {
    "long_axis_mm": "long_axis_mm",
    "short_axis_mm": "short_axis_mm",
    "max_3d_diameter_mm": "max_3d_diameter_mm",
    "volume_ml": "volume_ml",
    "enhancement_hu": "enhancement_hu",
    "enhancement_pct": "enhancement_pct",
}
#: LesionTimepoint field → measurement key, for the ice-ball group.
ICEBALL_FIELDS = {
    "iceball_long_axis_mm": "long_axis_mm",
    "iceball_short_axis_mm": "short_axis_mm",
    "iceball_volume_ml": "volume_ml",
    "min_margin_mm": "min_margin_mm",
    "tumour_coverage_pct": "tumour_coverage_pct",
}

_PROCEDURE = {"CT": codes.LN.CTUnspecifiedBodyRegion, "MR": codes.LN.MRIUnspecifiedBodyRegion}
_TIME_POINT_TYPE = {Role.BASELINE: codes.DCM.Baseline, Role.FOLLOWUP: codes.DCM.Posttreatment}


def lesion_structure(role: Role | str) -> str:
    """The structure the lesion's own measurements describe in a study of this role."""
    return "ablation_zone" if Role(role) == Role.FOLLOWUP else "tumour"


def sr_groups(
    timepoint: LesionTimepoint, extra: Mapping[str, Mapping[str, float]] | None = None
) -> dict[str, dict[str, float]]:
    """Structure → {measurement key: value} written for this timepoint (None values dropped).

    ``extra`` adds measurements (keys of :data:`~pipeline.outputs.dicom_codes.MEASURES`)
    to any structure; a value that the timepoint already gives is an error.
    """
    where = f"lesion {timepoint.lesion_id} study {timepoint.study_instance_uid} SR"
    groups: dict[str, dict[str, float]] = {}
    for structure, fields in (
        (lesion_structure(timepoint.role), LESION_FIELDS),
        ("iceball", ICEBALL_FIELDS),
    ):
        values = {key: getattr(timepoint, f) for f, key in fields.items()}
        groups[structure] = {k: float(v) for k, v in values.items() if v is not None}
    for structure, values in (extra or {}).items():
        if structure not in STRUCTURES:
            raise DicomOutputError(where, f"extra: unknown structure {structure!r}")
        group = groups.setdefault(structure, {})
        for key, value in values.items():
            if key not in MEASURES:
                raise DicomOutputError(
                    where,
                    f"extra[{structure!r}]: unknown measurement {key!r}; "
                    f"expected one of {sorted(MEASURES)}",
                )
            if key in group:
                raise DicomOutputError(
                    where, f"extra[{structure!r}][{key!r}] duplicates the timepoint's value"
                )
            if value is not None:
                group[key] = float(value)
    for structure, group in groups.items():
        for key, value in group.items():
            if not math.isfinite(value):
                raise DicomOutputError(where, f"{structure} {key} is not finite ({value})")
    return {s: g for s, g in groups.items() if g}


def _measurement(key: str, value: float) -> hd.sr.Measurement:
    spec = MEASURES[key]
    return hd.sr.Measurement(
        name=spec.name, value=value, unit=spec.unit, derivation=spec.derivation
    )


def _group(
    structure: str,
    values: Mapping[str, float],
    evaluations: Sequence[hd.sr.QualitativeEvaluation],
    *,
    lesion_id: str,
    tracking_uid: str,
    timepoint: LesionTimepoint,
    seg_dataset: pydicom.Dataset | None,
    seg_numbers: Mapping[str, int],
    source_series_uid: str,
    algorithm: hd.sr.AlgorithmIdentification,
) -> hd.sr.MeasurementsAndQualitativeEvaluations | (
    hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
):
    spec = STRUCTURES[structure]
    tracking_id, uid = structure_tracking(lesion_id, tracking_uid, structure)
    role = Role(timepoint.role)
    common = dict(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=uid, identifier=tracking_id),
        time_point_context=hd.sr.TimePointContext(
            time_point=role.value,
            time_point_type=_TIME_POINT_TYPE.get(role),
            subject_time_point_identifier=f"day {timepoint.days_since_procedure}",
        ),
        finding_type=spec.property_type,
        finding_category=spec.category,
        algorithm_id=algorithm,
        finding_sites=None
        if spec.anatomic_region is None
        else [hd.sr.FindingSite(spec.anatomic_region)],
        measurements=[_measurement(k, v) for k, v in values.items()] or None,
        qualitative_evaluations=list(evaluations) or None,
    )
    if seg_dataset is not None and structure in seg_numbers:
        segment = hd.sr.ReferencedSegment(
            sop_class_uid=str(seg_dataset.SOPClassUID),
            sop_instance_uid=str(seg_dataset.SOPInstanceUID),
            segment_number=seg_numbers[structure],
            source_series=hd.sr.SourceSeriesForSegmentation(source_series_uid),
        )
        return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=segment, **common
        )
    return hd.sr.MeasurementsAndQualitativeEvaluations(**common)


def _check_seg(seg_dataset: pydicom.Dataset, source_series_uid: str, where: str) -> None:
    if str(seg_dataset.get("SOPClassUID", "")) != SegmentationStorage:
        raise DicomOutputError(where, "seg_dataset is not a Segmentation Storage instance")
    referenced = {str(s.SeriesInstanceUID) for s in seg_dataset.get("ReferencedSeriesSequence", [])}
    if source_series_uid not in referenced:
        raise DicomOutputError(
            where,
            f"the SEG references series {sorted(referenced)}, not the source series "
            f"{source_series_uid}",
        )


def write_lesion_sr(
    source_datasets: Sequence[pydicom.Dataset],
    seg_dataset: pydicom.Dataset | None,
    timepoint: LesionTimepoint,
    out_path: Path,
    *,
    tracking_uid: str,
    extra: Mapping[str, Mapping[str, float]] | None = None,
    series_number: int = 901,
    manufacturer: str = "cryotrack",
    software_version: str = __version__,
    person_observer_name: str | None = None,
) -> Path:
    """Write the TID 1500 measurement report of one lesion in one study.

    Args:
        source_datasets: instances (headers suffice) of the series the values were
            measured on; they become the SR's evidence and give patient/study.
        seg_dataset: the SEG from :func:`~pipeline.outputs.dicom_seg.write_lesion_seg`
            (``pydicom.dcmread(result)``), or None: groups then reference no segment.
        timepoint: the lesion's values in this study (None values are not written).
        out_path: file to write (parents created; replaced if present).
        tracking_uid: the lesion's TrackingUID, identical for every study of the lesion.
        extra: structure → {measurement key: value} added to the report, keys from
            :data:`~pipeline.outputs.dicom_codes.MEASURES`, e.g.
            ``{"tumour": {"mean_attenuation_hu": 35.0}}``.
        person_observer_name: DICOM PN of a reviewing person (added to the device
            observer), or None.

    Raises:
        DicomOutputError: no values to report, sources from another study, SEG of another
            series, unknown structure or measurement in ``extra``.
    """
    where = f"lesion {timepoint.lesion_id} study {timepoint.study_instance_uid} SR"
    check_tracking_uid(tracking_uid, where)
    if not source_datasets:
        raise DicomOutputError(where, "no source datasets given")
    first = source_datasets[0]
    if str(first.StudyInstanceUID) != timepoint.study_instance_uid:
        raise DicomOutputError(where, f"source datasets belong to study {first.StudyInstanceUID}")
    source_series_uid = str(first.SeriesInstanceUID)
    modality = timepoint.modality or str(first.get("Modality", ""))
    if modality not in _PROCEDURE:
        raise DicomOutputError(where, f"modality must be CT or MR, got {modality!r}")
    seg_numbers: dict[str, int] = {}
    if seg_dataset is not None:
        _check_seg(seg_dataset, source_series_uid, where)
        seg_numbers = segment_numbers(seg_dataset)

    groups = sr_groups(timepoint, extra)
    if modality == "MR":
        hu = [f"{s}.{k}" for s, g in groups.items() for k in g if MEASURES[k].unit == UNIT_HU]
        if hu:
            raise DicomOutputError(
                where, f"MR signal is not in Hounsfield units; refusing HU values {hu}"
            )
    lesion = lesion_structure(timepoint.role)
    evaluations: dict[str, list[hd.sr.QualitativeEvaluation]] = {}
    if Role(timepoint.role) != Role.INTRAPROCEDURAL:
        evaluations[lesion] = [
            hd.sr.QualitativeEvaluation(ENHANCING_CONCEPT, ENHANCING_VALUES[timepoint.enhancing])
        ]
        groups.setdefault(lesion, {})
    if not groups:
        raise DicomOutputError(where, "no measurement to report (all values are None)")

    algorithm = hd.sr.AlgorithmIdentification(name="cryotrack", version=software_version)
    order = [s for s in STRUCTURES if s in groups]
    measurement_groups = [
        _group(
            s,
            groups[s],
            evaluations.get(s, []),
            lesion_id=timepoint.lesion_id,
            tracking_uid=tracking_uid,
            timepoint=timepoint,
            seg_dataset=seg_dataset,
            seg_numbers=seg_numbers,
            source_series_uid=source_series_uid,
            algorithm=algorithm,
        )
        for s in order
    ]
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derived_uid("device", manufacturer, "cryotrack"),
            name="cryotrack",
            manufacturer_name=manufacturer,
            model_name="cryotrack",
        ),
    )
    person = None
    if person_observer_name is not None:
        person = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=person_observer_name
            ),
        )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(
            observer_person_context=person, observer_device_context=device
        ),
        procedure_reported=_PROCEDURE[modality],
        imaging_measurements=measurement_groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    evidence = [*source_datasets, *([seg_dataset] if seg_dataset is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=report,
        series_instance_uid=derived_uid(
            "sr-series", tracking_uid, timepoint.study_instance_uid, source_series_uid
        ),
        series_number=series_number,
        sop_instance_uid=derived_uid(
            "sr-instance", tracking_uid, timepoint.study_instance_uid, source_series_uid
        ),
        instance_number=1,
        manufacturer=manufacturer,
        is_complete=True,
        series_description=f"cryotrack SR {timepoint.lesion_id}"[:64],
    )
    sr.CodingSchemeIdentificationSequence = coding_scheme_identification()
    sr.SoftwareVersions = software_version
    return save_atomically(sr, out_path)


def _structure_of(group: hd.sr.MeasurementsAndQualitativeEvaluations) -> str:
    finding = group.finding_type
    for name, spec in STRUCTURES.items():
        if finding is not None and finding == spec.property_type:
            return name
    raise DicomOutputError("SR", f"measurement group with unknown finding type {finding}")


def _measure_key(measurement: hd.sr.Measurement) -> str:
    derivation = measurement.derivation
    for key, spec in MEASURES.items():
        same_derivation = (spec.derivation is None and derivation is None) or (
            spec.derivation is not None and derivation is not None and derivation == spec.derivation
        )
        if measurement.name == spec.name and same_derivation:
            return key
    raise DicomOutputError("SR", f"unknown measurement {measurement.name}")


def _groups(path: Path | os.PathLike[str]) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    return [
        *report.get_volumetric_roi_measurement_groups(),
        *report.get_image_measurement_groups(),
    ]


def read_lesion_sr(path: Path | os.PathLike[str]) -> dict[str, tuple[float | str, str]]:
    """Read a report back as ``"structure.measurement" → (value, UCUM unit)``.

    Measurement keys are those of :data:`~pipeline.outputs.dicom_codes.MEASURES`
    (e.g. ``"tumour.long_axis_mm" → (31.5, "mm")``); the qualitative evaluation reads
    ``"tumour.enhancing" → ("yes", "")``.
    """
    result: dict[str, tuple[float | str, str]] = {}
    value_names = {(c.value, c.scheme_designator): k for k, c in ENHANCING_VALUES.items()}
    for group in _groups(path):
        structure = _structure_of(group)
        for m in group.get_measurements():
            result[f"{structure}.{_measure_key(m)}"] = (float(m.value), str(m.unit.value))
        for ev in group.get_qualitative_evaluations(name=ENHANCING_CONCEPT):
            code = ev.value
            result[f"{structure}.enhancing"] = (
                value_names[(code.value, code.scheme_designator)],
                "",
            )
    return result


def read_lesion_sr_tracking(path: Path | os.PathLike[str]) -> dict[str, tuple[str, str]]:
    """Structure → (TrackingIdentifier, TrackingUID) of each measurement group."""
    return {
        _structure_of(g): (str(g.tracking_identifier), str(g.tracking_uid)) for g in _groups(path)
    }
