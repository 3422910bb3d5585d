"""pipeline.outputs.dicom_seg: binary DICOM SEG per lesion per study, read back with highdicom.

The source CT series are written with fixtures.dicom_writer and loaded with the real
loader, so masks live on exactly the grid the pipeline measures on. Geometry is checked
independently of highdicom: the LPS position of every SEG pixel is recomputed from the
SEG's own ImagePositionPatient / ImageOrientationPatient / PixelSpacing and compared with
the LPS position of the mask voxel from ``Volume.affine_lps``.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from fixtures.dicom_writer import (
    DEFAULT_UID_ROOT,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
    make_uid,
    write_series,
)
from pipeline.dicom.loader import load_series
from pipeline.image import Volume
from pipeline.outputs.dicom_seg import (
    DicomOutputError,
    EmptySegmentationError,
    read_lesion_seg,
    structure_tracking,
    write_lesion_seg,
)
from tests.conftest import require_tool, shared_data

PATIENT = PatientInfo("CRYO042", "Seg^Test", "19550101", "M")
TRACKING_UID = "1.2.826.0.1.3680043.8.498.4242"
PRONE = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])  # IOP [-1,0,0, 0,-1,0]


def study_info(n: int, date: str = "20240115") -> StudyInfo:
    return StudyInfo(make_uid(DEFAULT_UID_ROOT, "seg-study", n), date, "101500")


def make_ct_series(
    out_dir: Path,
    study: StudyInfo,
    *,
    direction: np.ndarray | None = None,
    shape_kji: tuple[int, int, int] = (12, 64, 64),
    patient_position: str = "HFS",
    modality: str = "CT",
) -> tuple[Volume, list[pydicom.Dataset]]:
    """A small CT (or MR) series on disk; returns (loaded Volume, header-only datasets)."""
    rng = np.random.default_rng(7)
    hu = rng.normal(140.0, 10.0, size=shape_kji).astype(np.float32)  # HU, or MR signal
    truth = Volume.from_geometry(
        hu,
        origin_lps=(80.0, 60.0, -120.0) if direction is not None else (-25.0, -30.0, -120.0),
        spacing_mm=(0.8, 0.8, 2.5),
        direction=direction,
    )
    series = SeriesInfo(
        make_uid(DEFAULT_UID_ROOT, "seg-series", study.study_instance_uid),
        3,
        "CT abdomen",
        patient_position=patient_position,
    )
    paths = write_series(
        truth, out_dir, modality=modality, patient=PATIENT, study=study, series=series
    )
    volume = load_series(paths)
    datasets = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
    return volume, datasets


def ellipsoid(
    volume: Volume, center_lps: tuple[float, float, float], radii_mm: tuple[float, ...]
) -> Volume:
    """Bool mask of an axis-aligned (LPS) ellipsoid on the volume's grid."""
    k, j, i = np.indices(volume.array.shape)
    pts = volume.index_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    d = (pts - np.asarray(center_lps)) / np.asarray(radii_mm)
    inside = (d**2).sum(axis=1) <= 1.0
    return volume.with_array(inside.reshape(volume.array.shape))


def lesion_masks(volume: Volume) -> dict[str, Volume]:
    """Tumour inside ice ball inside kidney; an off-centre tumour so flips would show."""
    lo, hi = volume.bounds_lps()
    c = lo + (hi - lo) * np.array([0.4, 0.55, 0.43])
    tumour = ellipsoid(volume, tuple(c), (6.0, 4.0, 5.0))
    iceball = ellipsoid(volume, tuple(c + np.array([1.0, 0.0, 0.0])), (11.0, 9.0, 9.0))
    kidney = ellipsoid(volume, tuple(c), (20.0, 15.0, 12.0))
    empty = volume.with_array(np.zeros(volume.array.shape, dtype=bool))
    return {"tumour": tumour, "iceball": iceball, "kidney": kidney, "enhancing": empty}


def seg_points_lps(path: Path) -> dict[int, set[tuple[float, float, float]]]:
    """Segment number → LPS positions (0.01 mm) of its pixels, from the SEG's own geometry."""
    ds = pydicom.dcmread(path)
    frames = ds.pixel_array.reshape(int(ds.NumberOfFrames), int(ds.Rows), int(ds.Columns))
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, float)
    row_mm, col_mm = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    out: dict[int, set[tuple[float, float, float]]] = {}
    for n, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        ipp = np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float)
        ident = item if "SegmentIdentificationSequence" in item else shared
        segment = int(ident.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        r, c = np.nonzero(frames[n])
        pts = ipp + np.outer(c * col_mm, iop[:3]) + np.outer(r * row_mm, iop[3:])
        out.setdefault(segment, set()).update(map(tuple, np.round(pts, 2)))
    return out


def mask_points_lps(mask: Volume) -> set[tuple[float, float, float]]:
    k, j, i = np.nonzero(mask.array)
    return set(map(tuple, np.round(mask.index_to_lps(np.stack([i, j, k], axis=1)), 2)))


def test_round_trip_masks_codes_and_tracking(tmp_path: Path):
    volume, datasets = make_ct_series(tmp_path / "ct", study_info(1))
    masks = lesion_masks(volume)
    shuffled = [datasets[n] for n in np.random.default_rng(3).permutation(len(datasets))]
    result = write_lesion_seg(
        shuffled, masks, tmp_path / "out" / "seg.dcm", lesion_id="L1", tracking_uid=TRACKING_UID
    )
    assert result.segment_numbers == {"tumour": 1, "iceball": 2, "kidney": 3}
    assert result.skipped == {"enhancing": "empty mask"}

    back = read_lesion_seg(result)  # default order: mask slice order k
    assert set(back) == {"tumour", "iceball", "kidney"}
    for name, array in back.items():
        assert array.shape == volume.array.shape
        np.testing.assert_array_equal(array, masks[name].array, err_msg=name)
    reversed_uids = list(reversed(volume.source["sop_instance_uids"]))
    back_rev = read_lesion_seg(result.path, reversed_uids)
    np.testing.assert_array_equal(back_rev["tumour"], masks["tumour"].array[::-1])

    seg = hd.seg.segread(result.path)
    assert seg.SOPInstanceUID == result.sop_instance_uid
    assert seg.FrameOfReferenceUID == volume.frame_of_reference_uid
    assert seg.StudyInstanceUID == datasets[0].StudyInstanceUID
    assert seg.PatientID == "CRYO042"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == volume.source["series_instance_uid"]
    desc = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert desc[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "108369006"  # Neoplasm
    assert desc[1].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "49755003"
    assert desc[1].AnatomicRegionSequence[0].CodeValue == "64033007"  # kidney
    assert desc[3].SegmentedPropertyTypeCodeSequence[0].CodeValue == "64033007"
    assert desc[3].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    for item in desc.values():
        assert item.SegmentAlgorithmType == "AUTOMATIC"
        assert item.SegmentAlgorithmName == "cryotrack"
    assert desc[1].TrackingUID == TRACKING_UID and desc[1].TrackingID == "L1"
    assert desc[2].TrackingUID == structure_tracking("L1", TRACKING_UID, "iceball")[1]
    assert desc[2].TrackingUID != TRACKING_UID
    assert seg.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == "99CRYOTRACK"


@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_frames_sit_where_the_mask_voxels_are(tmp_path: Path, position: str):
    """Independent geometry check, supine and prone (IOP [-1,0,0,0,-1,0])."""
    direction = PRONE if position == "HFP" else None
    volume, datasets = make_ct_series(
        tmp_path / "ct", study_info(2), direction=direction, patient_position=position
    )
    if position == "HFP":
        iop = [float(v) for v in datasets[0].ImageOrientationPatient]
        assert iop == [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    masks = lesion_masks(volume)
    result = write_lesion_seg(
        datasets[::-1], masks, tmp_path / "seg.dcm", lesion_id="L1", tracking_uid=TRACKING_UID
    )
    points = seg_points_lps(result.path)
    for name, number in result.segment_numbers.items():
        assert points[number] == mask_points_lps(masks[name]), name
    # every SEG frame references the source instance at its own position
    seg = pydicom.dcmread(result.path)
    ipp_of = {str(d.SOPInstanceUID): np.asarray(d.ImagePositionPatient, float) for d in datasets}
    for item in seg.PerFrameFunctionalGroupsSequence:
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        np.testing.assert_allclose(
            np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float),
            ipp_of[str(src)],
            atol=1e-3,
        )


def test_rerun_same_uids_and_two_studies_share_tracking(tmp_path: Path):
    vol1, ds1 = make_ct_series(tmp_path / "ct1", study_info(3, "20240101"))
    vol2, ds2 = make_ct_series(tmp_path / "ct2", study_info(4, "20240501"))
    kw = dict(lesion_id="L1", tracking_uid=TRACKING_UID)
    a = write_lesion_seg(ds1, lesion_masks(vol1), tmp_path / "a.dcm", **kw)
    a_again = write_lesion_seg(ds1, lesion_masks(vol1), tmp_path / "a2.dcm", **kw)
    b = write_lesion_seg(ds2, lesion_masks(vol2), tmp_path / "b.dcm", **kw)
    other = write_lesion_seg(
        ds1, lesion_masks(vol1), tmp_path / "c.dcm", lesion_id="L2", tracking_uid="1.2.3.99"
    )
    assert (a.sop_instance_uid, a.series_instance_uid) == (
        a_again.sop_instance_uid,
        a_again.series_instance_uid,
    )
    uids = {a.sop_instance_uid, b.sop_instance_uid, other.sop_instance_uid}
    assert len(uids) == 3
    assert a.series_instance_uid != b.series_instance_uid

    def tracking(path: Path) -> dict[str, tuple[str, str]]:
        seg = pydicom.dcmread(path, stop_before_pixels=True)
        return {str(s.SegmentLabel): (s.TrackingID, s.TrackingUID) for s in seg.SegmentSequence}

    assert tracking(a.path) == tracking(b.path)
    assert tracking(a.path)["Tumour"] == ("L1", TRACKING_UID)


def test_mask_on_another_grid_is_refused(tmp_path: Path):
    volume, datasets = make_ct_series(tmp_path / "ct", study_info(5))
    masks = lesion_masks(volume)
    out = tmp_path / "seg.dcm"
    kw = dict(lesion_id="L1", tracking_uid=TRACKING_UID)

    shifted_affine = volume.affine_lps.copy()
    shifted_affine[:3, 3] += (0.0, 0.0, 1.25)  # half a slice along the normal
    shifted = {n: Volume(m.array, shifted_affine) for n, m in masks.items()}
    with pytest.raises(DicomOutputError, match="lies on no mask slice"):
        write_lesion_seg(datasets, shifted, out, **kw)

    coarse = {
        n: Volume.from_geometry(m.array, origin_lps=volume.origin_lps, spacing_mm=(1.0, 1.0, 2.5))
        for n, m in masks.items()
    }
    with pytest.raises(DicomOutputError, match="PixelSpacing"):
        write_lesion_seg(datasets, coarse, out, **kw)

    with pytest.raises(DicomOutputError, match="12 slices but the source series has 11"):
        write_lesion_seg(datasets[:-1], masks, out, **kw)

    mixed = dict(
        masks,
        kidney=volume.with_array(np.zeros((12, 64, 64), dtype=bool)).crop_ijk(
            (0, 0, 0), (64, 64, 6)
        ),
    )
    with pytest.raises(DicomOutputError, match="'kidney' vs 'tumour'"):
        write_lesion_seg(datasets, mixed, out, **kw)

    wrong_order = {
        "tumour": masks["tumour"].with_array(
            masks["tumour"].array,
            source={"sop_instance_uids": list(reversed(volume.source["sop_instance_uids"]))},
        )
    }
    with pytest.raises(DicomOutputError, match="slice order"):
        write_lesion_seg(datasets, wrong_order, out, **kw)

    with pytest.raises(DicomOutputError, match="must be bool"):
        write_lesion_seg(
            datasets, {"tumour": volume.with_array(masks["tumour"].array * 1)}, out, **kw
        )
    with pytest.raises(DicomOutputError, match="'L1-uid' is not a valid DICOM UID"):
        write_lesion_seg(datasets, masks, out, lesion_id="L1", tracking_uid="L1-uid")
    with pytest.raises(DicomOutputError, match="unknown structure"):
        write_lesion_seg(datasets, {"liver": masks["tumour"]}, out, **kw)
    assert list(tmp_path.glob("*.dcm")) == [] and list(tmp_path.glob(".*tmp")) == []


def test_all_masks_empty_writes_nothing(tmp_path: Path):
    volume, datasets = make_ct_series(tmp_path / "ct", study_info(6))
    empty = volume.with_array(np.zeros(volume.array.shape, dtype=bool))
    out = tmp_path / "seg.dcm"
    with pytest.raises(EmptySegmentationError, match=r"lesion L7 .*all masks are empty"):
        write_lesion_seg(
            datasets,
            {"tumour": empty, "iceball": empty},
            out,
            lesion_id="L7",
            tracking_uid=TRACKING_UID,
        )
    assert not out.exists()


@pytest.mark.needs_system
@pytest.mark.parametrize("position", ["HFS", "HFP"])
def test_dciodvfy_reports_no_errors(tmp_path: Path, position: str):
    dciodvfy = require_tool("dciodvfy")
    volume, datasets = make_ct_series(
        tmp_path / "ct",
        study_info(8),
        direction=PRONE if position == "HFP" else None,
        patient_position=position,
    )
    result = write_lesion_seg(
        datasets,
        lesion_masks(volume),
        tmp_path / "seg.dcm",
        lesion_id="L1",
        tracking_uid=TRACKING_UID,
    )
    run = subprocess.run([dciodvfy, str(result.path)], capture_output=True, text=True, check=False)
    report = run.stdout + run.stderr
    assert "Segmentation" in report  # dciodvfy recognised the IOD
    errors = [line for line in report.splitlines() if line.startswith("Error")]
    assert errors == [], report
    warnings = [line for line in report.splitlines() if line.startswith("Warning")]
    # the only warning is the private coding scheme designator (declared in the object)
    assert all("99CRYOTRACK" in w for w in warnings), report


@pytest.mark.needs_shared_data
def test_multiframe_enhanced_ct_source(tmp_path: Path):
    """One Enhanced CT instance (2 frames stored in reverse slice order, IOP [-1,0,0,0,1,0])."""
    path = shared_data("pydicom/data_store/data_store/data/eCT_Supplemental.dcm")
    volume = load_series([path])
    assert volume.source["frame_numbers"] == [2, 1]  # the case this test is about
    source = pydicom.dcmread(path, stop_before_pixels=True)
    mask = np.zeros(volume.array.shape, dtype=bool)
    mask[0, 100:140, 200:260] = True
    mask[1, 110:120, 50:60] = True
    masks = {"tumour": volume.with_array(mask)}
    result = write_lesion_seg(
        [source], masks, tmp_path / "seg.dcm", lesion_id="L1", tracking_uid=TRACKING_UID
    )
    back = read_lesion_seg(result, source_frame_numbers=volume.source["frame_numbers"])
    np.testing.assert_array_equal(back["tumour"], mask)
    assert seg_points_lps(result.path)[1] == mask_points_lps(masks["tumour"])
    with pytest.raises(DicomOutputError, match="masks have 3 slices but the source series has 2"):
        stacked = np.concatenate([mask, mask[:1]])
        write_lesion_seg(
            [source],
            {"tumour": Volume(stacked, volume.affine_lps)},
            tmp_path / "bad.dcm",
            lesion_id="L1",
            tracking_uid=TRACKING_UID,
        )
