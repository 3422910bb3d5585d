"""Review overlays: one lesion in one study drawn the way a radiologist reads it.

The picture is always the *patient axial plane* through the lesion, in radiological
convention (patient's right on the image left, anterior at the top), whatever the
acquisition orientation (supine, prone, feet-first, oblique): the plane is resampled
with SimpleITK onto an LPS-aligned grid whose column axis runs towards patient left
(+x) and whose row axis runs towards posterior (+y). Contours of the masks, the RECIST
calipers with their lengths, a 10 mm scale bar, orientation letters and the
measurement values are drawn with matplotlib's Agg canvas (no display, no pyplot state).

Layout of the PNG (tests rely on it): the image occupies the left ``size_px × size_px``
square, the values column the rest (``size_px * 0.75`` wide).
"""

from __future__ import annotations

import os
import re
import tempfile
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from matplotlib import patheffects
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from pipeline.assessment.records import Role
from pipeline.image import GeometryError, Volume, check_same_grid

__all__ = [
    "MASK_COLOURS",
    "MASK_LABELS",
    "ReviewPanel",
    "caliper_length_mm",
    "caliper_notes",
    "overlay_figure",
    "render_overlay",
    "save_png_atomic",
]

MASK_COLOURS: dict[str, str] = {
    "tumour": "#ffe600",  # yellow
    "iceball": "#00e5ff",  # cyan
    "ablation_zone": "#ff3df5",  # magenta
    "enhancing": "#ff2a2a",  # red, filled semi-transparent
    "probes": "#a0a0a0",  # grey
}
MASK_LABELS: dict[str, str] = {
    "tumour": "tumour",
    "iceball": "ice ball",
    "ablation_zone": "ablation zone",
    "enhancing": "enhancing tissue",
    "probes": "probes",
}
_LONG_COLOUR = "#39ff14"
_SHORT_COLOUR = "#ff9f1a"
_CT_WINDOW = (40.0, 400.0)  # level, width: soft tissue
_MIN_HALF_FOV_MM = 40.0
_RESAMPLED_PX = 256
_ASPECT = 1.75  # figure width / height
_MODALITIES = ("CT", "MR")


@dataclass(frozen=True, eq=False)
class ReviewPanel:
    """One lesion in one study, as shown in the review report.

    Attributes:
        patient_id, lesion_id: identifiers (free text; escaped wherever shown).
        study_date: date of the study.
        role: ``baseline`` | ``intraprocedural`` | ``followup`` (converted to :class:`Role`).
        days_since_procedure: study date minus procedure date, in days.
        image: the CT/MR the measurement was made on (full volume or a crop).
        masks: any subset of ``tumour``, ``iceball``, ``ablation_zone``, ``enhancing``,
            ``probes``; boolean volumes on the same grid as ``image``.
        long_axis_endpoints_lps / short_axis_endpoints_lps: 2×3 LPS mm caliper endpoints
            (RECIST long/short axis on the measured axial slice) or ``None``.
        values: label → formatted value (with unit) printed beside the image, in order.
        flags: qc warnings / findings shown highlighted.
        modality: ``CT`` (soft-tissue window W400/L40) or ``MR`` (0 to the 99th
            percentile of the signal around the lesion).
        window: optional (level, width) overriding the default window.
        study_instance_uid: optional, to match the panel with its timepoint row.
    """

    patient_id: str
    lesion_id: str
    study_date: date
    role: Role
    days_since_procedure: int
    image: Volume
    masks: Mapping[str, Volume] = field(default_factory=dict)
    long_axis_endpoints_lps: npt.NDArray[np.float64] | None = None
    short_axis_endpoints_lps: npt.NDArray[np.float64] | None = None
    values: Mapping[str, str] = field(default_factory=dict)
    flags: Sequence[str] = ()
    modality: str = "CT"
    window: tuple[float, float] | None = None
    study_instance_uid: str = ""

    def __post_init__(self) -> None:
        where = f"ReviewPanel {self.patient_id}/{self.lesion_id} {self.study_date}"
        object.__setattr__(self, "role", Role(self.role))
        if self.modality not in _MODALITIES:
            raise ValueError(f"{where}: modality must be CT or MR, got {self.modality!r}")
        if not isinstance(self.study_date, date):
            raise TypeError(f"{where}: study_date must be a datetime.date")
        if not isinstance(self.image, Volume):
            raise TypeError(f"{where}: image must be a pipeline.image.Volume")
        for name, mask in self.masks.items():
            if not isinstance(mask, Volume):
                raise TypeError(f"{where}: mask {name!r} must be a pipeline.image.Volume")
            if name not in MASK_COLOURS:
                raise ValueError(
                    f"{where}: unknown mask {name!r} (allowed: {', '.join(MASK_COLOURS)})"
                )
            try:
                check_same_grid(self.image, mask)
            except GeometryError as exc:
                raise GeometryError(f"{where}: mask {name!r} not on the image grid: {exc}") from exc
        for attr in ("long_axis_endpoints_lps", "short_axis_endpoints_lps"):
            pts = getattr(self, attr)
            if pts is None:
                continue
            arr = np.asarray(pts, dtype=np.float64)
            if arr.shape != (2, 3) or not np.all(np.isfinite(arr)):
                raise ValueError(f"{where}: {attr} must be a finite 2×3 array, got {arr.shape}")
            object.__setattr__(self, attr, arr)
        if self.window is not None and (len(self.window) != 2 or self.window[1] <= 0):
            raise ValueError(f"{where}: window must be (level, width > 0), got {self.window!r}")
        object.__setattr__(self, "values", dict(self.values))
        object.__setattr__(self, "flags", tuple(str(f) for f in self.flags))


def caliper_length_mm(endpoints_lps: npt.ArrayLike) -> float:
    """Distance between the two caliper endpoints (LPS mm), as labelled on the overlay."""
    pts = np.asarray(endpoints_lps, dtype=np.float64).reshape(2, 3)
    return float(np.linalg.norm(pts[1] - pts[0]))


# ------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _AxialPlane:
    """An LPS-aligned axial grid: pixel (row r, col c) is at x0 + c·s, y0 + r·s, z."""

    x0_mm: float
    y0_mm: float
    z_mm: float
    step_mm: float
    n_px: int

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """matplotlib imshow extent (left, right, bottom, top) in LPS mm."""
        half = self.step_mm / 2
        far = (self.n_px - 1) * self.step_mm
        return (self.x0_mm - half, self.x0_mm + far + half, self.y0_mm + far + half,
                self.y0_mm - half)


def _lesion_centre_lps(panel: ReviewPanel) -> tuple[npt.NDArray[np.float64], float]:
    """(centre in LPS mm, in-plane radius in mm of what must stay in view)."""
    if panel.long_axis_endpoints_lps is not None:
        pts = panel.long_axis_endpoints_lps
        return pts.mean(axis=0), caliper_length_mm(pts) / 2
    for name in ("tumour", "ablation_zone", "iceball", "enhancing"):
        mask = panel.masks.get(name)
        if mask is None or not mask.array.any():
            continue
        kji = np.argwhere(mask.array)
        pts_lps = mask.index_to_lps(kji[:, ::-1])
        lo, hi = pts_lps.min(axis=0), pts_lps.max(axis=0)
        centre = (lo + hi) / 2
        # the axial plane through the slice with the largest cross-section
        z_values = np.round(pts_lps[:, 2], 1)
        uniq, counts = np.unique(z_values, return_counts=True)
        centre[2] = float(uniq[np.argmax(counts)])
        return centre, float(np.max(hi[:2] - lo[:2]) / 2)
    lo, hi = panel.image.bounds_lps()
    return (lo + hi) / 2, 0.0


def _plane_for(panel: ReviewPanel) -> _AxialPlane:
    centre, radius_mm = _lesion_centre_lps(panel)
    half_mm = max(_MIN_HALF_FOV_MM, radius_mm + 15.0)
    step = 2 * half_mm / _RESAMPLED_PX
    return _AxialPlane(
        x0_mm=float(centre[0] - half_mm + step / 2),
        y0_mm=float(centre[1] - half_mm + step / 2),
        z_mm=float(centre[2]),
        step_mm=step,
        n_px=_RESAMPLED_PX,
    )


def _crop_to_plane(volume: Volume, plane: _AxialPlane) -> Volume:
    """The smallest sub-volume whose voxels can contribute to the plane (keeps it fast)."""
    far = (plane.n_px - 1) * plane.step_mm
    dz = float(volume.spacing_mm.max())
    corners = np.array(
        [[plane.x0_mm + a * far, plane.y0_mm + b * far, plane.z_mm + c * dz]
         for a in (0, 1) for b in (0, 1) for c in (-1, 1)]
    )
    ijk = volume.lps_to_index(corners)
    return volume.crop_ijk(ijk.min(axis=0) - 1, ijk.max(axis=0) + 2)


def _resample(volume: Volume, plane: _AxialPlane, *, default: float) -> npt.NDArray[np.float32]:
    """Linear resampling of ``volume`` onto the plane, as a (rows, cols) float32 array."""
    import SimpleITK as sitk

    src = volume.to_sitk()
    src_f = sitk.Cast(src, sitk.sitkFloat32)
    out = sitk.Resample(
        src_f,
        [plane.n_px, plane.n_px, 1],
        sitk.Transform(),
        sitk.sitkLinear,
        (plane.x0_mm, plane.y0_mm, plane.z_mm),
        (plane.step_mm, plane.step_mm, plane.step_mm),
        (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
        float(default),
        sitk.sitkFloat32,
    )
    arr = sitk.GetArrayFromImage(out)  # a copy; (1, rows, cols)
    return np.asarray(arr[0], dtype=np.float32)


def _window(panel: ReviewPanel, crop: Volume) -> tuple[float, float]:
    """(vmin, vmax) of the display window."""
    if panel.window is not None:
        level, width = panel.window
    elif panel.modality == "CT":
        level, width = _CT_WINDOW
    else:
        # MR signal is arbitrary: from no signal (0, or the 1st percentile when the data
        # has an offset below 0) to the 99th percentile around the lesion
        lo, hi = np.percentile(crop.array, [1.0, 99.0])
        lo = min(float(lo), 0.0) if lo >= 0 else float(lo)
        return lo, float(max(hi, lo + 1e-3))
    return float(level - width / 2), float(level + width / 2)


# ------------------------------------------------------------------------- drawing
_OUTLINE = [patheffects.withStroke(linewidth=2.5, foreground="black")]


def _draw_caliper(ax: Any, pts_lps: npt.NDArray[np.float64], colour: str, name: str,
                  fontsize: float, plane: _AxialPlane, size_px: int) -> None:
    p0, p1 = pts_lps[0, :2], pts_lps[1, :2]
    vec = p1 - p0
    norm = float(np.linalg.norm(vec))
    unit = vec / norm if norm > 0 else np.array([1.0, 0.0])
    perp = np.array([-unit[1], unit[0]])
    ax.plot([p0[0], p1[0]], [p0[1], p1[1]], color=colour, lw=1.6, path_effects=_OUTLINE)
    for p in (p0, p1):
        tick = np.stack([p - 2.0 * perp, p + 2.0 * perp])
        ax.plot(tick[:, 0], tick[:, 1], color=colour, lw=1.6, solid_capstyle="butt")
    # label beyond one end, pushed outwards so it does not sit on the lesion; the long
    # axis prefers its upper-right end, the short axis its lower-left end (no collision)
    label = f"{name} {caliper_length_mm(pts_lps):.1f} mm"
    score = (p0[0] - p0[1], p1[0] - p1[1]) if name == "LA" else (p0[1] - p0[0], p1[1] - p1[0])
    end, out = (p1, unit) if score[1] >= score[0] else (p0, -unit)
    # label size in mm (DejaVu Sans bold ≈ 0.65 em per character), to keep it in view
    left, right, bottom, top = plane.extent
    mm_per_pt = (right - left) / size_px * 100 / 72
    width_mm = 0.65 * fontsize * len(label) * mm_per_pt
    height_mm = 1.2 * fontsize * mm_per_pt
    centre = end + out * 2.5 + np.array([np.sign(round(out[0] / 0.6)) * width_mm / 2,
                                         np.sign(round(out[1] / 0.6)) * height_mm / 2])
    margin = 0.08 * (right - left)  # clear of the orientation letters
    centre[0] = np.clip(centre[0], left + margin + width_mm / 2, right - margin - width_mm / 2)
    centre[1] = np.clip(centre[1], top + margin + height_mm / 2,
                        bottom - margin - height_mm / 2)
    ax.text(centre[0], centre[1], label, color=colour, fontsize=fontsize, fontweight="bold",
            ha="center", va="center", path_effects=_OUTLINE, clip_on=True,
            gid=f"caliper-{name}", zorder=5)


def _draw_frame_marks(ax: Any, plane: _AxialPlane, fontsize: float) -> None:
    left, right, bottom, top = plane.extent
    width = right - left
    pad = 0.04 * width
    mid_x, mid_y = (left + right) / 2, (top + bottom) / 2
    for letter, x, y in (("R", left + pad, mid_y), ("L", right - pad, mid_y),
                         ("A", mid_x, top + pad), ("P", mid_x, bottom - pad)):
        ax.text(x, y, letter, color="white", fontsize=fontsize * 1.2, fontweight="bold",
                ha="center", va="center", path_effects=_OUTLINE, gid=f"orient-{letter}")
    bar_y = bottom - pad
    bar_x1 = right - pad
    ax.plot([bar_x1 - 10.0, bar_x1], [bar_y, bar_y], color="white", lw=3,
            solid_capstyle="butt", path_effects=_OUTLINE, gid="scalebar")
    ax.text(bar_x1 - 5.0, bar_y - 0.025 * width, "10 mm", color="white", fontsize=fontsize,
            ha="center", va="bottom", path_effects=_OUTLINE)


def _draw_masks(ax: Any, panel: ReviewPanel, plane: _AxialPlane) -> list[str]:
    """Contours of every mask on the plane; returns the names actually visible."""
    from skimage.measure import find_contours

    shown: list[str] = []
    order = ("probes", "tumour", "ablation_zone", "iceball", "enhancing")
    for name in order:
        mask = panel.masks.get(name)
        if mask is None or not mask.array.any():
            continue
        try:
            crop = _crop_to_plane(mask, plane)
        except GeometryError:
            continue
        # crop first (a view), then 0/1 so the 0.5 contour sits on the mask edge
        frac = _resample(crop.with_array((crop.array != 0).astype(np.uint8)), plane,
                         default=0.0)
        if not np.any(frac >= 0.5):
            continue
        shown.append(name)
        colour = MASK_COLOURS[name]
        if name == "enhancing":
            rgba = np.zeros((*frac.shape, 4), dtype=np.float32)
            rgba[frac >= 0.5] = (1.0, 0.16, 0.16, 0.45)
            ax.imshow(rgba, extent=plane.extent, interpolation="nearest", zorder=2)
        for contour in find_contours(np.pad(frac, 1), 0.5):
            xs = plane.x0_mm + (contour[:, 1] - 1) * plane.step_mm
            ys = plane.y0_mm + (contour[:, 0] - 1) * plane.step_mm
            ax.plot(xs, ys, color=colour, lw=1.0 if name == "probes" else 1.5, zorder=3)
    return shown


_MM_VALUE = re.compile(r"^\s*([-+]?\d+(?:\.\d+)?)\s*mm\s*$")


def _caliper_flags(panel: ReviewPanel, plane: _AxialPlane, thickness_mm: float) -> list[str]:
    """Consistency of the calipers with the picture and with the printed values."""
    notes = []
    for name, pts in (("long axis", panel.long_axis_endpoints_lps),
                      ("short axis", panel.short_axis_endpoints_lps)):
        if pts is None:
            continue
        dz = float(np.max(np.abs(pts[:, 2] - plane.z_mm)))
        if dz > max(0.5 * thickness_mm, 0.5):
            notes.append(f"{name} caliper is {dz:.1f} mm off the displayed axial plane")
        # the value printed for this axis ("Long axis: 31.2 mm", or the ice ball's)
        for label in (name.capitalize(), f"Ice ball {name}"):
            match = _MM_VALUE.match(panel.values.get(label, ""))
            if match is None:
                continue
            printed_mm = float(match.group(1))
            drawn_mm = caliper_length_mm(pts)
            decimals = len(match.group(1).partition(".")[2])
            if abs(printed_mm - drawn_mm) > 0.5 * 10.0**-decimals + 0.05:
                notes.append(f"{name} caliper {drawn_mm:.1f} mm differs from the printed "
                             f"{label.lower()} {panel.values[label].strip()}")
    return notes


def caliper_notes(panel: ReviewPanel) -> list[str]:
    """Warnings the overlay adds beside the panel's own flags: a caliper off the displayed
    axial plane, or a caliper whose length differs from the printed ``Long axis`` /
    ``Short axis`` (or ``Ice ball long axis`` / ``Ice ball short axis``) value."""
    thickness_mm = float(np.abs(panel.image.affine_lps[2, :3]).max())
    return _caliper_flags(panel, _plane_for(panel), thickness_mm)


def _draw_values(ax: Any, panel: ReviewPanel, shown: list[str], extra_flags: list[str],
                 fontsize: float) -> None:
    """Header, values, highlighted flags, and the colour legend at the bottom."""
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    line = 1.0 / 26
    legend = [(MASK_COLOURS[n], MASK_LABELS[n]) for n in shown]
    legend += [(c, n) for c, n, pts in (
        (_LONG_COLOUR, "LA: long axis", panel.long_axis_endpoints_lps),
        (_SHORT_COLOUR, "SA: short axis", panel.short_axis_endpoints_lps)) if pts is not None]
    legend_top = 0.02 + line * (len(legend) + 0.5)

    header = [*textwrap.wrap(f"{panel.patient_id} · {panel.lesion_id}", 36),
              *textwrap.wrap(f"{panel.study_date.isoformat()} · {panel.role.value} · day "
                             f"{panel.days_since_procedure:+d} · {panel.modality}", 36)]
    values = [part for k, v in panel.values.items() for part in textwrap.wrap(f"{k}: {v}", 36)]
    flags = [part for f in (*panel.flags, *extra_flags) for part in textwrap.wrap(f"! {f}", 34)]
    # keep every flag; cut values that would run into the legend
    room = int((0.98 - legend_top) / line - len(header) - 1.0 - 1.15 * len(flags))
    if len(values) > room:
        keep = max(room - 1, 0)
        values = [*values[:keep], f"… {len(values) - keep} more lines not shown"]

    y = 0.98
    for n, part in enumerate(header):
        ax.text(0.0, y, part, fontsize=fontsize, va="top", ha="left", parse_math=False,
                color="white" if n == 0 else "#cfcfcf", fontweight="bold" if n == 0 else None)
        y -= line
    y -= line / 2
    for part in values:
        ax.text(0.0, y, part, fontsize=fontsize, va="top", ha="left", color="white",
                parse_math=False)
        y -= line
    y -= line / 2
    for part in flags:
        ax.text(0.0, y, part, fontsize=fontsize, va="top", ha="left", color="black",
                parse_math=False,
                fontweight="bold", bbox={"facecolor": "#ffb020", "edgecolor": "none", "pad": 1.5})
        y -= line * 1.15
    y = legend_top
    for colour, name in legend:
        ax.plot([0.0, 0.08], [y - line / 2.5, y - line / 2.5], color=colour, lw=2.5)
        ax.text(0.1, y, name, fontsize=fontsize, va="top", color="white")
        y -= line


def overlay_figure(panel: ReviewPanel, *, size_px: int = 512) -> Figure:
    """Build the overlay figure (Agg canvas attached) without writing it.

    The left ``size_px`` square shows the axial plane through the lesion, the right part
    the values. Caliper labels read ``LA 31.2 mm`` / ``SA 20.4 mm`` (endpoint distance).
    """
    if size_px < 128:
        raise ValueError(f"size_px must be ≥ 128, got {size_px}")
    plane = _plane_for(panel)
    try:
        crop = _crop_to_plane(panel.image, plane)
    except GeometryError as exc:
        raise GeometryError(
            f"{panel.patient_id}/{panel.lesion_id} {panel.study_date}: the axial plane at "
            f"z={plane.z_mm:.1f} mm does not cross the image: {exc}"
        ) from exc
    vmin, vmax = _window(panel, crop)
    pixels = _resample(crop, plane, default=vmin)

    fontsize = max(7.0, size_px / 50)
    fig = Figure(figsize=(size_px * _ASPECT / 100, size_px / 100), dpi=100, facecolor="#101010")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0 / _ASPECT, 1.0))
    ax.set_axis_off()
    ax.imshow(pixels, cmap="gray", vmin=vmin, vmax=vmax, extent=plane.extent,
              interpolation="bilinear", zorder=1)
    shown = _draw_masks(ax, panel, plane)
    for name, pts, colour in (("LA", panel.long_axis_endpoints_lps, _LONG_COLOUR),
                              ("SA", panel.short_axis_endpoints_lps, _SHORT_COLOUR)):
        if pts is not None:
            _draw_caliper(ax, pts, colour, name, fontsize, plane, size_px)
    _draw_frame_marks(ax, plane, fontsize)
    left, right, bottom, top = plane.extent
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)  # anterior (smaller y) at the top
    text_ax = fig.add_axes((1.0 / _ASPECT + 0.015, 0.0, 1.0 - 1.0 / _ASPECT - 0.02, 1.0))
    _draw_values(text_ax, panel, shown, caliper_notes(panel), fontsize)
    return fig


def render_overlay(panel: ReviewPanel, out_png: Path, *, size_px: int = 512) -> Path:
    """Write the overlay PNG (atomically: a reader never sees half a file); return its path."""
    fig = overlay_figure(panel, size_px=size_px)
    return save_png_atomic(fig, Path(out_png))


def save_png_atomic(fig: Figure, out_png: Path) -> Path:
    """Save ``fig`` as PNG (no timestamp/software metadata, so bytes are reproducible)."""
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_png.name}.", suffix=".png", dir=out_png.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=100, facecolor=fig.get_facecolor(),
                        metadata={"Software": None})
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; report files are for other readers
        os.replace(tmp, out_png)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out_png
