"""fixtures.dicom_writer: valid, deterministic DICOM series from a Volume."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import UID

from fixtures.dicom_writer import (
    DEFAULT_UID_ROOT,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
    make_uid,
    write_localizer,
    write_secondary_capture,
    write_series,
)
from pipeline.dicom.loader import load_series
from pipeline.image import Volume
from tests.conftest import require_tool

PATIENT = PatientInfo("CRYO001", "Test^Patient", "19580312", "F")
STUDY = StudyInfo(make_uid(DEFAULT_UID_ROOT, "study", 1), "20240115", "093000", "ACC1", "CT ABD")


def _series(tag: str, **kw: object) -> SeriesInfo:
    return SeriesInfo(make_uid(DEFAULT_UID_ROOT, "series", tag), 3, f"series {tag}", **kw)


def _volume(values: np.ndarray, direction: object = None) -> Volume:
    return Volume.from_geometry(
        values, origin_lps=(-150.5, -170.25, 42.0), spacing_mm=(0.6, 0.8, 2.5), direction=direction
    )


def _rescaled(ds: pydicom.Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1))
    return ds.pixel_array.astype(np.float64) * slope + float(ds.get("RescaleIntercept", 0))


@pytest.mark.parametrize("transfer_syntax", ["explicit_le", "implicit_le", "rle"])
@pytest.mark.parametrize("storage", ["signed", "unsigned"])
def test_ct_values_round_and_clip_to_storage(tmp_path: Path, storage: str, transfer_syntax: str):
    rng = np.random.default_rng(1)
    hu = rng.uniform(-1000, 3000, size=(3, 12, 10)).astype(np.float32)
    hu[0, 0, :4] = [-3000.0, 40000.0, 12.4, 12.6]  # out of range / rounding
    paths = write_series(
        _volume(hu),
        tmp_path,
        modality="CT",
        patient=PATIENT,
        study=STUDY,
        series=_series(storage + transfer_syntax),
        storage=storage,
        transfer_syntax=transfer_syntax,
    )
    lo, hi = (-32768, 32767) if storage == "signed" else (-1024, 65535 - 1024)
    expected = np.clip(np.rint(hu), lo, hi)
    assert expected[0, 0, :4].tolist() == [max(-3000, lo), min(40000, hi), 12, 13]
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        assert (
            ds.file_meta.TransferSyntaxUID
            == {
                "explicit_le": "1.2.840.10008.1.2.1",
                "implicit_le": "1.2.840.10008.1.2",
                "rle": "1.2.840.10008.1.2.5",
            }[transfer_syntax]
        )
        assert ds.PixelRepresentation == (1 if storage == "signed" else 0)
        assert float(ds.RescaleIntercept) == (0.0 if storage == "signed" else -1024.0)
        assert ds.RescaleType == "HU"
        np.testing.assert_array_equal(_rescaled(ds), expected[k])


def test_geometry_tags_follow_the_affine(tmp_path: Path):
    # prone patient: rows run to patient right (-L), columns run anterior (-P)
    direction = np.array([[-1.0, 0, 0], [0, -1.0, 0], [0, 0, 1.0]])
    vol = _volume(np.zeros((4, 6, 5), np.int16), direction)
    paths = write_series(
        vol,
        tmp_path,
        modality="CT",
        patient=PATIENT,
        study=STUDY,
        series=_series("prone", patient_position="HFP", slice_thickness_mm=3.0),
    )
    for k, path in enumerate(paths):
        ds = pydicom.dcmread(path)
        np.testing.assert_allclose(
            [float(v) for v in ds.ImagePositionPatient], vol.index_to_lps((0, 0, k)), atol=1e-9
        )
        assert [float(v) for v in ds.ImageOrientationPatient] == [-1, 0, 0, 0, -1, 0]
        assert [float(v) for v in ds.PixelSpacing] == [0.8, 0.6]  # [row (j), column (i)]
        assert (ds.Rows, ds.Columns) == (6, 5)
        assert float(ds.SliceThickness) == 3.0
        assert float(ds.SpacingBetweenSlices) == 2.5
        assert ds.InstanceNumber == k + 1
        assert ds.PatientPosition == "HFP"
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
        assert ds.SOPInstanceUID == ds.file_meta.MediaStorageSOPInstanceUID
        assert ds.StudyInstanceUID == STUDY.study_instance_uid
        assert ds.PatientID == "CRYO001"


def test_oblique_direction_cosines_survive_decimal_strings(tmp_path: Path):
    a = np.radians(23.0)
    direction = np.array(
        [[np.cos(a), 0, np.sin(a)], [0, 1.0, 0], [-np.sin(a), 0, np.cos(a)]]
    )  # rotation about the P axis
    vol = _volume(np.zeros((2, 4, 4), np.int16), direction)
    (p0, _) = write_series(
        vol, tmp_path, modality="MR", patient=PATIENT, study=STUDY, series=_series("obl")
    )
    iop = np.array([float(v) for v in pydicom.dcmread(p0).ImageOrientationPatient])
    np.testing.assert_allclose(iop, np.r_[direction[:, 0], direction[:, 1]], atol=1e-13)


def test_writing_is_deterministic_and_uids_valid(tmp_path: Path):
    vol = _volume(np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4))
    kw = {"modality": "CT", "patient": PATIENT, "study": STUDY, "series": _series("det")}
    a = write_series(vol, tmp_path / "a", **kw)
    b = write_series(vol, tmp_path / "b", **kw)
    assert [p.name for p in a] == [p.name for p in b]
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b, strict=True))
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in a}
    assert len(uids) == 2
    for uid in [*uids, make_uid("1.2.3", "x" * 1000)]:
        assert len(uid) <= 64 and UID(uid).is_valid
    assert make_uid("1.2.3", "a", 1) == make_uid("1.2.3", "a", 1) != make_uid("1.2.3", "a", 2)
    with pytest.raises(ValueError, match="root"):
        make_uid("1.2.x", "a")


@pytest.mark.parametrize("transfer_syntax", ["explicit_le", "implicit_le", "rle"])
@pytest.mark.parametrize("modality", ["CT", "MR"])
def test_files_are_what_pydicom_writes(tmp_path: Path, modality: str, transfer_syntax: str):
    """Files are assembled from cached element encodings: byte for byte what pydicom's
    save_as(enforce_file_format=True) writes for the same dataset."""
    vol = _volume(np.arange(3 * 4 * 5, dtype=np.float32).reshape(3, 4, 5) * 7 - 100)
    paths = write_series(
        vol,
        tmp_path,
        modality=modality,
        patient=PATIENT,
        study=STUDY,
        series=_series(modality + transfer_syntax, contrast_agent="Iohexol"),
        storage="unsigned",
        transfer_syntax=transfer_syntax,
        extra={"InstitutionName": "Here", "EchoTime": lambda k: str(2 + k), "KVP": None},
    )
    paths.append(write_secondary_capture(tmp_path, patient=PATIENT, study=STUDY,
                                         series=_series("sc" + modality + transfer_syntax)))
    for path in paths:
        buffer = io.BytesIO()
        pydicom.dcmread(path).save_as(buffer, enforce_file_format=True)
        assert buffer.getvalue() == path.read_bytes()


def test_contrast_agent_absent_or_present(tmp_path: Path):
    vol = _volume(np.zeros((1, 2, 2), np.int16))
    kw = {"modality": "CT", "patient": PATIENT, "study": STUDY}
    (plain,) = write_series(vol, tmp_path / "u", series=_series("u"), **kw)
    (post,) = write_series(
        vol,
        tmp_path / "c",
        series=_series("c", contrast_agent="Iohexol 350", contrast_start_time="093015"),
        **kw,
    )
    assert "ContrastBolusAgent" not in pydicom.dcmread(plain)
    ds = pydicom.dcmread(post)
    assert ds.ContrastBolusAgent == "Iohexol 350"
    assert ds.ContrastBolusStartTime == "093015"


def test_extra_file_names_and_mr(tmp_path: Path):
    vol = _volume(np.full((3, 2, 2), 250.0, np.float32))
    paths = write_series(
        vol,
        tmp_path,
        modality="MR",
        patient=PATIENT,
        study=STUDY,
        series=_series("mr"),
        storage="unsigned",
        file_names=lambda k: f"slice_{k:03d}.dcm",
        extra={"ImagePositionPatient": None, "EchoTime": lambda k: str(2 + k)},
    )
    assert [p.name for p in paths] == ["slice_000.dcm", "slice_001.dcm", "slice_002.dcm"]
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        assert "ImagePositionPatient" not in ds
        assert float(ds.EchoTime) == 2 + k
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"
        assert "RescaleIntercept" not in ds
        assert ds.pixel_array.dtype == np.uint16 and np.all(ds.pixel_array == 250)


def test_invalid_arguments_are_refused(tmp_path: Path):
    vol = _volume(np.zeros((1, 2, 2), np.float32))
    kw = {"patient": PATIENT, "study": STUDY, "series": _series("bad")}
    with pytest.raises(ValueError, match="modality"):
        write_series(vol, tmp_path, modality="PT", **kw)
    with pytest.raises(ValueError, match="storage"):
        write_series(vol, tmp_path, modality="CT", storage="float", **kw)
    with pytest.raises(ValueError, match="transfer_syntax"):
        write_series(vol, tmp_path, modality="CT", transfer_syntax="jpeg", **kw)
    with pytest.raises(ValueError, match="NaN"):
        write_series(vol.with_array(np.full((1, 2, 2), np.nan)), tmp_path, modality="CT", **kw)
    sheared = Volume(
        np.zeros((1, 2, 2)), np.array([[1, 0.5, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    )
    with pytest.raises(ValueError, match="not orthogonal"):
        write_series(sheared, tmp_path, modality="CT", **kw)


def test_localizer_and_secondary_capture(tmp_path: Path):
    coronal = np.array([[1.0, 0, 0], [0, 0, 1.0], [0, -1.0, 0]])
    scout = Volume.from_geometry(
        np.zeros((1, 8, 6), np.float32),
        origin_lps=(0, 0, 0),
        spacing_mm=(1, 1, 1),
        direction=coronal,
    )
    loc = write_localizer(
        scout, tmp_path, modality="CT", patient=PATIENT, study=STUDY, series=_series("loc")
    )
    ds = pydicom.dcmread(loc)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    back = load_series([loc])  # the coronal scout comes back on its own grid
    np.testing.assert_array_equal(back.array, scout.array)
    np.testing.assert_allclose(back.affine_lps, scout.affine_lps, atol=1e-9)
    with pytest.raises(ValueError, match="one slice"):
        write_localizer(
            _volume(np.zeros((2, 2, 2))),
            tmp_path,
            modality="CT",
            patient=PATIENT,
            study=STUDY,
            series=_series("loc2"),
        )
    sc = write_secondary_capture(
        tmp_path, patient=PATIENT, study=STUDY, series=_series("dose", body_part="")
    )
    ds = pydicom.dcmread(sc)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert "ImagePositionPatient" not in ds and "ImageOrientationPatient" not in ds
    assert ds.pixel_array.shape == (512, 512) and ds.pixel_array.max() == 255


@pytest.mark.needs_system
def test_dciodvfy_reports_no_errors(tmp_path: Path):
    dciodvfy = require_tool("dciodvfy")
    vol = _volume(np.full((2, 4, 4), 30.0, np.float32))
    files = [
        write_series(
            vol,
            tmp_path / "ct",
            modality="CT",
            patient=PATIENT,
            study=STUDY,
            series=_series("v1", contrast_agent="Iohexol"),
            storage="unsigned",
        )[0],
        write_series(
            vol,
            tmp_path / "mr",
            modality="MR",
            patient=PATIENT,
            study=STUDY,
            series=_series("v2"),
            transfer_syntax="rle",
        )[0],
        write_localizer(
            vol.crop_ijk((0, 0, 0), (4, 4, 1)),
            tmp_path / "loc",
            modality="CT",
            patient=PATIENT,
            study=STUDY,
            series=_series("v3"),
        ),
        write_secondary_capture(
            tmp_path / "sc", patient=PATIENT, study=STUDY, series=_series("v4")
        ),
    ]
    for f in files:
        out = subprocess.run([dciodvfy, str(f)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], f"{f}: {errors}"


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8])
def test_rle_frames_equal_pydicoms_encoder(dtype: type):
    from pydicom.pixels.encoders.native import _encode_segment

    from fixtures.dicom_writer import _rle_frame

    rng = np.random.default_rng(5)
    info = np.iinfo(dtype)
    for rows, cols in [(1, 1), (3, 7), (17, 300), (40, 129)]:
        frame = rng.integers(info.min, info.max, (rows, cols), endpoint=True, dtype=dtype)
        frame[: rows // 2, : cols // 2] = 7  # replicate runs, some longer than 128
        pairs = frame[rows // 2 :]  # runs of two
        pairs[:, 1::2] = pairs[:, : 2 * (cols // 2) : 2]
        raw = frame.astype(frame.dtype.newbyteorder("<")).tobytes()
        n = frame.dtype.itemsize
        segments = [bytes(_encode_segment(raw[b::n], cols)) for b in reversed(range(n))]
        encoded = _rle_frame(frame)
        assert encoded[64:] == b"".join(segments)
        assert int.from_bytes(encoded[:4], "little") == n
