"""Slice geometry from DICOM attributes (ImageOrientationPatient, ImagePositionPatient).

Pure numpy, shared by the index (classification) and the loader (volume assembly).
All points and vectors are patient LPS millimetres.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "row_col_normal",
    "orientation_label",
    "positions_along_normal_mm",
    "tilt_angle_deg",
]

# A plane is called axial/coronal/sagittal when its normal is within this angle of the
# patient axis (dcm2niix and most viewers use a similar dominance rule; 10° keeps a
# gantry-tilted axial CT "axial" and a double-oblique MR "oblique").
_OBLIQUE_LIMIT_DEG = 10.0


def row_col_normal(
    image_orientation: Sequence[float],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Unit row direction (along a row, i.e. column index i grows), column direction and
    slice normal (row × col) from the 6 values of ImageOrientationPatient."""
    iop = np.asarray(image_orientation, dtype=np.float64).reshape(-1)
    if iop.size != 6 or not np.all(np.isfinite(iop)):
        raise ValueError(f"ImageOrientationPatient must have 6 finite values, got {iop.tolist()}")
    row, col = iop[:3], iop[3:]
    nr, nc = np.linalg.norm(row), np.linalg.norm(col)
    if nr < 1e-6 or nc < 1e-6:
        raise ValueError(f"ImageOrientationPatient has a zero vector: {iop.tolist()}")
    row, col = row / nr, col / nc
    if abs(float(row @ col)) > 1e-2:
        raise ValueError(f"ImageOrientationPatient vectors are not orthogonal: {iop.tolist()}")
    normal = np.cross(row, col)
    return row, col, normal / np.linalg.norm(normal)


def orientation_label(image_orientation: Sequence[float]) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique' from the slice normal."""
    _, _, normal = row_col_normal(image_orientation)
    axis = int(np.argmax(np.abs(normal)))
    angle = float(np.degrees(np.arccos(min(1.0, abs(normal[axis])))))
    if angle > _OBLIQUE_LIMIT_DEG:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def positions_along_normal_mm(
    image_positions: Any, image_orientation: Sequence[float]
) -> npt.NDArray[np.float64]:
    """Projection of each ImagePositionPatient (N×3) on the slice normal, in mm."""
    _, _, normal = row_col_normal(image_orientation)
    pos = np.asarray(image_positions, dtype=np.float64).reshape(-1, 3)
    return pos @ normal


def tilt_angle_deg(image_positions: Any, image_orientation: Sequence[float]) -> float:
    """Angle between the slice normal and the line through the first and last slice
    origins (gantry tilt); 0 for an orthogonal stack or a single slice."""
    pos = np.asarray(image_positions, dtype=np.float64).reshape(-1, 3)
    if len(pos) < 2:
        return 0.0
    _, _, normal = row_col_normal(image_orientation)
    proj = pos @ normal
    order = np.argsort(proj)
    step = pos[order[-1]] - pos[order[0]]
    length = np.linalg.norm(step)
    if length < 1e-6:
        return 0.0
    cosang = abs(float(step @ normal)) / length
    return float(np.degrees(np.arccos(min(1.0, cosang))))
