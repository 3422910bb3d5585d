"""Read DICOM files and decode their stored pixel values (no rescale, no geometry).

Uncompressed little/big endian pixel data is decoded with ``np.frombuffer`` (fast path);
every other transfer syntax goes through pydicom's decoders (pylibjpeg, openjpeg, RLE).
Whatever the path, values are then corrected for BitsStored < BitsAllocated: unsigned
values are masked to BitsStored bits, signed values are sign-extended from HighBit
(the unused high bits may hold anything, see dcm_qa_12bit).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)

from pipeline.dicom.errors import (
    MissingTagError,
    NotDicomError,
    UnreadableFileError,
    UnsupportedTransferSyntaxError,
)

__all__ = ["read_dataset", "decode_frames", "LOADER_TAGS"]

#: Every attribute the loader uses; parsing only these makes reading ~3× faster.
LOADER_TAGS: tuple[Any, ...] = (
    "SpecificCharacterSet",
    "ImageType",
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "PatientID",
    "SliceThickness",
    "SpacingBetweenSlices",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "FrameOfReferenceUID",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "PixelSpacing",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "PixelData",
    (0x0029, 0x0010),  # Siemens CSA private creator
    (0x0029, 0x1010),  # Siemens CSA image header (mosaics)
)

_NATIVE = {
    ImplicitVRLittleEndian: "<",
    ExplicitVRLittleEndian: "<",
    DeflatedExplicitVRLittleEndian: "<",
    ExplicitVRBigEndian: ">",
}


def read_dataset(path: Path | str, *, all_tags: bool = False) -> Dataset:
    """Parse one DICOM file (pixel data included, decoded later).

    Only :data:`LOADER_TAGS` are kept unless ``all_tags``.

    Files without a preamble/File Meta (old ACR-NEMA style raw datasets) are accepted if
    they parse as a dataset with an SOP Class or Pixel Data.

    Raises:
        NotDicomError: not DICOM at all.
        UnreadableFileError: DICOM but the parser fails (truncated header, bad VRs).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, specific_tags=None if all_tags else list(LOADER_TAGS))
    except InvalidDicomError:
        pass
    except (OSError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise UnreadableFileError(path, f"cannot parse DICOM: {exc}") from exc
    else:
        for w in caught:
            text = str(w.message)
            if any(s in text.lower() for s in ("end of file", "truncat", "unexpected end")):
                raise UnreadableFileError(path, f"truncated file: {text}")
        if "PixelData" not in ds and "Rows" in ds:
            _check_pixel_data_truncated(path)
        return ds
    try:
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # anything at all: it was not DICOM to begin with
        raise NotDicomError(path, f"not a DICOM file ({type(exc).__name__}: {exc})") from exc
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        raise NotDicomError(path, "not a DICOM file (no DICM prefix, no SOP Class, no pixels)")
    return ds


def _check_pixel_data_truncated(path: Path | str) -> None:
    """pydicom silently drops an element cut short by the end of the file: if the Pixel
    Data tag is in the bytes but not in the dataset, the file was truncated."""
    raw = Path(path).read_bytes()
    if b"\xe0\x7f\x10\x00" in raw or b"\x7f\xe0\x00\x10" in raw:
        raise UnreadableFileError(path, "truncated file: it ends inside the Pixel Data element")


def _int(ds: Dataset, keyword: str, where: str) -> int:
    value = ds.get(keyword)
    if value is None or value == "":
        raise MissingTagError(where, f"{keyword} is missing")
    return int(value)


def _layout(ds: Dataset, where: str) -> tuple[int, int, int, int, int, int, int]:
    rows = _int(ds, "Rows", where)
    cols = _int(ds, "Columns", where)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise UnreadableFileError(
            where, f"SamplesPerPixel={samples} (colour): not a CT/MR grey-level image"
        )
    bits_allocated = _int(ds, "BitsAllocated", where)
    bits_stored = int(ds.get("BitsStored", bits_allocated) or bits_allocated)
    high_bit = int(ds.get("HighBit", bits_stored - 1) or bits_stored - 1)
    signed = int(ds.get("PixelRepresentation", 0) or 0)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if rows <= 0 or cols <= 0 or frames <= 0:
        raise UnreadableFileError(where, f"empty image: Rows={rows} Columns={cols} x{frames}")
    if bits_allocated not in (8, 16, 32) or not 0 < bits_stored <= bits_allocated:
        raise UnreadableFileError(
            where, f"unsupported BitsAllocated={bits_allocated} BitsStored={bits_stored}"
        )
    if high_bit != bits_stored - 1:
        raise UnreadableFileError(
            where, f"HighBit={high_bit} with BitsStored={bits_stored} is not supported"
        )
    return rows, cols, frames, bits_allocated, bits_stored, signed, samples


def _fix_bits(
    arr: npt.NDArray[Any], bits_allocated: int, bits_stored: int, signed: int
) -> npt.NDArray[Any]:
    """Mask unused high bits (unsigned) or sign-extend from HighBit (signed)."""
    if bits_stored >= bits_allocated:
        return arr
    if signed:
        shift = bits_allocated - bits_stored
        arr = arr.astype(f"=i{bits_allocated // 8}", copy=False)
        return np.right_shift(np.left_shift(arr, shift), shift)
    arr = arr.astype(f"=u{bits_allocated // 8}", copy=False)
    return np.bitwise_and(arr, (1 << bits_stored) - 1)


def decode_frames(ds: Dataset, where: str | Path = "") -> npt.NDArray[Any]:
    """Stored pixel values as an integer array (frames, rows, cols), native byte order.

    Raises:
        MissingTagError: no Pixel Data or no Rows/Columns/BitsAllocated.
        UnreadableFileError: truncated or corrupt pixel data, colour image.
        UnsupportedTransferSyntaxError: no installed decoder for the transfer syntax.
    """
    where = str(where or ds.get("SOPInstanceUID", "<dataset>"))
    if "PixelData" not in ds:
        raise MissingTagError(where, "no Pixel Data (not an image)")
    rows, cols, frames, bits_allocated, bits_stored, signed, _ = _layout(ds, where)
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts is None:  # raw dataset read with force=True: pydicom knows how it parsed it
        implicit, little = getattr(ds, "original_encoding", (True, True))
        ts = ImplicitVRLittleEndian if implicit and little else None
        if ts is None:
            ts = ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if ts in _NATIVE:
        itemsize = bits_allocated // 8
        expected = rows * cols * frames * itemsize
        data = ds.PixelData
        if len(data) < expected:
            raise UnreadableFileError(
                where, f"pixel data truncated: {len(data)} bytes, expected {expected}"
            )
        dtype = np.dtype(f"{_NATIVE[ts]}{'i' if signed else 'u'}{itemsize}")
        arr = np.frombuffer(data, dtype=dtype, count=rows * cols * frames)
        arr = arr.reshape(frames, rows, cols)
        if dtype.byteorder == ">":
            arr = arr.astype(dtype.newbyteorder("="))
        return _fix_bits(arr, bits_allocated, bits_stored, signed)
    try:
        arr = ds.pixel_array
    except (NotImplementedError, RuntimeError) as exc:
        text = str(exc)
        if "plugin" in text.lower() or "handler" in text.lower() or "support" in text.lower():
            raise UnsupportedTransferSyntaxError(
                where, f"no installed decoder for {ts.name} ({ts}): {text}"
            ) from exc
        raise UnreadableFileError(where, f"cannot decode {ts.name} pixel data: {text}") from exc
    except (ValueError, AttributeError, KeyError, TypeError, OSError) as exc:
        raise UnreadableFileError(where, f"cannot decode {ts.name} pixel data: {exc}") from exc
    arr = np.asarray(arr).reshape(frames, rows, cols)
    return _fix_bits(arr, bits_allocated, bits_stored, signed)
