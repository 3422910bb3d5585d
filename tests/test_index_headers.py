"""Header records: the fast raw-value path agrees with pydicom's own conversion."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from pipeline.dicom.headers import read_header, read_header_safe
from tests.conftest import shared_data

_FILES = [
    "pydicom/test_files/CT_small.dcm",
    "pydicom/test_files/MR_small.dcm",
    "pydicom/test_files/MR_small_bigendian.dcm",
    "pydicom/test_files/MR_small_implicit.dcm",
    "pydicom/test_files/MR_small_jp2klossless.dcm",
    "pydicom/test_files/ExplVR_LitEndNoMeta.dcm",
    "dcm_qa_ct/GE/01.dcm",
    "dcm_qa_12bit/In/12bitSigned_0x0F0F.dcm",
    "totalsegmentator/example_ct_dicom/CT.1.3.12.2.1107.5.1.4.60064.30000022120808113428000016573",
]


def _num(ds: pydicom.Dataset, kw: str):
    v = ds.get(kw)
    return None if v is None or v == "" else v


@pytest.mark.needs_shared_data
@pytest.mark.parametrize("rel", _FILES)
def test_record_matches_pydicom(rel: str) -> None:
    path = shared_data(rel)
    rec = read_header(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    assert rec["series_instance_uid"] == str(ds.get("SeriesInstanceUID", ""))
    assert rec["modality"] == str(ds.get("Modality", ""))
    assert rec["series_description"] == str(ds.get("SeriesDescription", "")).strip()
    assert rec["rows"] == _num(ds, "Rows") and rec["columns"] == _num(ds, "Columns")
    assert rec["bits_allocated"] == _num(ds, "BitsAllocated")
    if "ImagePositionPatient" in ds:
        assert rec["ipp"] == pytest.approx([float(v) for v in ds.ImagePositionPatient])
        assert rec["iop"] == pytest.approx([float(v) for v in ds.ImageOrientationPatient])
        assert (rec["pixel_spacing_row_mm"], rec["pixel_spacing_col_mm"]) == pytest.approx(
            [float(v) for v in ds.PixelSpacing])
    if _num(ds, "InstanceNumber") is not None:
        assert rec["instance_number"] == int(ds.InstanceNumber)
    if _num(ds, "SliceThickness") is not None:
        assert rec["slice_thickness_mm"] == pytest.approx(float(ds.SliceThickness))
    assert rec["image_type"] == "\\".join(ds.get("ImageType", [])).upper()


@pytest.mark.needs_shared_data
def test_big_endian_unsigned_shorts() -> None:
    rec = read_header(shared_data("pydicom/test_files/MR_small_bigendian.dcm"))
    assert (rec["rows"], rec["columns"], rec["bits_allocated"]) == (64, 64, 16)
    assert rec["transfer_syntax"] == "1.2.840.10008.1.2.2"


def test_latin1_and_utf8_text(tmp_path: Path) -> None:
    from tests.test_index_helpers import ct_volume, series_info, write_ct

    (path,) = write_ct(tmp_path, ct_volume(1), series_info("u", 1, "Spätphase"),
                       extra={"SpecificCharacterSet": "ISO_IR 192"})
    assert read_header(path)["series_description"] == "Spätphase"
    (path,) = write_ct(tmp_path / "l", ct_volume(1), series_info("l", 1, "Spätphase"),
                       extra={"SpecificCharacterSet": "ISO_IR 100"})
    assert read_header(path)["series_description"] == "Spätphase"


def test_errors_name_file_and_reason(tmp_path: Path) -> None:
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    assert read_header_safe(empty) == ("error", str(empty), "empty file")
    text = tmp_path / "x.txt"
    text.write_text("hello")
    kind, where, reason = read_header_safe(text)
    assert (kind, where) == ("error", str(text)) and "not DICOM" in reason
    assert read_header_safe(tmp_path)[0] == "error"  # a directory: cannot read
