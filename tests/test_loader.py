"""load_series on synthetic series written by fixtures.dicom_writer (analytic truth)."""

from __future__ import annotations

import gzip
import random
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from fixtures.dicom_writer import (
    DEFAULT_UID_ROOT,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
    make_uid,
    write_series,
)
from pipeline.dicom.errors import (
    DicomInputError,
    InconsistentSeriesError,
    MissingTagError,
    NotDicomError,
    SeriesGeometryError,
    UnreadableFileError,
    UnsupportedTransferSyntaxError,
)
from pipeline.dicom.loader import load_series, read_nifti, write_nifti
from pipeline.image import Volume

PATIENT = PatientInfo("LOAD01", "Loader^Test", "19500101", "M")
STUDY = StudyInfo(make_uid(DEFAULT_UID_ROOT, "loader-study"), "20240301", "101500")


def _series(tag: str, **kw: object) -> SeriesInfo:
    return SeriesInfo(make_uid(DEFAULT_UID_ROOT, "loader-series", tag), 5, tag, **kw)


def _rotation(axis: int, deg: float) -> np.ndarray:
    a = np.radians(deg)
    c, s = np.cos(a), np.sin(a)
    i, j = [(1, 2), (0, 2), (0, 1)][axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def _random_hu(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 3000, size=shape).astype(np.float32)


def _write(vol: Volume, out: Path, tag: str, **kw: object) -> list[Path]:
    modality = kw.pop("modality", "CT")
    return write_series(
        vol, out, modality=modality, patient=PATIENT, study=STUDY, series=_series(tag), **kw
    )


@pytest.mark.parametrize("transfer_syntax", ["explicit_le", "implicit_le", "rle"])
@pytest.mark.parametrize("storage", ["signed", "unsigned"])
def test_round_trip_is_exact(tmp_path: Path, storage: str, transfer_syntax: str):
    vol = Volume.from_geometry(
        _random_hu((4, 10, 12)), origin_lps=(-120.5, -80.25, 310.0), spacing_mm=(0.7, 0.9, 2.5)
    )
    paths = _write(
        vol, tmp_path, storage + transfer_syntax, storage=storage, transfer_syntax=transfer_syntax
    )
    loaded = load_series(paths)
    assert loaded.array.dtype == np.float32
    np.testing.assert_array_equal(loaded.array, vol.array)
    np.testing.assert_allclose(loaded.affine_lps, vol.affine_lps, atol=1e-9)
    assert loaded.modality == "CT"
    assert (
        loaded.source["series_instance_uid"]
        == _series(storage + transfer_syntax).series_instance_uid
    )
    assert loaded.source["study_instance_uid"] == STUDY.study_instance_uid
    assert loaded.source["patient_id"] == "LOAD01"
    assert loaded.source["qc"] == []
    assert loaded.frame_of_reference_uid == make_uid(
        DEFAULT_UID_ROOT, "frame-of-reference", STUDY.study_instance_uid
    )


@pytest.mark.parametrize(
    ("name", "direction"),
    [
        ("prone HFP", np.diag([-1.0, -1.0, 1.0])),  # IOP [-1,0,0, 0,-1,0]
        ("coronal", np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]])),
        ("double oblique", _rotation(0, 17.0) @ _rotation(2, -31.0)),
    ],
)
def test_orientations_round_trip(tmp_path: Path, name: str, direction: np.ndarray):
    vol = Volume.from_geometry(
        _random_hu((5, 8, 9), seed=3),
        origin_lps=(10.0, -20.0, 30.0),
        spacing_mm=(0.8, 0.6, 3.0),
        direction=direction,
    )
    loaded = load_series(_write(vol, tmp_path, name))
    np.testing.assert_array_equal(loaded.array, vol.array)
    # decimal strings keep ≥ 14 significant digits: sub-nanometre agreement
    np.testing.assert_allclose(loaded.affine_lps, vol.affine_lps, atol=1e-9)


def test_slices_sorted_by_position_not_instance_number(tmp_path: Path):
    vol = Volume.from_geometry(_random_hu((6, 4, 5), 7), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 2))
    paths = _write(vol, tmp_path, "shuffled", extra={"InstanceNumber": lambda k: 100 - 7 * k})
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    loaded = load_series(shuffled)
    np.testing.assert_array_equal(loaded.array, vol.array)
    assert loaded.source["sop_instance_uids"] == [
        make_uid(DEFAULT_UID_ROOT, "sop", _series("shuffled").series_instance_uid, k)
        for k in range(6)
    ]


def test_k_against_the_normal_is_flipped_to_a_right_handed_grid(tmp_path: Path):
    # k runs feet-ward (−S) while row × column points head-ward: slices come back reversed
    direction = np.diag([1.0, 1.0, -1.0])
    vol = Volume.from_geometry(
        _random_hu((5, 4, 3), 11),
        origin_lps=(0, 0, 50.0),
        spacing_mm=(1, 1, 2.5),
        direction=direction,
    )
    loaded = load_series(_write(vol, tmp_path, "reversed"))
    np.testing.assert_array_equal(loaded.array, vol.array[::-1])
    np.testing.assert_allclose(loaded.direction, np.eye(3), atol=1e-12)
    # the same voxel sits at the same place in the patient
    np.testing.assert_allclose(loaded.index_to_lps((2, 1, 0)), vol.index_to_lps((2, 1, 4)))


def test_mr_values_scaled_only_when_rescale_present(tmp_path: Path):
    values = np.random.default_rng(5).integers(0, 4000, (3, 6, 6)).astype(np.float32)
    vol = Volume.from_geometry(values, origin_lps=(0, 0, 0), spacing_mm=(1.5, 1.5, 4))
    raw = load_series(_write(vol, tmp_path / "raw", "mr", modality="MR", storage="unsigned"))
    assert raw.modality == "MR"
    np.testing.assert_array_equal(raw.array, values)
    scaled = load_series(
        _write(
            vol,
            tmp_path / "scaled",
            "mr2",
            modality="MR",
            storage="unsigned",
            extra={"RescaleSlope": "0.5", "RescaleIntercept": "3"},
        )
    )
    np.testing.assert_allclose(scaled.array, values * 0.5 + 3, atol=1e-4)


def _linear_field(vol: Volume, gradient: np.ndarray, offset: float) -> np.ndarray:
    """HU = gradient · P_lps + offset at every voxel centre of ``vol``."""
    k, j, i = np.indices(vol.array.shape)
    pts = vol.index_to_lps(np.stack([i, j, k], axis=-1).reshape(-1, 3))
    return (pts @ gradient + offset).reshape(vol.array.shape)


@pytest.mark.parametrize("transfer_syntax", ["explicit_le", "implicit_le"])
def test_gap_rejected_with_the_jump_named(tmp_path: Path, transfer_syntax: str):
    vol = Volume.from_geometry(
        np.zeros((8, 4, 4), np.float32), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 2.5)
    )
    paths = _write(vol, tmp_path, "gap", transfer_syntax=transfer_syntax)
    del paths[5]  # missing slice: 2.5 mm steps then one 5 mm step
    with pytest.raises(SeriesGeometryError, match=r"jumps from 2\.5 to 5\.0 mm") as info:
        load_series(paths)
    assert "uneven slice spacing 2.5–5.0 mm" in str(info.value)
    assert "InstanceNumber 5 → 7" in str(info.value)


def test_gap_resampled_reproduces_a_linear_field(tmp_path: Path):
    grid = Volume.from_geometry(
        np.zeros((9, 5, 6), np.float32), origin_lps=(-3, 4, -20.0), spacing_mm=(1.2, 1.1, 2.0)
    )
    gradient = np.array([0.0, 0.0, 10.0])  # 20 HU per slice: integers at every position
    vol = grid.with_array(_linear_field(grid, gradient, 7.0).astype(np.float32))
    paths = _write(vol, tmp_path, "gap-resample")
    kept = [p for k, p in enumerate(paths) if k not in (3, 4)]  # a 6 mm hole
    loaded = load_series(kept, gap_policy="resample")
    assert loaded.array.shape == vol.array.shape
    np.testing.assert_allclose(loaded.affine_lps, vol.affine_lps, atol=1e-9)
    np.testing.assert_allclose(loaded.array, vol.array, atol=1e-3)
    assert loaded.source["qc"][0].startswith("uneven slice spacing 2.0–6.0 mm resampled to 2.0 mm")


def _interior(acquired: np.ndarray) -> np.ndarray:
    """Acquired voxels whose row neighbours are acquired too (SimpleITK extrapolates the
    half pixel at the edge of a shifted slice as nearest neighbour)."""
    inner = acquired.copy()
    inner[:, 1:, :] &= acquired[:, :-1, :]
    inner[:, :-1, :] &= acquired[:, 1:, :]
    inner[:, [0, -1], :] = False
    return inner


def _tilted(tilt_deg: float, n: int, z_steps_mm: list[float] | None = None) -> Volume:
    """A gantry-tilted CT grid: image columns tilted about L, slice origins moving along S."""
    col = np.array([0.0, np.cos(np.radians(tilt_deg)), -np.sin(np.radians(tilt_deg))])
    affine = np.eye(4)
    affine[:3, 0] = [0.9, 0, 0]
    affine[:3, 1] = 0.8 * col
    affine[:3, 2] = [0, 0, 3.0]  # the table moves along S: not the slice normal
    affine[:3, 3] = [-20.0, -15.0, 40.0]
    return Volume(np.zeros((n, 40, 30), np.float32), affine)


def test_gantry_tilt_resampled_to_orthogonal_grid_exactly_for_a_linear_field(tmp_path: Path):
    grid = _tilted(20.0, 6)
    gradient = np.array([0.4, -1.3, 2.1])
    vol = grid.with_array(_linear_field(grid, gradient, 100.0).astype(np.float32))
    loaded = load_series(_write(vol, tmp_path, "tilt"))
    (note,) = loaded.source["qc"]
    assert note == "gantry tilt 20.0° resampled to orthogonal grid"
    d = loaded.direction
    np.testing.assert_allclose(d.T @ d, np.eye(3), atol=1e-9)  # orthonormal axes
    np.testing.assert_allclose(d[:, :2], grid.direction[:, :2], atol=1e-9)  # in-plane kept
    np.testing.assert_allclose(loaded.spacing_mm, [0.9, 0.8, 3.0 * np.cos(np.radians(20))])
    assert loaded.array.shape[1] > 40  # the grid grew to hold the shifted slices
    truth = _linear_field(loaded, gradient, 100.0)
    acquired = loaded.array > -1024  # outside the acquired slices: fill value
    assert acquired.mean() > 0.7
    # stored HU are rounded (±0.5); linear interpolation of a linear field adds nothing
    assert np.abs(loaded.array - truth)[_interior(acquired)].max() <= 0.5 + 1e-3
    with pytest.raises(SeriesGeometryError, match=r"gantry tilt 20\.0°.*tilt_policy='reject'"):
        load_series(_write(vol, tmp_path / "again", "tilt2"), tilt_policy="reject")


def test_tilt_and_uneven_spacing_together(tmp_path: Path):
    grid = _tilted(12.0, 10)
    gradient = np.array([0.0, 0.7, -1.5])
    vol = grid.with_array(_linear_field(grid, gradient, 0.0).astype(np.float32))
    paths = _write(vol, tmp_path, "tilt-gap")
    del paths[6]
    loaded = load_series(paths, gap_policy="resample")
    assert [q.split(" ")[0] for q in loaded.source["qc"]] == ["uneven", "gantry"]
    truth = _linear_field(loaded, gradient, 0.0)
    acquired = loaded.array > -1024
    assert np.abs(loaded.array - truth)[_interior(acquired)].max() <= 0.5 + 1e-3
    # the first and last acquired planes are kept: same extent along the normal
    normal = loaded.direction[:, 2]
    span = (loaded.index_to_lps((0, 0, loaded.array.shape[0] - 1)) - loaded.origin_lps) @ normal
    assert span == pytest.approx(9 * 3.0 * np.cos(np.radians(12.0)), abs=1e-6)


def test_duplicates_keep_first_and_one_position_is_not_a_volume(tmp_path: Path):
    vol = Volume.from_geometry(_random_hu((3, 4, 4), 2), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 1))
    first = _write(vol, tmp_path / "a", "dup")
    second = write_series(
        vol.with_array(vol.array + 1),
        tmp_path / "b",
        modality="CT",
        patient=PATIENT,
        study=STUDY,
        series=_series("dup"),
        uid_root="1.2.3.4",
        extra={"InstanceNumber": lambda k: 10 + k},
    )
    loaded = load_series(second + first)
    np.testing.assert_array_equal(loaded.array, vol.array)  # lowest InstanceNumber wins
    assert loaded.source["qc"] == ["duplicate positions: kept first of 2"]

    flat = Volume.from_geometry(np.zeros((1, 4, 4)), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 1))
    copies = [
        write_series(
            flat,
            tmp_path / f"c{n}",
            modality="CT",
            patient=PATIENT,
            study=STUDY,
            series=_series("one-position"),
            uid_root=f"1.2.{n + 1}",
        )[0]
        for n in range(4)
    ]
    with pytest.raises(SeriesGeometryError, match="4 slices at one position: not a volume"):
        load_series(copies)


def test_single_slice_needs_a_thickness(tmp_path: Path):
    vol = Volume.from_geometry(_random_hu((1, 4, 4)), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 5))
    loaded = load_series(_write(vol, tmp_path / "a", "single"))
    assert loaded.spacing_mm[2] == pytest.approx(5.0)
    bare = _write(
        vol, tmp_path / "b", "single2", extra={"SliceThickness": None, "SpacingBetweenSlices": None}
    )
    with pytest.raises(MissingTagError, match="slice spacing unknown"):
        load_series(bare)


@pytest.mark.parametrize(
    "keyword", ["ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "PixelData"]
)
def test_missing_geometry_or_pixels(tmp_path: Path, keyword: str):
    vol = Volume.from_geometry(np.zeros((2, 4, 4)), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 1))
    paths = _write(vol, tmp_path, "missing" + keyword, extra={keyword: None})
    with pytest.raises(MissingTagError, match=keyword.replace("PixelData", "Pixel Data")) as info:
        load_series(paths)
    assert str(paths[0]) in str(info.value)  # the error names the file


def test_inconsistent_and_bad_files(tmp_path: Path):
    small = Volume.from_geometry(np.zeros((2, 4, 4)), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 1))
    big = Volume.from_geometry(np.zeros((1, 4, 5)), origin_lps=(0, 0, 9), spacing_mm=(1, 1, 1))
    a = _write(small, tmp_path / "a", "mixed")
    b = _write(big, tmp_path / "b", "mixed")
    with pytest.raises(InconsistentSeriesError, match=r"Rows×Columns differ: 4×4 .* vs 4×5"):
        load_series(a + b)
    other = _write(small, tmp_path / "c", "other-series")
    with pytest.raises(InconsistentSeriesError, match="files of 2 series"):
        load_series(a + other)

    truncated = tmp_path / "truncated.dcm"
    truncated.write_bytes(a[0].read_bytes()[:-10])  # cut inside the 32-byte Pixel Data
    with pytest.raises(UnreadableFileError, match="truncated"):
        load_series([truncated])
    text = tmp_path / "notes.txt"
    text.write_text("not an image\n" * 20)
    with pytest.raises(NotDicomError):
        load_series([text])
    with pytest.raises(DicomInputError, match="at least one file"):
        load_series([])
    with pytest.raises(ValueError, match="gap_policy"):
        load_series(a, gap_policy="ignore")  # type: ignore[arg-type]


def test_nifti_round_trip_fast_gzip(tmp_path: Path):
    vol = Volume.from_geometry(
        _random_hu((3, 5, 4)),
        origin_lps=(1.5, -2.0, 3.0),
        spacing_mm=(0.7, 0.8, 2.0),
        direction=_rotation(1, 25.0),
    )
    path = write_nifti(vol, tmp_path / "out" / "vol.nii.gz")
    raw = path.read_bytes()
    assert raw[:2] == b"\x1f\x8b" and raw[8] == 4  # gzip, XFL=4: fastest compression level
    back = read_nifti(path)
    np.testing.assert_array_equal(back.array, vol.array)
    np.testing.assert_allclose(back.affine_lps, vol.affine_lps, atol=1e-5)  # float32 header
    with gzip.open(path) as fh:
        assert len(fh.read()) == 352 + vol.array.size * 4


def test_transfer_syntax_without_decoder(tmp_path: Path):
    vol = Volume.from_geometry(np.zeros((1, 4, 4)), origin_lps=(0, 0, 0), spacing_mm=(1, 1, 1))
    (path,) = _write(vol, tmp_path, "mpeg")
    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder installed
    ds.PixelData = encapsulate([b"\x00" * 32])
    ds["PixelData"].VR = "OB"
    ds.save_as(tmp_path / "mpeg.dcm", enforce_file_format=True)
    with pytest.raises(UnsupportedTransferSyntaxError, match="no installed decoder for MPEG2"):
        load_series([tmp_path / "mpeg.dcm"])


def test_read_nifti_applies_scaling_as_float32(tmp_path: Path):
    import nibabel as nib

    stored = np.arange(24, dtype=np.int16).reshape(2, 3, 4)  # (i, j, k) NIfTI order
    img = nib.Nifti1Image(stored, np.diag([-0.5, -0.5, 2.0, 1.0]))
    img.header.set_slope_inter(2.0, -1024.0)
    nib.save(img, tmp_path / "scaled.nii")
    vol = read_nifti(tmp_path / "scaled.nii")
    assert vol.array.dtype == np.float32
    np.testing.assert_array_equal(vol.array, np.transpose(stored * 2.0 - 1024.0, (2, 1, 0)))
    np.testing.assert_allclose(vol.affine_lps, np.diag([0.5, 0.5, 2.0, 1.0]))  # RAS → LPS
