"""Contrast and phase of a series: from headers, confirmed from CT image content.

Decision rule (copied into the README)
======================================

**1. Headers** (:func:`header_phase`). The text searched is SeriesDescription +
ProtocolName + ImageComments, lower-cased, matched as whole words:

- unenhanced: ``nativ(e)``, ``sans``, ``plain``, ``nc``, ``w/o``, ``wo``, ``pre``,
  ``precontrast``, ``unenhanced``, ``non(-)contrast``, ``ohne (km)``, ``senza``, ``sin``,
  ``leer``, ``c-``, ``without``; a negated enhanced word ("ohne KM", "sans injection",
  "w/o contrast", "no contrast") counts as unenhanced;
- arterial / corticomedullary: ``art``, ``arterial``, ``arteriell(e)``, ``artériel``,
  ``cortico…``, ``cmp``, ``early``, ``angio``, ``cta``;
- nephrographic / portal venous: ``nephro…``, ``néphro…``, ``portal(e)``, ``pv``, ``pvp``,
  ``vp``, ``ven…`` (venous, venös, veineux), ``parench…``;
- excretory: ``delay(ed)``, ``excret…``, ``excrét…``, ``urogr…``, ``uro``, ``spät``,
  ``tardif/tardive``, ``late``, ``ausscheid…``, ``pyelo…``;
- enhanced, phase not said: ``c+``, ``+c``, ``km``, ``mit``, ``avec``, ``with``, ``w``, ``w/``,
  ``contrast``, ``kontrast``, ``post``, ``gad…``, ``gd``, ``ce``, ``con``, ``enh…``, ``iv``,
  ``mdc``.

ContrastBolusAgent (not empty/"none"/"no") says *enhanced*. The delay
AcquisitionTime − ContrastBolusStartTime gives the phase when the text does not:
< 50 s arterial, 50–300 s nephrographic, ≥ 300 s excretory. Text saying unenhanced while
the agent says applied (or unenhanced and enhanced words together) is a conflict:
contrast ``unknown``. No information at all: ``unknown`` (an empty agent is not proof).

For MR the same words give ``mr_pre`` (unenhanced) or ``mr_post`` (anything enhanced,
including dynamic arterial/venous/delayed phases); there is no MR content check.

**2. CT content** (:func:`measure_ct_content`, when ``content_check`` is on). Up to five
slices (50, 37.5, 62.5, 25, 75 % of the stack, in that order; reading stops after three
when two agree on a bright aorta or one reads unenhanced < 70 HU) are decoded, converted to HU and
block-averaged to 2–3 mm pixels. In each slice:

- the vertebral body (largest filled bone component > 200 HU near the midline, posterior
  half of the body) anchors a window anterior-left of it where the aorta lies;
- aorta HU = median of the largest round bright (> 120 HU) component in that window (the
  bright mask is first opened with a ~5 mm disc so renal veins joining the aorta do not
  spoil its roundness), else (unenhanced blood has tissue density) the median of the
  soft-tissue pixels (−20…150 HU) there;
- dense urine = a component > 650 HU (median ≥ 750 HU) in the kidney windows (40–110 mm
  either side of the vertebra; the aorta and its wall, where plaque calcifies, excluded)
  that is not embedded in a larger > 200 HU structure (cancellous bone: ribs, vertebrae)
  and has enhanced parenchyma (130–350 HU) in ≥ 25 % of its 10 mm neighbourhood (so
  stones and cryoprobes in unenhanced kidneys do not count).

Slices are combined: the median of the slices where a bright round aorta was found,
else the lowest soft-tissue estimate (a slice through an intervertebral disc has no bone
anchor and can only raise it); dense urine in any slice counts. Content phase:

- aorta < 70 HU and no dense urine → ``non_contrast``;
- dense urine and aorta < 250 HU → ``excretory``;
- aorta ≥ 250 HU → ``arterial`` (corticomedullary);
- 110 ≤ aorta < 250 HU → ``nephrographic`` (portal venous);
- 70 ≤ aorta < 110 HU without dense urine → enhanced, phase ``unknown`` (weak).

**3. Decision.** Content wins over headers when it measured something; if content says
only "enhanced" (weak), the header phase is kept when the header says enhanced. The
column ``contrast_basis`` records how the call was made, e.g. ``header+content agree``,
``content overrides header (description 'NATIV' → arterial, aorta 310 HU)``,
``header only (content not measurable: no vertebra found)``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "PHASES",
    "PhaseCall",
    "ContentMeasure",
    "header_phase",
    "delay_seconds",
    "phase_from_aorta",
    "measure_ct_slice",
    "measure_ct_content",
    "read_slice_hu",
    "combine_phase",
]

PHASES = ("non_contrast", "arterial", "nephrographic", "excretory", "mr_pre", "mr_post",
          "unknown")


def _words(*patterns: str) -> re.Pattern[str]:
    body = "|".join(patterns)
    return re.compile(rf"(?<![a-z0-9])(?:{body})(?![a-z0-9])")


_NONCON = _words(r"nativ\w*", "sans", "plain", "nc", "w/o", "wo", "pre", r"pre-?contrast",
                 "unenhanced", r"non[- ]?contrast", r"non[- ]?enhanced", "ohne", "senza", "sin",
                 "leer", "c-", "noncon", "without")
_ARTERIAL = _words(r"art", r"arterial\w*", r"arteriell\w*", r"art[ée]riel\w*", r"cortico\w*",
                   "cmp", "early", r"angio\w*", "cta")
_NEPHRO = _words(r"nephro\w*", r"n[ée]phro\w*", r"portal\w*", "pv", "pvp", "vp", r"ven\w*",
                 r"parench\w*")
_EXCRET = _words(r"delay\w*", r"excret\w*", r"excr[ée]t\w*", r"urogr\w*", "uro", r"sp[äa]e?t\w*",
                 r"tardi\w*", "late", r"ausscheid\w*", r"pyelo\w*")
# "c+" / "+c" end in a non-word character: they need their own boundaries.
_ENH = re.compile(r"(?<![a-z0-9])(?:km|mit|avec|with|w(?!/o)|w/(?!o)|contrast\w*"
                  r"|kontrast\w*|post\w*|gad\w*|gd|ce|con|enh\w*|iv|mdc)(?![a-z0-9])|c\+|\+c")
# "ohne KM", "sans injection", "w/o contrast": a negated enhanced word means unenhanced.
_NEGATED = re.compile(r"(?<![a-z0-9])(?:ohne|sans|w/o|without|senza|sin|no|non|kein\w*)[\s_-]+"
                      r"(?:km|kontrast\w*|contrast\w*|injection|iv|mdc|gad\w*|c\+|ce|enh\w*)"
                      r"(?![a-z0-9])")
_NO_AGENT = {"", "none", "no", "nein", "0", "n/a", "na", "-", "non", "keine"}


@dataclass(frozen=True)
class PhaseCall:
    """A contrast/phase decision and how it was made."""

    contrast: str  # none | enhanced | unknown
    phase: str  # one of PHASES
    basis: str


def _seconds(tm: str) -> float | None:
    m = re.match(r"^\s*(\d{2})(\d{2})?(\d{2})?(\.\d+)?", tm or "")
    if m is None:
        return None
    h, mi, s = (int(g) if g else 0 for g in m.groups()[:3])
    frac = float(m.group(4)) if m.group(4) else 0.0
    if h > 23 or mi > 59 or s > 60:
        return None
    return h * 3600 + mi * 60 + s + frac


def delay_seconds(contrast_start_time: str, acquisition_time: str) -> float | None:
    """AcquisitionTime − ContrastBolusStartTime in seconds (None when either is missing
    or the difference is outside 0–2 h)."""
    start, acq = _seconds(contrast_start_time), _seconds(acquisition_time)
    if start is None or acq is None:
        return None
    delay = acq - start
    if delay < 0:
        delay += 86400.0 if delay < -43200 else 0.0  # injection before midnight
    return delay if 0 <= delay <= 7200 else None


def _phase_from_delay(delay_s: float) -> str:
    if delay_s < 50:
        return "arterial"
    if delay_s < 300:
        return "nephrographic"
    return "excretory"


def header_phase(
    modality: str,
    text: str,
    contrast_agent: str = "",
    contrast_start_time: str = "",
    acquisition_time: str = "",
) -> PhaseCall:
    """Contrast and phase from headers only (rule in the module docstring).

    ``text`` is SeriesDescription + ProtocolName (+ ImageComments).
    """
    low = _NEGATED.sub(" nativ ", (text or "").lower())
    words: dict[str, bool] = {
        "non_contrast": bool(_NONCON.search(low)),
        "arterial": bool(_ARTERIAL.search(low)),
        "nephrographic": bool(_NEPHRO.search(low)),
        "excretory": bool(_EXCRET.search(low)),
    }
    generic = bool(_ENH.search(low))
    specific = [p for p in ("arterial", "nephrographic", "excretory") if words[p]]
    agent = (contrast_agent or "").strip()
    agent_says = agent.lower() not in _NO_AGENT
    delay = delay_seconds(contrast_start_time, acquisition_time) if agent_says else None
    quoted = f"'{text.strip()}'" if text.strip() else "''"
    mr = modality.upper() == "MR"

    if words["non_contrast"] and (specific or generic or agent_says):
        why = f"ContrastBolusAgent '{agent}'" if agent_says else "enhanced words"
        return PhaseCall("unknown", "unknown",
                         f"header conflict: description {quoted} unenhanced vs {why}")
    if words["non_contrast"]:
        return PhaseCall("none", "mr_pre" if mr else "non_contrast",
                         f"header description {quoted}")
    if specific or generic or agent_says:
        if mr:
            return PhaseCall("enhanced", "mr_post", _basis(quoted, agent, agent_says, None))
        if len(specific) == 1:
            return PhaseCall("enhanced", specific[0], f"header description {quoted}")
        if delay is not None:
            return PhaseCall("enhanced", _phase_from_delay(delay),
                             _basis(quoted, agent, agent_says, delay))
        return PhaseCall("enhanced", "unknown", _basis(quoted, agent, agent_says, None))
    return PhaseCall("unknown", "unknown", "no contrast information in headers")


def _basis(quoted: str, agent: str, agent_says: bool, delay: float | None) -> str:
    parts = [f"header description {quoted}"] if quoted != "''" else []
    if agent_says:
        parts.append(f"ContrastBolusAgent '{agent}'")
    if delay is not None:
        parts.append(f"delay {delay:.0f} s")
    return "header " + ", ".join(p.removeprefix("header ") for p in parts)


def phase_from_aorta(aorta_hu: float, dense_urine: bool) -> tuple[str, str]:
    """(contrast, phase) from the aorta attenuation and dense urine (module docstring)."""
    if dense_urine and aorta_hu < 250:
        return "enhanced", "excretory"
    if aorta_hu < 70:
        return "none", "non_contrast"
    if aorta_hu >= 250:
        return "enhanced", "arterial"
    if aorta_hu >= 110:
        return "enhanced", "nephrographic"
    return "enhanced", "unknown"


# ------------------------------------------------------------------ content measurement
@dataclass(frozen=True)
class ContentMeasure:
    """What the pixels said (``aorta_hu`` None when nothing could be measured)."""

    aorta_hu: float | None
    dense_urine: bool
    n_slices: int
    note: str


def _block_mean(img: npt.NDArray[np.float32], f: int) -> npt.NDArray[np.float32]:
    if f <= 1:
        return img
    r, c = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    return img[:r, :c].reshape(r // f, f, c // f, f).mean(axis=(1, 3), dtype=np.float32)


def measure_ct_slice(
    hu: npt.NDArray[Any],
    pixel_spacing_mm: Sequence[float],
    image_orientation: Sequence[float],
) -> tuple[float | None, bool, str]:
    """Aorta HU and dense-urine flag in one axial CT slice (rule: module docstring).

    ``pixel_spacing_mm`` is DICOM PixelSpacing (row spacing, column spacing).
    Returns (aorta_hu or None, dense_urine, note).
    """
    from scipy import ndimage as ndi

    from pipeline.dicom.geometry import row_col_normal

    row_dir, col_dir, _ = row_col_normal(image_orientation)
    ps_r, ps_c = float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1])
    if not (ps_r > 0 and ps_c > 0):
        return None, False, "invalid PixelSpacing"
    f = max(1, int(3.0 / max(ps_r, ps_c)))  # blocks of 2–3 mm: cheap, aorta still ≥ 6 px
    img = _block_mean(np.asarray(hu, dtype=np.float32), f)
    pr, pc = ps_r * f, ps_c * f
    jj, ii = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    # LPS x (patient left +) and y (posterior +) of every pixel, relative to pixel (0, 0).
    x_mm = ii * pc * row_dir[0] + jj * pr * col_dir[0]
    y_mm = ii * pc * row_dir[1] + jj * pr * col_dir[1]
    px_area = pr * pc

    lab, n = ndi.label(img > -500)
    if n == 0:
        return None, False, "no body"
    sizes = np.bincount(lab.ravel())[1:]
    body = lab == (int(np.argmax(sizes)) + 1)
    if body.sum() * px_area < 10000:  # < 100 cm²: not a trunk section
        return None, False, "body too small"
    bx, by = float(x_mm[body].mean()), float(y_mm[body].mean())

    bone = ndi.binary_fill_holes((img > 200) & body)
    blab, _ = ndi.label(bone)
    best, best_area = 0, 0.0
    for idx, sl in enumerate(ndi.find_objects(blab), start=1):
        comp = blab[sl] == idx
        area = float(comp.sum()) * px_area
        cx, cy = float(x_mm[sl][comp].mean()), float(y_mm[sl][comp].mean())
        if area >= 300 and abs(cx - bx) < 40 and cy > by - 15 and area > best_area:
            best, best_area = idx, area
    if best == 0:
        return None, False, "no vertebra found"
    vert = blab == best
    vx = float(x_mm[vert].mean())
    near_mid = vert & (np.abs(x_mm - vx) < 10)
    y_ant = float(y_mm[near_mid].min()) if near_mid.any() else float(y_mm[vert].min())

    window = body & ~vert & (x_mm > vx - 15) & (x_mm < vx + 45) & (y_mm > y_ant - 45) & (
        y_mm < y_ant + 5)
    aorta_hu: float | None = None
    bright = window & (img > 120) & (img < 1000)
    # Opening by a ~6 mm disc detaches thin vessels (renal veins) from the round aorta.
    r = max(1, round(5.0 / max(pr, pc)))
    disc = np.hypot(*np.mgrid[-r : r + 1, -r : r + 1]) <= r
    bright_lab, _ = ndi.label(ndi.binary_opening(bright, structure=disc))
    best_area = 0.0
    aorta_mask = np.zeros(img.shape, dtype=bool)
    for idx, sl in enumerate(ndi.find_objects(bright_lab), start=1):
        comp = bright_lab[sl] == idx
        area = float(comp.sum()) * px_area
        fill = float(comp.sum()) / comp.size
        if 80 <= area <= 1500 and fill > 0.5 and area > best_area:
            best_area = area
            aorta_hu = float(np.median(img[sl][comp]))
            aorta_mask = bright_lab == idx
    note = "aorta: bright round component"
    if aorta_hu is None:
        soft = window & (img > -20) & (img < 150)
        if soft.sum() * px_area < 100:
            return None, False, "no aorta found anterior to the vertebra"
        aorta_hu = float(np.median(img[soft]))
        note = "aorta: soft-tissue median anterior-left of the vertebra"

    # Kidney windows, minus the aorta and its wall (calcified plaques are dense too).
    wall = ndi.binary_dilation(aorta_mask, iterations=max(1, round(6.0 / max(pr, pc))))
    kidney_win = body & ~vert & ~wall & (np.abs(x_mm - vx) > 40) & (
        np.abs(x_mm - vx) < 110) & (y_mm > y_ant - 60) & (y_mm < y_ant + 60)
    dense_lab, _ = ndi.label(kidney_win & (img > 650))
    dense = False
    near = max(1, round(10.0 / max(pr, pc)))
    above_200, _ = ndi.label(img > 200)
    host_sizes = np.bincount(above_200.ravel())
    for idx, sl in enumerate(ndi.find_objects(dense_lab), start=1):
        if sl is None:
            continue
        # work in the component's box grown by the ring width (not the whole image)
        box = tuple(slice(max(0, s.start - near - 1), s.stop + near + 1) for s in sl)
        comp = dense_lab[box] == idx
        area = float(comp.sum()) * px_area
        if area < 12 or float(np.median(img[box][comp])) < 750:
            continue
        # Bone: the dense cortex sits in a larger > 200 HU structure (cancellous bone).
        host_area = float(host_sizes[above_200[box][comp][0]]) * px_area
        if host_area > 3.0 * area + 40.0:
            continue
        # Urine sits in an enhanced kidney: enhanced parenchyma (130–350 HU) within ~10 mm.
        # Ribs (muscle/fat around), stones and probes in unenhanced kidneys fail this.
        ring = ndi.binary_dilation(comp, iterations=near) & ~comp & body[box]
        values = img[box][ring]
        if values.size and float(np.mean((values > 130) & (values < 350))) >= 0.25:
            dense = True
            break
    return aorta_hu, dense, note


def read_slice_hu(path: str | Path) -> npt.NDArray[np.float32]:
    """Decode one CT slice (any transfer syntax pydicom can decode) to float32 HU."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path)
        arr = ds.pixel_array.astype(np.float32)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return arr * np.float32(slope) + np.float32(intercept)


def measure_ct_content(
    slices: Iterable[tuple[npt.NDArray[Any], Sequence[float], Sequence[float]]],
) -> ContentMeasure:
    """Combine :func:`measure_ct_slice` over a few slices (HU, PixelSpacing, IOP).

    Slices where a bright round aorta was found are trusted first (median of them);
    otherwise the *lowest* soft-tissue estimate is used, because a slice through an
    intervertebral disc (no bone to anchor on) can only raise that estimate (disc ~80 HU).
    Dense urine in any slice counts. ``slices`` is consumed lazily and reading stops
    after three slices once the answer cannot change much (two bright aortas, or an
    unenhanced soft-tissue value < 70 HU), so pass the most central slices first.
    """
    bright: list[float] = []
    soft: list[float] = []
    dense_votes = 0
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for hu, spacing, iop in slices:
            aorta, dense, note = measure_ct_slice(hu, spacing, iop)
            notes.append(note)
            if aorta is not None:
                (bright if "bright" in note else soft).append(aorta)
                dense_votes += int(dense)
            if len(notes) >= 3 and (len(bright) >= 2 or (not bright and soft
                                                          and min(soft) < 70)):
                break
    n = len(bright) + len(soft)
    if n == 0:
        return ContentMeasure(None, False, len(notes), "content not measurable: "
                              + (sorted(set(notes))[0] if notes else "no slices"))
    if bright:
        return ContentMeasure(float(np.median(bright)), dense_votes >= 1, n,
                              f"aorta: bright round component in {len(bright)}/{len(notes)} "
                              "slices")
    return ContentMeasure(float(min(soft)), dense_votes >= 1, n,
                          f"aorta: lowest soft-tissue estimate of {len(soft)} slices")


def combine_phase(header: PhaseCall, content: ContentMeasure | None, text: str) -> PhaseCall:
    """Final call: content wins when it measured something (module docstring, step 3)."""
    if content is None:
        return header
    if content.aorta_hu is None:
        return PhaseCall(header.contrast, header.phase, f"{header.basis}; header only "
                         f"({content.note})")
    contrast, phase = phase_from_aorta(content.aorta_hu, content.dense_urine)
    what = f"aorta {content.aorta_hu:.0f} HU" + (", dense urine" if content.dense_urine else "")
    if contrast == "enhanced" and phase == "unknown" and header.contrast == "enhanced":
        return PhaseCall("enhanced", header.phase,
                         f"content confirms contrast ({what}); phase from {header.basis}")
    if (contrast, phase) == (header.contrast, header.phase):
        return PhaseCall(contrast, phase, f"header+content agree ({what}; {header.basis})")
    if header.contrast == "unknown" and header.phase == "unknown":
        return PhaseCall(contrast, phase, f"content ({what}); {header.basis}")
    quoted = f"'{text.strip()}'" if text.strip() else "''"
    return PhaseCall(contrast, phase, f"content overrides header ({header.basis}: "
                     f"{header.phase}; description {quoted} → {phase}, {what})")
