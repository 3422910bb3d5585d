"""Rigid registration of CT/MR volumes (SimpleITK), with a quality figure per transform.

Conventions (as SimpleITK): a registration of ``moving`` onto ``fixed`` returns a
transform that maps *fixed* LPS points to *moving* LPS points. To bring the moving image
onto the fixed grid use :func:`resample_to`; to carry a point found in the fixed image
(e.g. a lesion seed) into the moving image use :func:`transform_points_lps`.

Two entry points:

* :func:`register_rigid` — studies taken on different days (table positions hundreds of
  mm apart, supine vs prone): body centre-of-mass initialisation with candidate rotations
  of 0° and 180° about the patient S axis and a search along S, a global multi-resolution
  Euler3D fit on a downsampled body, then a local rigid refinement on a box around the
  lesion (focus point).
* :func:`register_phases` — phases of one study (unenhanced ↔ contrast, MR pre ↔ post):
  a local rigid fit around the lesion starting from identity (breathing shifts of mm).

Both use Mattes mutual information (contrast changes intensities). The quality figure is
the normalised cross-correlation (same modality) or the entropy correlation coefficient
(different modalities) of the aligned images in the focus box, in [0, 1]; below a
threshold the result has ``ok=False`` and a "registration doubtful: ..." qc message.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import SimpleITK as sitk

from pipeline.image import Volume
from segmentation import _sitk
from segmentation._common import BODY_THRESHOLD_HU, as_point_lps, is_ct

__all__ = [
    "RegistrationResult",
    "register_rigid",
    "register_phases",
    "resample_to",
    "transform_points_lps",
    "registration_quality",
    "body_mask",
    "QUALITY_THRESHOLDS",
]

#: Minimum quality for ``ok=True``, per quality metric (see :func:`registration_quality`).
QUALITY_THRESHOLDS: dict[str, float] = {"ncc": 0.45, "ecc": 0.12}

_GLOBAL_SPACING_MM = 5.0  # downsampled grid for the global step (levels 10 mm, 5 mm)
_LOCAL_SPACING_MM = 1.5  # finest grid for the local refinement
_SEED = 20261122  # fixed sampling seed: the same inputs give the same transform


@dataclass(frozen=True)
class RegistrationResult:
    """Outcome of one registration.

    Attributes:
        transform: SimpleITK transform mapping fixed LPS points (mm) to moving LPS points.
        metric_value: final Mattes mutual information (negative; lower is better).
        quality: agreement of the aligned images in the focus box, in [0, 1].
        quality_metric: "ncc" (normalised cross-correlation, same modality) or "ecc"
            (entropy correlation coefficient, different modalities).
        ok: quality at or above the threshold and the focus box inside the moving image.
        qc: human-readable warnings ("registration doubtful: ...").
    """

    transform: sitk.Transform
    metric_value: float
    quality: float
    quality_metric: str
    ok: bool
    qc: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- public API
def transform_points_lps(transform: sitk.Transform, points_lps: Any) -> npt.NDArray[np.float64]:
    """Map (3,) or (N, 3) LPS points (mm) through a SimpleITK transform."""
    pts = np.asarray(points_lps, dtype=np.float64)
    single = pts.ndim == 1
    pts2 = pts.reshape(-1, 3)
    if not np.all(np.isfinite(pts2)):
        raise ValueError(f"transform_points_lps: points must be finite, got {points_lps!r}")
    out = np.array([transform.TransformPoint(tuple(float(v) for v in p)) for p in pts2])
    return out.reshape(3) if single else out.reshape(-1, 3)


def resample_to(
    moving: Volume,
    reference: Volume,
    transform: sitk.Transform | None = None,
    *,
    interpolator: Literal["linear", "nearest"] = "linear",
    default_value: float | None = None,
) -> Volume:
    """Resample ``moving`` onto the grid of ``reference`` through ``transform``.

    ``transform`` maps reference (fixed) LPS points to moving LPS points, as returned by
    :func:`register_rigid`; ``None`` means identity (same patient frame). Voxels falling
    outside the moving image take ``default_value`` (default: −1024 for CT, 0 otherwise).
    The output keeps the moving image's dtype, modality and source metadata, and the
    reference's grid and frame of reference.
    """
    if interpolator not in ("linear", "nearest"):
        raise ValueError(f"resample_to: interpolator must be 'linear' or 'nearest', got "
                         f"{interpolator!r}")
    if default_value is None:
        default_value = -1024.0 if (is_ct(moving) and interpolator == "linear") else 0.0
    interp = sitk.sitkLinear if interpolator == "linear" else sitk.sitkNearestNeighbor
    mov = moving.to_sitk()
    if mov.GetPixelID() == sitk.sitkUInt8 or moving.array.dtype == bool:
        mov = sitk.Cast(mov, sitk.sitkUInt8)
    out = sitk.Resample(
        mov,
        reference.to_sitk(),
        transform if transform is not None else sitk.Transform(3, sitk.sitkIdentity),
        interp,
        float(default_value),
        mov.GetPixelID(),
    )
    arr = sitk.GetArrayFromImage(out)
    if moving.array.dtype == bool:
        arr = arr.astype(bool)
    return Volume(
        arr,
        reference.affine_lps.copy(),
        frame_of_reference_uid=reference.frame_of_reference_uid,
        modality=moving.modality,
        source=dict(moving.source),
    )


def body_mask(image: Volume) -> Volume:
    """Binary mask (uint8) of the patient body: CT > −500 HU (MR: Otsu), largest component,
    holes (lungs, bowel gas) filled slice by slice."""
    arr = np.asarray(image.array, dtype=np.float32)
    mask = _sitk.body_array(arr, ct=is_ct(image))
    return image.with_array(mask.astype(np.uint8), modality="")


def register_rigid(
    fixed: Volume,
    moving: Volume,
    *,
    fixed_mask: Volume | None = None,
    initial: sitk.Transform | None = None,
    focus_point_lps: Any = None,
    focus_radius_mm: float | None = None,
    try_prone_flip: bool = True,
) -> RegistrationResult:
    """Rigidly register ``moving`` to ``fixed`` (different studies of one patient).

    Args:
        fixed: reference image (e.g. the baseline contrast CT).
        moving: image to align (e.g. the intra-procedural CT or a follow-up).
        fixed_mask: optional mask on the fixed grid restricting the metric.
        initial: optional starting transform (fixed → moving); skips the global search.
        focus_point_lps: LPS point (mm, fixed image) of the lesion; enables a local rigid
            refinement on a box of ±``focus_radius_mm`` around it, and the quality figure
            is measured there.
        focus_radius_mm: half size of the local box (default 40 mm: the kidney moves
            against the body wall, a larger box lets static tissue dominate).
        try_prone_flip: also try a 180° rotation about S (patient turned prone).

    Returns:
        RegistrationResult with an Euler3D transform mapping fixed → moving LPS points.
    """
    if fixed_mask is not None and not fixed.same_grid(fixed_mask):
        raise ValueError("register_rigid: fixed_mask is not on the fixed image grid")
    focus = None if focus_point_lps is None else as_point_lps(focus_point_lps, "focus_point_lps")
    radius_mm = 40.0 if focus_radius_mm is None else float(focus_radius_mm)
    if radius_mm <= 0:
        raise ValueError(f"register_rigid: focus_radius_mm must be > 0, got {focus_radius_mm}")

    f_img = _sitk.prepared(fixed)
    m_img = _sitk.prepared(moving)
    f_ct, m_ct = is_ct(fixed), is_ct(moving)
    notes: list[str] = []

    if initial is None:
        transform, metric = _global_rigid(f_img, m_img, f_ct, m_ct, fixed_mask, try_prone_flip)
    else:
        transform = _as_euler(initial, _image_center_lps(f_img))
        metric = float("nan")

    if focus is not None:
        transform, metric = _local_rigid(
            f_img, m_img, f_ct, transform, focus, radius_mm, fixed_mask, notes
        )
    return _finish(fixed, moving, transform, metric, focus, radius_mm, notes)


def register_phases(
    fixed: Volume,
    moving: Volume,
    focus_point_lps: Any,
    *,
    radius_mm: float = 20.0,
    initial: sitk.Transform | None = None,
    translation_only: bool = True,
) -> RegistrationResult:
    """Align two phases of one study around the lesion (breathing shifts of a few mm).

    Local Mattes-MI registration restricted to a ball of ``radius_mm`` around
    ``focus_point_lps`` (fixed image), translation only by default (the kidney slides
    with breathing; the body wall does not, so keep the ball small), starting from
    identity (same patient frame) or ``initial``. Returns a transform mapping fixed →
    moving LPS points (an Euler3DTransform).
    """
    focus = as_point_lps(focus_point_lps, "focus_point_lps")
    if radius_mm <= 0:
        raise ValueError(f"register_phases: radius_mm must be > 0, got {radius_mm}")
    f_img = _sitk.prepared(fixed)
    m_img = _sitk.prepared(moving)
    start = initial if initial is not None else sitk.Euler3DTransform()
    notes: list[str] = []
    transform, metric = _local_rigid(
        f_img, m_img, is_ct(fixed), _as_euler(start, focus), focus,
        float(radius_mm), None, notes, translation_only=translation_only,
    )
    return _finish(fixed, moving, transform, metric, focus, float(radius_mm), notes)


def registration_quality(
    fixed: Volume,
    moving: Volume,
    transform: sitk.Transform,
    *,
    focus_point_lps: Any = None,
    radius_mm: float = 60.0,
) -> tuple[float, str, float]:
    """Quality of a transform: (value in [0, 1], metric name, fraction of the box covered).

    Measured inside the fixed body mask, in the box ±``radius_mm`` around the focus point
    (whole image when None): "ncc" when both images share a modality, else "ecc".
    """
    f_img = _sitk.prepared(fixed)
    m_img = _sitk.prepared(moving)
    focus = None if focus_point_lps is None else as_point_lps(focus_point_lps, "focus_point_lps")
    same = (fixed.modality or "").upper() == (moving.modality or "").upper() and (
        is_ct(fixed) == is_ct(moving)
    )
    return _quality(f_img, m_img, is_ct(fixed), transform, focus, radius_mm, same)


# --------------------------------------------------------------------------- internals
def _center_of_mass_lps(mask: npt.NDArray[np.bool_], img: sitk.Image) -> npt.NDArray[np.float64]:
    kji = np.argwhere(mask).mean(axis=0)
    return np.asarray(img.TransformContinuousIndexToPhysicalPoint([float(v) for v in kji[::-1]]))


def _extent_along_s_mm(mask: npt.NDArray[np.bool_], img: sitk.Image) -> float:
    ks = np.nonzero(mask.any(axis=(1, 2)))[0]
    d = np.asarray(img.GetDirection()).reshape(3, 3)
    return float((ks.max() - ks.min() + 1) * img.GetSpacing()[2] * abs(d[2, 2]))


def _image_center_lps(img: sitk.Image) -> npt.NDArray[np.float64]:
    size = np.asarray(img.GetSize(), dtype=float)
    return np.asarray(img.TransformContinuousIndexToPhysicalPoint(list((size - 1) / 2)))


def _as_euler(transform: sitk.Transform, center_lps: npt.NDArray[np.float64]) -> sitk.Transform:
    """An Euler3DTransform centred at ``center_lps`` equal to a rigid ``transform``."""
    tx = sitk.Euler3DTransform()
    tx.SetCenter(tuple(float(c) for c in center_lps))
    try:
        # matrix by finite differences of the (rigid) transform around the centre
        c = np.asarray(center_lps, dtype=float)
        base = np.asarray(transform.TransformPoint(tuple(float(v) for v in c)))
        mat = np.column_stack(
            [np.asarray(transform.TransformPoint(tuple(float(v) for v in c + e))) - base
             for e in np.eye(3)]
        )
        u, _, vt = np.linalg.svd(mat)
        rot = u @ vt
        if np.linalg.det(rot) < 0:
            raise ValueError("transform is not a proper rotation (reflection)")
        tx.SetMatrix(tuple(float(v) for v in rot.reshape(-1)), 1e-4)
        tx.SetTranslation(tuple(float(v) for v in base - c))
    except RuntimeError as exc:  # SimpleITK refuses non-orthogonal matrices
        raise ValueError(f"initial transform is not rigid: {exc}") from exc
    return tx


def _method(
    fixed_mask: npt.NDArray[np.bool_],
    like: sitk.Image,
    bins: int,
    n_samples: int,
    iterations: int,
    step_mm: float,
) -> sitk.ImageRegistrationMethod:
    """Mattes MI + regular-step gradient descent, about ``n_samples`` random fixed samples
    (finest level) inside ``fixed_mask``, physical-shift parameter scales."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    sampling = min(1.0, n_samples / max(int(fixed_mask.sum()), 1))
    if sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, _SEED)
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetMetricFixedMask(_sitk.mask_image(fixed_mask, like))
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step_mm,
        minStep=0.02,
        numberOfIterations=iterations,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    return reg


def _euler(center: npt.NDArray[np.float64], angle_s_rad: float,
           translation: npt.NDArray[np.float64]) -> sitk.Euler3DTransform:
    tx = sitk.Euler3DTransform()
    tx.SetCenter(tuple(float(c) for c in center))
    tx.SetRotation(0.0, 0.0, float(angle_s_rad))
    tx.SetTranslation(tuple(float(t) for t in translation))
    return tx


def _global_rigid(
    f_img: sitk.Image,
    m_img: sitk.Image,
    f_ct: bool,
    m_ct: bool,
    fixed_mask: Volume | None,
    try_prone_flip: bool,
) -> tuple[sitk.Transform, float]:
    """Body-COM start, 0°/180° about S and an S-offset search, then a 2-level Euler fit."""
    f_lo = _sitk.downsample(f_img, _GLOBAL_SPACING_MM)
    m_lo = _sitk.downsample(m_img, _GLOBAL_SPACING_MM)
    f_body = _sitk.body_array(sitk.GetArrayFromImage(f_lo), ct=f_ct)
    m_body = _sitk.body_array(sitk.GetArrayFromImage(m_lo), ct=m_ct)
    if not f_body.any() or not m_body.any():
        raise ValueError("register_rigid: no body found (nothing above the body threshold)")
    if fixed_mask is not None:
        user = sitk.Resample(
            sitk.Cast(fixed_mask.to_sitk(), sitk.sitkUInt8), f_lo, sitk.Transform(),
            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8,
        )
        f_body &= sitk.GetArrayFromImage(user) > 0
    c_f = _center_of_mass_lps(f_body, f_lo)
    c_m = _center_of_mass_lps(m_body, m_lo)
    # S-offsets: the body COM along S depends on scan coverage, so search around it
    span = abs(_extent_along_s_mm(f_body, f_lo) - _extent_along_s_mm(m_body, m_lo)) / 2 + 30
    offsets = np.arange(-span, span + 1e-6, 10.0)
    angles = [0.0, math.pi] if try_prone_flip else [0.0]

    f_values = sitk.GetArrayFromImage(f_lo)
    candidates: list[sitk.Transform] = []
    for angle in angles:
        scored = [
            (_overlap_mi(f_values, f_body, f_lo, m_lo, tx), tx)
            for tx in (
                _euler(c_f, angle, c_m - c_f + np.array([0.0, 0.0, dz])) for dz in offsets
            )
        ]
        candidates.append(max(scored, key=lambda s: s[0])[1])

    best: tuple[float, sitk.Transform] | None = None
    for start in candidates:
        reg = _method(f_body, f_lo, 32, 20000, 120, 8.0)
        reg.SetShrinkFactorsPerLevel([2, 1])
        reg.SetSmoothingSigmasPerLevel([2.0, 0.0])
        reg.SetInitialTransform(start, inPlace=False)
        out = reg.Execute(f_lo, m_lo)
        tx = _as_euler(out, c_f)
        value = -_overlap_mi(f_values, f_body, f_lo, m_lo, tx)
        if best is None or value < best[0]:
            best = (value, tx)
    if best is None:  # pragma: no cover - candidates is never empty
        raise RuntimeError("register_rigid: no candidate initialisation")
    return best[1], best[0]


def _local_rigid(
    f_img: sitk.Image,
    m_img: sitk.Image,
    f_ct: bool,
    start: sitk.Transform,
    focus: npt.NDArray[np.float64],
    radius_mm: float,
    fixed_mask: Volume | None,
    qc: list[str],
    *,
    translation_only: bool = False,
) -> tuple[sitk.Transform, float]:
    """Rigid refinement on a box of ±radius around the focus (fixed), MI, 2 levels.

    When the box is too thin or empty in either image, the start transform is returned
    unchanged and a qc note says why."""
    f_box = _sitk.crop_sitk(f_img, focus, radius_mm)
    f_box = _sitk.downsample(f_box, _LOCAL_SPACING_MM)
    m_center = np.asarray(start.TransformPoint(tuple(float(v) for v in focus)))
    m_box = _sitk.crop_sitk(m_img, m_center, radius_mm + 40.0)
    m_box = _sitk.downsample(m_box, _LOCAL_SPACING_MM)
    f_arr = sitk.GetArrayFromImage(f_box)
    body = f_arr > (BODY_THRESHOLD_HU if f_ct else 0.05 * float(f_arr.max()))
    if fixed_mask is not None:
        user = sitk.Resample(
            sitk.Cast(fixed_mask.to_sitk(), sitk.sitkUInt8), f_box, sitk.Transform(),
            sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8,
        )
        body &= sitk.GetArrayFromImage(user) > 0
    if translation_only:  # a ball, not a box: corners hold the most static tissue
        kji = np.argwhere(np.ones(body.shape, dtype=bool))
        pts = np.asarray(f_box.GetOrigin()) + (
            (kji[:, ::-1] * np.asarray(f_box.GetSpacing()))
            @ np.asarray(f_box.GetDirection()).reshape(3, 3).T
        )
        body &= (np.linalg.norm(pts - focus, axis=1) <= radius_mm).reshape(body.shape)
    tx0 = _as_euler(start, focus)
    if min(f_box.GetSize()) < 8 or min(m_box.GetSize()) < 8 or body.sum() < 1000:
        qc.append("registration doubtful: lesion box too small or outside an image, "
                  "local refinement skipped")
        return tx0, float("nan")
    reg = _method(body, f_box, 48, 40000, 120, 3.0)
    reg.SetShrinkFactorsPerLevel([2, 1])
    reg.SetSmoothingSigmasPerLevel([1.5, 0.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if translation_only:
        shift = np.asarray(tx0.TransformPoint(tuple(float(v) for v in focus))) - focus
        tx_start: sitk.Transform = sitk.TranslationTransform(3, tuple(float(v) for v in shift))
        if not np.allclose(np.asarray(tx0.GetMatrix()), np.eye(3).ravel(), atol=1e-6):
            tx_start = tx0  # a rotated initial transform: keep all rigid parameters
    else:
        tx_start = tx0
    reg.SetInitialTransform(tx_start, inPlace=False)
    try:
        out = reg.Execute(f_box, m_box)
    except RuntimeError as exc:  # e.g. too few samples mapping inside the moving box
        qc.append(f"registration doubtful: local refinement failed ({str(exc)[-120:]})")
        return tx0, float("nan")
    return _as_euler(out, focus), float(reg.GetMetricValue())


def _overlap_mi(
    f_values: npt.NDArray[np.float32],
    f_body: npt.NDArray[np.bool_],
    f_img: sitk.Image,
    m_img: sitk.Image,
    transform: sitk.Transform,
) -> float:
    """Mutual information (nats) of fixed body voxels and the moving image through the
    transform, counting only voxels that map inside the moving image. Scaled by the
    covered fraction so that a transform sliding the images apart does not win."""
    outside = -1.0e6
    warped_img = sitk.Resample(m_img, f_img, transform, sitk.sitkLinear, outside,
                               sitk.sitkFloat32)
    warped = sitk.GetArrayFromImage(warped_img)
    sel = f_body & (warped > outside / 2)
    if sel.sum() < 100:
        return 0.0
    hist, _, _ = np.histogram2d(f_values[sel], warped[sel], bins=32)
    p = hist / hist.sum()
    pa = p.sum(axis=1, keepdims=True)
    pb = p.sum(axis=0, keepdims=True)
    nz = p > 0
    mi = float((p[nz] * np.log(p[nz] / (pa @ pb)[nz])).sum())
    return mi * float(sel.sum()) / float(f_body.sum())


def _quality(
    f_img: sitk.Image,
    m_img: sitk.Image,
    f_ct: bool,
    transform: sitk.Transform,
    focus: npt.NDArray[np.float64] | None,
    radius_mm: float,
    same_modality: bool,
) -> tuple[float, str, float]:
    f_box = f_img if focus is None else _sitk.crop_sitk(f_img, focus, radius_mm)
    f_box = _sitk.downsample(f_box, _LOCAL_SPACING_MM if focus is not None else _GLOBAL_SPACING_MM)
    f_arr = sitk.GetArrayFromImage(f_box).astype(np.float64)
    warped = sitk.GetArrayFromImage(
        sitk.Resample(m_img, f_box, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    ).astype(np.float64)
    ones = sitk.Image(m_img.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(m_img)
    inside = sitk.GetArrayFromImage(
        sitk.Resample(ones, f_box, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ) > 0
    body = f_arr > (BODY_THRESHOLD_HU if f_ct else 0.05 * float(f_arr.max()))
    covered = float(inside[body].mean()) if body.any() else 0.0
    sel = body & inside
    if sel.sum() < 100:
        return 0.0, "ncc" if same_modality else "ecc", covered
    a, b = f_arr[sel], warped[sel]
    if same_modality:
        sa, sb = a.std(), b.std()
        ncc = float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb)) if sa * sb > 0 else 0.0
        return float(np.clip(ncc, 0.0, 1.0)), "ncc", covered
    return _ecc(a, b), "ecc", covered


def _ecc(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64], bins: int = 32) -> float:
    """Entropy correlation coefficient 2·MI / (H(a) + H(b)), in [0, 1]."""
    hist, _, _ = np.histogram2d(a, b, bins=bins)
    p = hist / hist.sum()
    pa, pb = p.sum(axis=1), p.sum(axis=0)

    def _h(q: npt.NDArray[np.float64]) -> float:
        q = q[q > 0]
        return float(-(q * np.log(q)).sum())

    ha, hb, hab = _h(pa), _h(pb), _h(p.ravel())
    if ha + hb <= 0:
        return 0.0
    return float(np.clip(2.0 * (ha + hb - hab) / (ha + hb), 0.0, 1.0))


def _finish(
    fixed: Volume,
    moving: Volume,
    transform: sitk.Transform,
    metric: float,
    focus: npt.NDArray[np.float64] | None,
    radius_mm: float,
    notes: list[str],
) -> RegistrationResult:
    f_img = _sitk.prepared(fixed)
    m_img = _sitk.prepared(moving)
    same = (fixed.modality or "").upper() == (moving.modality or "").upper() and (
        is_ct(fixed) == is_ct(moving)
    )
    quality, name, covered = _quality(
        f_img, m_img, is_ct(fixed), transform, focus, radius_mm, same
    )
    qc: list[str] = list(notes)
    threshold = QUALITY_THRESHOLDS[name]
    if quality < threshold:
        qc.append(
            f"registration doubtful: {name} {quality:.2f} < {threshold:.2f} in the "
            f"{'lesion box' if focus is not None else 'body'}"
        )
    if covered < 0.5:
        qc.append(
            f"registration doubtful: only {100 * covered:.0f}% of the "
            f"{'lesion box' if focus is not None else 'body'} maps inside the moving image"
        )
    if focus is not None:
        mapped = transform_points_lps(transform, focus)
        if not moving.contains_lps(mapped):
            qc.append(
                "registration doubtful: the focus point maps outside the moving image "
                f"({np.round(mapped, 1).tolist()} LPS mm)"
            )
    return RegistrationResult(
        transform=transform,
        metric_value=float(metric),
        quality=float(quality),
        quality_metric=name,
        ok=not qc,
        qc=qc,
    )

