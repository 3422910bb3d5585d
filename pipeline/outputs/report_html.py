"""HTML building blocks of the review report: escaping, value formatting, page skeleton.

Every piece of text from the data passes through :func:`esc`; every number is formatted
with its unit here, so the cohort and patient pages read the same way.
"""

from __future__ import annotations

import html
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from pipeline.assessment.records import LesionTimepoint, Role

__all__ = [
    "esc",
    "fmt_mm",
    "fmt_ml",
    "fmt_hu",
    "fmt_pct",
    "fmt_days",
    "badge",
    "page",
    "keyvals",
    "bullet_list",
    "table",
    "run_info_html",
    "write_text_atomic",
    "timepoint_values",
    "timepoint_flags",
]

_CSS_PATH = Path(__file__).resolve().parent / "report_assets" / "report.css"
NA = "—"


def esc(value: object) -> str:
    """HTML-escape any value (quotes included, safe inside attributes)."""
    return html.escape(str(value), quote=True)


def fmt_mm(value: float | None) -> str:
    return NA if value is None else f"{value:.1f} mm"


def fmt_ml(value: float | None) -> str:
    return NA if value is None else f"{value:.2f} ml"


def fmt_hu(value: float | None) -> str:
    return NA if value is None else f"{value:+.0f} HU"


def fmt_pct(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return NA
    return f"{value:+.1f} %" if signed else f"{value:.1f} %"


def fmt_days(value: int | None) -> str:
    return NA if value is None else f"day {value:+d}"


def badge(value: bool | None, *, true_text: str, false_text: str, true_good: bool = True,
          na_text: str = "n/a") -> str:
    """A coloured pill: green for the good answer, red for the bad one, grey when unknown."""
    if value is None:
        return f'<span class="badge na">{esc(na_text)}</span>'
    good = value is true_good
    text = true_text if value else false_text
    return f'<span class="badge {"ok" if good else "bad"}">{esc(text)}</span>'


def keyvals(items: Iterable[tuple[str, str]], *, raw_values: bool = False) -> str:
    """A ``<dl>`` of label → value (values escaped unless ``raw_values``)."""
    rows = "".join(
        f"<dt>{esc(k)}</dt><dd>{v if raw_values else esc(v)}</dd>" for k, v in items
    )
    return f'<dl class="keyvals">{rows}</dl>'


def bullet_list(items: Sequence[str], css_class: str = "") -> str:
    if not items:
        return ""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    return f"<ul{cls}>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def table(header: Sequence[str], rows: Iterable[tuple[str, Sequence[tuple[str, str]]]],
          css_class: str = "") -> str:
    """``rows``: (tr class, [(td class, already-escaped cell html), ...])."""
    cls = f' class="{esc(css_class)}"' if css_class else ""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for tr_class, cells in rows:
        tds = "".join(
            (f'<td class="{esc(c)}">' if c else "<td>") + f"{v}</td>" for c, v in cells
        )
        body.append(f'<tr class="{esc(tr_class)}">{tds}</tr>' if tr_class else f"<tr>{tds}</tr>")
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def page(title: str, body_html: str, *, header_html: str) -> str:
    """A complete HTML5 document with the report CSS inlined (opens from disk, no fetches)."""
    css = _CSS_PATH.read_text(encoding="utf-8")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>\n{css}</style>\n</head>\n<body>\n"
        f'<header class="page">{header_html}</header>\n<main>\n{body_html}\n</main>\n'
        "</body>\n</html>\n"
    )


def run_info_html(run_info: Mapping[str, str]) -> str:
    """The run metadata (pipeline version, archive, date...) as a compact line."""
    if not run_info:
        return ""
    items = "".join(
        f"<div><dt>{esc(k)}</dt><dd>{esc(v)}</dd></div>" for k, v in run_info.items()
    )
    return f'<dl class="run">{items}</dl>'


def write_text_atomic(path: Path, text: str) -> Path:
    """Write UTF-8 text beside ``path`` and rename it into place (readers never see half a
    page); the file is world-readable (0644) like any report file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def timepoint_values(tp: LesionTimepoint) -> dict[str, str]:
    """The values to print beside a panel of this timepoint, formatted with units, in
    reading order; measurements that do not apply (``None``) are left out."""
    if tp.role is Role.INTRAPROCEDURAL:
        items = [
            ("Ice ball long axis", fmt_mm(tp.iceball_long_axis_mm), tp.iceball_long_axis_mm),
            ("Ice ball short axis", fmt_mm(tp.iceball_short_axis_mm), tp.iceball_short_axis_mm),
            ("Ice ball volume", fmt_ml(tp.iceball_volume_ml), tp.iceball_volume_ml),
            ("Minimal margin", fmt_mm(tp.min_margin_mm), tp.min_margin_mm),
            ("Tumour coverage", fmt_pct(tp.tumour_coverage_pct), tp.tumour_coverage_pct),
        ]
    else:
        items = [
            ("Long axis", fmt_mm(tp.long_axis_mm), tp.long_axis_mm),
            ("Short axis", fmt_mm(tp.short_axis_mm), tp.short_axis_mm),
            ("3D max diameter", fmt_mm(tp.max_3d_diameter_mm), tp.max_3d_diameter_mm),
            ("Volume", fmt_ml(tp.volume_ml), tp.volume_ml),
            ("Enhancement", fmt_hu(tp.enhancement_hu), tp.enhancement_hu),
            ("Enhancement", fmt_pct(tp.enhancement_pct, signed=True), tp.enhancement_pct),
        ]
    values = {label: text for label, text, raw in items if raw is not None}
    if tp.role is not Role.INTRAPROCEDURAL:
        values["Enhancing"] = tp.enhancing.replace("_", " ")
    return values


def timepoint_flags(tp: LesionTimepoint) -> list[str]:
    """Findings to highlight beside a panel: qc warnings and any non-negative enhancement
    read on a follow-up."""
    flags = list(tp.qc)
    if tp.role is Role.FOLLOWUP and tp.enhancing != "no":
        flags.insert(0, {"yes": "enhancing tissue", "equivocal": "equivocal enhancement",
                         "not_assessable": "enhancement not assessable"}[tp.enhancing])
    return flags
