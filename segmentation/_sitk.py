"""Private SimpleITK helpers for registration: intensity preparation, body masks,
downsampling and cropping of ``sitk.Image`` in physical (LPS mm) terms."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk
from scipy import ndimage as ndi

from pipeline.image import Volume
from segmentation._common import BODY_THRESHOLD_HU, is_ct, largest_component

__all__: list[str] = []


def prepared(image: Volume) -> sitk.Image:
    """Float32 SimpleITK image with metal/outlier intensities clipped (robust MI)."""
    arr = np.asarray(image.array, dtype=np.float32)
    if is_ct(image):
        arr = np.clip(arr, -1000.0, 1500.0)
    else:
        hi = float(np.percentile(arr, 99.5)) if arr.size else 0.0
        arr = np.clip(arr, 0.0, max(hi, 1e-3))
    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    img.SetSpacing(tuple(float(s) for s in image.spacing_mm))
    img.SetOrigin(tuple(float(o) for o in image.origin_lps))
    img.SetDirection(tuple(float(d) for d in image.direction.reshape(-1)))
    return img



def body_array(arr: npt.NDArray[np.float32], *, ct: bool) -> npt.NDArray[np.bool_]:
    if ct:
        thr = BODY_THRESHOLD_HU
    else:
        img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.Execute(img)
        thr = float(otsu.GetThreshold()) * 0.5
    body = largest_component(arr > thr)
    for k in range(body.shape[0]):
        body[k] = ndi.binary_fill_holes(body[k])
    return body



def downsample(img: sitk.Image, spacing_mm: float) -> sitk.Image:
    """Gaussian-smooth and resample to spacing ≥ ``spacing_mm`` along each axis."""
    old = np.asarray(img.GetSpacing(), dtype=float)
    new = np.maximum(old, spacing_mm)
    if np.allclose(new, old):
        return img
    factors = np.maximum(np.floor(new / old / 2.0), 1).astype(int)
    if np.any(factors > 1):  # block averages first: smoothing a 512² image is the cost
        img = sitk.BinShrink(img, [int(f) for f in factors])
        old = np.asarray(img.GetSpacing(), dtype=float)
    sigma = np.sqrt(np.maximum(new**2 - old**2, 0.0)) / 2.0
    smooth = sitk.SmoothingRecursiveGaussian(img, [float(max(s, 1e-3)) for s in sigma])
    size = np.maximum(np.round(np.asarray(img.GetSize()) * old / new), 1).astype(int)
    return sitk.Resample(
        smooth, [int(s) for s in size], sitk.Transform(), sitk.sitkLinear, img.GetOrigin(),
        [float(s) for s in new], img.GetDirection(), float(np.min(sitk.GetArrayViewFromImage(
            img))), sitk.sitkFloat32,
    )



def mask_image(mask: npt.NDArray[np.bool_], like: sitk.Image) -> sitk.Image:
    m = sitk.GetImageFromArray(mask.astype(np.uint8))
    m.CopyInformation(like)
    return m



def crop_sitk(img: sitk.Image, center_lps: npt.NDArray[np.float64], half_mm: float) -> sitk.Image:
    """Crop a SimpleITK image to the index box covering ±half_mm around a point."""
    offsets = np.array([[a, b, c] for a in (-1, 1) for b in (-1, 1) for c in (-1, 1)], float)
    idx = np.array(
        [img.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in center_lps + o))
         for o in offsets * half_mm]
    )
    size = np.asarray(img.GetSize())
    lo = np.clip(np.floor(idx.min(axis=0)).astype(int), 0, size - 1)
    hi = np.clip(np.ceil(idx.max(axis=0)).astype(int) + 1, 1, size)
    hi = np.maximum(hi, lo + 1)
    return sitk.RegionOfInterest(img, [int(v) for v in hi - lo], [int(v) for v in lo])


def grid_like(img: sitk.Image, pad_vox: int) -> sitk.Image:
    """An empty float image on ``img``'s grid extended by ``pad_vox`` voxels on every side."""
    size = [int(s) + 2 * pad_vox for s in img.GetSize()]
    origin = img.TransformContinuousIndexToPhysicalPoint([-float(pad_vox)] * 3)
    out = sitk.Image(size, sitk.sitkFloat32)
    out.SetSpacing(img.GetSpacing())
    out.SetDirection(img.GetDirection())
    out.SetOrigin(origin)
    return out


def quantize(values: npt.NDArray[np.floating], lo: float, hi: float,
             bins: int) -> npt.NDArray[np.int64]:
    """Bin index in [0, bins) of each value over [lo, hi] (values outside are clipped)."""
    scale = bins / max(hi - lo, 1e-6)
    return np.clip(((values - lo) * scale).astype(np.int64), 0, bins - 1)


def mutual_information(joint_index: npt.NDArray[np.int64], bins: int) -> float:
    """Mutual information (nats) of paired bin indices ``a * bins + b``."""
    hist = np.bincount(joint_index, minlength=bins * bins).astype(np.float64)
    total = hist.sum()
    if total <= 0:
        return 0.0
    p = hist.reshape(bins, bins) / total
    pa = p.sum(axis=1, keepdims=True)
    pb = p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())
