"""External masks (e.g. a radiologist's correction) brought onto a pipeline image grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.image import GeometryError, Volume

__all__ = ["load_external_mask"]


def load_external_mask(
    path: str | Path, reference: Volume, *, tolerance_mm: float = 2.0
) -> Volume:
    """Read a NIfTI mask (nibabel) and resample it onto ``reference`` (nearest neighbour).

    Any non-zero voxel is foreground. Raises ``FileNotFoundError`` for a missing file,
    ``ValueError`` for a file that is not a 3-D NIfTI, and ``GeometryError`` when the
    mask does not share the reference's frame: its foreground lies (beyond
    ``tolerance_mm``) outside the reference field of view, e.g. a mask drawn on another
    study or saved with a wrong (RAS/LPS-flipped) affine.
    """
    import nibabel as nib

    from segmentation.registration import resample_to

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"external mask not found: {path}")
    try:
        img = nib.load(str(path))
        mask = Volume.from_nifti(img)
    except (nib.filebasedimages.ImageFileError, GeometryError, ValueError) as exc:
        raise ValueError(f"external mask {path}: not a readable 3-D NIfTI ({exc})") from exc
    fg = np.argwhere(np.asarray(mask.array) != 0)
    if fg.size == 0:
        raise ValueError(f"external mask {path}: empty (no non-zero voxel)")
    pts = mask.index_to_lps(fg[:, ::-1].astype(float))
    lo, hi = reference.bounds_lps()
    outside = np.any((pts < lo - tolerance_mm) | (pts > hi + tolerance_mm), axis=1)
    if outside.mean() > 0.01:
        raise GeometryError(
            f"external mask {path}: {100 * outside.mean():.0f}% of its foreground lies outside "
            f"the reference image (LPS bounds {np.round(lo, 1).tolist()}..."
            f"{np.round(hi, 1).tolist()} mm): different frame of reference or flipped affine?"
        )
    binary = mask.with_array((np.asarray(mask.array) != 0).astype(np.uint8))
    out = resample_to(binary, reference, None, interpolator="nearest", default_value=0)
    return out.with_array((out.array > 0).astype(np.uint8), modality="",
                          source={"external_mask": str(path)})
