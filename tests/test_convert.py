"""`cryotrack convert`: resolve a series in an archive, load it, write NIfTI."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from fixtures.dicom_writer import write_secondary_capture
from pipeline.cli import main
from pipeline.dicom.convert import SeriesNotFoundError, convert_series
from pipeline.dicom.errors import DicomInputError
from pipeline.dicom.index import index_archive
from pipeline.image import Volume
from tests.conftest import shared_data
from tests.test_index_helpers import ct_volume, patient, series_info, study, uid, write_ct


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("conv")
    write_ct(root / "a", ct_volume(12, spacing_k_mm=2.5, size=20), series_info("a", 1, "A"))
    split = series_info("split", 2, "split")
    write_ct(root / "s", ct_volume(12), split)
    write_ct(root / "s", ct_volume(3, size=24, z0_mm=80.0), split,
             file_names=lambda k: f"odd{k}.dcm",
             extra={"SOPInstanceUID": lambda k: uid("split-odd", k)})
    gap = write_ct(root / "g", ct_volume(14), series_info("gap", 3, "gap"))
    gap[5].unlink()
    write_secondary_capture(root / "dose", patient=patient(), study=study(),
                            series=series_info("dose", 99, "Dose Report"))
    return root


def test_convert_by_uid_round_trips_voxels_and_geometry(archive: Path, tmp_path: Path) -> None:
    out = convert_series(archive, uid("series", "a"), tmp_path / "a.nii.gz",
                         gap_policy="reject")
    assert out == tmp_path / "a.nii.gz" and out.is_file()
    vol = Volume.from_nifti(nib.load(out))
    truth = ct_volume(12, spacing_k_mm=2.5, size=20)
    assert vol.array.shape == truth.array.shape
    np.testing.assert_allclose(vol.array, truth.array, atol=0.5)
    np.testing.assert_allclose(vol.affine_lps, truth.affine_lps, atol=1e-3)


def test_convert_split_part_by_series_key(archive: Path, tmp_path: Path) -> None:
    main_part = convert_series(archive, uid("series", "split"), tmp_path / "m.nii",
                               gap_policy="reject")
    assert nib.load(main_part).shape == (16, 16, 12)


def test_unknown_series_says_how_many_exist(archive: Path, tmp_path: Path) -> None:
    n = len(index_archive(archive, content_check=False).series)
    with pytest.raises(SeriesNotFoundError, match=rf"holds {n} series"):
        convert_series(archive, "1.2.3.4", tmp_path / "x.nii.gz", gap_policy="reject")


def test_non_volume_and_bad_arguments_refused(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(DicomInputError, match="secondary capture"):
        convert_series(archive, uid("series", "dose"), tmp_path / "d.nii.gz",
                       gap_policy="reject")
    with pytest.raises(ValueError, match="gap_policy"):
        convert_series(archive, uid("series", "a"), tmp_path / "a.nii.gz", gap_policy="fill")
    with pytest.raises(ValueError, match=r"\.nii"):
        convert_series(archive, uid("series", "a"), tmp_path / "a.nrrd", gap_policy="reject")


def test_gap_policy_is_passed_to_the_loader(archive: Path, tmp_path: Path) -> None:
    with pytest.raises(DicomInputError):
        convert_series(archive, uid("series", "gap"), tmp_path / "g.nii.gz",
                       gap_policy="reject")
    out = convert_series(archive, uid("series", "gap"), tmp_path / "g.nii.gz",
                         gap_policy="resample")
    img = nib.load(out)
    assert img.shape[2] == 14  # slice 5 of 0..13 interpolated back on the 2 mm grid
    assert img.header.get_zooms()[2] == pytest.approx(2.0)


def test_cli_convert(archive: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli.nii.gz"
    assert main(["convert", str(archive), "--series", uid("series", "a"), "--out", str(out)]) == 0
    assert out.is_file() and "wrote" in capsys.readouterr().out
    assert main(["convert", str(archive), "--series", "9.9", "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.needs_shared_data
def test_convert_real_ct_without_series_uid(tmp_path: Path) -> None:
    # The TotalSegmentator example has blank UIDs: it is addressed by its fallback key.
    src = shared_data("totalsegmentator/example_ct_dicom")
    (row,) = index_archive(src, content_check=False).series
    assert row["series_key"].startswith("nouid-")
    out = convert_series(src, row["series_key"], tmp_path / "ts.nii.gz", gap_policy="reject")
    img = nib.load(out)
    assert img.shape == (512, 512, 20)
    assert img.header.get_zooms() == pytest.approx((0.9765625, 0.9765625, 2.0))
