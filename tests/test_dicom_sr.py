"""pipeline.outputs.dicom_sr: TID 1500 measurement reports, read back with highdicom."""

from __future__ import annotations

import subprocess
from datetime import date
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from pydicom.sr.codedict import codes

from pipeline.assessment.records import LesionTimepoint
from pipeline.outputs.dicom_seg import DicomOutputError, structure_tracking, write_lesion_seg
from pipeline.outputs.dicom_sr import read_lesion_sr, read_lesion_sr_tracking, write_lesion_sr
from tests.conftest import require_tool
from tests.test_dicom_seg import TRACKING_UID, lesion_masks, make_ct_series, study_info


def _timepoint(study_uid: str, role: str, **values: object) -> LesionTimepoint:
    days = {"baseline": -10, "intraprocedural": 0, "followup": 95}[role]
    return LesionTimepoint(
        "CRYO042", "L1", study_uid, date(2024, 1, 15), days, role, "CT", **values
    )


BASELINE = dict(
    long_axis_mm=31.25,
    short_axis_mm=24.5,
    max_3d_diameter_mm=33.75,
    volume_ml=11.125,
    enhancement_hu=48.5,
    enhancing="yes",
)
INTRAPROC = dict(
    iceball_long_axis_mm=52.5,
    iceball_short_axis_mm=44.0,
    iceball_volume_ml=47.25,
    min_margin_mm=-1.5,
    tumour_coverage_pct=97.5,
)
FOLLOWUP = dict(
    long_axis_mm=36.0,
    short_axis_mm=30.5,
    volume_ml=18.0,
    enhancement_hu=14.0,
    enhancing="equivocal",
)


def _study(tmp_path: Path, n: int, masks_from: tuple[str, ...] = ("tumour", "iceball", "kidney")):
    volume, datasets = make_ct_series(tmp_path / f"ct{n}", study_info(100 + n))
    masks = {k: v for k, v in lesion_masks(volume).items() if k in masks_from}
    seg = write_lesion_seg(
        datasets, masks, tmp_path / f"seg{n}.dcm", lesion_id="L1", tracking_uid=TRACKING_UID
    )
    return volume, datasets, pydicom.dcmread(seg)


def test_intraprocedural_round_trip_with_units_and_segment_references(tmp_path: Path):
    _, datasets, seg = _study(tmp_path, 1)
    tp = _timepoint(str(datasets[0].StudyInstanceUID), "intraprocedural", **INTRAPROC)
    path = write_lesion_sr(
        datasets,
        seg,
        tp,
        tmp_path / "sr.dcm",
        tracking_uid=TRACKING_UID,
        extra={"tumour": {"mean_attenuation_hu": 35.5}, "kidney": {"volume_ml": 160.0}},
    )
    assert read_lesion_sr(path) == {
        "iceball.long_axis_mm": (52.5, "mm"),
        "iceball.short_axis_mm": (44.0, "mm"),
        "iceball.volume_ml": (47.25, "ml"),
        "iceball.min_margin_mm": (-1.5, "mm"),
        "iceball.tumour_coverage_pct": (97.5, "%"),
        "tumour.mean_attenuation_hu": (35.5, "[hnsf'U]"),
        "kidney.volume_ml": (160.0, "ml"),
    }  # no enhancement evaluation on the procedure day; None values absent

    sr = hd.sr.srread(path)
    assert isinstance(sr, hd.sr.Comprehensive3DSR)
    assert sr.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert sr.PatientID == "CRYO042"
    assert sr.CompletionFlag == "COMPLETE"
    report = hd.sr.MeasurementReport.from_sequence([sr])
    groups = report.get_volumetric_roi_measurement_groups()
    assert len(groups) == 3
    numbers = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    for group in groups:
        ref = group.referenced_segment
        assert ref is not None
        seg_item = ref[0]
        assert seg_item.referenced_sop_instance_uid == seg.SOPInstanceUID
        (number,) = seg_item.referenced_segment_numbers
        assert (
            numbers[number]
            == {"108369006": "Tumour", "ICEBALL": "Ice ball", "64033007": "Kidney"}[
                group.finding_type.value
            ]
        )
        assert ref[1].value == datasets[0].SeriesInstanceUID  # source series for segmentation
    iceball = report.get_volumetric_roi_measurement_groups(
        tracking_uid=structure_tracking("L1", TRACKING_UID, "iceball")[1]
    )
    (margin,) = iceball[0].get_measurements(
        name=hd.sr.CodedConcept("MINMARGIN", "99CRYOTRACK", "Minimal ablative margin")
    )
    assert margin.unit == codes.UCUM.Millimeter
    (mean_hu,) = report.get_volumetric_roi_measurement_groups(tracking_uid=TRACKING_UID)[
        0
    ].get_measurements(name=codes.DCM.AttenuationCoefficient)
    assert mean_hu.derivation == codes.SCT.Mean and mean_hu.unit == codes.UCUM.HounsfieldUnit
    evidence = {
        str(i.ReferencedSOPInstanceUID)
        for s in sr.CurrentRequestedProcedureEvidenceSequence
        for ser in s.ReferencedSeriesSequence
        for i in ser.ReferencedSOPSequence
    }
    assert seg.SOPInstanceUID in evidence
    assert {str(d.SOPInstanceUID) for d in datasets} <= evidence


def test_tracking_stable_across_studies_and_reruns(tmp_path: Path):
    _, ds_base, seg_base = _study(tmp_path, 2, ("tumour", "kidney"))
    _, ds_fu, seg_fu = _study(tmp_path, 3, ("kidney",))
    base = _timepoint(str(ds_base[0].StudyInstanceUID), "baseline", **BASELINE)
    fu = _timepoint(str(ds_fu[0].StudyInstanceUID), "followup", **FOLLOWUP)
    p_base = write_lesion_sr(ds_base, seg_base, base, tmp_path / "b.dcm", tracking_uid=TRACKING_UID)
    p_fu = write_lesion_sr(ds_fu, seg_fu, fu, tmp_path / "f.dcm", tracking_uid=TRACKING_UID)
    p_fu2 = write_lesion_sr(ds_fu, seg_fu, fu, tmp_path / "f2.dcm", tracking_uid=TRACKING_UID)

    values = read_lesion_sr(p_base)
    assert values == {
        "tumour.long_axis_mm": (31.25, "mm"),
        "tumour.short_axis_mm": (24.5, "mm"),
        "tumour.max_3d_diameter_mm": (33.75, "mm"),
        "tumour.volume_ml": (11.125, "ml"),
        "tumour.enhancement_hu": (48.5, "[hnsf'U]"),
        "tumour.enhancing": ("yes", ""),
    }
    fu_values = read_lesion_sr(p_fu)
    assert fu_values["ablation_zone.long_axis_mm"] == (36.0, "mm")
    assert fu_values["ablation_zone.enhancing"] == ("equivocal", "")
    assert not any(k.startswith("tumour.") for k in fu_values)

    # the lesion (tumour at baseline, ablation zone at follow-up) keeps its tracking UID
    assert read_lesion_sr_tracking(p_base) == {"tumour": ("L1", TRACKING_UID)}
    assert read_lesion_sr_tracking(p_fu) == {"ablation_zone": ("L1", TRACKING_UID)}

    heads = [pydicom.dcmread(p, stop_before_pixels=True) for p in (p_base, p_fu, p_fu2)]
    assert heads[1].SOPInstanceUID == heads[2].SOPInstanceUID  # rerun replaces
    assert heads[1].SeriesInstanceUID == heads[2].SeriesInstanceUID
    assert heads[0].SOPInstanceUID != heads[1].SOPInstanceUID
    # the follow-up SEG has no ablation-zone segment: that group references no segment
    report = hd.sr.MeasurementReport.from_sequence([hd.sr.srread(p_fu)])
    assert report.get_volumetric_roi_measurement_groups() == []
    assert len(report.get_image_measurement_groups(tracking_uid=TRACKING_UID)) == 1


def test_without_seg_and_bad_inputs(tmp_path: Path):
    _, datasets, seg = _study(tmp_path, 4)
    study_uid = str(datasets[0].StudyInstanceUID)
    tp = _timepoint(study_uid, "baseline", **BASELINE)
    path = write_lesion_sr(datasets, None, tp, tmp_path / "noseg.dcm", tracking_uid=TRACKING_UID)
    assert read_lesion_sr(path)["tumour.long_axis_mm"] == (31.25, "mm")

    kw = dict(tracking_uid=TRACKING_UID)
    with pytest.raises(DicomOutputError, match=r"unknown measurement 'diameter'"):
        write_lesion_sr(
            datasets, seg, tp, tmp_path / "x.dcm", extra={"tumour": {"diameter": 3.0}}, **kw
        )
    with pytest.raises(DicomOutputError, match=r"duplicates the timepoint's value"):
        write_lesion_sr(
            datasets, seg, tp, tmp_path / "x.dcm", extra={"tumour": {"long_axis_mm": 3.0}}, **kw
        )
    other_study = _timepoint("1.2.3.4.5", "baseline", **BASELINE)
    with pytest.raises(DicomOutputError, match=r"belong to study"):
        write_lesion_sr(datasets, seg, other_study, tmp_path / "x.dcm", **kw)
    _, _, other_seg = _study(tmp_path, 5)
    with pytest.raises(DicomOutputError, match=r"not the source series"):
        write_lesion_sr(datasets, other_seg, tp, tmp_path / "x.dcm", **kw)
    with pytest.raises(DicomOutputError, match=r"tracking_uid 'x' is not a valid DICOM UID"):
        write_lesion_sr(datasets, seg, tp, tmp_path / "x.dcm", tracking_uid="x")
    with pytest.raises(DicomOutputError, match=r"tumour volume_ml is not finite"):
        write_lesion_sr(
            datasets,
            seg,
            _timepoint(study_uid, "baseline", volume_ml=float("nan")),
            tmp_path / "x.dcm",
            **kw,
        )
    mr = LesionTimepoint(
        "CRYO042",
        "L1",
        study_uid,
        date(2024, 1, 15),
        95,
        "followup",
        "MR",
        long_axis_mm=20.0,
        enhancement_hu=30.0,
    )
    with pytest.raises(DicomOutputError, match=r"refusing HU values \['ablation_zone.enh"):
        write_lesion_sr(datasets, seg, mr, tmp_path / "x.dcm", **kw)
    nothing = _timepoint(study_uid, "intraprocedural")
    with pytest.raises(DicomOutputError, match=r"lesion L1 .*no measurement to report"):
        write_lesion_sr(datasets, seg, nothing, tmp_path / "x.dcm", **kw)
    assert not (tmp_path / "x.dcm").exists()


@pytest.mark.needs_system
@pytest.mark.parametrize("role", ["baseline", "intraprocedural", "followup"])
def test_dciodvfy_reports_no_errors(tmp_path: Path, role: str):
    dciodvfy = require_tool("dciodvfy")
    _, datasets, seg = _study(tmp_path, 6)
    values = {"baseline": BASELINE, "intraprocedural": INTRAPROC, "followup": FOLLOWUP}[role]
    tp = _timepoint(str(datasets[0].StudyInstanceUID), role, **values)
    path = write_lesion_sr(
        datasets,
        seg,
        tp,
        tmp_path / "sr.dcm",
        tracking_uid=TRACKING_UID,
        extra={"kidney": {"mean_attenuation_hu": 150.0}},
        person_observer_name="Reviewer^Rita",
    )
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
    report = run.stdout + run.stderr
    assert "Comprehensive3DSR" in report
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
    warnings = [line for line in report.splitlines() if line.startswith("Warning")]
    assert all("99CRYOTRACK" in w for w in warnings), report


@pytest.mark.needs_system
def test_mr_followup_percent_enhancement(tmp_path: Path):
    dciodvfy = require_tool("dciodvfy")
    volume, datasets = make_ct_series(tmp_path / "mr", study_info(120), modality="MR")
    masks = {"ablation_zone": lesion_masks(volume)["iceball"]}
    seg = write_lesion_seg(
        datasets, masks, tmp_path / "seg.dcm", lesion_id="L1", tracking_uid=TRACKING_UID
    )
    tp = LesionTimepoint(
        "CRYO042",
        "L1",
        str(datasets[0].StudyInstanceUID),
        date(2024, 5, 1),
        110,
        "followup",
        "MR",
        long_axis_mm=28.0,
        enhancement_pct=22.5,
        enhancing="yes",
    )
    path = write_lesion_sr(
        datasets, pydicom.dcmread(seg), tp, tmp_path / "sr.dcm", tracking_uid=TRACKING_UID
    )
    assert read_lesion_sr(path) == {
        "ablation_zone.long_axis_mm": (28.0, "mm"),
        "ablation_zone.enhancement_pct": (22.5, "%"),
        "ablation_zone.enhancing": ("yes", ""),
    }
    sr = hd.sr.srread(path)
    report = hd.sr.MeasurementReport.from_sequence([sr])
    (group,) = report.get_volumetric_roi_measurement_groups(tracking_uid=TRACKING_UID)
    assert group.finding_type == codes.SCT.Necrosis
    names = [str(i.ConceptNameCodeSequence[0].CodeValue) for i in sr.ContentSequence]
    procedure = sr.ContentSequence[names.index("121058")]  # Procedure reported
    assert procedure.ConceptCodeSequence[0].CodeValue == "25056-3"  # MRI unspecified region
    for obj in (seg.path, path):
        run = subprocess.run([dciodvfy, str(obj)], capture_output=True, text=True, check=False)
        errors = [
            line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")
        ]
        assert errors == [], run.stderr
