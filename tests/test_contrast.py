"""Contrast/phase: header words and timing, CT content on a painted abdomen, decision."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.dicom.contrast import (
    ContentMeasure,
    PhaseCall,
    combine_phase,
    delay_seconds,
    header_phase,
    measure_ct_content,
    measure_ct_slice,
    phase_from_aorta,
)
from tests.test_index_helpers import paint_abdomen

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


@pytest.mark.parametrize(
    ("modality", "text", "contrast", "phase"),
    [
        ("CT", "Abdomen NATIV 5.0 B30f", "none", "non_contrast"),
        ("CT", "ABD sans injection", "none", "non_contrast"),
        ("CT", "CT ABD W/O", "none", "non_contrast"),
        ("CT", "Abdomen plain 1mm", "none", "non_contrast"),
        ("CT", "NC abdomen", "none", "non_contrast"),
        ("CT", "Nieren ohne KM", "none", "non_contrast"),
        ("CT", "Arterielle Phase 1.0", "enhanced", "arterial"),
        ("CT", "corticomedullary 0.625", "enhanced", "arterial"),
        ("CT", "ABD ART 2mm", "enhanced", "arterial"),
        ("CT", "Portal venous 3 mm", "enhanced", "nephrographic"),
        ("CT", "PV 5.0", "enhanced", "nephrographic"),
        ("CT", "nephrographic phase", "enhanced", "nephrographic"),
        ("CT", "Néphrographique", "enhanced", "nephrographic"),
        ("CT", "venös 3mm", "enhanced", "nephrographic"),
        ("CT", "Delayed 10 min", "enhanced", "excretory"),
        ("CT", "Uro-CT excretory", "enhanced", "excretory"),
        ("CT", "Spätphase", "enhanced", "excretory"),
        ("CT", "temps tardif", "enhanced", "excretory"),
        ("CT", "Abdomen mit KM", "enhanced", "unknown"),
        ("CT", "ABD C+", "enhanced", "unknown"),
        ("CT", "ABD avec injection", "enhanced", "unknown"),
        ("CT", "Abdomen 3.0 B30f", "unknown", "unknown"),
        ("CT", "ABD W WO", "unknown", "unknown"),  # with and without: conflict
        ("MR", "T1 vibe fs pre", "none", "mr_pre"),
        ("MR", "T1 FS post", "enhanced", "mr_post"),
        ("MR", "t1_vibe_fs_tra GAD", "enhanced", "mr_post"),
        ("MR", "T1 dyn art", "enhanced", "mr_post"),
        ("MR", "T2 haste cor", "unknown", "unknown"),
    ],
)
def test_header_words(modality: str, text: str, contrast: str, phase: str) -> None:
    call = header_phase(modality, text)
    assert (call.contrast, call.phase) == (contrast, phase), call.basis


def test_words_are_whole_words() -> None:
    # "part", "prone", "vent" must not read as arterial / pre / venous.
    assert header_phase("CT", "partial body prone").phase == "unknown"
    assert header_phase("CT", "Thorax preop").phase == "unknown"


def test_agent_and_delay_give_phase() -> None:
    assert delay_seconds("140216.694", "140352.457") == pytest.approx(95.763, abs=1e-3)
    assert delay_seconds("235950", "000030") == pytest.approx(40.0)
    assert delay_seconds("", "120000") is None
    assert header_phase("CT", "Abdomen", "Iomeron 400", "120000", "120035").phase == "arterial"
    assert header_phase("CT", "Abdomen", "Iomeron 400", "120000", "120140").phase == (
        "nephrographic")
    assert header_phase("CT", "Abdomen", "Iomeron 400", "120000", "121000").phase == "excretory"
    assert header_phase("CT", "Abdomen", "Iomeron 400").phase == "unknown"
    assert header_phase("CT", "Abdomen", "Iomeron 400").contrast == "enhanced"
    # an empty or "NONE" agent says nothing
    assert header_phase("CT", "Abdomen", "NONE", "120000", "120035").contrast == "unknown"


def test_description_unenhanced_but_agent_applied_is_a_conflict() -> None:
    call = header_phase("CT", "NATIV", "APPLIED", "120000", "120100")
    assert (call.contrast, call.phase) == ("unknown", "unknown")
    assert "conflict" in call.basis


@pytest.mark.parametrize(
    ("aorta", "dense", "expected"),
    [(40, False, "non_contrast"), (69, False, "non_contrast"), (90, False, "unknown"),
     (120, True, "excretory"), (170, False, "nephrographic"), (249, False, "nephrographic"),
     (320, False, "arterial"), (320, True, "arterial")],
)
def test_phase_from_aorta_thresholds(aorta: float, dense: bool, expected: str) -> None:
    assert phase_from_aorta(aorta, dense)[1] == expected


_PHANTOM_PHASES = [("unenhanced", "non_contrast"), ("corticomedullary", "arterial"),
                   ("nephrographic", "nephrographic"), ("excretory", "excretory")]


def _content_slices(vol, n: int) -> list:
    """The slices the index reads, in its order (central first)."""
    idx = dict.fromkeys(min(n - 1, int(f * n)) for f in (0.5, 0.375, 0.625, 0.25, 0.75))
    return [(vol.array[k], (2.0, 2.0), AXIAL) for k in idx]


@pytest.mark.parametrize("seed", [0, 2])
@pytest.mark.parametrize(("painted", "expected"), _PHANTOM_PHASES)
def test_content_phase_on_painted_abdomen(painted: str, expected: str, seed: int) -> None:
    # seed 2 puts intervertebral discs at the levels read: the disc-robust combination
    # must still find the phase.
    vol = paint_abdomen(painted, seed=seed, n_slices=16)
    measure = measure_ct_content(_content_slices(vol, 16))
    assert measure.aorta_hu is not None, measure.note
    assert phase_from_aorta(measure.aorta_hu, measure.dense_urine)[1] == expected, measure


def test_content_aorta_values_match_the_painted_tissue() -> None:
    # fixtures/tissues.py paints the aorta 42 / 330 / 170 HU (unenhanced / CM / nephro)
    for painted, truth in (("unenhanced", 42), ("corticomedullary", 330),
                           ("nephrographic", 170)):
        vol = paint_abdomen(painted, seed=1, n_slices=16)
        measure = measure_ct_content(_content_slices(vol, 16))
        assert measure.aorta_hu == pytest.approx(truth, abs=20), (painted, measure)


def test_content_is_orientation_independent() -> None:
    # The same slice stored flipped left-right (row direction −x): same answer.
    vol = paint_abdomen("corticomedullary", seed=0, n_slices=16)
    hu = vol.array[8]
    a1, _, _ = measure_ct_slice(hu, (2.0, 2.0), AXIAL)
    a2, _, _ = measure_ct_slice(hu[:, ::-1], (2.0, 2.0), (-1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    assert a1 is not None and a2 is not None
    assert a1 == pytest.approx(a2, abs=15)
    # ... whereas reading it with the wrong orientation puts the window over the IVC side
    a3, _, _ = measure_ct_slice(hu[:, ::-1], (2.0, 2.0), AXIAL)
    assert a3 is None or abs(a3 - a1) > 50


def test_content_not_measurable_on_non_body_image() -> None:
    rng = np.random.default_rng(0)
    noise = rng.normal(-1000, 5, size=(128, 128)).astype(np.float32)
    measure = measure_ct_content([(noise, (1.0, 1.0), AXIAL)] * 3)
    assert measure.aorta_hu is None
    assert "not measurable" in measure.note


def test_combine_content_overrides_header() -> None:
    header = header_phase("CT", "Abdomen NATIV")
    content = ContentMeasure(310.0, False, 5, "aorta: bright")
    call = combine_phase(header, content, "Abdomen NATIV")
    assert (call.contrast, call.phase) == ("enhanced", "arterial")
    assert call.basis.startswith("content overrides header")
    assert "NATIV" in call.basis


def test_combine_agree_weak_and_unmeasurable() -> None:
    header = header_phase("CT", "PV 3mm")
    agree = combine_phase(header, ContentMeasure(165.0, False, 5, ""), "PV 3mm")
    assert agree.phase == "nephrographic" and agree.basis.startswith("header+content agree")
    weak = combine_phase(header, ContentMeasure(95.0, False, 5, ""), "PV 3mm")
    assert (weak.contrast, weak.phase) == ("enhanced", "nephrographic")
    assert "content confirms contrast" in weak.basis
    none = combine_phase(header, ContentMeasure(None, False, 0, "content not measurable: x"),
                         "PV 3mm")
    assert none.phase == "nephrographic" and "header only" in none.basis
    unknown = combine_phase(PhaseCall("unknown", "unknown", "no contrast information"),
                            ContentMeasure(45.0, False, 5, ""), "")
    assert (unknown.contrast, unknown.phase) == ("none", "non_contrast")
