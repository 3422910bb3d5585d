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
from pydicom.datadict import dictionary_VR
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

__all__ = ["read_dataset", "decode_frames", "raw_text", "raw_int"]

_NATIVE = {
    ImplicitVRLittleEndian: "<",
    ExplicitVRLittleEndian: "<",
    DeflatedExplicitVRLittleEndian: "<",
    ExplicitVRBigEndian: ">",
}


def read_dataset(path: Path | str) -> Dataset:
    """Parse one DICOM file (pixel data included, decoded later).

    (``specific_tags`` was measured slower than a full read: pydicom converts lazily.)

    Files without a preamble/File Meta (old ACR-NEMA style raw datasets) are accepted if
    they parse as a dataset with an SOP Class or Pixel Data.

    Raises:
        NotDicomError: not DICOM at all.
        UnreadableFileError: DICOM but the parser fails (truncated header, bad VRs).
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path)
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


def raw_text(ds: Dataset, tag: int) -> str | None:
    """A string-valued attribute (DS, IS, CS, UI, LO...) without pydicom's value conversion
    (≈10× faster per access; multiple values stay joined by backslashes). None if absent."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        text = value.decode("latin-1").strip(" \x00")
    elif value is None:
        return None
    elif isinstance(value, str):
        text = value.strip()
    elif isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text or None


def raw_int(ds: Dataset, tag: int) -> int | None:
    """An US/SS/IS attribute as int without pydicom's conversion; None if absent/empty."""
    elem = ds.get_item(tag)
    if elem is None:
        return None
    value = elem.value
    if isinstance(value, bytes):
        vr = elem.VR or dictionary_VR(tag)  # implicit VR files carry no VR
        if vr in ("US", "SS", "US or SS"):
            if len(value) < 2:
                return None
            order = "little" if getattr(elem, "is_little_endian", True) else "big"
            return int.from_bytes(value[:2], order, signed=vr == "SS")
        text = value.decode("latin-1").strip(" \x00")
        return int(float(text)) if text else None
    if value is None or value == "":
        return None
    return int(value)


def _check_pixel_data_truncated(path: Path | str) -> None:
    """pydicom silently drops an element cut short by the end of the file: if the Pixel
    Data tag is in the bytes but not in the dataset, the file was truncated."""
    raw = Path(path).read_bytes()
    if b"\xe0\x7f\x10\x00" in raw or b"\x7f\xe0\x00\x10" in raw:
        raise UnreadableFileError(path, "truncated file: it ends inside the Pixel Data element")


_TAGS = {
    "Rows": 0x00280010,
    "Columns": 0x00280011,
    "SamplesPerPixel": 0x00280002,
    "NumberOfFrames": 0x00280008,
    "BitsAllocated": 0x00280100,
    "BitsStored": 0x00280101,
    "HighBit": 0x00280102,
    "PixelRepresentation": 0x00280103,
}


def _int(ds: Dataset, keyword: str, where: str, default: int | None = None) -> int:
    value = raw_int(ds, _TAGS[keyword])
    if value is None:
        if default is None:
            raise MissingTagError(where, f"{keyword} is missing")
        return default
    return value


def _layout(ds: Dataset, where: str) -> tuple[int, int, int, int, int, int, int]:
    rows = _int(ds, "Rows", where)
    cols = _int(ds, "Columns", where)
    samples = _int(ds, "SamplesPerPixel", where, 1)
    if samples != 1:
        raise UnreadableFileError(
            where, f"SamplesPerPixel={samples} (colour): not a CT/MR grey-level image"
        )
    bits_allocated = _int(ds, "BitsAllocated", where)
    bits_stored = _int(ds, "BitsStored", where, bits_allocated) or bits_allocated
    high_bit = _int(ds, "HighBit", where, bits_stored - 1)
    signed = _int(ds, "PixelRepresentation", where, 0)
    frames = _int(ds, "NumberOfFrames", where, 1) or 1
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
        raw = ds.get_item(0x7FE00010).value  # the bytes as read: no conversion needed
        data = raw if isinstance(raw, bytes | bytearray | memoryview) else ds.PixelData
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
