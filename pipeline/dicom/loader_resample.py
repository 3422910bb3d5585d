"""Resampling of slice stacks that are not a regular orthogonal grid.

Two independent steps, each exact where no interpolation is needed:

1. :func:`even_out_spacing` — uneven slice spacing (missing slices, mixed 4/7 mm
   acquisitions): linear interpolation between the two neighbouring slices onto evenly
   spaced positions along the slice normal (the slice origins are interpolated too, so a
   tilted stack stays consistent).
2. :func:`deshear_slices` — gantry tilt (slice origins not on the slice normal): every
   slice is translated in its own plane onto one orthogonal grid whose axes are the
   image row, the image column and the slice normal. SimpleITK does the 2-D resampling
   (linear); the grid grows so no acquired pixel is cut off.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["even_out_spacing", "deshear_slices"]


def even_out_spacing(
    stack: npt.NDArray[np.float32],
    positions_lps: npt.NDArray[np.float64],
    along_normal_mm: npt.NDArray[np.float64],
    step_mm: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Interpolate ``stack`` (n, rows, cols; sorted by ``along_normal_mm``) onto positions
    ``t0, t0 + step, ...`` up to the last slice.

    Returns the new stack, the new slice origins (LPS) and their normal coordinates.
    """
    t = np.asarray(along_normal_mm, dtype=np.float64)
    if step_mm <= 0 or t.size < 2:
        raise ValueError(f"even_out_spacing needs ≥ 2 slices and step > 0, got {step_mm}")
    n_out = int(np.floor((t[-1] - t[0]) / step_mm + 1e-3)) + 1
    targets = t[0] + step_mm * np.arange(n_out)
    upper = np.clip(np.searchsorted(t, targets, side="left"), 1, t.size - 1)
    lower = upper - 1
    weight = np.clip((targets - t[lower]) / (t[upper] - t[lower]), 0.0, 1.0)
    out = np.empty((n_out, *stack.shape[1:]), dtype=np.float32)
    for m in range(n_out):
        w = float(weight[m])
        a, b = stack[lower[m]], stack[upper[m]]
        if w <= 1e-6:
            out[m] = a
        elif w >= 1 - 1e-6:
            out[m] = b
        else:
            np.multiply(a, np.float32(1 - w), out=out[m])
            out[m] += np.float32(w) * b
    origins = positions_lps[lower] + weight[:, None] * (positions_lps[upper] - positions_lps[lower])
    return out, origins, targets


def deshear_slices(
    stack: npt.NDArray[np.float32],
    origins_lps: npt.NDArray[np.float64],
    row_dir: npt.NDArray[np.float64],
    col_dir: npt.NDArray[np.float64],
    pixel_spacing_mm: tuple[float, float],
    fill_value: float,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """Move every slice in its plane onto a common orthogonal (row, col, normal) grid.

    Args:
        stack: (n, rows, cols) slices sorted along the normal.
        origins_lps: (n, 3) ImagePositionPatient of each slice.
        row_dir, col_dir: unit vectors along a row (column index grows) and a column.
        pixel_spacing_mm: (row spacing, column spacing), DICOM order.
        fill_value: value where the grown grid has no acquired data.

    Returns:
        The resampled stack (n, rows', cols') and the LPS origin of its first slice; slice
        m of the result lies in the plane of input slice m.
    """
    import SimpleITK as sitk

    row_spacing, col_spacing = pixel_spacing_mm
    rel = origins_lps - origins_lps[0]
    u = rel @ row_dir  # in-plane offset along the row direction (mm)
    v = rel @ col_dir
    u0, v0 = float(u.min()), float(v.min())
    extra_cols = int(np.ceil((u.max() - u0) / col_spacing - 1e-3))
    extra_rows = int(np.ceil((v.max() - v0) / row_spacing - 1e-3))
    n, rows, cols = stack.shape
    out_rows, out_cols = rows + extra_rows, cols + extra_cols
    out = np.empty((n, out_rows, out_cols), dtype=np.float32)
    identity: Any = sitk.Transform()
    for m in range(n):
        image = sitk.GetImageFromArray(np.ascontiguousarray(stack[m]))
        image.SetSpacing((col_spacing, row_spacing))
        # output pixel (0, 0) of slice m, in the input slice's own in-plane frame (mm)
        origin = (u0 - float(u[m]), v0 - float(v[m]))
        resampled = sitk.Resample(
            image,
            (out_cols, out_rows),
            identity,
            sitk.sitkLinear,
            origin,
            (col_spacing, row_spacing),
            (1.0, 0.0, 0.0, 1.0),
            float(fill_value),
            sitk.sitkFloat32,
        )
        out[m] = sitk.GetArrayFromImage(resampled)
    origin0 = origins_lps[0] + u0 * row_dir + v0 * col_dir
    return out, origin0
