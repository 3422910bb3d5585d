"""Charts of the review report: size over time per lesion, Kaplan–Meier local control.

Drawn on matplotlib's Agg canvas (no display, no pyplot global state); PNGs are written
atomically and without timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.assessment.cohort import KaplanMeierCurve
from pipeline.assessment.records import LesionTimepoint, Role
from pipeline.outputs.overlay import MASK_COLOURS, save_png_atomic

__all__ = ["size_over_time_figure", "size_over_time_png", "km_figure", "km_png"]

_ENHANCING_COLOUR = {"yes": "#d62728", "equivocal": "#ff9f1a"}
_ROLE_STYLE = {
    # role → (marker, colour, legend label)
    Role.BASELINE: ("s", "#b8a000", "baseline tumour"),
    Role.INTRAPROCEDURAL: ("^", "#0097a7", "ice ball (intra-procedural)"),
    Role.FOLLOWUP: ("o", "#c000c0", "ablation zone (follow-up)"),
}


def _long_axis(tp: LesionTimepoint) -> float | None:
    if tp.role is Role.INTRAPROCEDURAL:
        return tp.iceball_long_axis_mm
    return tp.long_axis_mm


def _volume(tp: LesionTimepoint) -> float | None:
    if tp.role is Role.INTRAPROCEDURAL:
        return tp.iceball_volume_ml
    return tp.volume_ml


def size_over_time_figure(timepoints: Sequence[LesionTimepoint]) -> Figure:
    """Long axis (left axis, solid) and volume (right axis, dashed) vs days since procedure.

    Baseline tumour and follow-up ablation zones are joined (what "size decrease" compares);
    the intra-procedural ice ball is an unjoined triangle; enhancing follow-ups are ringed
    red (equivocal: orange) with a shaded band; a dotted line carries the baseline tumour
    long axis across, for the size comparison.
    """
    if not timepoints:
        raise ValueError("size_over_time_figure needs at least one timepoint")
    keys = {(t.patient_id, t.lesion_id) for t in timepoints}
    if len(keys) != 1:
        raise ValueError(f"size_over_time_figure takes one lesion, got {sorted(keys)}")
    ordered = sorted(timepoints, key=lambda t: (t.days_since_procedure, t.study_instance_uid))
    fig = Figure(figsize=(6.4, 3.6), dpi=100, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.11, 0.24, 0.76, 0.64))
    ax_vol = ax.twinx()
    ax.axvline(0, color="#555555", lw=1, ls="-", zorder=1)
    ax.text(0, 1.01, "procedure", transform=ax.get_xaxis_transform(), ha="center",
            va="bottom", fontsize=8, color="#555555")

    all_days = [t.days_since_procedure for t in ordered] + [0]
    band_days = max(2.0, 0.015 * (max(all_days) - min(all_days)))
    for tp in ordered:
        colour = _ENHANCING_COLOUR.get(tp.enhancing)
        if tp.role is Role.FOLLOWUP and colour is not None:
            ax.axvspan(tp.days_since_procedure - band_days, tp.days_since_procedure + band_days,
                       color=colour, alpha=0.15, lw=0, zorder=0)

    # long axis: the line joins the baseline tumour and the follow-up zones (the quantities
    # compared for "size decrease"); the intra-procedural ice ball is a marker on its own
    series = [(t.days_since_procedure, _long_axis(t), t) for t in ordered]
    joined = [(d, v) for d, v, t in series
              if v is not None and t.role is not Role.INTRAPROCEDURAL]
    if joined:
        ax.plot([p[0] for p in joined], [p[1] for p in joined], color="#333333", lw=1.3,
                zorder=2)
    for day, value, tp in series:
        if value is None:
            continue
        marker, colour, _ = _ROLE_STYLE[tp.role]
        ax.plot([day], [value], marker=marker, ms=8, color=colour, mec="black", mew=0.8,
                ls="none", zorder=4)
        ring = _ENHANCING_COLOUR.get(tp.enhancing) if tp.role is Role.FOLLOWUP else None
        if ring is not None:
            ax.plot([day], [value], marker="o", ms=15, mfc="none", mec=ring, mew=2.2,
                    ls="none", zorder=5)
    baseline = [t for t in ordered if t.role is Role.BASELINE and t.long_axis_mm is not None]
    if baseline:
        ax.axhline(baseline[-1].long_axis_mm, color=MASK_COLOURS["tumour"], lw=1.2, ls=":",
                   zorder=1)

    vols = [(t.days_since_procedure, _volume(t), t.role) for t in ordered]
    line = [(d, v) for d, v, r in vols if v is not None and r is not Role.INTRAPROCEDURAL]
    if line:
        ax_vol.plot([v[0] for v in line], [v[1] for v in line], color="#1f77b4", lw=1.1,
                    ls="--", marker=".", zorder=2)
    ice = [(d, v) for d, v, r in vols if v is not None and r is Role.INTRAPROCEDURAL]
    if ice:
        ax_vol.plot([v[0] for v in ice], [v[1] for v in ice], color="#1f77b4", marker="^",
                    mfc="none", ls="none", zorder=2)
    ax.set_xlabel("days since procedure")
    ax.set_ylabel("long axis (mm)")
    ax_vol.set_ylabel("volume (ml)", color="#1f77b4")
    ax_vol.tick_params(axis="y", colors="#1f77b4")
    ax.set_ylim(0, max([v for _, v, _ in series if v is not None], default=1.0) * 1.15)
    ax_vol.set_ylim(bottom=0)
    ax.grid(True, color="#dddddd", lw=0.6)
    handles = [
        Line2D([], [], marker=m, color=c, mec="black", ls="none", label=lab)
        for m, c, lab in _ROLE_STYLE.values()
    ]
    handles.append(Line2D([], [], marker="o", mfc="none", mec="#d62728", mew=2, ls="none",
                          label="enhancing"))
    handles.append(Line2D([], [], color="#1f77b4", ls="--", label="volume"))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, frameon=False,
               bbox_to_anchor=(0.5, 0.0), handletextpad=0.3, columnspacing=0.9)
    tp0 = ordered[0]
    fig.text(0.11, 0.95, f"{tp0.patient_id} · {tp0.lesion_id}: size over time", fontsize=9,
             parse_math=False,
             fontweight="bold")
    return fig


def size_over_time_png(timepoints: Sequence[LesionTimepoint], out_png: Path) -> Path:
    """Write :func:`size_over_time_figure` as a PNG; return the path."""
    return save_png_atomic(size_over_time_figure(timepoints), Path(out_png))


def km_figure(curve: KaplanMeierCurve) -> Figure:
    """Kaplan–Meier local tumour control: a post-step plot of control probability vs days."""
    if len(curve.days) != len(curve.control_probability) or not curve.days:
        raise ValueError(
            f"KaplanMeierCurve needs equal, non-empty days/probabilities, got "
            f"{len(curve.days)} and {len(curve.control_probability)}"
        )
    days = list(curve.days)
    prob = list(curve.control_probability)
    if days[0] > 0:
        days.insert(0, 0.0)
        prob.insert(0, 1.0)
    fig = Figure(figsize=(5.6, 3.4), dpi=100, facecolor="white")
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.13, 0.15, 0.82, 0.72))
    ax.step(days, prob, where="post", color="#1f4e9c", lw=2)
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_xlabel("days since procedure")
    ax.set_ylabel("local tumour control")
    ax.grid(True, color="#dddddd", lw=0.6)
    ax.set_title(
        f"Kaplan–Meier local tumour control (n = {curve.n_lesions} "
        f"lesion{'s' * (curve.n_lesions != 1)}, {curve.n_events} "
        f"event{'s' * (curve.n_events != 1)})", fontsize=9, fontweight="bold",
    )
    ax.text(days[-1], prob[-1] + 0.03, f"{100 * prob[-1]:.0f} % at day {days[-1]:.0f}",
            ha="right", va="bottom", fontsize=8, color="#1f4e9c")
    return fig


def km_png(curve: KaplanMeierCurve, out_png: Path) -> Path:
    """Write :func:`km_figure` as a PNG; return the path."""
    return save_png_atomic(km_figure(curve), Path(out_png))
