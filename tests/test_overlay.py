"""Review overlays on analytic phantoms: radiological orientation whatever the acquisition
(supine, prone, feet-first, oblique), contours where the masks are, calipers labelled with
their endpoint distance, fast enough for a cohort."""

from __future__ import annotations

import functools
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from matplotlib.lines import Line2D
from matplotlib.text import Text

from pipeline.image import GeometryError, Volume
from pipeline.outputs.overlay import (
    MASK_COLOURS,
    ReviewPanel,
    caliper_length_mm,
    overlay_figure,
    render_overlay,
)

# an arbitrary lesion position, away from the origin, in patient LPS mm
CENTRE_LPS = np.array([62.0, -18.0, 105.0])
TUMOUR_RADIUS_MM = 12.0
RIGHT_MARKER_LPS = CENTRE_LPS + np.array([-30.0, 0.0, 0.0])  # patient right = −x (LPS)
ANTERIOR_MARKER_LPS = CENTRE_LPS + np.array([0.0, -30.0, 0.0])  # anterior = −y (LPS)
NODULE_LPS = CENTRE_LPS + np.array([6.0, 6.0, 0.0])

SUPINE = np.eye(3)
PRONE = np.diag([-1.0, -1.0, 1.0])  # IOP [-1,0,0, 0,-1,0]
FEET_FIRST_SUPINE = np.diag([-1.0, 1.0, -1.0])  # IOP [-1,0,0, 0,1,0]


def _rotation(z_deg: float, x_deg: float) -> np.ndarray:
    a, b = np.radians(z_deg), np.radians(x_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


OBLIQUE = _rotation(25.0, 15.0)  # tilted gantry and rotated in-plane


def phantom(
    direction: np.ndarray,
    *,
    shape_kji: tuple[int, int, int] = (21, 121, 121),
    spacing_mm: tuple[float, float, float] = (0.8, 0.8, 2.5),
    modality: str = "CT",
) -> tuple[Volume, dict[str, Volume]]:
    """A CT-like patient sampled on a grid of any orientation centred on the lesion.

    Body: soft tissue ellipse in fat. Tumour: a 12 mm sphere (45 HU). Bright (900 HU)
    markers 30 mm to the patient's right and anterior of the tumour. Masks: tumour,
    ice ball (18 mm sphere) and an enhancing 3.5 mm nodule.
    """
    d = np.asarray(direction, dtype=float)
    sp = np.asarray(spacing_mm, dtype=float)
    n_ijk = np.array(shape_kji[::-1])
    origin = CENTRE_LPS - d @ (sp * (n_ijk - 1) / 2)
    grid = Volume.from_geometry(np.zeros(shape_kji, np.int16), origin_lps=origin,
                                spacing_mm=sp, direction=d, modality=modality)
    k, j, i = np.indices(shape_kji)
    pts = grid.index_to_lps(np.stack([i, j, k], -1).reshape(-1, 3)).reshape(*shape_kji, 3)
    rel = pts - CENTRE_LPS

    def ball(c: np.ndarray, r: float) -> np.ndarray:
        return np.sum((pts - c) ** 2, axis=-1) < r**2

    arr = np.full(shape_kji, -90.0)
    arr[(rel[..., 0] / 70) ** 2 + (rel[..., 1] / 55) ** 2 < 1] = 30.0
    tumour = ball(CENTRE_LPS, TUMOUR_RADIUS_MM)
    arr[tumour] = 45.0
    arr[ball(RIGHT_MARKER_LPS, 5.0) | ball(ANTERIOR_MARKER_LPS, 5.0)] = 900.0
    if modality == "MR":
        arr = arr * 3.0 + 1500.0  # arbitrary signal units
    vol = grid.with_array(arr.astype(np.int16))
    masks = {
        "tumour": vol.with_array(tumour),
        "iceball": vol.with_array(ball(CENTRE_LPS, 18.0)),
        "enhancing": vol.with_array(ball(NODULE_LPS, 3.5)),
    }
    return vol, masks


LONG_AXIS_LPS = CENTRE_LPS + np.array([[-12.0, 0.0, 0.0], [12.0, 0.0, 0.0]])
SHORT_AXIS_LPS = CENTRE_LPS + np.array([[0.0, -12.0, 0.0], [0.0, 12.0, 0.0]])


@functools.lru_cache(maxsize=8)
def _cached_phantom(direction_key: tuple[float, ...], modality: str):
    return phantom(np.array(direction_key).reshape(3, 3), modality=modality)


def make_panel(direction: np.ndarray = SUPINE, **changes: object) -> ReviewPanel:
    key = tuple(float(v) for v in np.asarray(direction).reshape(-1))
    vol, masks = _cached_phantom(key, str(changes.pop("modality", "CT")))
    kwargs: dict = {
        "patient_id": "P001",
        "lesion_id": "L1",
        "study_date": date(2024, 3, 1),
        "role": "followup",
        "days_since_procedure": 92,
        "image": vol,
        "masks": masks,
        "long_axis_endpoints_lps": LONG_AXIS_LPS,
        "short_axis_endpoints_lps": SHORT_AXIS_LPS,
        "values": {"Long axis": "24.0 mm", "Short axis": "24.0 mm", "Volume": "7.24 ml"},
        "flags": ["enhancing nodule"],
        "modality": vol.modality,
    }
    kwargs.update(changes)
    return ReviewPanel(**kwargs)


SIZE_PX = 400


def _image_square(png: Path) -> np.ndarray:
    """Grey levels (0..1) of the left size×size square of the overlay PNG (the image)."""
    rgba = imread(png)
    assert rgba.shape[0] == SIZE_PX
    return rgba[:, :SIZE_PX, :3].mean(axis=-1)


def _pixel_of(point_lps: np.ndarray) -> tuple[int, int]:
    """(row, col) where an LPS point must appear: FOV is the long-axis midpoint ± 40 mm,
    patient right on the left (col grows with +x), anterior at the top (row grows with +y)."""
    centre = LONG_AXIS_LPS.mean(axis=0)
    col = (point_lps[0] - (centre[0] - 40.0)) / 80.0 * SIZE_PX
    row = (point_lps[1] - (centre[1] - 40.0)) / 80.0 * SIZE_PX
    return round(row), round(col)


def _mean_around(img: np.ndarray, rc: tuple[int, int], half_px: int = 10) -> float:
    r, c = rc
    return float(img[r - half_px : r + half_px, c - half_px : c + half_px].mean())


@pytest.mark.parametrize(
    "direction", [SUPINE, PRONE, FEET_FIRST_SUPINE, OBLIQUE],
    ids=["supine", "prone", "feet_first", "oblique"],
)
def test_radiological_orientation_whatever_the_acquisition(direction, tmp_path):
    png = render_overlay(make_panel(direction), tmp_path / "o.png", size_px=SIZE_PX)
    img = _image_square(png)
    centre = CENTRE_LPS
    right = _mean_around(img, _pixel_of(RIGHT_MARKER_LPS))
    left = _mean_around(img, _pixel_of(centre + np.array([30.0, 0.0, 0.0])))
    anterior = _mean_around(img, _pixel_of(ANTERIOR_MARKER_LPS))
    posterior = _mean_around(img, _pixel_of(centre + np.array([0.0, 30.0, 0.0])))
    # the bright marker at the patient's right is on the image left, anterior at the top
    assert right > 0.9, right
    assert anterior > 0.9, anterior
    assert left < 0.5, left
    assert posterior < 0.5, posterior


def test_prone_and_supine_render_the_same_picture(tmp_path):
    a = _image_square(render_overlay(make_panel(SUPINE), tmp_path / "s.png", size_px=SIZE_PX))
    b = _image_square(render_overlay(make_panel(PRONE), tmp_path / "p.png", size_px=SIZE_PX))
    assert np.abs(a - b).mean() < 0.01


@pytest.mark.parametrize("direction", [SUPINE, PRONE, OBLIQUE], ids=["supine", "prone", "oblique"])
def test_contours_are_drawn_where_the_masks_are_in_lps_mm(direction):
    fig = overlay_figure(make_panel(direction), size_px=256)
    ax = fig.axes[0]
    by_colour: dict[str, list[np.ndarray]] = {}
    for line in ax.findobj(Line2D):
        by_colour.setdefault(str(line.get_color()), []).append(np.asarray(line.get_xydata()))
    for name, radius in (("tumour", TUMOUR_RADIUS_MM), ("iceball", 18.0), ("enhancing", 3.5)):
        xy = np.concatenate(by_colour[MASK_COLOURS[name]])
        centre = NODULE_LPS if name == "enhancing" else CENTRE_LPS
        dist = np.linalg.norm(xy - centre[:2], axis=1)
        # voxelised sphere sampled on 0.8 mm voxels (oblique: 2.5 mm slices cut obliquely)
        tol = 1.6 if direction is OBLIQUE else 0.7
        assert np.abs(dist - radius).max() < tol, (name, dist.min(), dist.max())


def test_caliper_labels_match_endpoint_distance():
    long_axis = CENTRE_LPS + np.array([[-11.3, -4.1, 0.0], [12.2, 3.9, 0.0]])
    short_axis = CENTRE_LPS + np.array([[2.9, -8.6, 0.0], [-2.6, 7.4, 0.0]])
    panel = make_panel(long_axis_endpoints_lps=long_axis, short_axis_endpoints_lps=short_axis)
    fig = overlay_figure(panel, size_px=256)
    texts = {t.get_gid(): t.get_text() for t in fig.findobj(Text) if t.get_gid()}
    for gid, pts in (("caliper-LA", long_axis), ("caliper-SA", short_axis)):
        expected = float(np.linalg.norm(pts[1] - pts[0]))
        label = texts[gid]
        assert label.endswith(" mm")
        assert abs(float(label.split()[1]) - expected) <= 0.05 + 1e-9, (label, expected)
        assert abs(caliper_length_mm(pts) - expected) < 1e-12
    # the caliper line itself joins the two endpoints
    lines = [np.asarray(line.get_xydata()) for line in fig.axes[0].findobj(Line2D)]
    assert any(arr.shape == (2, 2) and np.allclose(arr, long_axis[:, :2]) for arr in lines)
    # orientation letters and scale bar present
    assert {"orient-R", "orient-L", "orient-A", "orient-P"} <= set(texts)
    bar = [line for line in fig.axes[0].findobj(Line2D) if line.get_gid() == "scalebar"]
    assert len(bar) == 1 and np.isclose(np.ptp(bar[0].get_xdata()), 10.0)


def test_enhancing_tissue_is_filled_red(tmp_path):
    png = render_overlay(make_panel(), tmp_path / "e.png", size_px=SIZE_PX)
    rgb = imread(png)[:, :SIZE_PX, :3]
    r, c = _pixel_of(NODULE_LPS)
    patch = rgb[r - 3 : r + 3, c - 3 : c + 3]
    assert (patch[..., 0] - patch[..., 1]).mean() > 0.25  # red tint over grey tumour
    r2, c2 = _pixel_of(CENTRE_LPS + np.array([-6.0, 6.0, 0.0]))  # tumour without nodule: grey
    patch2 = rgb[r2 - 3 : r2 + 3, c2 - 3 : c2 + 3]
    assert abs((patch2[..., 0] - patch2[..., 1]).mean()) < 0.05


def test_values_and_flags_are_printed_beside_the_image():
    panel = make_panel(values={"Long axis": "24.0 mm", "Enhancement": "+35 HU (yes)"},
                       flags=["registration doubtful"])
    fig = overlay_figure(panel, size_px=256)
    text = " ".join(t.get_text() for t in fig.axes[1].findobj(Text))
    assert "Long axis: 24.0 mm" in text
    assert "Enhancement: +35 HU (yes)" in text
    assert "! registration doubtful" in text
    assert "day +92" in text


def test_calipers_off_the_plane_are_flagged():
    short_axis = SHORT_AXIS_LPS + np.array([0.0, 0.0, 5.0])
    fig = overlay_figure(make_panel(short_axis_endpoints_lps=short_axis), size_px=256)
    text = " ".join(t.get_text() for t in fig.axes[1].findobj(Text))
    assert "short axis caliper is 5.0 mm off" in text


def test_mr_uses_a_percentile_window(tmp_path):
    png = render_overlay(make_panel(modality="MR"), tmp_path / "mr.png", size_px=SIZE_PX)
    img = _image_square(png)
    body = _mean_around(img, _pixel_of(CENTRE_LPS + np.array([-20.0, 20.0, 0.0])), 5)
    marker = _mean_around(img, _pixel_of(RIGHT_MARKER_LPS), 5)
    assert 0.05 < body < 0.95  # not saturated as a CT window on MR signal would be
    assert marker > body + 0.3


def test_without_calipers_the_view_centres_on_the_tumour_mask():
    panel = make_panel(long_axis_endpoints_lps=None, short_axis_endpoints_lps=None)
    fig = overlay_figure(panel, size_px=256)
    left, right = fig.axes[0].get_xlim()
    bottom, top = fig.axes[0].get_ylim()
    assert abs((left + right) / 2 - CENTRE_LPS[0]) < 1.0
    assert abs((top + bottom) / 2 - CENTRE_LPS[1]) < 1.0
    assert top < bottom  # anterior (smaller y) at the top


def test_invalid_panels_are_rejected_with_a_reason():
    key = tuple(np.eye(3).reshape(-1))
    _vol, masks = _cached_phantom(key, "CT")
    other, _ = _cached_phantom(tuple(PRONE.reshape(-1)), "CT")
    with pytest.raises(GeometryError, match="mask 'tumour' not on the image grid"):
        make_panel(masks={"tumour": other.with_array(other.array > 0)})
    with pytest.raises(ValueError, match="unknown mask 'liver'"):
        make_panel(masks={"liver": masks["tumour"]})
    with pytest.raises(ValueError, match="long_axis_endpoints_lps must be a finite 2×3"):
        make_panel(long_axis_endpoints_lps=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="modality must be CT or MR"):
        make_panel(modality="PT")
    with pytest.raises(ValueError):
        make_panel(role="pre-op")
    far = LONG_AXIS_LPS + np.array([0.0, 0.0, 500.0])
    with pytest.raises(GeometryError, match="does not cross the image"):
        overlay_figure(make_panel(long_axis_endpoints_lps=far, short_axis_endpoints_lps=None))


def test_render_is_reproducible_on_a_full_size_volume(tmp_path):
    """The same panel renders to the same bytes (its speed is measured by
    ``benchmarks/bench_overlay.py``, not here: a timed test fails on a busy machine)."""
    shape = (80, 512, 512)
    vol = Volume.from_geometry(np.full(shape, 30, np.int16), origin_lps=[-200, -200, 0],
                               spacing_mm=[0.78, 0.78, 2.5], modality="CT")
    tumour = np.zeros(shape, bool)
    tumour[38:43, 250:280, 250:280] = True
    panel = ReviewPanel("P", "L", date(2024, 1, 1), "baseline", -10, vol,
                        {"tumour": vol.with_array(tumour), "iceball": vol.with_array(tumour)},
                        None, None, {}, (), "CT")
    for name in ("a.png", "b.png"):
        render_overlay(panel, tmp_path / name, size_px=512)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").stat().st_size > 10_000  # a real picture, not an empty file


def _flip_in_plane(vol: Volume) -> Volume:
    """The same voxels stored with i and j reversed (as another scanner/orientation would)."""
    n_i, n_j, _ = vol.shape_ijk
    affine = vol.affine_lps.copy()
    affine[:3, 3] = vol.index_to_lps([n_i - 1, n_j - 1, 0])
    affine[:3, :2] *= -1
    return Volume(np.ascontiguousarray(vol.array[:, ::-1, ::-1]), affine, modality=vol.modality)


@pytest.mark.needs_shared_data
def test_real_abdominal_ct_right_kidney_on_the_image_left(tmp_path):
    import nibabel as nib

    from tests.conftest import shared_data

    folder = shared_data("totalsegmentator")
    ct = Volume.from_nifti(nib.load(folder / "example_ct_sm.nii.gz"), modality="CT")
    seg = Volume.from_nifti(nib.load(folder / "example_seg.nii.gz"))
    pictures = []
    for flip in (False, True):
        image, labels = (_flip_in_plane(ct), _flip_in_plane(seg)) if flip else (ct, seg)
        right, left = labels.array == 2, labels.array == 3  # kidney_right, kidney_left

        def centroid_lps(mask: np.ndarray, labels: Volume = labels) -> np.ndarray:
            return labels.index_to_lps(np.argwhere(mask)[:, ::-1]).mean(axis=0)

        c_right, c_left = centroid_lps(right), centroid_lps(left)
        assert c_right[0] < c_left[0]  # LPS: patient right is −x
        across = np.array([c_right, c_left])
        across[:, 2] = c_right[2]
        panel = ReviewPanel("TS", "kidneys", date(2024, 1, 1), "baseline", -7, image,
                            {"tumour": image.with_array(right),
                             "ablation_zone": image.with_array(left)},
                            across, None, {}, (), "CT")
        rgb = imread(render_overlay(panel, tmp_path / f"k{flip}.png", size_px=SIZE_PX))
        rgb = rgb[:, :SIZE_PX, :3]
        yellow = (rgb[..., 0] > 0.9) & (rgb[..., 1] > 0.8) & (rgb[..., 2] < 0.2)
        magenta = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.4) & (rgb[..., 2] > 0.85)
        assert yellow.sum() > 100 and magenta.sum() > 100
        assert np.argwhere(yellow)[:, 1].mean() < SIZE_PX * 0.4  # right kidney: image left
        assert np.argwhere(magenta)[:, 1].mean() > SIZE_PX * 0.6
        band = rgb[int(SIZE_PX * 0.1) : int(SIZE_PX * 0.9), int(SIZE_PX * 0.35) :
                   int(SIZE_PX * 0.65)]
        bone_rows = np.argwhere(band.min(axis=-1) > 0.95)[:, 0] + int(SIZE_PX * 0.1)
        assert bone_rows.size > 200 and bone_rows.mean() > SIZE_PX * 0.5  # spine posterior
        pictures.append(rgb.mean(axis=-1))
    assert np.abs(pictures[0] - pictures[1]).mean() < 0.01


def test_many_values_never_hide_the_flags():
    values = {f"Value {n}": f"{n:.1f} mm" for n in range(40)}
    panel = make_panel(values=values, flags=["first flag", "second flag"])
    fig = overlay_figure(panel, size_px=256)
    texts = [t for t in fig.axes[1].findobj(Text) if t.get_text()]
    shown = " ".join(t.get_text() for t in texts)
    assert "! first flag" in shown and "! second flag" in shown
    assert "Value 0: 0.0 mm" in shown and "Value 39" not in shown
    assert "more lines not shown" in shown
    # nothing drawn below the bottom of the column or on top of another line
    ys = sorted(t.get_position()[1] for t in texts)
    assert ys[0] > 0.0
    assert min(np.diff(ys)) > 0.02


def test_calipers_disagreeing_with_the_printed_value_are_flagged():
    def flags(values: dict[str, str]) -> str:
        fig = overlay_figure(make_panel(values=values, flags=()), size_px=256)
        return " ".join(t.get_text() for t in fig.axes[1].findobj(Text))

    assert "differs" not in flags({"Long axis": "24.0 mm", "Short axis": "24 mm"})
    text = flags({"Long axis": "30.0 mm", "Ice ball short axis": "20.0 mm"})
    assert "long axis caliper 24.0 mm differs from the printed long axis 30.0 mm" in text
    assert "short axis caliper 24.0 mm differs" in text


def test_dollar_signs_in_the_data_are_not_mathtext(tmp_path):
    # "$...$" would be parsed as TeX by matplotlib (and "$\\frac" fails to render)
    broken_tex = "$\\frac{1$ and $x^2$"
    panel = make_panel(patient_id="P$1", lesion_id="$\\frac{a", values={"Note": broken_tex},
                       flags=[broken_tex])
    fig = overlay_figure(panel, size_px=256)
    texts = [t for t in fig.axes[1].findobj(Text) if t.get_text()]
    assert any(t.get_text() == f"Note: {broken_tex}" for t in texts)
    render_overlay(panel, tmp_path / "d.png", size_px=256)  # draws without a parse error
