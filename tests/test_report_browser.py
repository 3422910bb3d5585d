"""The review report in a real browser (headless Debian chromium, from file://, no server):
no console message on any page, every image decodes, screenshots are not blank."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from tests.conftest import require_tool
from tests.test_report import _pages, _parse, shared_report

pytestmark = pytest.mark.needs_system

_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
    "--enable-logging=stderr", "--v=0",
]
# appended to a *copy* of each page (the report itself has no JavaScript): after the load
# event, record every image's decoded size into the DOM that --dump-dom prints
_PROBE = (
    "<script>window.addEventListener('load',function(){var r=[];"
    "document.querySelectorAll('img').forEach(function(i){"
    "r.push(i.getAttribute('src')+' '+i.naturalWidth+' '+i.naturalHeight);});"
    # the CSS-only filter: tick it and record which lesion rows stay displayed
    "var f=document.getElementById('only-review');if(f){f.checked=true;"
    "document.querySelectorAll('tr.ok,tr.review').forEach(function(t){"
    "r.push('row '+t.className+' '+getComputedStyle(t).display);});}"
    "var p=document.createElement('pre');p.id='img-probe';p.textContent=r.join('\\n');"
    "document.body.appendChild(p);});</script>"
)
_BAD_LOG = (":CONSOLE", "Uncaught", "net::ERR_", "Failed to load", "Not allowed to load")


@pytest.fixture()
def report(tmp_path_factory, tmp_path) -> Path:
    """A private copy of the shared report (the probes are written beside its pages)."""
    return Path(shutil.copytree(shared_report(tmp_path_factory), tmp_path / "report"))


def _start(chromium: str, profile: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [chromium, *_FLAGS, f"--user-data-dir={profile}", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"chromium timed out: {proc.args}")
    return out, err


def _bad_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if any(b in line for b in _BAD_LOG)]


def _check_in_chromium(pages: list[Path], screenshot_pages: list[Path], tmp: Path) -> None:
    chromium = require_tool("chromium")
    jobs = []
    for n, page in enumerate(pages):
        probe = page.with_name(page.stem + ".probe.html")
        probe.write_text(page.read_text("utf-8").replace("</body>", _PROBE + "</body>"), "utf-8")
        jobs.append(("dom", page, _start(chromium, tmp / f"dom{n}", "--dump-dom",
                                         probe.as_uri())))
    shots = {}
    for page in screenshot_pages:  # unmodified pages
        shot = tmp / f"{page.stem}.png"
        shots[page] = shot
        jobs.append(("shot", page, _start(chromium, tmp / f"shot-{page.stem}",
                                          "--window-size=1400,1000", f"--screenshot={shot}",
                                          page.as_uri())))
    for kind, page, proc in jobs:
        out, err = _finish(proc)
        assert proc.returncode == 0, f"{kind} {page.name}: chromium exit {proc.returncode}"
        assert not _bad_lines(err), f"{kind} {page.name}: {_bad_lines(err)}"
        if kind == "dom":
            assert 'id="img-probe"' in out, f"{page.name}: the load event never fired"
            probe_text = out.split('id="img-probe">', 1)[1].split("</pre>", 1)[0]
            decoded, rows = {}, []
            for line in probe_text.strip().splitlines():
                if line.startswith("row "):
                    rows.append(tuple(line.split()[1:]))
                    continue
                src, width, height = line.rsplit(" ", 2)
                decoded[src.replace("&amp;", "&")] = (int(width), int(height))
            expected = _parse(page).imgs
            assert expected, f"{page.name} has no images"
            assert sorted(decoded) == sorted(expected), page.name
            assert all(w > 0 and h > 0 for w, h in decoded.values()), (page.name, decoded)
            if page.name == "index.html":  # filter on: only the rows needing review show
                assert {"review", "ok"} <= {cls for cls, _ in rows}, rows
                assert all((disp == "none") == (cls == "ok") for cls, disp in rows), rows
    for page, shot in shots.items():
        rgb = imread(shot)[..., :3]
        assert rgb.shape[:2] == (1000, 1400), page.name
        assert float(np.std(rgb)) > 0.05, f"{page.name}: blank screenshot"


def test_cohort_and_a_patient_page_load_cleanly_and_images_decode(report, tmp_path):
    pages = _pages(report)
    _check_in_chromium([pages[0], pages[-1]], [], tmp_path)  # index + the odd-id patient


@pytest.mark.slow
def test_every_page_loads_cleanly_and_screenshots_are_not_blank(report, tmp_path):
    pages = _pages(report)
    _check_in_chromium(pages, pages[:2], tmp_path)


def test_the_detector_sees_a_console_error_and_a_broken_image(tmp_path):
    """The checks above can fail: a page with a script error and a missing image."""
    chromium = require_tool("chromium")
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><img src=\"missing.png\"><script>nope();"
                   "</script>" + _PROBE + "</body></html>", "utf-8")
    out, err = _finish(_start(chromium, tmp_path / "p", "--dump-dom", bad.as_uri()))
    assert any("Uncaught" in line for line in _bad_lines(err))
    assert "missing.png 0 0" in out
