"""The static review report: structure, links, escaping, determinism, and (with chromium)
that every page loads from disk with no console error and every image decodes."""

from __future__ import annotations

import dataclasses
import re
import zlib
from datetime import date, timedelta
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
from matplotlib.image import imread

from pipeline.assessment import (
    KaplanMeierCurve,
    LesionTimepoint,
    assess_lesion,
    summarize_cohort,
)
from pipeline.outputs.report import write_report
from pipeline.outputs.report_html import timepoint_flags, timepoint_values
from pipeline.outputs.report_images import (
    RenderedPanel,
    read_rendered_json,
    render_lesion_panels,
    report_slug,
    write_rendered_json,
)
from pipeline.outputs.report_plots import km_png, size_over_time_png
from tests.test_overlay import CENTRE_LPS, PRONE, make_panel

PROCEDURE = date(2024, 1, 15)
WEIRD_ID = 'Q<script>alert("x")</script>&1'
RUN_INFO = {"pipeline": "cryotrack 0.1.0", "archive": "/data/<archive>", "run": "2026-11-22"}


def _tp(pid: str, lid: str, days: int, role: str, **kw: object) -> LesionTimepoint:
    uid = f"1.2.3.{zlib.crc32((pid + lid).encode())}.{days + 100}"
    return LesionTimepoint(
        patient_id=pid, lesion_id=lid, study_instance_uid=uid,
        study_date=PROCEDURE + timedelta(days=days),
        days_since_procedure=days, role=role, modality=str(kw.pop("modality", "CT")), **kw,
    )


def _lesion_timepoints(pid: str, lid: str, fu_reads: list[tuple[int, str, float]],
                       qc: list[str] | None = None) -> list[LesionTimepoint]:
    tps = [
        _tp(pid, lid, -14, "baseline", long_axis_mm=24.0, short_axis_mm=22.5, volume_ml=7.24,
            enhancement_hu=62.0, enhancing="yes"),
        _tp(pid, lid, 0, "intraprocedural", iceball_long_axis_mm=41.0,
            iceball_short_axis_mm=36.0, iceball_volume_ml=30.1, min_margin_mm=6.2,
            tumour_coverage_pct=100.0, qc=list(qc or [])),
    ]
    for days, read, long_mm in fu_reads:
        tps.append(_tp(pid, lid, days, "followup", long_axis_mm=long_mm, short_axis_mm=long_mm
                       * 0.9, volume_ml=long_mm**3 / 2000, enhancement_hu=4.0 if read == "no"
                       else 31.0, enhancing=read))
    return tps


def _axis(length_mm: float | None, along: int) -> np.ndarray | None:
    """Caliper endpoints of ``length_mm`` through the phantom's lesion, along x or y."""
    if length_mm is None:
        return None
    offset = np.zeros(3)
    offset[along] = length_mm / 2
    return np.array([CENTRE_LPS - offset, CENTRE_LPS + offset])


def _panels(pid: str, lid: str, tps: list[LesionTimepoint]) -> list:
    out = []
    for t in tps:
        base = make_panel(PRONE if t.role == "followup" else np.eye(3))
        masks = dict(base.masks)
        if t.role == "baseline":
            masks = {"tumour": masks["tumour"]}
        elif t.role == "intraprocedural":
            masks = {"tumour": masks["tumour"], "iceball": masks["iceball"]}
        elif t.role == "followup":
            masks = {"ablation_zone": masks["iceball"], **({"enhancing": masks["enhancing"]}
                                                           if t.enhancing == "yes" else {})}
        out.append(dataclasses.replace(
            base, patient_id=pid, lesion_id=lid, study_date=t.study_date, role=t.role,
            days_since_procedure=t.days_since_procedure, masks=masks,
            study_instance_uid=t.study_instance_uid,
            long_axis_endpoints_lps=_axis(t.long_axis_mm or t.iceball_long_axis_mm, 0),
            short_axis_endpoints_lps=_axis(t.short_axis_mm or t.iceball_short_axis_mm, 1),
            values=timepoint_values(t), flags=timepoint_flags(t),
        ))
    return out


def build_cohort() -> dict:
    specs = {
        ("P001", "L1"): ([(92, "no", 30.0), (371, "no", 19.5)], None),
        ("P002", "L1"): ([(90, "yes", 33.0)], None),
        ("P002", "L2"): ([(90, "equivocal", 28.0)], ["registration doubtful"]),
        (WEIRD_ID, "L/1"): ([(95, "no", 21.0)], None),
    }
    timepoints, outcomes, panels = [], [], []
    for (pid, lid), (reads, qc) in specs.items():
        tps = _lesion_timepoints(pid, lid, reads, qc)
        timepoints += tps
        outcomes.append(assess_lesion(tps, PROCEDURE))
        # overlays for P001 (all studies) and the weird id (first follow-up only)
        if pid == "P001":
            panels += _panels(pid, lid, tps)
        elif pid == WEIRD_ID:
            panels += _panels(pid, lid, tps[2:])
        elif lid == "L1":
            panels += _panels(pid, lid, tps[2:])
    cohort = dataclasses.replace(
        summarize_cohort(outcomes, with_km=False),
        local_control=KaplanMeierCurve(days=(0.0, 90.0, 95.0, 371.0),
                                       control_probability=(1.0, 0.75, 0.75, 0.75),
                                       n_lesions=4, n_events=1),
    )
    return {"outcomes": outcomes, "timepoints": timepoints, "panels": panels, "cohort": cohort,
            "run_info": RUN_INFO}


@pytest.fixture(scope="module")
def cohort() -> dict:
    return build_cohort()


def shared_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The synthetic cohort's report, written once per test session (read-only for tests:
    a test that writes beside it works on a copy)."""
    out = tmp_path_factory.getbasetemp() / "cohort_report"
    if not (out / "index.html").is_file():
        write_report(out, size_px=256, **build_cohort())
    return out


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return shared_report(tmp_path_factory)


class _Refs(HTMLParser):
    """Collects resource references, ids and text of one page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[str] = []
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.tags: list[str] = []
        self.text: list[str] = []
        self.row_classes: list[str] = []
        self.open: list[str] = []
        self.unbalanced: list[str] = []

    _VOID = frozenset({"meta", "link", "img", "br", "hr", "input", "col", "wbr"})

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        if tag not in self._VOID:
            self.open.append(tag)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a["src"])
        if tag in ("a", "link") and "href" in a:
            self.links.append(a["href"])
        if tag == "tr" and a.get("class") in ("review", "ok"):
            self.row_classes.append(a["class"])

    def handle_endtag(self, tag):
        if self.open and self.open[-1] == tag:
            self.open.pop()
        else:
            self.unbalanced.append(f"</{tag}> with open {self.open[-3:]}")

    def handle_data(self, data):
        self.text.append(data)


def _parse(path: Path) -> _Refs:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def _pages(report: Path) -> list[Path]:
    return [report / "index.html", *sorted((report / "patients").glob("*.html"))]


def test_every_reference_is_relative_and_resolves(report):
    pages = _pages(report)
    assert len(pages) == 1 + 3  # index + three patients
    for page in pages:
        refs = _parse(page)
        assert "script" not in refs.tags  # no JavaScript at all
        assert not refs.unbalanced and not refs.open, (page.name, refs.unbalanced, refs.open)
        assert len(refs.ids) == sum(1 for _ in re.finditer(r'\sid="', page.read_text("utf-8")))
        assert not re.search(r"(?i)(https?:|//[a-z])|@import|url\(", page.read_text("utf-8"))
        for src in refs.imgs:
            assert not urlsplit(src).scheme and not src.startswith("/"), src
            target = (page.parent / unquote(src)).resolve()
            assert target.is_file(), f"{page.name}: missing image {src}"
            assert imread(target).shape[0] > 100
        for href in refs.links:
            parts = urlsplit(href)
            assert not parts.scheme and not href.startswith("/"), href
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            assert target.is_file(), f"{page.name}: broken link {href}"
            if parts.fragment:
                assert parts.fragment in _parse(target).ids, f"{page.name}: no #{parts.fragment}"


def test_index_lists_every_lesion_with_review_first(report, cohort):
    refs = _parse(report / "index.html")
    text = " ".join(refs.text)
    assert refs.row_classes == ["review"] * refs.row_classes.count("review") + ["ok"] * (
        len(refs.row_classes) - refs.row_classes.count("review"))
    n_review = sum(o.needs_review for o in cohort["outcomes"])
    assert refs.row_classes.count("review") == n_review >= 1
    assert len(refs.row_classes) == 4
    # rates as "k / n", the size change and margins with units
    c = cohort["cohort"]
    assert f"Oncologic success: {c.n_success} / {c.n_success_assessable}" in text
    assert f"Technical success: {c.n_technical_success} / {c.n_technical_assessable}" in text
    assert "+37.5 %" in text  # P002/L1: 33 mm vs 24 mm
    assert "-18.8 %" in text  # P001/L1: 19.5 mm vs 24 mm
    assert "6.2 mm" in text and "day +371" in text
    assert "registration doubtful" in text  # the review reason is shown
    assert "img/km.png" in refs.imgs
    # the CSS-only filter hides the non-review rows
    assert 'id="only-review"' in (report / "index.html").read_text("utf-8")


def test_patient_page_has_panels_in_time_order_and_the_outcome(report):
    page = report / "patients" / "P001.html"
    refs = _parse(page)
    text = " ".join(refs.text)
    overlays = [s for s in refs.imgs if "__size" not in s]
    assert len(overlays) == 4
    assert overlays == sorted(overlays)  # yyyymmdd in the name: time order
    assert any(s.endswith("__size.png") for s in refs.imgs)
    assert "success" in text and "Minimal ablative margin" in text
    captions = [text.index(f"{d} · {role}") for d, role in (
        ("2024-01-01", "baseline"), ("2024-01-15", "intraprocedural"),
        ("2024-04-16", "followup"), ("2025-01-20", "followup"))]
    assert captions == sorted(captions)
    assert "Needs review" not in text  # this lesion is clean


def test_text_is_escaped_and_ids_become_safe_file_names(report):
    slug = report_slug(WEIRD_ID)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", slug)
    page = report / "patients" / f"{slug}.html"
    html_text = page.read_text("utf-8")
    assert "<script>" not in html_text and "&lt;script&gt;" in html_text
    assert "/data/&lt;archive&gt;" in html_text
    assert WEIRD_ID in " ".join(_parse(page).text)  # shown verbatim after unescaping
    assert report_slug("P_1") != report_slug("P/1")


def test_same_inputs_same_bytes(report, cohort, tmp_path):
    write_report(tmp_path, size_px=256, **cohort)
    first = {p.relative_to(report): p.read_bytes() for p in report.rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path): p.read_bytes() for p in tmp_path.rglob("*")
              if p.is_file()}
    assert first.keys() == second.keys()
    assert all(first[k] == second[k] for k in first)
    # no temporary files left behind, and readable by others (not mkstemp's 0600)
    assert not [k for k in second if k.name.startswith(".")]
    assert all((tmp_path / k).stat().st_mode & 0o044 == 0o044 for k in second)


def test_report_without_follow_up_has_no_km_and_flags_missing_outcomes(cohort, tmp_path):
    extra = make_panel(patient_id="P9", lesion_id="L1")
    cohort2 = dict(cohort, cohort=dataclasses.replace(cohort["cohort"], local_control=None),
                   outcomes=[], timepoints=[], panels=[extra])
    write_report(tmp_path, size_px=256, **cohort2)
    text = " ".join(_parse(tmp_path / "index.html").text)
    assert "no Kaplan–Meier curve" in text
    assert not (tmp_path / "img" / "km.png").exists()
    assert "no outcome computed" in " ".join(_parse(tmp_path / "patients" / "P9.html").text)


def test_duplicate_outcomes_are_rejected(cohort, tmp_path):
    with pytest.raises(ValueError, match="two outcomes for lesion P001/L1"):
        write_report(tmp_path, **dict(cohort, outcomes=[cohort["outcomes"][0]] * 2))


def test_charts_validate_their_input(cohort, tmp_path):
    tps = cohort["timepoints"]
    with pytest.raises(ValueError, match="one lesion"):
        size_over_time_png(tps, tmp_path / "s.png")
    png = size_over_time_png([t for t in tps if t.patient_id == "P002" and t.lesion_id == "L1"],
                             tmp_path / "s.png")
    rgb = imread(png)[..., :3]
    # the enhancing follow-up is ringed in red
    assert np.any((rgb[..., 0] > 0.75) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3))
    with pytest.raises(ValueError, match="equal, non-empty"):
        km_png(KaplanMeierCurve(days=(0.0, 1.0), control_probability=(1.0,), n_lesions=1,
                                n_events=0), tmp_path / "k.png")


def test_rendering_per_lesion_then_assembling_gives_the_same_report(report, cohort, tmp_path):
    records = []
    for key in sorted({(p.patient_id, p.lesion_id) for p in cohort["panels"]}):
        lesion_panels = [p for p in cohort["panels"] if (p.patient_id, p.lesion_id) == key]
        rendered = render_lesion_panels(tmp_path, lesion_panels, size_px=256)
        json_path = write_rendered_json(tmp_path / "json" / f"{report_slug(key[1])}.json",
                                        rendered)
        assert read_rendered_json(json_path) == rendered
        records += read_rendered_json(json_path)
    write_report(tmp_path, size_px=256, **dict(cohort, panels=records))
    for page in _pages(report):
        rel = page.relative_to(report)
        assert (tmp_path / rel).read_bytes() == page.read_bytes(), rel
    for png in (report / "img").glob("*.png"):
        assert (tmp_path / "img" / png.name).read_bytes() == png.read_bytes(), png.name


def test_rendered_panels_are_checked(cohort, tmp_path):
    panel = cohort["panels"][0]
    record = RenderedPanel(panel.patient_id, panel.lesion_id, panel.study_date, panel.role,
                           panel.days_since_procedure, panel.modality, "img/none.png")
    with pytest.raises(FileNotFoundError, match="not found"):
        write_report(tmp_path, **dict(cohort, panels=[record]))
    with pytest.raises(ValueError, match="both rendered and unrendered"):
        write_report(tmp_path, **dict(cohort, panels=[record, panel]))
    for bad in ("/abs/x.png", "../x.png", "img/x.jpg"):
        with pytest.raises(ValueError, match="png_relpath"):
            dataclasses.replace(record, png_relpath=bad)


def test_timepoint_values_and_flags_carry_units_and_findings(cohort):
    tps = {(t.patient_id, t.lesion_id, t.days_since_procedure): t for t in cohort["timepoints"]}
    baseline = timepoint_values(tps[("P001", "L1", -14)])
    assert baseline == {"Long axis": "24.0 mm", "Short axis": "22.5 mm", "Volume": "7.24 ml",
                        "Enhancement": "+62 HU", "Enhancing": "yes"}
    intra = timepoint_values(tps[("P001", "L1", 0)])
    assert intra == {"Ice ball long axis": "41.0 mm", "Ice ball short axis": "36.0 mm",
                     "Ice ball volume": "30.10 ml", "Minimal margin": "6.2 mm",
                     "Tumour coverage": "100.0 %"}
    assert timepoint_flags(tps[("P001", "L1", 0)]) == []
    assert timepoint_flags(tps[("P002", "L2", 0)]) == ["registration doubtful"]
    assert timepoint_flags(tps[("P002", "L1", 90)]) == ["enhancing tissue"]
    assert timepoint_flags(tps[("P002", "L2", 90)]) == ["equivocal enhancement"]
    assert timepoint_flags(tps[("P001", "L1", -14)]) == []  # a baseline tumour enhances


def test_caliper_warnings_reach_the_html(report, cohort, tmp_path):
    # the fixture's calipers match its values: no warning anywhere
    assert "differs" not in (report / "patients" / "P001.html").read_text("utf-8")
    panel = next(p for p in cohort["panels"] if p.role == "followup")
    wrong = dataclasses.replace(panel, values={**panel.values, "Long axis": "12.0 mm"})
    rendered = render_lesion_panels(tmp_path, [wrong], size_px=256)
    assert rendered[0].flags[-1].startswith("long axis caliper 30.0 mm differs from the "
                                            "printed long axis 12.0 mm")
    write_report(tmp_path, size_px=256, **dict(cohort, panels=rendered))
    page = (tmp_path / "patients" / f"{report_slug(panel.patient_id)}.html").read_text("utf-8")
    assert "Flags: " in page and "differs from the printed long axis 12.0 mm" in page


def test_multi_lesion_page_has_a_lesion_index_and_visible_flags(report):
    page = report / "patients" / "P002.html"
    refs = _parse(page)
    assert "#lesion-L1" in refs.links and "#lesion-L2" in refs.links
    html_text = page.read_text("utf-8")
    # the follow-up panel's finding is visible text in its caption, not only in the image
    assert '<span class="flag">enhancing tissue</span>' in html_text


def test_enhancement_is_a_red_finding_only_on_follow_up(report):
    html_text = (report / "patients" / "P002.html").read_text("utf-8")
    rows = re.findall(r'<tr[^>]*>(.*?)</tr>', html_text)
    baseline = next(r for r in rows if ">baseline<" in r)
    followup = next(r for r in rows if ">followup<" in r)
    assert '<span class="badge na">yes</span>' in baseline
    assert '<span class="badge bad">yes</span>' in followup
