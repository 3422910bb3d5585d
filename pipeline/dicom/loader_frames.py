"""Turn DICOM datasets into 2-D frames with their own geometry and rescale.

Three layouts become the same :class:`Frame` list, which the loader then sorts and stacks:

- classic single-frame CT/MR Image Storage (one file per slice);
- Enhanced CT/MR multi-frame (per-frame and shared functional groups);
- Siemens MR mosaics (one file holding a grid of slices; CSA header gives their number).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from pipeline.dicom.errors import MissingTagError, UnreadableFileError
from pipeline.dicom.geometry import row_col_normal
from pipeline.dicom.loader_pixels import decode_frames, raw_int, raw_text

__all__ = ["Frame", "frames_from_dataset"]


@dataclass
class Frame:
    """One 2-D image of a series, before sorting.

    ``pixels()`` returns the stored values (rows, cols); the real value is
    ``stored * slope + intercept``.
    """

    where: str
    position_lps: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]  # the 6 ImageOrientationPatient values
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing) as in DICOM
    rows: int
    cols: int
    slope: float
    intercept: float
    sop_instance_uid: str
    instance_number: int
    frame_number: int  # 1-based within a multi-frame/mosaic file, 1 otherwise
    slice_thickness_mm: float | None
    spacing_between_slices_mm: float | None
    pixels: Callable[[], npt.NDArray[Any]]


def _floats(value: Any, n: int, keyword: str, where: str) -> npt.NDArray[np.float64]:
    """``n`` finite floats from a pydicom value or a raw backslash-separated string."""
    if value is None or value == "":
        raise MissingTagError(where, f"{keyword} is missing")
    items = value.split("\\") if isinstance(value, str) else value
    try:
        floats = [float(v) for v in (items if n > 1 or isinstance(value, str) else [value])]
    except (TypeError, ValueError) as exc:
        raise MissingTagError(where, f"{keyword} is not numeric: {value!r}") from exc
    if len(floats) != n or not all(math.isfinite(v) for v in floats):
        raise MissingTagError(where, f"{keyword} must have {n} finite values, got {value!r}")
    return np.array(floats, dtype=np.float64)


def _optional_float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _spacing(value: Any, where: str) -> tuple[float, float]:
    row_mm, col_mm = (float(v) for v in _floats(value, 2, "PixelSpacing", where))
    if row_mm <= 0 or col_mm <= 0:
        raise MissingTagError(where, f"PixelSpacing must be > 0, got {[row_mm, col_mm]}")
    return row_mm, col_mm


def _orientation(value: Any, where: str) -> npt.NDArray[np.float64]:
    """The 6 IOP values (validated once per series by the loader, not per frame)."""
    return _floats(value, 6, "ImageOrientationPatient", where)


def _rescale(item: Any) -> tuple[float, float]:
    """(slope, intercept) of a dataset or functional group item; (1, 0) when absent."""
    if item is None:
        return 1.0, 0.0
    try:
        s = float(raw_text(item, _RESCALE_SLOPE) or 1.0)
        b = float(raw_text(item, _RESCALE_INTERCEPT) or 0.0)
    except ValueError:
        return 1.0, 0.0
    if s == 0 or not math.isfinite(s) or not math.isfinite(b):
        return 1.0, 0.0
    return s, b


_RESCALE_SLOPE = 0x00281053
_RESCALE_INTERCEPT = 0x00281052


class _LazyPixels:
    """Decode a file's frames once, on first use (after sorting and duplicate removal)."""

    def __init__(self, ds: Dataset, where: str) -> None:
        self._ds = ds
        self._where = where
        self._frames: npt.NDArray[Any] | None = None

    def frame(self, index: int) -> npt.NDArray[Any]:
        if self._frames is None:
            self._frames = decode_frames(self._ds, self._where)
            self._ds = None  # type: ignore[assignment]  # let the raw bytes go
        return self._frames[index]


def _is_mosaic(ds: Dataset) -> bool:
    image_type = (raw_text(ds, 0x00080008) or "").upper().split("\\")
    return "MOSAIC" in image_type and (0x0029, 0x1010) in ds


def _instance_number(ds: Dataset) -> int:
    try:
        return raw_int(ds, 0x00200013) or 0
    except ValueError:
        return 0


def _single_frame(ds: Dataset, where: str) -> list[Frame]:
    """A classic one-slice-per-file image; attributes read raw for speed (hot path)."""
    lazy = _LazyPixels(ds, where)
    slope, intercept = _rescale(ds)
    return [
        Frame(
            where=where,
            position_lps=_floats(raw_text(ds, 0x00200032), 3, "ImagePositionPatient", where),
            orientation=_orientation(raw_text(ds, 0x00200037), where),
            pixel_spacing_mm=_spacing(raw_text(ds, 0x00280030), where),
            rows=raw_int(ds, 0x00280010) or 0,
            cols=raw_int(ds, 0x00280011) or 0,
            slope=slope,
            intercept=intercept,
            sop_instance_uid=raw_text(ds, 0x00080018) or "",
            instance_number=_instance_number(ds),
            frame_number=1,
            slice_thickness_mm=_optional_float(raw_text(ds, 0x00180050)),
            spacing_between_slices_mm=_optional_float(raw_text(ds, 0x00180088)),
            pixels=lambda: lazy.frame(0),
        )
    ]


def _mosaic(ds: Dataset, where: str) -> list[Frame]:
    """Split a Siemens mosaic into slices (geometry as in nibabel's dicomwrappers)."""
    with warnings.catch_warnings():  # nibabel.nicom warns that it is experimental on import
        warnings.simplefilter("ignore", UserWarning)
        from nibabel.nicom import csareader

    try:
        csa = csareader.get_csa_header(ds, "image")
        n_slices = int(csareader.get_n_mosaic(csa))
        normal_csa = np.asarray(csareader.get_slice_normal(csa), dtype=np.float64)
    except Exception as exc:  # malformed private header
        raise UnreadableFileError(
            where, f"Siemens mosaic without a usable CSA header: {exc}"
        ) from exc
    iop = _orientation(ds.get("ImageOrientationPatient"), where)
    row_spacing, col_spacing = _spacing(ds.get("PixelSpacing"), where)
    ipp = _floats(ds.get("ImagePositionPatient"), 3, "ImagePositionPatient", where)
    grid = int(np.ceil(np.sqrt(n_slices)))
    rows, cols = int(ds.Rows) // grid, int(ds.Columns) // grid
    slice_step = _optional_float(ds.get("SpacingBetweenSlices")) or _optional_float(
        ds.get("SliceThickness")
    )
    if slice_step is None:
        raise MissingTagError(where, "mosaic has neither SpacingBetweenSlices nor SliceThickness")
    try:
        row_dir, col_dir, normal = row_col_normal(iop)
    except ValueError as exc:
        raise MissingTagError(where, f"invalid ImageOrientationPatient: {exc}") from exc
    if normal_csa.shape != (3,) or np.linalg.norm(normal_csa) < 0.5:
        normal_csa = normal
    normal_csa = normal_csa / np.linalg.norm(normal_csa)
    # Siemens stores the position of the whole mosaic's corner, not of the first tile.
    origin = (
        ipp
        + col_dir * row_spacing * (int(ds.Rows) - rows) / 2
        + row_dir * col_spacing * (int(ds.Columns) - cols) / 2
    )
    slope, intercept = _rescale(ds)
    cache: dict[str, npt.NDArray[Any]] = {}

    def tile(t: int) -> npt.NDArray[Any]:
        if "tiles" not in cache:
            plane = decode_frames(ds, where)[0]
            blocks = plane[: grid * rows, : grid * cols].reshape(grid, rows, grid, cols)
            cache["tiles"] = blocks.transpose(0, 2, 1, 3).reshape(grid * grid, rows, cols)
        return cache["tiles"][t]

    return [
        Frame(
            where=where,
            position_lps=origin + t * slice_step * normal_csa,
            orientation=iop,
            pixel_spacing_mm=(row_spacing, col_spacing),
            rows=rows,
            cols=cols,
            slope=slope,
            intercept=intercept,
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            instance_number=int(ds.get("InstanceNumber") or 0),
            frame_number=t + 1,
            slice_thickness_mm=_optional_float(ds.get("SliceThickness")),
            spacing_between_slices_mm=slice_step,
            pixels=lambda t=t: tile(t),
        )
        for t in range(n_slices)
    ]


def _group(per_frame: Any, shared: Any, keyword: str) -> Any:
    """First item of a functional group sequence, per-frame first, then shared."""
    for container in (per_frame, shared):
        if container is not None and keyword in container:
            seq = container[keyword].value
            if len(seq):
                return seq[0]
    return None


def _multi_frame(ds: Dataset, where: str) -> list[Frame]:
    n = int(ds.get("NumberOfFrames") or 1)
    per_frame_seq = ds.get("PerFrameFunctionalGroupsSequence")
    shared_seq = ds.get("SharedFunctionalGroupsSequence")
    shared = shared_seq[0] if shared_seq else None
    if per_frame_seq is None and "ImagePositionPatient" not in ds:
        raise MissingTagError(
            where,
            f"multi-frame image ({n} frames) without PerFrameFunctionalGroupsSequence or "
            "ImagePositionPatient: no slice geometry",
        )
    if per_frame_seq is not None and len(per_frame_seq) != n:
        raise UnreadableFileError(
            where,
            f"PerFrameFunctionalGroupsSequence has {len(per_frame_seq)} items, "
            f"NumberOfFrames is {n}",
        )
    lazy = _LazyPixels(ds, where)
    frames = []
    for f in range(n):
        fg = per_frame_seq[f] if per_frame_seq is not None else None
        fwhere = f"{where} frame {f + 1}"
        pos = _group(fg, shared, "PlanePositionSequence")
        ori = _group(fg, shared, "PlaneOrientationSequence")
        meas = _group(fg, shared, "PixelMeasuresSequence")
        ipp = pos.get("ImagePositionPatient") if pos is not None else None
        iop = ori.get("ImageOrientationPatient") if ori is not None else None
        ps = meas.get("PixelSpacing") if meas is not None else None
        if per_frame_seq is None:  # legacy multi-frame with top-level geometry (rare)
            ipp, iop, ps = (
                ds.get(k)
                for k in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")
            )
        if ipp is None:
            raise MissingTagError(fwhere, "no PlanePositionSequence/ImagePositionPatient")
        slope, intercept = _rescale(_group(fg, shared, "PixelValueTransformationSequence") or ds)
        frames.append(
            Frame(
                where=fwhere,
                position_lps=_floats(ipp, 3, "ImagePositionPatient", fwhere),
                orientation=_orientation(iop, fwhere),
                pixel_spacing_mm=_spacing(ps, fwhere),
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                slope=slope,
                intercept=intercept,
                sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
                instance_number=int(ds.get("InstanceNumber") or 0),
                frame_number=f + 1,
                slice_thickness_mm=_optional_float(
                    meas.get("SliceThickness") if meas is not None else None
                ),
                spacing_between_slices_mm=_optional_float(
                    (meas.get("SpacingBetweenSlices") if meas is not None else None)
                    or ds.get("SpacingBetweenSlices")
                ),
                pixels=lambda f=f: lazy.frame(f),
            )
        )
    return frames


def frames_from_dataset(ds: Dataset, where: str | Path) -> list[Frame]:
    """All frames of one file with their geometry (pixels decoded lazily).

    Raises:
        MissingTagError: no pixel data, or position/orientation/spacing absent.
        UnreadableFileError: malformed multi-frame or mosaic headers.
    """
    where = str(where)
    if "PixelData" not in ds:
        raise MissingTagError(where, "no Pixel Data (not an image)")
    for keyword, tag in (("Rows", 0x00280010), ("Columns", 0x00280011)):
        if not raw_int(ds, tag):
            raise MissingTagError(where, f"{keyword} is missing")
    if _is_mosaic(ds):
        return _mosaic(ds, where)
    if (raw_int(ds, 0x00280008) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return _multi_frame(ds, where)
    return _single_frame(ds, where)
