"""load_series against real data (../shared/data) and against a second implementation
(dcm2niix / dicom2nifti reference NIfTIs): same voxels, same geometry."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from scipy.ndimage import map_coordinates

from fixtures.dicom_writer import (
    DEFAULT_UID_ROOT,
    PatientInfo,
    SeriesInfo,
    StudyInfo,
    make_uid,
    write_series,
)
from pipeline.dicom.errors import (
    InconsistentSeriesError,
    MissingTagError,
    NotDicomError,
    SeriesGeometryError,
    UnreadableFileError,
)
from pipeline.dicom.loader import load_series
from pipeline.dicom.loader_pixels import decode_frames, read_dataset
from pipeline.image import Volume
from tests.conftest import require_tool, shared_data

DATA_STORE = "pydicom/data_store/data_store/data"


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _ref_on_our_grid(vol: Volume, ref: nib.Nifti1Image) -> np.ndarray:
    """The reference voxels in our (k, j, i) order, after checking the two grids coincide:
    our index→reference index must be a signed permutation plus an integer shift (1e-3)."""
    m = np.linalg.inv(ref.affine) @ vol.to_nifti().affine
    perm = np.round(m[:3, :3])
    assert np.abs(m[:3, :3] - perm).max() < 1e-3, f"axes differ: {m[:3, :3]}"
    assert np.abs(m[:3, 3] - np.round(m[:3, 3])).max() < 1e-3, f"origins differ: {m[:3, 3]}"
    data = np.asanyarray(ref.dataobj)
    data = data[..., 0] if data.ndim == 4 else data
    ijk = np.indices(vol.shape_ijk).reshape(3, -1)
    ref_ijk = (perm @ ijk + np.round(m[:3, 3])[:, None]).astype(int)
    for axis in range(3):
        assert 0 <= ref_ijk[axis].min() and ref_ijk[axis].max() < data.shape[axis]
    values = data[ref_ijk[0], ref_ijk[1], ref_ijk[2]].reshape(vol.shape_ijk)
    return np.transpose(values, (2, 1, 0))


# --------------------------------------------------------------------------- decoders


@pytest.mark.needs_shared_data
def test_nine_transfer_syntaxes_decode_identically_and_match_dcm2niix():
    folder = shared_data("dcm_qa_ts")
    volumes = [load_series([folder / "In" / f"{n}.dcm"]) for n in range(1, 10)]
    syntaxes = {
        str(read_dataset(folder / "In" / f"{n}.dcm").file_meta.TransferSyntaxUID)
        for n in range(1, 10)
    }
    assert len(syntaxes) == 7  # LE explicit/implicit, BE, RLE, JPEG lossless, JPEG-LS, J2K
    for n, vol in enumerate(volumes, start=1):
        assert vol.array.shape == (35, 64, 64)  # Siemens mosaic split into 35 slices
        np.testing.assert_array_equal(vol.array, volumes[0].array, err_msg=f"{n}.dcm")
        np.testing.assert_allclose(vol.affine_lps, volumes[0].affine_lps, atol=1e-9)
    ref = nib.load(folder / "Ref" / "1.nii")
    np.testing.assert_array_equal(volumes[0].array, _ref_on_our_grid(volumes[0], ref))


@pytest.mark.needs_shared_data
@pytest.mark.parametrize(
    ("name", "ref", "lo", "hi"),
    [
        ("12bitUnsigned", "2", 0, 4095),
        ("12bitUnsigned_0x0F0F", "3", 0, 4095),  # stripes 0x0F0F → 3855, 0xFFFF → 4095
        ("12bitSigned_0x0F0F", "4", -2048, 2047),  # high bit 11 is the sign
    ],
)
def test_12_bit_stored_values_match_dcm2niix(name: str, ref: str, lo: int, hi: int):
    folder = shared_data("dcm_qa_12bit")
    vol = load_series([folder / "In" / f"{name}.dcm"])
    assert lo <= vol.array.min() and vol.array.max() <= hi
    expected = _ref_on_our_grid(vol, nib.load(folder / "Ref" / f"{ref}.nii"))
    np.testing.assert_array_equal(vol.array, expected)
    if name == "12bitUnsigned_0x0F0F":
        assert {3855.0, 4095.0} <= set(np.unique(vol.array).tolist())
    if name == "12bitSigned_0x0F0F":
        assert {-241.0, -1.0} <= set(np.unique(vol.array).tolist())


@pytest.mark.needs_shared_data
def test_lossless_j2k_ct_equals_uncompressed():
    folder = shared_data(DATA_STORE)
    unc = load_series([folder / "693_UNCR.dcm"])
    j2k = load_series([folder / "693_J2KR.dcm"])
    np.testing.assert_array_equal(j2k.array, unc.array)
    assert unc.modality == "CT" and unc.array.shape == (1, 512, 512)


@pytest.mark.needs_shared_data
def test_enhanced_mr_frames_decode_identically_across_syntaxes():
    folder = shared_data(DATA_STORE)
    names = [
        "emri_small",
        "emri_small_big_endian",
        "emri_small_RLE",
        "emri_small_jpeg_ls_lossless",
        "emri_small_jpeg_2k_lossless",
    ]
    frames = [decode_frames(read_dataset(folder / f"{n}.dcm")) for n in names]
    for name, f in zip(names, frames, strict=True):
        assert f.shape == (10, 64, 64), name
        np.testing.assert_array_equal(f, frames[0], err_msg=name)
    # this cut-down file has no functional groups: there is no geometry to build a volume
    with pytest.raises(MissingTagError, match="no slice geometry"):
        load_series([folder / "emri_small.dcm"])
    with pytest.raises(UnreadableFileError, match="truncated"):
        load_series([folder / "emri_small_jpeg_2k_lossless_too_short.dcm"])


@pytest.mark.needs_shared_data
def test_enhanced_ct_per_frame_positions_and_shared_rescale():
    path = shared_data(DATA_STORE) / "eCT_Supplemental.dcm"
    vol = load_series([path])
    ds = pydicom.dcmread(path)
    assert vol.array.shape == (2, 512, 512)
    # IOP row = −L, column = +P: the normal row × column is −S, so k grows foot-ward and
    # the upper frame (S = −149, frame 2 in the file) comes first
    np.testing.assert_allclose(vol.origin_lps, [99.5, -301.5, -149.0])
    np.testing.assert_allclose(vol.spacing_mm, [0.388672, 0.388672, 10.0])
    np.testing.assert_allclose(vol.direction, np.diag([-1.0, 1.0, -1.0]), atol=1e-12)
    # each slice holds the frame acquired at its position
    raw = ds.pixel_array.astype(np.float32) - 1024.0  # shared RescaleIntercept −1024
    positions = [
        float(f.PlanePositionSequence[0].ImagePositionPatient[2])
        for f in ds.PerFrameFunctionalGroupsSequence
    ]
    for k in range(2):
        z = vol.index_to_lps((0, 0, k))[2]
        np.testing.assert_array_equal(vol.array[k], raw[positions.index(z)])
    assert vol.frame_of_reference_uid == ds.FrameOfReferenceUID


# --------------------------------------------------------------------- geometry references

_DICOM2NIFTI_CASES = [
    "generic/anatomical/001",
    "generic/anatomical/001_implicit",
    "generic/anatomical/002_non_isotropic",
    "generic/compressed/001",
    "generic/compressed_j2k/001",
    "generic/compressed_jpeg/001",
    "generic/compressed_jpegls/001",
    "generic/compressed_rle/001",
    "ge/anatomical/001",
    "ge/anatomical/001_implicit",
    "philips_enhanced/anatomical/001",
    "siemens_multiframe/anatomical/001",
    "failing/slicecount/001",
]


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("case", _DICOM2NIFTI_CASES)
def test_matches_dicom2nifti_ground_truth(case: str):
    folder = shared_data(f"dicom2nifti/{case}")
    vol = load_series(_files(folder))
    ref = nib.load(folder.parent / f"{folder.name}_ground_truth.nii.gz")
    np.testing.assert_allclose(vol.array, _ref_on_our_grid(vol, ref), atol=1e-4)
    assert vol.source["qc"] == []


@pytest.mark.needs_shared_data
def test_dicom2nifti_failing_cases_raise_specific_errors():
    base = shared_data("dicom2nifti/failing")
    with pytest.raises(SeriesGeometryError, match="4 slices at one position: not a volume"):
        load_series(_files(base / "notavolume/001"))
    with pytest.raises(
        SeriesGeometryError,
        match=r"uneven slice spacing 5\.0–10\.0 mm: slice increment jumps from 5\.0 to 10\.0 mm"
        r" between sorted slices 2 and 3 \(InstanceNumber 9 → 10\)",
    ):
        load_series(_files(base / "sliceincrement/001"))
    with pytest.raises(SeriesGeometryError, match=r"jumps from 0\.75 to 1\.5 mm"):
        load_series(_files(base / "sliceincrement/002"))
    with pytest.raises(InconsistentSeriesError, match="ImageOrientationPatient differs"):
        load_series(_files(base / "sliceorientation/001"))
    with pytest.raises(SeriesGeometryError, match=r"gantry tilt 14\.0°"):
        load_series(_files(base / "gantrytilting/001"), tilt_policy="reject")
    tilted = load_series(_files(base / "gantrytilting/001"))
    assert tilted.source["qc"] == ["gantry tilt 14.0° resampled to orthogonal grid"]
    gap = load_series(_files(base / "sliceincrement/002"), gap_policy="resample")
    assert gap.array.shape[0] == 5  # 0.75 mm grid over the 3 mm span, the hole filled
    assert [q.split(" ")[0] for q in gap.source["qc"]] == ["uneven", "gantry"]


@pytest.mark.needs_shared_data
def test_bad_files_raise_specific_errors():
    folder = shared_data("pydicom/test_files")
    with pytest.raises(UnreadableFileError, match=r"pixel data truncated: 8130 bytes"):
        load_series([folder / "MR_truncated.dcm"])
    with pytest.raises(NotDicomError):
        load_series([folder / "no_meta.dcm"])
    with pytest.raises(MissingTagError, match="no Pixel Data"):
        load_series([folder / "rtplan.dcm"])
    with pytest.raises(MissingTagError, match="ImagePositionPatient is missing"):
        load_series([folder / "JPEG2000.dcm"])
    with pytest.raises(UnreadableFileError, match="colour"):
        load_series(_files(shared_data("dicom2nifti/generic/rgb/001")))
    with pytest.raises(MissingTagError, match="slice spacing unknown"):
        load_series(_files(shared_data("dicom2nifti/ge/anatomical/001_single_slice")))


# ------------------------------------------------------------ GE gantry tilt + uneven gaps


@pytest.mark.needs_shared_data
def test_ge_tilted_uneven_ct_rejected_then_resampled():
    folder = shared_data("dcm_qa_ct")
    files = _files(folder / "GE")
    with pytest.raises(
        SeriesGeometryError,
        match=r"uneven slice spacing 1\.08–7\.0 mm: slice increment jumps from 4\.0 to 1\.08 mm",
    ):
        load_series(files)
    vol = load_series(files, gap_policy="resample")
    assert vol.source["qc"][0].startswith("uneven slice spacing 1.08–7.0 mm resampled to 1.08 mm")
    assert vol.source["qc"][1] == "gantry tilt 18.5° resampled to orthogonal grid"
    first = pydicom.dcmread(files[0])
    assert float(first.GantryDetectorTilt) == 18.5
    # in-plane axes are dcm2niix's ImageOrientationPatientDICOM; k is their normal
    iop = json.loads((folder / "Ref" / "_2.json").read_text())["ImageOrientationPatientDICOM"]
    np.testing.assert_allclose(vol.direction[:, 0], iop[:3], atol=1e-5)
    np.testing.assert_allclose(vol.direction[:, 1], iop[3:], atol=1e-5)
    np.testing.assert_allclose(vol.direction[:, 2], np.cross(iop[:3], iop[3:]), atol=1e-5)
    assert vol.array.shape == (135, 611, 512)  # dcm2niix's tilt-corrected grid has 611 rows too
    # every acquired slice is found again at its own place in the patient. The first and
    # last slices lie on grid planes (only the in-plane shift interpolates); the others are
    # blended from neighbours 4–7 mm apart, so edges differ more there.
    rows, cols = np.mgrid[96:416:2, 96:416:2]
    for path in [*files[::3], files[-1]]:
        ds = pydicom.dcmread(path)
        hu = ds.pixel_array.astype(np.float32)[96:416:2, 96:416:2] + float(ds.RescaleIntercept)
        ipp = np.array(ds.ImagePositionPatient, float)
        row_dir, col_dir = np.array(iop[:3]), np.array(iop[3:])
        spacing = float(ds.PixelSpacing[0])
        pts = ipp + (cols[..., None] * row_dir + rows[..., None] * col_dir) * spacing
        ijk = vol.lps_to_index(pts.reshape(-1, 3))
        sampled = map_coordinates(vol.array, ijk[:, ::-1].T, order=1, mode="nearest")
        error_hu = np.abs(sampled - hu.reshape(-1))
        on_plane = path in (files[0], files[-1])
        assert abs(ijk[0, 2] - round(ijk[0, 2])) < 1e-4 or not on_plane
        correlation = np.corrcoef(sampled, hu.reshape(-1))[0, 1]
        assert correlation > (0.9995 if on_plane else 0.995), path.name
        assert np.median(error_hu) < (1.5 if on_plane else 12.0), path.name
        if path == files[0]:  # negative control: a 1 mm geometry error is caught
            off = vol.lps_to_index(pts.reshape(-1, 3) + np.array(iop[3:]) * 1.0)
            wrong = map_coordinates(vol.array, off[:, ::-1].T, order=1, mode="nearest")
            assert np.median(np.abs(wrong - hu.reshape(-1))) > 3 * np.median(error_hu)


# --------------------------------------------------------------- dcm2niix on our own files


@pytest.mark.needs_system
@pytest.mark.parametrize(
    ("name", "direction", "storage", "transfer_syntax"),
    [
        ("prone", np.diag([-1.0, -1.0, 1.0]), "signed", "explicit_le"),
        ("oblique", None, "unsigned", "rle"),
    ],
)
def test_synthetic_series_match_dcm2niix(
    tmp_path: Path, name: str, direction: np.ndarray | None, storage: str, transfer_syntax: str
):
    dcm2niix = require_tool("dcm2niix")
    if direction is None:
        a, b = np.radians(20.0), np.radians(-12.0)
        rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
        rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
        direction = rx @ rz
    values = np.random.default_rng(4).integers(-1000, 1500, (6, 20, 24)).astype(np.float32)
    vol = Volume.from_geometry(
        values, origin_lps=(-40.0, 25.0, 112.5), spacing_mm=(0.75, 0.8, 2.5), direction=direction
    )
    write_series(
        vol,
        tmp_path / "dicom",
        modality="CT",
        storage=storage,
        transfer_syntax=transfer_syntax,
        patient=PatientInfo("N2N"),
        study=StudyInfo(make_uid(DEFAULT_UID_ROOT, "n2n"), "20240101"),
        series=SeriesInfo(
            make_uid(DEFAULT_UID_ROOT, "n2n", name),
            1,
            name,
            patient_position="HFP" if name == "prone" else "HFS",
        ),
    )
    loaded = load_series(_files(tmp_path / "dicom"))
    (tmp_path / "nii").mkdir()
    subprocess.run(
        [dcm2niix, "-z", "n", "-f", "out", "-o", str(tmp_path / "nii"), str(tmp_path / "dicom")],
        check=True,
        capture_output=True,
    )
    ref = nib.load(tmp_path / "nii" / "out.nii")
    np.testing.assert_array_equal(loaded.array, _ref_on_our_grid(loaded, ref))


@pytest.mark.needs_system
@pytest.mark.needs_shared_data
@pytest.mark.parametrize(
    "folder",
    [
        # 20 J2K slices of 512², decoded twice: ~2 s alone, 7 s on a busy machine
        pytest.param("totalsegmentator/example_ct_dicom", marks=pytest.mark.slow),
        "dcmqi/data/segmentations/ct-3slice",
    ],
)
def test_real_ct_matches_dcm2niix(tmp_path: Path, folder: str):
    dcm2niix = require_tool("dcm2niix")
    source = shared_data(folder)
    vol = load_series(_files(source))
    subprocess.run(
        [dcm2niix, "-z", "n", "-f", "ref", "-o", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
    )
    (ref_path,) = tmp_path.glob("ref*.nii")
    ref = nib.load(ref_path)
    expected = _ref_on_our_grid(vol, ref)  # nibabel applies dcm2niix's scl_slope/scl_inter
    np.testing.assert_array_equal(vol.array, expected.astype(np.float32))
    assert vol.modality == "CT" and vol.source["qc"] == []
