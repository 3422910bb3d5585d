"""DICOM SEG output: the masks of one lesion in one study, as one binary Segmentation.

One SEG instance per lesion per source series holds one segment per non-empty structure
("tumour", "iceball", "ablation_zone", "enhancing", "kidney"; codes in
:mod:`pipeline.outputs.dicom_codes`). Masks are :class:`~pipeline.image.Volume` objects on
the grid of the source series; the grid is checked against the source instances (rows,
columns, orientation, pixel spacing, and every slice position matched to exactly one
source frame) before anything is written. Sources are single-frame instances (SEG frames
then follow mask slice order k) or one multi-frame Enhanced CT/MR instance (SEG frames
follow its frames).

UIDs are derived from the lesion's tracking UID and the source series UID, so a rerun
writes an object with the same SeriesInstanceUID and SOPInstanceUID (it replaces the
earlier one in a PACS); only ContentDate/ContentTime (creation time) change.

Tracking: the lesion itself ("tumour" before treatment, "ablation_zone" after) carries
the lesion ``tracking_uid`` in every study; the other structures carry a UID derived from
it and the structure name, equally stable across studies (see :func:`structure_tracking`).
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.sr.codedict import codes
from pydicom.uid import UID

from pipeline import __version__
from pipeline.image import GeometryError, Volume, check_same_grid
from pipeline.outputs.dicom_codes import STRUCTURES, coding_scheme_identification

__all__ = [
    "DicomOutputError",
    "EmptySegmentationError",
    "SegWriteResult",
    "LESION_STRUCTURES",
    "structure_tracking",
    "derived_uid",
    "check_tracking_uid",
    "save_atomically",
    "write_lesion_seg",
    "read_lesion_seg",
    "segment_numbers",
]

_log = logging.getLogger(__name__)

#: Structures that are "the lesion" and carry the lesion tracking UID itself.
LESION_STRUCTURES = ("tumour", "ablation_zone")

_POSITION_ATOL_MM = 0.01
_UID_NAMESPACE = uuid.UUID("6f1d2b1e-3c55-5a8e-9b61-6372796f7472")
_ORIENTATION_ATOL = 1e-4


class DicomOutputError(ValueError):
    """A SEG/SR cannot be written from these inputs; names the lesion/series and why."""

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


class EmptySegmentationError(DicomOutputError):
    """Every mask is empty: there is nothing a SEG could hold (no file written)."""


@dataclass(frozen=True)
class SegWriteResult(os.PathLike[str]):
    """What :func:`write_lesion_seg` wrote. Usable wherever a path is (``os.fspath``).

    Attributes:
        path: the SEG file.
        sop_instance_uid, series_instance_uid: UIDs of the SEG.
        segment_numbers: structure → segment number in the SEG.
        skipped: structure → reason it is not in the SEG (e.g. "empty mask").
    """

    path: Path
    sop_instance_uid: str
    series_instance_uid: str
    segment_numbers: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __fspath__(self) -> str:
        return str(self.path)


def derived_uid(*parts: str) -> str:
    """A deterministic UID from the given strings: same parts → same UID.

    ``2.25.<int of a name-based UUID (v5)>`` (PS3.5 B.2 / ISO/IEC 9834-8). Note that
    ``pydicom.uid.generate_uid(prefix=None, ...)`` ignores ``entropy_srcs`` and is random.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, chr(31).join(['cryotrack', *parts])).int}"


def save_atomically(dataset: pydicom.Dataset, out_path: Path | str) -> Path:
    """Save as a DICOM file via a temporary file and rename: no half-written outputs."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        dataset.save_as(tmp, enforce_file_format=True)
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return out_path


def check_tracking_uid(tracking_uid: str, where: str) -> None:
    """Raise DicomOutputError unless ``tracking_uid`` is a valid DICOM UID."""
    if not UID(tracking_uid).is_valid:
        raise DicomOutputError(where, f"tracking_uid {tracking_uid!r} is not a valid DICOM UID")


def structure_tracking(lesion_id: str, tracking_uid: str, structure: str) -> tuple[str, str]:
    """(TrackingID, TrackingUID) of ``structure`` of a lesion; identical in every study."""
    if structure in LESION_STRUCTURES:
        return lesion_id, tracking_uid
    return f"{lesion_id} {STRUCTURES[structure].label.lower()}", derived_uid(
        "tracking", tracking_uid, structure
    )


@dataclass(frozen=True)
class _SourceFrame:
    """One 2-D source frame: its instance, 1-based frame number and plane geometry."""

    dataset: pydicom.Dataset
    frame_number: int
    where: str
    position_lps: npt.NDArray[np.float64]
    orientation: npt.NDArray[np.float64]
    pixel_spacing_mm: tuple[float, float]  # (row spacing, column spacing)


def _functional(ds: pydicom.Dataset, n: int, sequence: str, keyword: str, where: str) -> list:
    """``keyword`` of functional group ``sequence`` of frame n (per-frame, else shared)."""
    for groups in (
        ds.get("PerFrameFunctionalGroupsSequence"),
        ds.get("SharedFunctionalGroupsSequence"),
    ):
        if not groups:
            continue
        item = groups[n] if len(groups) > 1 else groups[0]
        if sequence in item and keyword in item[sequence][0]:
            return list(item[sequence][0][keyword].value)
    raise DicomOutputError(where, f"{where} has no {sequence} > {keyword}")


def _source_frames(source_datasets: Sequence[pydicom.Dataset], where: str) -> list[_SourceFrame]:
    if len(source_datasets) == 0:
        raise DicomOutputError(where, "no source datasets given")
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in source_datasets}
    if len(series_uids) != 1:
        raise DicomOutputError(where, f"source datasets span {len(series_uids)} series")
    first = source_datasets[0]
    if len(source_datasets) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1:
        sop = str(first.get("SOPInstanceUID", "?"))
        frames = []
        for n in range(int(first.NumberOfFrames)):
            here = f"source instance {sop} frame {n + 1}"
            frames.append(
                _SourceFrame(
                    first,
                    n + 1,
                    here,
                    np.asarray(
                        _functional(
                            first, n, "PlanePositionSequence", "ImagePositionPatient", here
                        ),
                        dtype=np.float64,
                    ),
                    np.asarray(
                        _functional(
                            first, n, "PlaneOrientationSequence", "ImageOrientationPatient", here
                        ),
                        dtype=np.float64,
                    ),
                    tuple(
                        float(v)
                        for v in _functional(
                            first, n, "PixelMeasuresSequence", "PixelSpacing", here
                        )
                    ),
                )
            )
        return frames
    frames = []
    for ds in source_datasets:
        here = f"source instance {ds.get('SOPInstanceUID', '?')}"
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise DicomOutputError(where, f"{here} has no {keyword}")
        frames.append(
            _SourceFrame(
                ds,
                1,
                here,
                np.asarray(ds.ImagePositionPatient, dtype=np.float64),
                np.asarray(ds.ImageOrientationPatient, dtype=np.float64),
                tuple(float(v) for v in ds.PixelSpacing),
            )
        )
    return frames


def _slice_of_frames(
    source_datasets: Sequence[pydicom.Dataset], grid: Volume, where: str
) -> tuple[list[_SourceFrame], list[int]]:
    """Source frames, and for each the mask slice k it lies on (checked one-to-one)."""
    frames = _source_frames(source_datasets, where)
    n_k, n_rows, n_cols = grid.array.shape
    if len(frames) != n_k:
        raise DicomOutputError(
            where, f"masks have {n_k} slices but the source series has {len(frames)} frames"
        )
    expected_iop = np.concatenate([grid.direction[:, 0], grid.direction[:, 1]])
    spacing_i, spacing_j, _ = grid.spacing_mm
    positions = grid.index_to_lps(np.column_stack([np.zeros(n_k), np.zeros(n_k), np.arange(n_k)]))
    slice_of: list[int] = []
    for frame in frames:
        ds = frame.dataset
        if (int(ds.Rows), int(ds.Columns)) != (n_rows, n_cols):
            raise DicomOutputError(
                where,
                f"mask grid is {n_rows}×{n_cols} pixels but {frame.where} is "
                f"{ds.Rows}×{ds.Columns}",
            )
        if not np.allclose(frame.orientation, expected_iop, atol=_ORIENTATION_ATOL):
            raise DicomOutputError(
                where,
                f"mask orientation {np.round(expected_iop, 4).tolist()} differs from "
                f"ImageOrientationPatient {frame.orientation.tolist()} of {frame.where}",
            )
        if not np.allclose(frame.pixel_spacing_mm, [spacing_j, spacing_i], atol=1e-4):
            raise DicomOutputError(
                where,
                f"mask spacing (row {spacing_j:.4g}, column {spacing_i:.4g}) mm differs from "
                f"PixelSpacing {list(frame.pixel_spacing_mm)} of {frame.where}",
            )
        dist = np.linalg.norm(positions - frame.position_lps, axis=1)
        k = int(np.argmin(dist))
        if dist[k] > _POSITION_ATOL_MM:
            raise DicomOutputError(
                where,
                f"{frame.where} at {frame.position_lps.tolist()} mm lies on no mask slice "
                f"(nearest slice k={k} is {dist[k]:.3g} mm away)",
            )
        if k in slice_of:
            raise DicomOutputError(where, f"two source frames lie on mask slice k={k}")
        slice_of.append(k)
    _check_source_uids(grid, frames, slice_of, where)
    return frames, slice_of


def _check_source_uids(
    grid: Volume, frames: list[_SourceFrame], slice_of: list[int], where: str
) -> None:
    """The masks' own record of their source (loader's source dict), when present."""
    sop_uids = grid.source.get("sop_instance_uids")
    if sop_uids is None:
        return
    by_k = sorted(zip(slice_of, frames, strict=True), key=lambda kf: kf[0])
    found = [(str(f.dataset.SOPInstanceUID), f.frame_number) for _, f in by_k]
    numbers = grid.source.get("frame_numbers") or [1] * len(sop_uids)
    if [(str(u), int(n)) for u, n in zip(sop_uids, numbers, strict=False)] != found:
        raise DicomOutputError(
            where,
            "the masks' source['sop_instance_uids'] do not list the source frames in "
            "slice order (masks measured on another series or another slice order?)",
        )


def _check_masks(masks: Mapping[str, Volume], source_for: str, where: str) -> Volume:
    if not masks:
        raise EmptySegmentationError(where, "no masks given")
    unknown = sorted(set(masks) - set(STRUCTURES))
    if unknown:
        raise DicomOutputError(
            where, f"unknown structure(s) {unknown}; expected some of {sorted(STRUCTURES)}"
        )
    names = list(masks)
    reference = masks[names[0]]
    for name in names[1:]:
        try:
            check_same_grid(reference, masks[name])
        except GeometryError as exc:
            raise DicomOutputError(where, f"mask {name!r} vs {names[0]!r}: {exc}") from exc
    for name, mask in masks.items():
        if mask.array.dtype != np.bool_:
            raise DicomOutputError(where, f"mask {name!r} must be bool, got {mask.array.dtype}")
        for_uid = mask.frame_of_reference_uid
        if for_uid and source_for and for_uid != source_for:
            raise DicomOutputError(
                where,
                f"mask {name!r} frame of reference {for_uid} differs from the source "
                f"series' {source_for}",
            )
    return reference


def write_lesion_seg(
    source_datasets: Sequence[pydicom.Dataset],
    masks: Mapping[str, Volume],
    out_path: Path,
    *,
    lesion_id: str,
    tracking_uid: str,
    series_number: int = 900,
    manufacturer: str = "cryotrack",
    software_version: str = __version__,
) -> SegWriteResult:
    """Write the non-empty masks of one lesion as a binary DICOM SEG.

    Args:
        source_datasets: the instances of the series the masks were measured on, any
            order; headers are enough (``dcmread(..., stop_before_pixels=True)``).
        masks: structure → bool :class:`Volume` on the source grid (keys from
            :data:`~pipeline.outputs.dicom_codes.STRUCTURES`).
        out_path: file to write (parent directories are created; replaced if present).
        lesion_id: the manifest's lesion_id (TrackingID).
        tracking_uid: the lesion's TrackingUID, the same for every study of the lesion.
        series_number, manufacturer, software_version: SEG series/equipment attributes.

    Returns:
        :class:`SegWriteResult` (path-like) with segment numbers and skipped structures.

    Raises:
        DicomOutputError: masks not on the source grid, unknown structure, bad sources.
        EmptySegmentationError: all masks are empty (nothing written).
    """
    where = f"lesion {lesion_id} SEG"
    check_tracking_uid(tracking_uid, where)
    source_for = str(source_datasets[0].get("FrameOfReferenceUID", "")) if source_datasets else ""
    grid = _check_masks(masks, source_for, where)
    frames, slice_of = _slice_of_frames(source_datasets, grid, where)
    series_uid_src = str(frames[0].dataset.SeriesInstanceUID)
    where = f"lesion {lesion_id} SEG of series {series_uid_src}"

    included = [name for name in STRUCTURES if name in masks and masks[name].array.any()]
    skipped = {name: "empty mask" for name in STRUCTURES if name in masks and name not in included}
    if not included:
        raise EmptySegmentationError(where, f"all masks are empty ({sorted(masks)})")
    if skipped:
        _log.info("%s: skipped %s", where, ", ".join(f"{k} ({v})" for k, v in skipped.items()))

    algorithm = hd.AlgorithmIdentificationSequence(
        name="cryotrack",
        family=codes.DCM.MorphologicalOperations,
        version=software_version,
        source=manufacturer,
    )
    descriptions = []
    for number, name in enumerate(included, start=1):
        codes_ = STRUCTURES[name]
        tracking_id, tracking = structure_tracking(lesion_id, tracking_uid, name)
        descriptions.append(
            hd.seg.SegmentDescription(
                segment_number=number,
                segment_label=codes_.label,
                segmented_property_category=codes_.category,
                segmented_property_type=codes_.property_type,
                algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
                algorithm_identification=algorithm,
                tracking_id=tracking_id,
                tracking_uid=tracking,
                anatomic_regions=None
                if codes_.anatomic_region is None
                else [codes_.anatomic_region],
                display_color=hd.color.CIELabColor(*codes_.display_lab),
            )
        )
    stacked = np.stack([masks[name].array for name in included], axis=-1).astype(np.uint8)
    if len(source_datasets) == 1 and len(frames) > 1:  # one multi-frame instance
        source_images = [frames[0].dataset]
        pixels = stacked[slice_of]  # frame f of the SEG input ↔ source frame f
    else:  # single-frame instances, written in mask slice order k
        source_images = [
            f.dataset for _, f in sorted(zip(slice_of, frames, strict=True), key=lambda kf: kf[0])
        ]
        pixels = stacked
    series_uid = derived_uid("seg-series", tracking_uid, series_uid_src)
    sop_uid = derived_uid("seg-instance", tracking_uid, series_uid_src)
    seg = hd.seg.Segmentation(
        source_images=source_images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=sop_uid,
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name="cryotrack",
        software_versions=software_version,
        device_serial_number="0",
        content_description=f"cryotrack masks, lesion {lesion_id}"[:64],
        content_label="LESION",
        series_description=f"cryotrack SEG {lesion_id}"[:64],
    )
    seg.CodingSchemeIdentificationSequence = coding_scheme_identification()
    out_path = save_atomically(seg, out_path)
    return SegWriteResult(
        path=out_path,
        sop_instance_uid=sop_uid,
        series_instance_uid=series_uid,
        segment_numbers={name: n for n, name in enumerate(included, start=1)},
        skipped=skipped,
    )


def segment_numbers(seg_dataset: pydicom.Dataset) -> dict[str, int]:
    """Structure → segment number of a SEG written by :func:`write_lesion_seg`.

    Structures are recognised by their segmented property type code (and label, for
    codes shared by several structures).
    """
    by_code = {
        (c.property_type.value, c.property_type.scheme_designator, c.label): name
        for name, c in STRUCTURES.items()
    }
    result: dict[str, int] = {}
    for item in seg_dataset.SegmentSequence:
        type_code = item.SegmentedPropertyTypeCodeSequence[0]
        key = (
            str(type_code.CodeValue),
            str(type_code.CodingSchemeDesignator),
            str(item.SegmentLabel),
        )
        name = by_code.get(key)
        if name is not None:
            result[name] = int(item.SegmentNumber)
    return result


def read_lesion_seg(
    path: Path | os.PathLike[str],
    source_sop_instance_uids: Sequence[str] | None = None,
    source_frame_numbers: Sequence[int] | None = None,
) -> dict[str, npt.NDArray[np.bool_]]:
    """Read a SEG back (highdicom) as structure → bool array ``[k, j, i]``.

    Single-frame source series: frames come in the order of ``source_sop_instance_uids``
    (default: the order of the referenced instances in the SEG, which
    :func:`write_lesion_seg` writes in mask slice order k). One multi-frame source
    instance: pass ``source_frame_numbers`` in slice order (the loader's
    ``volume.source["frame_numbers"]``). Slices without a SEG frame are all False.
    """
    seg = hd.seg.segread(path)
    referenced = [
        str(inst.ReferencedSOPInstanceUID)
        for series in seg.ReferencedSeriesSequence
        for inst in series.ReferencedInstanceSequence
    ]
    numbers = segment_numbers(seg)
    if not numbers:
        raise DicomOutputError(str(path), "SEG holds no cryotrack structure")
    names = sorted(numbers, key=numbers.__getitem__)
    common = dict(
        segment_numbers=[numbers[n] for n in names],
        assert_missing_frames_are_empty=True,
        dtype=np.uint8,
    )
    if source_frame_numbers is not None:
        if len(referenced) != 1:
            raise DicomOutputError(
                str(path),
                f"source_frame_numbers given but the SEG references {len(referenced)} "
                "instances (frame numbers apply to one multi-frame source)",
            )
        pixels = seg.get_pixels_by_source_frame(
            source_sop_instance_uid=referenced[0],
            source_frame_numbers=[int(n) for n in source_frame_numbers],
            **common,
        )
    else:
        uids = referenced if source_sop_instance_uids is None else source_sop_instance_uids
        pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=list(uids), **common)
    return {name: pixels[..., idx].astype(bool) for idx, name in enumerate(names)}
