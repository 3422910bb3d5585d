"""The radiologist review report: static HTML that opens from disk (file://), no server.

Layout written by :func:`write_report`::

    out_dir/index.html                 cohort: rates, Kaplan–Meier curve, one row per lesion
    out_dir/patients/<patient>.html    per lesion: flags, size over time, one panel per study
    out_dir/img/*.png                  overlays and charts

Overlays are rendered here from :class:`~pipeline.outputs.overlay.ReviewPanel` objects, or
beforehand, one lesion per job, with :func:`~pipeline.outputs.report_images.render_lesion_panels`
(then only the small :class:`~pipeline.outputs.report_images.RenderedPanel` records are
passed in). Pages link to each other and to their images with relative links only; the CSS
(``report_assets/report.css``) is inlined, there is no JavaScript (the "needs review"
filter is a CSS checkbox), and nothing is fetched from elsewhere. The same inputs give
the same bytes: nothing time-dependent is written unless it comes from ``run_info``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.assessment.cohort import CohortSummary
from pipeline.assessment.records import LesionOutcome, LesionTimepoint, Role
from pipeline.outputs.overlay import MASK_COLOURS, MASK_LABELS, ReviewPanel
from pipeline.outputs.report_html import (
    NA,
    badge,
    bullet_list,
    esc,
    fmt_days,
    fmt_hu,
    fmt_ml,
    fmt_mm,
    fmt_pct,
    keyvals,
    page,
    run_info_html,
    table,
    write_text_atomic,
)
from pipeline.outputs.report_images import (
    IMG_DIR,
    RenderedPanel,
    lesion_stem,
    panel_sort_key,
    render_lesion_panels,
    report_slug,
)
from pipeline.outputs.report_plots import km_png, size_over_time_png

__all__ = ["write_report"]

_ROLE_ORDER = {Role.BASELINE: 0, Role.INTRAPROCEDURAL: 1, Role.FOLLOWUP: 2}


@dataclass
class _Lesion:
    patient_id: str
    lesion_id: str
    outcome: LesionOutcome | None = None
    timepoints: list[LesionTimepoint] = field(default_factory=list)
    panels: list[RenderedPanel] = field(default_factory=list)

    @property
    def needs_review(self) -> bool:
        return self.outcome is None or self.outcome.needs_review

    @property
    def reasons(self) -> list[str]:
        if self.outcome is None:
            return ["no outcome computed"]
        return list(self.outcome.review_reasons)

    @property
    def anchor(self) -> str:
        return "lesion-" + report_slug(self.lesion_id)


def _collect(outcomes: Sequence[LesionOutcome], timepoints: Sequence[LesionTimepoint],
             panels: Sequence[RenderedPanel]) -> dict[tuple[str, str], _Lesion]:
    lesions: dict[tuple[str, str], _Lesion] = {}

    def get(pid: str, lid: str) -> _Lesion:
        return lesions.setdefault((pid, lid), _Lesion(pid, lid))

    for o in outcomes:
        les = get(o.patient_id, o.lesion_id)
        if les.outcome is not None:
            raise ValueError(f"write_report: two outcomes for lesion {o.patient_id}/{o.lesion_id}")
        les.outcome = o
    for tp in timepoints:
        get(tp.patient_id, tp.lesion_id).timepoints.append(tp)
    for p in panels:
        get(p.patient_id, p.lesion_id).panels.append(p)
    for les in lesions.values():
        les.timepoints.sort(key=lambda t: (t.days_since_procedure, _ROLE_ORDER[t.role],
                                           t.study_instance_uid))
        les.panels.sort(key=panel_sort_key)
    return dict(sorted(lesions.items()))


def _png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    with path.open("rb") as fh:
        head = fh.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"not a PNG: {path}")
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _img(out_dir: Path, rel_png: str, rel_from: str, alt: str) -> str:
    width, height = _png_size(out_dir / rel_png)
    src = rel_from + rel_png
    return (f'<img src="{esc(src)}" width="{width}" height="{height}" alt="{esc(alt)}" '
            f'loading="eager">')


# ------------------------------------------------------------------------- cells
def _enhancing_badge(value: str, role: Role) -> str:
    """Red/amber/green on follow-up (enhancement there is a finding); neutral otherwise
    (a baseline tumour is expected to enhance)."""
    css = {"yes": "bad", "no": "ok", "equivocal": "warn"}.get(value, "na")
    if role is not Role.FOLLOWUP:
        css = "na"
    return f'<span class="badge {css}">{esc(value.replace("_", " "))}</span>'


def _review_cell(les: _Lesion) -> str:
    if not les.needs_review:
        return '<span class="badge ok">ok</span>'
    return '<span class="badge warn">needs review</span>' + bullet_list(les.reasons)


def _outcome_badges(o: LesionOutcome | None) -> dict[str, str]:
    if o is None:
        return {}
    return {
        "Oncologic success": badge(o.success, true_text="success", false_text="failure",
                                   na_text="not assessable"),
        "Enhancement on follow-up": badge(o.no_enhancement, true_text="none",
                                          false_text="enhancing", na_text="not assessable"),
        "Size decrease": badge(o.size_decrease, true_text="yes", false_text="no"),
        "Technical success": badge(o.technical_success, true_text="yes", false_text="no",
                                   na_text="not assessable"),
        "Residual tumour": badge(o.residual_tumour, true_text="residual", false_text="no",
                                 true_good=False),
        "Local progression": badge(o.local_progression, true_text="progression",
                                   false_text="no", true_good=False),
    }


# ------------------------------------------------------------------------- index
def _index_rows(lesions: list[_Lesion], patient_file: Mapping[str, str]) -> list:
    rows = []
    for les in lesions:
        o = les.outcome
        link = f"patients/{patient_file[les.patient_id]}#{les.anchor}"
        b = _outcome_badges(o)
        cells = [
            ("", f'<a href="{esc(link)}">{esc(les.patient_id)}</a>'),
            ("", f'<a href="{esc(link)}">{esc(les.lesion_id)}</a>'),
            ("date", esc(o.procedure_date.isoformat()) if o else NA),
            ("num", esc(fmt_mm(o.baseline_long_axis_mm)) if o else NA),
            ("num", esc(fmt_days(o.last_followup_days)) if o else NA),
            ("num", esc(fmt_mm(o.last_followup_long_axis_mm)) if o else NA),
            ("num", esc(fmt_pct(o.size_change_pct, signed=True)) if o else NA),
            ("", b.get("Enhancement on follow-up", NA)),
            ("", b.get("Oncologic success", NA)),
            ("", b.get("Technical success", NA)),
            ("num", esc(fmt_mm(o.min_margin_mm)) if o else NA),
            ("", b.get("Residual tumour", NA)),
            ("", b.get("Local progression", NA)),
            ("reasons", _review_cell(les)),
        ]
        rows.append(("review" if les.needs_review else "ok", cells))
    return rows


_INDEX_HEADER = (
    "Patient", "Lesion", "Procedure", "Baseline long axis", "Last follow-up",
    "Last long axis", "Size change", "Enhancement", "Success", "Technical success",
    "Min margin", "Residual", "Progression", "Review",
)


def _rate_card(label: str, n: int, total: int, rate: float | None) -> str:
    value = "n/a" if rate is None else f"{100 * rate:.0f} %"
    return (f'<div class="card"><div class="num">{esc(value)}</div>'
            f'<div class="lab">{esc(label)}: {n} / {total} assessable</div></div>')


def _index_html(lesions: list[_Lesion], cohort: CohortSummary, patient_file: Mapping[str, str],
                km_img: str, run_info: Mapping[str, str]) -> str:
    ordered = sorted(lesions, key=lambda les: (not les.needs_review, les.patient_id,
                                                les.lesion_id))
    n_review = sum(les.needs_review for les in lesions)
    cards = "".join([
        f'<div class="card"><div class="num">{cohort.n_lesions}</div>'
        f'<div class="lab">treated lesions, {len(patient_file)} patients</div></div>',
        _rate_card("Oncologic success", cohort.n_success, cohort.n_success_assessable,
                   cohort.success_rate),
        _rate_card("Technical success", cohort.n_technical_success,
                   cohort.n_technical_assessable, cohort.technical_success_rate),
        f'<div class="card{" warn" if n_review else ""}"><div class="num">{n_review}</div>'
        f'<div class="lab">{"lesion needs" if n_review == 1 else "lesions need"} review '
        "(listed first)</div></div>",
    ])
    km = (f'<div class="km">{km_img}</div>' if km_img else
          '<p class="muted">No follow-up yet: no Kaplan–Meier curve.</p>')
    filter_box = (
        '<input type="checkbox" id="only-review">'
        f'<label class="filter-box" for="only-review"> show only lesions that need review '
        f"({n_review})</label>\n"
    )
    body = (
        '<div class="overview"><div><h2>Cohort</h2>'
        f'<div class="cards">{cards}</div></div>\n'
        f"<div><h2>Local tumour control</h2>{km}</div></div>\n"
        f'<h2>Lesions</h2>\n<section class="lesions">{filter_box}'
        + table(_INDEX_HEADER, _index_rows(ordered, patient_file), "lesions")
        + "</section>"
    )
    header = "<h1>Cryoablation review: cohort</h1>" + run_info_html(run_info)
    return page("cryotrack review: cohort", body, header_html=header)


# ------------------------------------------------------------------------- patient
_TP_HEADER = (
    "Date", "Day", "Role", "Modality", "Long axis", "Short axis", "3D max", "Volume",
    "Enh. ΔHU", "Enh. %", "Enhancing", "Ice ball long", "Ice ball short", "Ice ball vol.",
    "Min margin", "Coverage", "QC",
)


def _timepoint_rows(tps: list[LesionTimepoint]) -> list:
    rows = []
    for t in tps:
        cells = [
            ("date", esc(t.study_date.isoformat())),
            ("num", esc(f"{t.days_since_procedure:+d}")),
            ("", esc(t.role.value)),
            ("", esc(t.modality)),
            ("num", esc(fmt_mm(t.long_axis_mm))),
            ("num", esc(fmt_mm(t.short_axis_mm))),
            ("num", esc(fmt_mm(t.max_3d_diameter_mm))),
            ("num", esc(fmt_ml(t.volume_ml))),
            ("num", esc(fmt_hu(t.enhancement_hu))),
            ("num", esc(fmt_pct(t.enhancement_pct, signed=True))),
            ("", _enhancing_badge(t.enhancing, t.role) if t.role is Role.FOLLOWUP or
             t.enhancing != "not_assessable" else NA),
            ("num", esc(fmt_mm(t.iceball_long_axis_mm))),
            ("num", esc(fmt_mm(t.iceball_short_axis_mm))),
            ("num", esc(fmt_ml(t.iceball_volume_ml))),
            ("num", esc(fmt_mm(t.min_margin_mm))),
            ("num", esc(fmt_pct(t.tumour_coverage_pct))),
            ("reasons", bullet_list(t.qc)),
        ]
        rows.append(("review" if t.qc else "", cells))
    return rows


def _panel_title(panel: RenderedPanel) -> str:
    return (f"{panel.study_date.isoformat()} · {panel.role.value} · "
            f"day {panel.days_since_procedure:+d} · {panel.modality}")


def _panel_alt(panel: RenderedPanel) -> str:
    """Alt text: what the picture says in words (values and flags are drawn beside it)."""
    values = "; ".join(f"{k}: {v}" for k, v in panel.values.items())
    flags = "; ".join(panel.flags)
    return (f"Axial {panel.modality}, lesion {panel.lesion_id}, {_panel_title(panel)}. "
            f"{values}" + (f". Flags: {flags}" if flags else ""))


def _panel_html(panel: RenderedPanel, img_html: str) -> str:
    """One study: caption, then the overlay (its values and flags are in the picture)."""
    chips = "".join(f'<span class="flag">{esc(f)}</span>' for f in panel.flags)
    return (f'<figure class="panel"><figcaption>{esc(_panel_title(panel))}{chips}'
            f"</figcaption>{img_html}</figure>")


def _lesion_html(les: _Lesion, size_img: str, panel_imgs: list[str]) -> str:
    o = les.outcome
    parts = [f'<section class="lesion{" review" if les.needs_review else ""}" '
             f'id="{esc(les.anchor)}">',
             f"<h2>Lesion {esc(les.lesion_id)}"
             + (f" · procedure {esc(o.procedure_date.isoformat())}" if o else "") + "</h2>"]
    if les.needs_review:
        parts.append('<div class="review-box"><h3>Needs review</h3>'
                     + bullet_list(les.reasons) + "</div>")
    facts: list[tuple[str, str]] = list(_outcome_badges(o).items())
    if o is not None:
        facts += [
            ("Baseline tumour long axis", esc(fmt_mm(o.baseline_long_axis_mm))),
            ("Last follow-up", esc(fmt_days(o.last_followup_days))),
            ("Last follow-up long axis", esc(fmt_mm(o.last_followup_long_axis_mm))),
            ("Size change", esc(fmt_pct(o.size_change_pct, signed=True))),
            ("Minimal ablative margin", esc(fmt_mm(o.min_margin_mm))),
            ("Ice ball long axis", esc(fmt_mm(o.iceball_long_axis_mm))),
        ]
        if o.progression_days is not None:
            facts.append(("Failure of local control seen", esc(fmt_days(o.progression_days))))
    plot = f'<div class="plot">{size_img}</div>' if size_img else ""
    parts.append(f'<div class="lesion-top">{keyvals(facts, raw_values=True)}{plot}</div>')
    if les.timepoints:
        parts.append("<h3>Measurements</h3>"
                     + table(_TP_HEADER, _timepoint_rows(les.timepoints), "timepoints"))
    parts.append("<h3>Studies</h3>")
    if not les.panels:
        parts.append('<p class="muted">No overlay available for this lesion.</p>')
    for panel, img_html in zip(les.panels, panel_imgs, strict=True):
        parts.append(_panel_html(panel, img_html))
    parts.append("</section>")
    return "\n".join(parts)


def _legend_html() -> str:
    spans = "".join(
        f'<span><i style="background:{MASK_COLOURS[k]}"></i>{esc(MASK_LABELS[k])}</span>'
        for k in ("tumour", "iceball", "ablation_zone", "enhancing")
    )
    return f'<p class="legend">Overlay colours: {spans}</p>'


def _patient_html(patient_id: str, lesions: list[_Lesion], sections: list[str],
                  run_info: Mapping[str, str]) -> str:
    header = ('<p><a href="../index.html">← cohort overview</a></p>'
              f"<h1>Patient {esc(patient_id)}</h1>" + run_info_html(run_info))
    nav = ""
    if len(lesions) > 1:
        links = " ".join(
            f'<a href="#{esc(les.anchor)}">{esc(les.lesion_id)}</a>'
            + (' <span class="badge warn">needs review</span>' if les.needs_review else "")
            for les in lesions
        )
        nav = f'<p class="lesion-nav">Lesions: {links}</p>\n'
    body = nav + _legend_html() + "\n" + "\n".join(sections)
    return page(f"cryotrack review: patient {patient_id}", body, header_html=header)


# ------------------------------------------------------------------------- entry point
def _rendered_panels(out_dir: Path, panels: Sequence[ReviewPanel | RenderedPanel],
                     size_px: int) -> list[RenderedPanel]:
    """Render the ReviewPanels; check that pre-rendered panels' PNGs are in the report."""
    to_render = [p for p in panels if isinstance(p, ReviewPanel)]
    ready = [p for p in panels if isinstance(p, RenderedPanel)]
    if len(to_render) + len(ready) != len(panels):
        raise TypeError("write_report: panels must be ReviewPanel or RenderedPanel objects")
    both = ({(p.patient_id, p.lesion_id) for p in to_render}
            & {(p.patient_id, p.lesion_id) for p in ready})
    if both:
        raise ValueError(f"write_report: lesions given both rendered and unrendered panels: "
                         f"{sorted(both)}")
    for p in ready:
        if not (out_dir / p.png_relpath).is_file():
            raise FileNotFoundError(
                f"write_report: overlay of {p.patient_id}/{p.lesion_id} {p.study_date} not "
                f"found at {out_dir / p.png_relpath} (render it into this report directory)"
            )
    return ready + render_lesion_panels(out_dir, to_render, size_px=size_px)


def write_report(
    out_dir: Path,
    *,
    outcomes: Sequence[LesionOutcome],
    timepoints: Sequence[LesionTimepoint],
    panels: Sequence[ReviewPanel | RenderedPanel],
    cohort: CohortSummary,
    run_info: Mapping[str, str],
    size_px: int = 512,
) -> Path:
    """Write the review report under ``out_dir``; return ``out_dir/index.html``.

    Lesions come from the union of ``outcomes``, ``timepoints`` and ``panels`` (a lesion
    without an outcome is listed as needing review). ``panels`` are either
    :class:`ReviewPanel` (rendered here at ``size_px``) or :class:`RenderedPanel` records
    of overlays already rendered into ``out_dir`` by
    :func:`~pipeline.outputs.report_images.render_lesion_panels` (per-lesion jobs).
    """
    out_dir = Path(out_dir)
    _collect(outcomes, timepoints, [])  # validate the cheap inputs before rendering anything
    lesions = _collect(outcomes, timepoints, _rendered_panels(out_dir, panels, size_px))
    patient_file = {pid: f"{report_slug(pid)}.html" for pid, _ in lesions}

    km_img = ""
    if cohort.local_control is not None:
        rel = f"{IMG_DIR}/km.png"
        km_png(cohort.local_control, out_dir / rel)
        km_img = _img(out_dir, rel, "", "Kaplan–Meier curve of local tumour control")

    by_patient: dict[str, list[tuple[_Lesion, str]]] = {}
    for (pid, lid), les in lesions.items():
        size_img = ""
        if any(t.long_axis_mm is not None or t.iceball_long_axis_mm is not None
               for t in les.timepoints):
            rel = f"{IMG_DIR}/{lesion_stem(pid, lid)}__size.png"
            size_over_time_png(les.timepoints, out_dir / rel)
            size_img = _img(out_dir, rel, "../", f"size over time, lesion {lid}")
        panel_imgs = [_img(out_dir, p.png_relpath, "../", _panel_alt(p)) for p in les.panels]
        by_patient.setdefault(pid, []).append((les, _lesion_html(les, size_img, panel_imgs)))

    for pid, items in by_patient.items():
        write_text_atomic(out_dir / "patients" / patient_file[pid],
                          _patient_html(pid, [les for les, _ in items],
                                        [html for _, html in items], run_info))
    return write_text_atomic(
        out_dir / "index.html",
        _index_html(list(lesions.values()), cohort, patient_file, km_img, run_info),
    )
