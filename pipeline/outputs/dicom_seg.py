"""DICOM SEG output: the masks of one lesion in one study, as one binary Segmentation.

One SEG instance per lesion per source series holds one segment per non-empty structure
("tumour", "iceball", "ablation_zone", "enhancing", "kidney"; codes in
:mod:`pipeline.outputs.dicom_codes`). Masks are :class:`~pipeline.image.Volume` objects on
the grid of the source series; the grid is checked against the source instances (rows,
columns, orientation, pixel spacing, and every slice position matched to exactly one
instance) before anything is written, and the frames are written in mask slice order k.

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


def structure_tracking(lesion_id: str, tracking_uid: str, structure: str) -> tuple[str, str]:
    """(TrackingID, TrackingUID) of ``structure`` of a lesion; identical in every study."""
    if structure in LESION_STRUCTURES:
        return lesion_id, tracking_uid
    return f"{lesion_id} {STRUCTURES[structure].label.lower()}", derived_uid(
        "tracking", tracking_uid, structure
    )


def _source_order(
    source_datasets: Sequence[pydicom.Dataset], grid: Volume, where: str
) -> list[pydicom.Dataset]:
    """The source instances in mask slice order k, after checking they are the mask grid."""
    if len(source_datasets) == 0:
        raise DicomOutputError(where, "no source datasets given")
    n_k, n_rows, n_cols = grid.array.shape
    series_uids = {str(ds.get("SeriesInstanceUID", "")) for ds in source_datasets}
    if len(series_uids) != 1:
        raise DicomOutputError(where, f"source datasets span {len(series_uids)} series")
    if len(source_datasets) != n_k:
        raise DicomOutputError(
            where, f"masks have {n_k} slices but the source series has {len(source_datasets)}"
        )
    expected_iop = np.concatenate([grid.direction[:, 0], grid.direction[:, 1]])
    spacing_i, spacing_j, _ = grid.spacing_mm
    positions = np.array([grid.index_to_lps((0.0, 0.0, float(k))) for k in range(n_k)])
    ordered: list[pydicom.Dataset | None] = [None] * n_k
    for ds in source_datasets:
        sop = str(ds.get("SOPInstanceUID", "?"))
        for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
            if keyword not in ds:
                raise DicomOutputError(where, f"source instance {sop} has no {keyword}")
        if (int(ds.Rows), int(ds.Columns)) != (n_rows, n_cols):
            raise DicomOutputError(
                where,
                f"mask grid is {n_rows}×{n_cols} pixels but instance {sop} is "
                f"{ds.Rows}×{ds.Columns}",
            )
        iop = np.asarray(ds.ImageOrientationPatient, dtype=np.float64)
        if not np.allclose(iop, expected_iop, atol=_ORIENTATION_ATOL):
            raise DicomOutputError(
                where,
                f"mask orientation {np.round(expected_iop, 4).tolist()} differs from "
                f"ImageOrientationPatient {iop.tolist()} of instance {sop}",
            )
        row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
        if not np.allclose([row_mm, col_mm], [spacing_j, spacing_i], atol=1e-4):
            raise DicomOutputError(
                where,
                f"mask spacing (row {spacing_j:.4g}, column {spacing_i:.4g}) mm differs from "
                f"PixelSpacing {[row_mm, col_mm]} of instance {sop}",
            )
        ipp = np.asarray(ds.ImagePositionPatient, dtype=np.float64)
        dist = np.linalg.norm(positions - ipp, axis=1)
        k = int(np.argmin(dist))
        if dist[k] > _POSITION_ATOL_MM:
            raise DicomOutputError(
                where,
                f"instance {sop} at {ipp.tolist()} mm lies on no mask slice "
                f"(nearest slice k={k} is {dist[k]:.3g} mm away)",
            )
        if ordered[k] is not None:
            raise DicomOutputError(where, f"two source instances lie on mask slice k={k}")
        ordered[k] = ds
    result = [ds for ds in ordered if ds is not None]
    sop_uids = grid.source.get("sop_instance_uids")
    if sop_uids is not None:
        found = [str(ds.SOPInstanceUID) for ds in result]
        if list(map(str, sop_uids)) != found:
            raise DicomOutputError(
                where,
                "the masks' source['sop_instance_uids'] do not list the source instances in "
                "slice order (masks measured on another series or another slice order?)",
            )
    return result


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
    source_for = str(source_datasets[0].get("FrameOfReferenceUID", "")) if source_datasets else ""
    grid = _check_masks(masks, source_for, where)
    ordered = _source_order(source_datasets, grid, where)
    series_uid_src = str(ordered[0].SeriesInstanceUID)
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
                anatomic_regions=None if codes_.anatomic_region is None
                else [codes_.anatomic_region],
                display_color=hd.color.CIELabColor(*codes_.display_lab),
            )
        )
    pixels: npt.NDArray[np.uint8] = np.stack(
        [masks[name].array.astype(np.uint8) for name in included], axis=-1
    )
    series_uid = derived_uid("seg-series", tracking_uid, series_uid_src)
    sop_uid = derived_uid("seg-instance", tracking_uid, series_uid_src)
    seg = hd.seg.Segmentation(
        source_images=ordered,
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
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out_path, enforce_file_format=True)
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
        key = (str(type_code.CodeValue), str(type_code.CodingSchemeDesignator),
               str(item.SegmentLabel))
        name = by_code.get(key)
        if name is not None:
            result[name] = int(item.SegmentNumber)
    return result


def read_lesion_seg(
    path: Path | os.PathLike[str], source_sop_instance_uids: Sequence[str] | None = None
) -> dict[str, npt.NDArray[np.bool_]]:
    """Read a SEG back as structure → bool array ``[k, j, i]``.

    Frames are returned in the order of ``source_sop_instance_uids`` (default: the order
    of the referenced instances in the SEG, which :func:`write_lesion_seg` writes in mask
    slice order k); slices without a frame are all False.
    """
    seg = hd.seg.segread(path)
    if source_sop_instance_uids is None:
        source_sop_instance_uids = [
            str(inst.ReferencedSOPInstanceUID)
            for series in seg.ReferencedSeriesSequence
            for inst in series.ReferencedInstanceSequence
        ]
    numbers = segment_numbers(seg)
    if not numbers:
        raise DicomOutputError(str(path), "SEG holds no cryotrack structure")
    names = sorted(numbers, key=numbers.__getitem__)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=list(source_sop_instance_uids),
        segment_numbers=[numbers[n] for n in names],
        assert_missing_frames_are_empty=True,
        dtype=np.uint8,
    )
    return {name: pixels[..., idx].astype(bool) for idx, name in enumerate(names)}
