"""DICOM series → :class:`~pipeline.image.Volume` (float32, HU for CT), and NIfTI I/O.

Slices are ordered by their position along the slice normal (row × column direction of
ImageOrientationPatient), never by InstanceNumber, so ``k`` always grows along the normal
and the affine is right-handed: column ``i`` runs along IOP[0:3] with spacing
PixelSpacing[1], row ``j`` along IOP[3:6] with spacing PixelSpacing[0].

What is not a regular orthogonal stack is refused with a specific error from
:mod:`pipeline.dicom.errors` or, where the policy allows, resampled and written into
``volume.source["qc"]``:

- several slices at one position only → :class:`SeriesGeometryError` ("not a volume");
- duplicate positions → the first instance (lowest InstanceNumber) is kept, qc note;
- uneven slice spacing → ``gap_policy`` "reject" (error naming the jump) or "resample"
  (linear interpolation to the smallest spacing);
- gantry tilt (slice origins off the normal) → ``tilt_policy`` "resample" (each slice
  moved in its plane onto an orthogonal grid) or "reject".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.dicom.errors import (
    DicomInputError,
    InconsistentSeriesError,
    MissingTagError,
    SeriesGeometryError,
)
from pipeline.dicom.geometry import row_col_normal, tilt_angle_deg
from pipeline.dicom.loader_frames import Frame, frames_from_dataset
from pipeline.dicom.loader_pixels import raw_text, read_dataset
from pipeline.dicom.loader_resample import deshear_slices, even_out_spacing
from pipeline.image import Volume

__all__ = ["load_series", "read_nifti", "write_nifti"]

# Two slices closer than this along the normal are at "the same position".
_SAME_POSITION_MM = 0.01
# Slice steps may jitter by this much (absolute mm, or relative to the median step).
_STEP_TOLERANCE_MM = 0.02
_STEP_TOLERANCE_REL = 0.02
# In-plane drift of slice origins (fraction of a pixel) above which the stack is sheared.
_SHEAR_TOLERANCE_PX = 0.1
_ORIENTATION_TOLERANCE = 1e-3
_FILL_VALUE = {"CT": -1024.0}


def _fmt(mm: float) -> str:
    return f"{round(float(mm), 2)}"


def _read(paths: Sequence[Path | str]) -> tuple[list[Frame], Any]:
    """Frames of every file, and the first dataset (for series-level attributes)."""
    frames: list[Frame] = []
    first = None
    series_uids: dict[str, int] = {}
    for path in paths:
        ds = read_dataset(path)
        uid = raw_text(ds, 0x0020000E) or ""
        series_uids[uid] = series_uids.get(uid, 0) + 1
        if first is None:
            first = ds
        frames.extend(frames_from_dataset(ds, path))
    if len(series_uids) > 1:
        listing = ", ".join(f"{u or '<none>'} ({n} files)" for u, n in series_uids.items())
        raise InconsistentSeriesError(
            next(iter(series_uids)), f"files of {len(series_uids)} series given: {listing}"
        )
    return frames, first


def _check_consistent(frames: list[Frame], series: str) -> None:
    ref = frames[0]
    for f in frames[1:]:
        if (f.rows, f.cols) != (ref.rows, ref.cols):
            raise InconsistentSeriesError(
                series,
                f"Rows×Columns differ: {ref.rows}×{ref.cols} in {ref.where} vs "
                f"{f.rows}×{f.cols} in {f.where}",
            )
        if np.max(np.abs(f.orientation - ref.orientation)) > _ORIENTATION_TOLERANCE:
            raise InconsistentSeriesError(
                series,
                "ImageOrientationPatient differs between instances: "
                f"{np.round(ref.orientation, 4).tolist()} in {ref.where} vs "
                f"{np.round(f.orientation, 4).tolist()} in {f.where}",
            )
        if not np.allclose(f.pixel_spacing_mm, ref.pixel_spacing_mm, rtol=1e-4, atol=1e-5):
            raise InconsistentSeriesError(
                series,
                f"PixelSpacing differs: {list(ref.pixel_spacing_mm)} in {ref.where} vs "
                f"{list(f.pixel_spacing_mm)} in {f.where}",
            )


def _sort_and_dedupe(
    frames: list[Frame], normal: npt.NDArray[np.float64], series: str, qc: list[str]
) -> tuple[list[Frame], npt.NDArray[np.float64]]:
    """Sort along the normal; refuse one-position stacks; keep the first of duplicates."""
    frames = sorted(frames, key=lambda f: (f.instance_number, f.frame_number))
    t = np.array([f.position_lps @ normal for f in frames])
    order = np.argsort(t, kind="stable")  # stable: the lowest InstanceNumber comes first
    frames = [frames[i] for i in order]
    t = t[order]
    if len(frames) > 1 and t[-1] - t[0] < _SAME_POSITION_MM:
        raise SeriesGeometryError(series, f"{len(frames)} slices at one position: not a volume")
    keep = np.ones(len(frames), dtype=bool)
    last_kept = t[0]  # a run of duplicates is compared with its first member
    for i in range(1, len(frames)):
        if t[i] - last_kept < _SAME_POSITION_MM:
            keep[i] = False
        else:
            last_kept = t[i]
    n_dropped = int((~keep).sum())
    if n_dropped:
        n_positions = int(keep.sum())
        qc.append(
            f"duplicate positions: kept first of {len(frames) // n_positions}"
            if len(frames) % n_positions == 0
            else f"duplicate positions: dropped {n_dropped} of {len(frames)} slices"
        )
        frames = [f for f, k in zip(frames, keep, strict=True) if k]
        t = t[keep]
    return frames, t


def _stack(frames: list[Frame]) -> npt.NDArray[np.float32]:
    out = np.empty((len(frames), frames[0].rows, frames[0].cols), dtype=np.float32)
    for k, f in enumerate(frames):
        out[k] = f.pixels()
        if f.slope != 1.0:
            out[k] *= np.float32(f.slope)
        if f.intercept != 0.0:
            out[k] += np.float32(f.intercept)
    return out


def _single_slice_spacing(frame: Frame, series: str) -> float:
    spacing = frame.spacing_between_slices_mm or frame.slice_thickness_mm
    if spacing is None:
        raise MissingTagError(
            series,
            "single slice without SpacingBetweenSlices or SliceThickness: slice spacing unknown",
        )
    return spacing


def _check_steps(
    t: npt.NDArray[np.float64],
    frames: list[Frame],
    series: str,
    gap_policy: str,
    qc: list[str],
) -> tuple[float, bool]:
    """(slice step in mm, whether the stack must be resampled onto that step).

    An uneven stack is resampled onto the smallest step, shrunk a little so that the
    first and last acquired slices stay exactly on the grid."""
    steps = np.diff(t)
    median = float(np.median(steps))
    tolerance = max(_STEP_TOLERANCE_MM, _STEP_TOLERANCE_REL * median)
    if float(steps.max() - steps.min()) <= tolerance:
        return float((t[-1] - t[0]) / (len(t) - 1)), False
    jump = int(np.flatnonzero(np.abs(steps - steps[0]) > tolerance)[0])
    before, after = frames[jump], frames[jump + 1]
    detail = (
        f"slice increment jumps from {_fmt(steps[jump - 1] if jump else steps[0])} to "
        f"{_fmt(steps[jump])} mm between sorted slices {jump} and {jump + 1} "
        f"(InstanceNumber {before.instance_number} → {after.instance_number})"
    )
    if gap_policy == "reject":
        raise SeriesGeometryError(
            series,
            f"uneven slice spacing {_fmt(steps.min())}–{_fmt(steps.max())} mm: {detail}",
        )
    n_out = int(np.ceil((t[-1] - t[0]) / float(steps.min()) - 1e-6)) + 1
    step = float(t[-1] - t[0]) / (n_out - 1)
    qc.append(
        f"uneven slice spacing {_fmt(steps.min())}–{_fmt(steps.max())} mm resampled to "
        f"{_fmt(step)} mm ({detail})"
    )
    return step, True


def load_series(
    paths: Sequence[Path | str],
    *,
    gap_policy: Literal["reject", "resample"] = "reject",
    tilt_policy: Literal["reject", "resample"] = "resample",
) -> Volume:
    """Load the files of one DICOM series into a float32 Volume.

    Args:
        paths: the files of one series (single-frame slices, one Enhanced CT/MR
            multi-frame file, or a Siemens mosaic), in any order.
        gap_policy: "reject" raises on uneven slice spacing; "resample" interpolates
            linearly onto the smallest spacing.
        tilt_policy: "resample" moves gantry-tilted slices onto an orthogonal grid
            (axes: image row, image column, slice normal); "reject" raises.

    Returns:
        Volume with ``array[k, j, i]`` float32 (CT in HU via RescaleSlope/Intercept; MR
        values scaled only when a rescale is present), ``affine_lps``, modality,
        frame_of_reference_uid and ``source`` = {series_instance_uid, study_instance_uid,
        patient_id, sop_instance_uids (sorted acquired slices), frame_numbers, qc}.

    Raises:
        NotDicomError, UnreadableFileError, UnsupportedTransferSyntaxError: a bad file.
        MissingTagError: position, orientation, spacing or pixel data absent.
        InconsistentSeriesError: instances disagree (series, size, orientation, spacing).
        SeriesGeometryError: not a volume, or gaps/tilt refused by the policy.
    """
    if gap_policy not in ("reject", "resample"):
        raise ValueError(f"gap_policy must be 'reject' or 'resample', got {gap_policy!r}")
    if tilt_policy not in ("reject", "resample"):
        raise ValueError(f"tilt_policy must be 'reject' or 'resample', got {tilt_policy!r}")
    paths = list(paths)
    if not paths:
        raise DicomInputError("<no files>", "load_series needs at least one file")
    frames, first = _read(paths)
    series = str(first.get("SeriesInstanceUID", "")) or str(paths[0])
    modality = str(first.get("Modality", ""))
    qc: list[str] = []
    _check_consistent(frames, series)
    try:
        row_dir, col_dir, normal = row_col_normal(frames[0].orientation)
    except ValueError as exc:
        raise MissingTagError(frames[0].where, f"invalid ImageOrientationPatient: {exc}") from exc
    frames, t = _sort_and_dedupe(frames, normal, series, qc)
    row_spacing, col_spacing = frames[0].pixel_spacing_mm
    positions = np.array([f.position_lps for f in frames])

    if len(frames) == 1:
        step, uneven = _single_slice_spacing(frames[0], series), False
    else:
        step, uneven = _check_steps(t, frames, series, gap_policy, qc)
    rel = positions - positions[0]
    drift_px = max(
        float(np.max(np.abs(rel @ row_dir))) / col_spacing,
        float(np.max(np.abs(rel @ col_dir))) / row_spacing,
    )
    tilted = drift_px > _SHEAR_TOLERANCE_PX
    tilt_deg = tilt_angle_deg(positions, frames[0].orientation) if tilted else 0.0
    if tilted and tilt_policy == "reject":
        raise SeriesGeometryError(
            series,
            f"gantry tilt {tilt_deg:.1f}° (slice origins drift {drift_px:.1f} pixels off the "
            "slice normal): refused by tilt_policy='reject'",
        )

    array = _stack(frames)
    if tilted:  # first move each acquired slice in its plane (fewer slices to resample)
        array, origin = deshear_slices(
            array,
            positions,
            row_dir,
            col_dir,
            (row_spacing, col_spacing),
            _FILL_VALUE.get(modality, 0.0),
        )
        positions = origin + (t - t[0])[:, None] * normal
        qc.append(f"gantry tilt {tilt_deg:.1f}° resampled to orthogonal grid")
    if uneven:  # policy resample: interpolate along the normal
        array, positions, t = even_out_spacing(array, positions, t, step)
    origin = positions[0]

    volume = Volume.from_geometry(
        array,
        origin_lps=origin,
        spacing_mm=(col_spacing, row_spacing, step),
        direction=np.column_stack([row_dir, col_dir, normal]),
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "") or ""),
        modality=modality,
        source={
            "series_instance_uid": str(first.get("SeriesInstanceUID", "")),
            "study_instance_uid": str(first.get("StudyInstanceUID", "")),
            "patient_id": str(first.get("PatientID", "")),
            "sop_instance_uids": [f.sop_instance_uid for f in frames],
            "frame_numbers": [f.frame_number for f in frames],
            "qc": qc,
        },
    )
    return volume


def read_nifti(path: Path | str) -> Volume:
    """A NIfTI file as a Volume (LPS affine); scaled data come back as float32."""
    import nibabel as nib

    img = nib.load(str(path))
    if float(img.dataobj.slope) != 1.0 or float(img.dataobj.inter) != 0.0:
        img = nib.Nifti1Image(img.get_fdata(dtype=np.float32), img.affine)
    return Volume.from_nifti(img, source={"nifti_path": str(path), "qc": []})


def write_nifti(volume: Volume, path: Path | str) -> Path:
    """Write ``volume`` as NIfTI-1 (RAS affine via Volume.to_nifti); ``.nii.gz`` is gzipped
    at compression level 1 (fast; the default level is ~30× slower)."""
    import nibabel as nib

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    previous = nib.openers.Opener.default_compresslevel
    nib.openers.Opener.default_compresslevel = 1
    try:
        nib.save(volume.to_nifti(), str(path))
    finally:
        nib.openers.Opener.default_compresslevel = previous
    return path
