"""The one image type: voxels plus their geometry in DICOM patient coordinates (LPS, mm).

Every stage passes :class:`Volume` around. The array is indexed ``[k, j, i]``
(slice, row, column), as SimpleITK and most DICOM stacks do; the affine maps the
*voxel index* ``(i, j, k)`` (column, row, slice) to patient LPS millimetres::

    point_lps = affine_lps @ [i, j, k, 1]

Conversions to other conventions (NIfTI RAS, SimpleITK) happen here and only here.
This module imports nothing else from the project.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "Volume",
    "GeometryError",
    "check_same_grid",
    "normalize_spacing_mm",
    "affine_from_geometry",
]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


class GeometryError(ValueError):
    """Raised when an image's geometry is missing, degenerate or inconsistent."""


def normalize_spacing_mm(spacing_mm: Any, ndim: int = 3) -> npt.NDArray[np.float64]:
    """Validate a spacing argument and return it as ``float64`` of length ``ndim``.

    There is deliberately no default: a missing spacing is an error, never 1 mm.
    Every function taking a spacing routes it through here.
    """
    if spacing_mm is None:
        raise GeometryError("spacing_mm is required (no default spacing is assumed)")
    arr = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if arr.size != ndim:
        raise GeometryError(f"spacing_mm must have {ndim} values, got {arr.size}: {spacing_mm!r}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise GeometryError(f"spacing_mm must be finite and > 0, got {arr.tolist()}")
    return arr


def affine_from_geometry(
    origin_lps: Any, spacing_mm: Any, direction: Any
) -> npt.NDArray[np.float64]:
    """Build the 4×4 index→LPS affine.

    ``direction`` is 3×3 with the *columns* being the unit vectors of the i, j, k
    axes in LPS (SimpleITK's convention, row-major flattened or as a matrix).
    """
    spacing = normalize_spacing_mm(spacing_mm)
    d = np.asarray(direction, dtype=np.float64).reshape(3, 3)
    norms = np.linalg.norm(d, axis=0)
    if not np.allclose(norms, 1.0, atol=1e-3):
        raise GeometryError(f"direction columns must be unit vectors, norms {norms.tolist()}")
    if abs(np.linalg.det(d)) < 1e-3:
        raise GeometryError("direction matrix is degenerate (axes are parallel)")
    origin = np.asarray(origin_lps, dtype=np.float64).reshape(3)
    if not np.all(np.isfinite(origin)):
        raise GeometryError(f"origin_lps must be finite, got {origin.tolist()}")
    affine = np.eye(4)
    affine[:3, :3] = d * spacing[np.newaxis, :]
    affine[:3, 3] = origin
    return affine


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxels ``array[k, j, i]`` and the index→LPS affine that places them.

    Attributes:
        array: 3-D numpy array indexed (slice, row, column).
        affine_lps: 4×4 float64 mapping voxel index (i, j, k, 1) to LPS mm.
        frame_of_reference_uid: DICOM FrameOfReferenceUID ("" when unknown).
        modality: "CT", "MR", ... ("" for masks or derived images).
        source: free metadata (series/study/SOP instance UIDs, qc notes).
    """

    array: npt.NDArray[Any]
    affine_lps: npt.NDArray[np.float64]
    frame_of_reference_uid: str = ""
    modality: str = ""
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise GeometryError(f"Volume.array must be 3-D, got shape {self.array.shape}")
        aff = np.asarray(self.affine_lps, dtype=np.float64)
        if aff.shape != (4, 4):
            raise GeometryError(f"affine_lps must be 4×4, got {aff.shape}")
        if not np.allclose(aff[3], [0, 0, 0, 1]):
            raise GeometryError(f"affine_lps last row must be [0,0,0,1], got {aff[3].tolist()}")
        if abs(np.linalg.det(aff[:3, :3])) < 1e-9:
            raise GeometryError("affine_lps is singular")
        object.__setattr__(self, "affine_lps", aff)

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_geometry(
        cls,
        array: npt.NDArray[Any],
        *,
        origin_lps: Any,
        spacing_mm: Any,
        direction: Any = None,
        **kwargs: Any,
    ) -> Volume:
        """Build from origin (LPS mm of voxel [0,0,0]), spacing (i, j, k) and direction.

        ``direction=None`` means the identity (axial, supine, feet-first-independent).
        """
        d = np.eye(3) if direction is None else direction
        return cls(array, affine_from_geometry(origin_lps, spacing_mm, d), **kwargs)

    def with_array(self, array: npt.NDArray[Any], **changes: Any) -> Volume:
        """A volume on the same grid with other voxels (e.g. a mask of this image)."""
        if array.shape != self.array.shape:
            raise GeometryError(f"with_array: shape {array.shape} != grid {self.array.shape}")
        return replace(self, array=array, **changes)

    # ----------------------------------------------------------------- geometry
    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        k, j, i = self.array.shape
        return (i, j, k)

    @property
    def spacing_mm(self) -> npt.NDArray[np.float64]:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.affine_lps[:3, :3], axis=0)

    @property
    def direction(self) -> npt.NDArray[np.float64]:
        """3×3 matrix whose columns are the i, j, k unit vectors in LPS."""
        return self.affine_lps[:3, :3] / self.spacing_mm[np.newaxis, :]

    @property
    def origin_lps(self) -> npt.NDArray[np.float64]:
        return self.affine_lps[:3, 3].copy()

    @property
    def voxel_volume_mm3(self) -> float:
        return float(abs(np.linalg.det(self.affine_lps[:3, :3])))

    @property
    def slice_normal_lps(self) -> npt.NDArray[np.float64]:
        return self.direction[:, 2]

    def index_to_lps(self, index_ijk: Any) -> npt.NDArray[np.float64]:
        """Map (N, 3) or (3,) voxel indices (i, j, k) to LPS mm."""
        idx = np.asarray(index_ijk, dtype=np.float64)
        return idx @ self.affine_lps[:3, :3].T + self.affine_lps[:3, 3]

    def lps_to_index(self, point_lps: Any) -> npt.NDArray[np.float64]:
        """Map (N, 3) or (3,) LPS points to continuous voxel indices (i, j, k)."""
        pts = np.asarray(point_lps, dtype=np.float64)
        inv = np.linalg.inv(self.affine_lps)
        return pts @ inv[:3, :3].T + inv[:3, 3]

    def contains_lps(self, point_lps: Any) -> bool:
        ijk = self.lps_to_index(point_lps)
        return bool(np.all(ijk >= -0.5) and np.all(ijk <= np.asarray(self.shape_ijk) - 0.5))

    def bounds_lps(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Axis-aligned LPS bounding box (min, max) of the voxel centres."""
        i, j, k = (n - 1 for n in self.shape_ijk)
        corners = np.array([[a, b, c] for a in (0, i) for b in (0, j) for c in (0, k)], float)
        pts = self.index_to_lps(corners)
        return pts.min(axis=0), pts.max(axis=0)

    def crop_ijk(self, lo_ijk: Any, hi_ijk: Any) -> Volume:
        """Sub-volume of voxels lo ≤ index < hi (clipped to the grid), geometry kept."""
        shape = np.asarray(self.shape_ijk)
        lo = np.clip(np.floor(np.asarray(lo_ijk)).astype(int), 0, shape)
        hi = np.clip(np.ceil(np.asarray(hi_ijk)).astype(int), 0, shape)
        if np.any(hi <= lo):
            raise GeometryError(f"empty crop {lo.tolist()}..{hi.tolist()} of grid {shape.tolist()}")
        arr = self.array[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
        aff = self.affine_lps.copy()
        aff[:3, 3] = self.index_to_lps(lo)
        return replace(self, array=arr, affine_lps=aff)

    def crop_around_lps(self, center_lps: Any, half_size_mm: float) -> Volume:
        """Crop a box of ±half_size_mm (in every patient direction) around a point."""
        c = np.asarray(center_lps, dtype=np.float64)
        offsets = np.array([[a, b, d] for a in (-1, 1) for b in (-1, 1) for d in (-1, 1)], float)
        ijk = self.lps_to_index(c + offsets * half_size_mm)
        return self.crop_ijk(ijk.min(axis=0), ijk.max(axis=0) + 1)

    def same_grid(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        return self.array.shape == other.array.shape and np.allclose(
            self.affine_lps, other.affine_lps, atol=atol_mm
        )

    # ----------------------------------------------------------------- conversions
    def affine_ras(self) -> npt.NDArray[np.float64]:
        """NIfTI-style affine mapping (i, j, k) to RAS mm (for nibabel)."""
        return _LPS_TO_RAS @ self.affine_lps

    def to_nifti(self) -> Any:
        """A nibabel Nifti1Image (array transposed to (i, j, k), RAS affine)."""
        import nibabel as nib

        # the (i, j, k) view of a C-ordered [k, j, i] array is Fortran-ordered, which is
        # NIfTI's on-disk order: no transposing copy here or when nibabel writes it
        data = np.transpose(self.array, (2, 1, 0))
        img = nib.Nifti1Image(data, self.affine_ras())
        img.header.set_xyzt_units("mm")
        img.set_qform(self.affine_ras(), code=1)
        img.set_sform(self.affine_ras(), code=1)
        return img

    @classmethod
    def from_nifti(cls, img: Any, **kwargs: Any) -> Volume:
        """From a nibabel image (RAS affine, data (i, j, k))."""
        data = np.asanyarray(img.dataobj)
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim != 3:
            raise GeometryError(f"NIfTI must be 3-D, got shape {data.shape}")
        affine_lps = _LPS_TO_RAS @ np.asarray(img.affine, dtype=np.float64)
        return cls(np.ascontiguousarray(np.transpose(data, (2, 1, 0))), affine_lps, **kwargs)

    def to_sitk(self) -> Any:
        """A SimpleITK image with the same LPS geometry (SimpleITK is LPS natively).

        Boolean masks become uint8 (SimpleITK has no bool pixel type).
        """
        import SimpleITK as sitk

        arr = self.array.astype(np.uint8) if self.array.dtype == bool else self.array
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        img.SetSpacing(tuple(float(s) for s in self.spacing_mm))
        img.SetOrigin(tuple(float(o) for o in self.origin_lps))
        img.SetDirection(tuple(float(d) for d in self.direction.reshape(-1)))
        return img

    @classmethod
    def from_sitk(cls, img: Any, **kwargs: Any) -> Volume:
        import SimpleITK as sitk

        arr = sitk.GetArrayFromImage(img)
        return cls.from_geometry(
            arr,
            origin_lps=img.GetOrigin(),
            spacing_mm=img.GetSpacing(),
            direction=np.asarray(img.GetDirection()).reshape(3, 3),
            **kwargs,
        )


def check_same_grid(image: Volume, mask: Volume, atol_mm: float = 1e-3) -> None:
    """Raise GeometryError unless ``image`` and ``mask`` share shape and affine."""
    if image.array.shape != mask.array.shape:
        raise GeometryError(f"grid mismatch: shape {image.array.shape} vs {mask.array.shape}")
    if not np.allclose(image.affine_lps, mask.affine_lps, atol=atol_mm):
        raise GeometryError(
            "grid mismatch: affines differ by up to "
            f"{np.abs(image.affine_lps - mask.affine_lps).max():.4g} mm"
        )
