"""Header-only reading of one DICOM file into a flat record (no pixel data).

:func:`read_header` is the per-file work of the index: it reads only the attributes
listed in :data:`HEADER_KEYWORDS` (``dcmread(stop_before_pixels=True,
specific_tags=...)``) and returns a plain ``dict`` of Python scalars, so records are cheap
to ship between processes and to put in a table.

Speed: the first 64 KiB of the file are read in one call and parsed from memory when the
PixelData tag is inside them (almost every single-frame image); otherwise (large
multi-frame headers, deflated syntax) the file is parsed from disk. This is ~1.35× faster
than parsing from the file object, measured on real Siemens/GE CT.

Failures raise :mod:`pipeline.dicom.errors` exceptions naming the file and the reason;
:func:`read_header_safe` turns them into an error outcome instead (the index never
crashes on one bad file).
"""

from __future__ import annotations

import io
import math
import os
import struct
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.tag import Tag

from pipeline.dicom.errors import DicomInputError, NotDicomError, UnreadableFileError

__all__ = [
    "HEADER_KEYWORDS",
    "DICOMDIR_SOP_CLASS_UID",
    "HeaderOutcome",
    "read_header",
    "read_header_safe",
    "read_headers",
    "decoder_available",
    "is_dicomdir_name",
]

DICOMDIR_SOP_CLASS_UID = "1.2.840.10008.1.3.10"

HEADER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
    "PatientID", "StudyDate", "StudyTime", "StudyDescription", "SeriesDate", "SeriesTime",
    "SeriesNumber", "SeriesDescription", "ProtocolName", "Modality", "ImageType",
    "Rows", "Columns", "PixelSpacing", "SliceThickness", "SpacingBetweenSlices",
    "ImageOrientationPatient", "ImagePositionPatient", "PatientPosition",
    "ContrastBolusAgent", "ContrastBolusStartTime", "ContrastBolusRoute",
    "AcquisitionTime", "AcquisitionNumber", "InstanceNumber", "ContentTime",
    "Manufacturer", "ManufacturerModelName", "FrameOfReferenceUID", "NumberOfFrames",
    "EchoNumbers", "EchoTime", "RepetitionTime", "InversionTime", "ScanningSequence",
    "RescaleSlope", "RescaleIntercept", "BitsAllocated", "SamplesPerPixel",
    "PhotometricInterpretation", "GantryDetectorTilt", "ConvolutionKernel",
    "BodyPartExamined", "ImageComments", "DirectoryRecordSequence",
    "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
)
_TAGS = [Tag(k) for k in HEADER_KEYWORDS]
_HEAD_BYTES = 65536
_PIXEL_TAG_LE = b"\xe0\x7f\x10\x00"

# An outcome is ("ok", record) | ("error", path, reason) | ("dicomdir", path, "").
HeaderOutcome = tuple[Any, ...]


def is_dicomdir_name(path: str | Path) -> bool:
    """True for a file named DICOMDIR (any case), the media directory, not an image."""
    return os.path.basename(str(path)).upper() == "DICOMDIR"


@lru_cache(maxsize=64)
def decoder_available(transfer_syntax_uid: str) -> bool:
    """True when pydicom has a usable pixel decoder (or needs none) for the syntax."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import UID

    uid = UID(transfer_syntax_uid)
    if not uid.is_valid or not uid.is_transfer_syntax:
        return False
    if not uid.is_compressed:
        return True
    try:
        return bool(get_decoder(uid).is_available)
    except (NotImplementedError, ValueError):
        return False


# Control characters (CR, LF, NUL...) in a value would break CSV rows: map to spaces.
_CONTROL_TO_SPACE = {c: " " for c in range(32)}


_TAG_OF = {k: Tag(k) for k in (*HEADER_KEYWORDS, "MediaStorageSOPClassUID",
                                 "MediaStorageSOPInstanceUID", "TransferSyntaxUID")}
_US = struct.Struct("<H"), struct.Struct(">H")


def _value(ds: Any, keyword: str) -> Any:
    """The element's value without pydicom's conversion when it is still raw (bytes):
    converting every value through pydicom's hooks costs more than parsing the file."""
    try:
        elem = ds.get_item(_TAG_OF[keyword])
    except KeyError:
        return None
    return None if elem is None else elem.value


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        try:
            text = value.decode("utf-8")
        except UnicodeDecodeError:
            text = value.decode("latin-1")
        return "\\".join(v.strip() for v in text.split("\\"))
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        return "\\".join(str(v).strip() for v in value)
    return str(value)


def _str(ds: Any, keyword: str) -> str:
    return _text(_value(ds, keyword)).translate(_CONTROL_TO_SPACE).strip()


def _numbers(value: Any) -> list[float] | None:
    """DS/IS values (raw text or converted) as floats; None when unparsable."""
    if value is None:
        return None
    try:
        if isinstance(value, (bytes, bytearray, str)):
            parts = _text(value).translate(_CONTROL_TO_SPACE).split("\\")
            if parts == [""]:
                return None
            out = [float(v) for v in parts]
        elif isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
            out = [float(v) for v in value]
        else:
            out = [float(value)]
    except (TypeError, ValueError, OverflowError):
        return None
    return out if out and all(math.isfinite(v) for v in out) else None


def _float(ds: Any, keyword: str) -> float | None:
    values = _numbers(_value(ds, keyword))
    return values[0] if values else None


def _int(ds: Any, keyword: str) -> int | None:
    value = _float(ds, keyword)
    if value is None or abs(value) > 2**62:
        return None
    return round(value)


def _us(ds: Any, keyword: str, little: bool) -> int | None:
    """An unsigned short (Rows, Columns, ...), raw or converted."""
    value = _value(ds, keyword)
    if isinstance(value, (bytes, bytearray)):
        return _US[0 if little else 1].unpack_from(value)[0] if len(value) >= 2 else None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        value = value[0] if len(value) else None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, n: int) -> tuple[float, ...] | None:
    out = _numbers(value)
    return tuple(out) if out is not None and len(out) == n else None


def _first_item(ds: Any, keyword: str) -> Any:
    seq = ds.get(keyword)
    try:
        return seq[0] if seq is not None and len(seq) > 0 else None
    except (TypeError, IndexError):
        return None


def _multiframe_geometry(ds: Any, record: dict[str, Any]) -> None:
    """Fill orientation, spacing and per-frame positions from functional groups
    (Enhanced CT/MR); leaves the record unchanged when the groups are absent."""
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if shared is None and per_frame is None:
        return

    def from_groups(group: Any, seq_kw: str, kw: str, n: int) -> tuple[float, ...] | None:
        item = _first_item(group, seq_kw) if group is not None else None
        return _floats(item.get(kw), n) if item is not None else None

    first = per_frame[0] if per_frame else None
    for group in (shared, first):
        iop = from_groups(group, "PlaneOrientationSequence", "ImageOrientationPatient", 6)
        if iop is not None and record["iop"] is None:
            record["iop"] = iop
        ps = from_groups(group, "PixelMeasuresSequence", "PixelSpacing", 2)
        if ps is not None and record["pixel_spacing_row_mm"] is None:
            record["pixel_spacing_row_mm"], record["pixel_spacing_col_mm"] = ps
        item = _first_item(group, "PixelMeasuresSequence") if group is not None else None
        if item is not None and record["slice_thickness_mm"] is None:
            record["slice_thickness_mm"] = _float(item, "SliceThickness")
    positions: list[tuple[float, float, float]] = []
    for frame in per_frame or []:
        ipp = from_groups(frame, "PlanePositionSequence", "ImagePositionPatient", 3)
        if ipp is None:
            positions = []
            break
        positions.append(ipp)  # type: ignore[arg-type]
    if positions:
        record["frame_ipps"] = positions
        record["ipp"] = positions[0]


def _parse(path: str) -> Any:
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_BYTES)
    if len(head) == 0:
        raise NotDicomError(path, "empty file")
    source: Any = io.BytesIO(head) if _PIXEL_TAG_LE in head else path
    try:
        return pydicom.dcmread(source, stop_before_pixels=True, specific_tags=_TAGS)
    except InvalidDicomError:
        # No preamble/meta: accept a raw dataset only when it starts like one (group 0008).
        if head[:2] not in (b"\x08\x00", b"\x00\x08"):
            raise NotDicomError(path, "not DICOM (no 'DICM' prefix, not a raw dataset)") from None
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_TAGS, force=True)
        if not (ds.get("SOPClassUID") or ds.get("SeriesInstanceUID")):
            raise NotDicomError(path, "not DICOM (raw data without SOP Class/Series UID)") from None
        return ds


def read_header(path: str | Path) -> dict[str, Any]:
    """Read the indexed attributes of one file (no pixels) into a flat record.

    Raises:
        NotDicomError: the file is not DICOM (or is empty).
        UnreadableFileError: it looks like DICOM but cannot be parsed.
    """
    spath = str(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = _parse(spath)
        except DicomInputError:
            raise
        except OSError as exc:
            raise UnreadableFileError(spath, f"cannot read file: {exc.strerror or exc}") from None
        except Exception as exc:  # pydicom raises many types on corrupt input
            reason = f"cannot parse DICOM: {type(exc).__name__}: {exc}"
            raise UnreadableFileError(spath, reason) from None
        try:
            return _record(ds, spath)
        except DicomInputError:
            raise
        except Exception as exc:  # a malformed value deep in a sequence
            raise UnreadableFileError(
                spath, f"malformed attribute: {type(exc).__name__}: {exc}"
            ) from None


def _record(ds: Any, spath: str) -> dict[str, Any]:
    meta = getattr(ds, "file_meta", None)
    meta_sop = _str(meta, "MediaStorageSOPClassUID") if meta is not None else ""
    transfer_syntax = _str(meta, "TransferSyntaxUID") if meta is not None else ""
    if not transfer_syntax:
        # pydicom records the syntax it actually used when the meta lacks it.
        implicit = getattr(ds, "is_implicit_VR", None)
        little = getattr(ds, "is_little_endian", None)
        if implicit is not None and little is not None:
            transfer_syntax = (
                "1.2.840.10008.1.2" if implicit else
                "1.2.840.10008.1.2.1" if little else "1.2.840.10008.1.2.2"
            )
    sop_class = _str(ds, "SOPClassUID") or meta_sop
    image_type = _str(ds, "ImageType").upper()
    spacing = _floats(_value(ds, "PixelSpacing"), 2)
    little = transfer_syntax != "1.2.840.10008.1.2.2"
    record: dict[str, Any] = {
        "path": spath,
        "sop_class_uid": sop_class,
        "sop_instance_uid": _str(ds, "SOPInstanceUID")
        or (_str(meta, "MediaStorageSOPInstanceUID") if meta is not None else ""),
        "study_instance_uid": _str(ds, "StudyInstanceUID"),
        "series_instance_uid": _str(ds, "SeriesInstanceUID"),
        "patient_id": _str(ds, "PatientID"),
        "study_date": _str(ds, "StudyDate"),
        "study_time": _str(ds, "StudyTime"),
        "study_description": _str(ds, "StudyDescription"),
        "series_date": _str(ds, "SeriesDate"),
        "series_time": _str(ds, "SeriesTime"),
        "series_number": _int(ds, "SeriesNumber"),
        "series_description": _str(ds, "SeriesDescription"),
        "protocol_name": _str(ds, "ProtocolName"),
        "modality": _str(ds, "Modality").upper(),
        "image_type": image_type,
        "rows": _us(ds, "Rows", little),
        "columns": _us(ds, "Columns", little),
        "pixel_spacing_row_mm": spacing[0] if spacing else None,
        "pixel_spacing_col_mm": spacing[1] if spacing else None,
        "slice_thickness_mm": _float(ds, "SliceThickness"),
        "spacing_between_slices_mm": _float(ds, "SpacingBetweenSlices"),
        "iop": _floats(_value(ds, "ImageOrientationPatient"), 6),
        "ipp": _floats(_value(ds, "ImagePositionPatient"), 3),
        "patient_position": _str(ds, "PatientPosition").upper(),
        "contrast_agent": _str(ds, "ContrastBolusAgent"),
        "contrast_start_time": _str(ds, "ContrastBolusStartTime"),
        "contrast_route": _str(ds, "ContrastBolusRoute"),
        "acquisition_time": _str(ds, "AcquisitionTime"),
        "content_time": _str(ds, "ContentTime"),
        "acquisition_number": _int(ds, "AcquisitionNumber"),
        "instance_number": _int(ds, "InstanceNumber"),
        "manufacturer": _str(ds, "Manufacturer"),
        "manufacturer_model": _str(ds, "ManufacturerModelName"),
        "frame_of_reference_uid": _str(ds, "FrameOfReferenceUID"),
        "number_of_frames": _int(ds, "NumberOfFrames") or 1,
        "echo_number": _int(ds, "EchoNumbers"),
        "echo_time_ms": _float(ds, "EchoTime"),
        "repetition_time_ms": _float(ds, "RepetitionTime"),
        "inversion_time_ms": _float(ds, "InversionTime"),
        "scanning_sequence": _str(ds, "ScanningSequence"),
        "rescale_slope": _float(ds, "RescaleSlope"),
        "rescale_intercept": _float(ds, "RescaleIntercept"),
        "bits_allocated": _us(ds, "BitsAllocated", little),
        "samples_per_pixel": _us(ds, "SamplesPerPixel", little),
        "photometric": _str(ds, "PhotometricInterpretation"),
        "gantry_tilt_deg": _float(ds, "GantryDetectorTilt"),
        "convolution_kernel": _str(ds, "ConvolutionKernel"),
        "body_part": _str(ds, "BodyPartExamined"),
        "image_comments": _str(ds, "ImageComments")[:200],
        "transfer_syntax": transfer_syntax,
        "is_dicomdir": meta_sop == DICOMDIR_SOP_CLASS_UID or "DirectoryRecordSequence" in ds,
        "frame_ipps": None,
    }
    if record["number_of_frames"] > 1 or "SharedFunctionalGroupsSequence" in ds:
        _multiframe_geometry(ds, record)
    return record


def read_header_safe(path: str | Path) -> HeaderOutcome:
    """Like :func:`read_header` but never raises: returns an outcome tuple
    ``("ok", record)``, ``("dicomdir", path, "")`` or ``("error", path, reason)``."""
    spath = str(path)
    try:
        record = read_header(spath)
    except DicomInputError as exc:
        if is_dicomdir_name(spath):
            return ("dicomdir", spath, "")
        return ("error", spath, exc.reason.translate(_CONTROL_TO_SPACE))
    except Exception as exc:  # last resort: one bad file never stops the index
        reason = f"unexpected {type(exc).__name__}: {exc}"
        return ("error", spath, reason.translate(_CONTROL_TO_SPACE))
    if record["is_dicomdir"] or (is_dicomdir_name(spath) and not record["series_instance_uid"]):
        return ("dicomdir", spath, "")
    return ("ok", record)


def read_headers(paths: list[str]) -> list[HeaderOutcome]:
    """Read a chunk of files (the work of one dask task); never raises."""
    return [read_header_safe(p) for p in paths]
