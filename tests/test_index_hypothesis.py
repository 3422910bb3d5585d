"""Property: whatever is done to a valid file's header (tags deleted, values corrupted,
bytes truncated or flipped), the index never raises and reports every file exactly once:
either as an instance of a series or as a row of errors.csv."""

from __future__ import annotations

import struct
import tempfile
from pathlib import Path

import pandas as pd
import pydicom
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from pipeline.dicom.index import build_index
from tests.test_index_helpers import ct_volume, series_info, write_ct

_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID",
    "Modality", "ImageType", "Rows", "Columns", "PixelSpacing", "SliceThickness",
    "ImageOrientationPatient", "ImagePositionPatient", "InstanceNumber", "RescaleSlope",
    "RescaleIntercept", "BitsAllocated", "SeriesNumber", "AcquisitionTime",
    "ContrastBolusAgent", "PixelData", "SamplesPerPixel", "PhotometricInterpretation",
)


def _template() -> list[bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_ct(Path(tmp), ct_volume(4, size=8), series_info("hyp", 1, "Abd KM"))
        return [p.read_bytes() for p in paths]


_TEMPLATE = _template()


def _value_span(data: bytes, keyword: str) -> tuple[int, int] | None:
    """(start, length) of an explicit-VR-LE element's value in the raw bytes."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    needle = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    pos = data.find(needle, 132)
    if pos < 0 or pos + 8 > len(data):  # absent, or its header cut by a truncation
        return None
    vr = data[pos + 4 : pos + 6]
    if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
        if pos + 12 > len(data):
            return None
        (length,) = struct.unpack("<I", data[pos + 8 : pos + 12])
        return pos + 12, min(length, len(data) - pos - 12)
    (length,) = struct.unpack("<H", data[pos + 6 : pos + 8])
    return pos + 8, length


mutation = st.one_of(
    st.tuples(st.just("delete"), st.sampled_from(_KEYWORDS), st.just(b"")),
    st.tuples(st.just("corrupt"), st.sampled_from(_KEYWORDS), st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("truncate"), st.integers(0, 2000).map(str), st.just(b"")),
    st.tuples(st.just("flip"), st.integers(128, 1500).map(str), st.binary(min_size=1,
                                                                          max_size=16)),
)


def _mutate(data: bytes, kind: str, arg: str, payload: bytes) -> bytes:
    if kind == "truncate":
        return data[: int(arg)]
    if kind == "flip":
        pos = min(int(arg), len(data))
        return data[:pos] + payload + data[pos + len(payload) :]
    if kind == "delete":
        try:
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
            if arg in ds:
                delattr(ds, arg)
            out = pydicom.filebase.DicomBytesIO()
            ds.save_as(out, enforce_file_format=False)
            return out.getvalue()
        except Exception:  # already damaged beyond parsing/re-writing: leave as is
            return data
    span = _value_span(data, arg)
    if span is None:
        return data
    start, length = span
    garbage = (payload * (length // len(payload) + 1))[:length]
    return data[:start] + garbage + data[start + length :]


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(st.tuples(st.integers(0, 3), mutation), min_size=1, max_size=4))
# a truncation that cuts an element's header, then a corruption of that element
@example([(0, ("truncate", "828", b"")), (0, ("corrupt", "StudyInstanceUID", b"\x00"))])
def test_index_survives_any_header_damage(mutations: list) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root, out = Path(tmp) / "a", Path(tmp) / "out"
        root.mkdir()
        files = [bytearray(b) for b in _TEMPLATE]
        for which, (kind, arg, payload) in mutations:
            files[which] = bytearray(_mutate(bytes(files[which]), kind, arg, payload))
        names = []
        for n, data in enumerate(files):
            path = root / f"f{n}.dcm"
            path.write_bytes(bytes(data))
            names.append(str(path))
        summary = build_index(root, out, workers=1, content_check=True, min_slices=1)
        instances = pd.read_parquet(out / "instances.parquet")
        errors = pd.read_csv(out / "errors.csv")
        listed = list(instances.path) + list(errors.path)
        assert sorted(listed) == sorted(names)
        assert summary.n_files == 4
        assert pd.read_csv(out / "series.csv").n_instances.sum() == len(instances)
