"""`cryotrack index` on real third-party DICOM (../shared/data): bad files, DICOMDIR trees,
non-image objects, refused series, gantry tilt and a real contrast-enhanced abdomen."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipeline.dicom.index import build_index, index_archive
from tests.conftest import shared_data

pytestmark = pytest.mark.needs_shared_data


def _by_name(ix, name: str) -> list[dict]:
    return [r for r in ix.series if name in r["series_description"]]


def test_pydicom_corpus_errors_dicomdir_and_non_images(tmp_path: Path) -> None:
    root = shared_data("pydicom/test_files")
    summary = build_index(root, tmp_path, workers=2, content_check=False)
    errors = pd.read_csv(tmp_path / "errors.csv")
    names = {Path(p).name for p in errors.path}
    # not DICOM (text, JSON, gzip, ICC profile, shifted raw dataset) → errors.csv
    assert {"README.txt", "zipMR.gz", "crayons.icc", "test1.json", "no_meta.dcm"} <= names
    # DICOMDIRs (by name and by SOP class, e.g. DICOMDIR-bigEnd) are neither errors nor series
    assert not any("DICOMDIR" in n for n in names)
    assert summary.n_dicomdir == 8
    instances = pd.read_parquet(tmp_path / "instances.parquet")
    assert not instances.path.str.contains("DICOMDIR").any()
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(instances) + len(errors) + summary.n_dicomdir == n_files
    series = pd.read_parquet(tmp_path / "series.parquet")
    reasons = " | ".join(series.reason)
    for expected in ("structured report", "segmentation object", "radiotherapy object",
                     "secondary capture", "waveform", "Ultrasound", "localizer/scout"):
        assert expected in reasons, expected
    # raw datasets without file meta (no preamble) are still read
    assert series.sop_class_uid.eq("1.2.840.10008.5.1.4.1.1.481.8").any()
    # the DICOMDIR tree's CT series (4 slices with a 200 mm jump) is refused with reasons
    routine = series[series.series_description == "Routine Brain"].iloc[0]
    assert not routine.usable and "slice gap" in routine.reason


def test_dicom2nifti_failing_cases_are_refused_with_reasons() -> None:
    ix = index_archive(shared_data("dicom2nifti/failing"), content_check=False, min_slices=2)
    by_folder: dict[str, list[dict]] = {}
    for r in ix.series:
        folder = next(i["path"] for i in ix.instances if i["series_key"] == r["series_key"])
        by_folder.setdefault(Path(folder).parts[-3], []).append(r)
    # 4 slices at one position: one series (no split into 1-slice "acquisitions")
    (notavolume,) = by_folder["notavolume"]
    assert "duplicate slice positions (3 of 4" in notavolume["reason"]
    inc = by_folder["sliceincrement"]
    assert all("slice gap" in r["reason"] for r in inc)
    tilted = by_folder["gantrytilting"]
    assert tilted[0]["tilt_deg"] > 10 and "gantry tilt" in tilted[0]["notes"]
    orient = by_folder["sliceorientation"]
    assert len(orient) == 2 and "mixed orientations" in orient[0]["split_note"]
    assert {r["series_key"].endswith("_2") for r in orient} == {True, False}


def test_ge_tilted_head_ct() -> None:
    ix = index_archive(shared_data("dcm_qa_ct/GE"), content_check=True)
    (row,) = ix.series
    assert row["n_slices"] == 28
    assert row["tilt_deg"] == pytest.approx(18.5, abs=0.2)
    assert "gantry tilt 18.5°" in row["notes"]
    assert "slice gap" in row["reason"] and not row["usable"]  # uneven 1.08–7.0 mm steps


def test_transfer_syntaxes_are_decodable() -> None:
    ix = index_archive(shared_data("dcm_qa_ts"), content_check=False)
    (row,) = ix.series  # nine copies of one slice in 7 distinct syntaxes: one UID
    assert row["n_instances"] == 9
    assert "unsupported transfer syntax" not in row["reason"]
    assert len(row["transfer_syntax"].split(",")) == 7  # incl. RLE, JPEG-LS, J2K, big endian


def test_real_abdominal_ct_phase_from_content() -> None:
    """TotalSegmentator example: ContrastBolusAgent=APPLIED, bolus start 14:02:16,
    acquisition 14:03:52 (96 s) and a visibly enhanced aorta (~150–170 HU, liver ~100 HU).
    TotalSegmentator's own phase_prediction.json says "native"; our content check and the
    headers agree on nephrographic/portal venous."""
    ix = index_archive(shared_data("totalsegmentator/example_ct_dicom"), content_check=True,
                       min_slices=10)
    (row,) = ix.series
    assert row["series_key"].startswith("nouid-")  # anonymiser blanked every UID
    assert row["usable"] and row["preferred"]
    assert row["header_phase"] == "nephrographic"
    assert (row["contrast"], row["phase"]) == ("enhanced", "nephrographic")
    assert row["contrast_basis"].startswith("header+content agree")
    assert 130 <= row["aorta_hu"] <= 200


def test_enhanced_multiframe_geometry_from_functional_groups() -> None:
    ix = index_archive(shared_data("pydicom/data_store/data_store/data/eCT_Supplemental.dcm"),
                       content_check=False, min_slices=2)
    (row,) = ix.series
    assert row["sop_class_uid"] == "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    assert (row["n_instances"], row["n_slices"], row["orientation"]) == (1, 2, "axial")
    assert row["usable"], row["reason"]


def test_real_unenhanced_abdomen_reads_non_contrast() -> None:
    """dcmqi's 3-slice GE abdomen (CT colonography, no IV contrast: grey liver, aorta at
    soft-tissue density) is measured as unenhanced by the content check."""
    from pipeline.dicom.contrast import measure_ct_content, phase_from_aorta, read_slice_hu
    from pipeline.dicom.headers import read_header

    files = sorted(shared_data("dcmqi/data/segmentations/ct-3slice").glob("*.dcm"))
    recs = [read_header(p) for p in files]
    slices = [(read_slice_hu(r["path"]), (r["pixel_spacing_row_mm"], r["pixel_spacing_col_mm"]),
               r["iop"]) for r in recs]
    measure = measure_ct_content(slices)
    assert measure.aorta_hu is not None and measure.aorta_hu < 60, measure
    assert phase_from_aorta(measure.aorta_hu, measure.dense_urine) == ("none", "non_contrast")
