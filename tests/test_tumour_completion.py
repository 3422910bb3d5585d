"""Tumour contour completion where the tumour meets parenchyma that enhances like it
(_complete_round_contour): analytic spheres on a 0.8 x 0.8 x 1 mm grid with box partial
volume (voxel averages of the sub-sampled scene) and 10 HU noise, as the generator
renders them. Fast."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from measurements import max_3d_diameter_mm
from pipeline.image import Volume
from segmentation import segment_tumour
from segmentation._common import dice, point_index_kji
from segmentation.tumour import (
    _brightest_mode,
    _complete_round_contour,
    _smoothed,
    tissue_levels_hu,
)

_SPACING = (0.8, 0.8, 1.0)  # i, j, k (mm)
_SHAPE = (60, 80, 80)  # k, j, i
_C = np.array([32.0, 32.0, 30.0])  # tumour centre (LPS mm)
_R_MM = 11.0
_SUB = 3  # sub-samples per axis for the box partial volume


def _centres(sub: int, shape: tuple[int, int, int] = _SHAPE
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS coordinates (mm) of the sub-sample points of a ``shape`` (k, j, i) grid of
    _SPACING at the origin, shaped [k, j, i, sub, sub, sub]."""
    offsets = (np.arange(sub) + 0.5) / sub - 0.5
    k, j, i = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    ok, oj, oi = np.meshgrid(offsets, offsets, offsets, indexing="ij")
    x = (i[..., None, None, None] + oi) * _SPACING[0]
    y = (j[..., None, None, None] + oj) * _SPACING[1]
    z = (k[..., None, None, None] + ok) * _SPACING[2]
    return x, y, z


def _sphere_scene(kidney_offset_mm: float,
                  tumour_hu: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray],
                  seed: int = 1, muscle_band_mm: float = 0.0) -> tuple[Volume, np.ndarray]:
    """Fat (-100 HU); kidney parenchyma (165 HU) filling x > centre + kidney_offset_mm
    (LPS mm); a sphere of radius 11 mm whose attenuation at (x, y, z) mm is
    ``tumour_hu(x, y, z)``; with ``muscle_band_mm``, a band of muscle (60 HU) that thick
    on the far side, its inner face 1 mm into the sphere (the sphere drawn over it); box
    partial volume and 10 HU noise. Returns the image and the voxel-centre truth."""
    x, y, z = _centres(_SUB)
    scene = np.full(x.shape, -100.0, np.float32)
    scene[x > _C[0] + kidney_offset_mm] = 165.0
    if muscle_band_mm > 0.0:
        face = _C[0] - _R_MM + 1.0
        scene[(x <= face) & (x > face - muscle_band_mm)] = 60.0
    inside = (x - _C[0]) ** 2 + (y - _C[1]) ** 2 + (z - _C[2]) ** 2 <= _R_MM**2
    scene = np.where(inside, tumour_hu(x, y, z), scene)
    arr = scene.mean(axis=(3, 4, 5))
    arr += np.random.default_rng(seed).normal(0.0, 10.0, _SHAPE).astype(np.float32)
    xc, yc, zc = _centres(1)
    truth = ((xc - _C[0]) ** 2 + (yc - _C[1]) ** 2 + (zc - _C[2]) ** 2 <= _R_MM**2)[..., 0, 0, 0]
    image = Volume.from_geometry(arr, origin_lps=(0, 0, 0), spacing_mm=_SPACING, modality="CT")
    return image, truth


def _scene(kidney_offset_mm: float, rim_hu: float, seed: int = 1
           ) -> tuple[Volume, np.ndarray]:
    """:func:`_sphere_scene` with the sphere at 100 HU, its enhancement rising to
    ``rim_hu`` over the 3 mm next to the kidney (a textured rim that enhances like the
    parenchyma)."""
    plane = _C[0] + kidney_offset_mm
    return _sphere_scene(kidney_offset_mm, lambda x, y, z: 100.0 + (rim_hu - 100.0)
                         * np.clip((x - (plane - 3.0)) / 3.0, 0.0, 1.0), seed)


@pytest.mark.parametrize("kidney_offset_mm", [5.0, 6.0])
def test_tumour_rim_iso_enhancing_with_the_kidney_is_completed(kidney_offset_mm: float) -> None:
    """The rim next to the kidney reads 165 HU like the parenchyma: no edge there, the
    intensity region stops near the 130 HU iso-level, a chord through the tumour (without
    completion: Dice 0.84 / 0.87, volume -28 % / -22 %). The contour completed from the
    part against fat gives most of it back (Dice 0.95 / 0.96, volume -9 % / -8 %: the
    ellipsoid is trusted only 1 mm inside its surface), and nothing of the kidney beyond
    the sphere."""
    image, truth = _scene(kidney_offset_mm, rim_hu=165.0)
    mask = segment_tumour(image, _C - np.array([5.0, 0.0, 0.0]), half_size_mm=30.0)
    got = mask.array.astype(bool)
    assert dice(got, truth) >= 0.94
    assert abs(got.sum() / truth.sum() - 1.0) < 0.11
    truth_diameter = max_3d_diameter_mm(mask.with_array(truth.astype(np.uint8)))
    assert abs(max_3d_diameter_mm(mask) - truth_diameter) < 1.0
    x = (np.arange(_SHAPE[2]) * _SPACING[0])[None, None, :]
    assert not (got & (x > _C[0] + _R_MM + 1.5)).any()  # no parenchyma beyond the sphere


def test_completion_leaves_a_tumour_with_a_visible_parenchyma_edge_alone() -> None:
    """A uniform 100 HU tumour against 165 HU parenchyma has an edge all round: the
    segmented region is already round, and what lies between it and the fitted ellipsoid
    is a thin shell at most, which is not added."""
    image, truth = _scene(3.0, rim_hu=100.0)
    seed = _C - np.array([5.0, 0.0, 0.0])
    mask = segment_tumour(image, seed, half_size_mm=30.0, convex_fill=False)
    region = mask.array.astype(bool)
    assert dice(region, truth) >= 0.94
    smooth = _smoothed(image, sigma_mm=0.8)
    spacing = image.spacing_mm
    seed_kji = point_index_kji(image, seed)
    fat_hu, tumour_hu, _, _ = tissue_levels_hu(smooth, seed_kji, spacing)
    completed = _complete_round_contour(region, smooth, spacing, seed_kji,
                                        0.5 * (fat_hu + tumour_hu))
    assert (completed & ~region).sum() <= 0.01 * region.sum()


def _lobulated_scene(seed: int = 1) -> tuple[Volume, np.ndarray]:
    """The iso-enhancing scene of :func:`_scene` (kidney 5 mm from the centre, rim 165 HU)
    with two lobes (radius 6 mm, 7 mm off the centre along ±y) bulging along the kidney:
    the outline against fat is wider than the sphere's, so an ellipsoid fitted to it
    passes outside the true border across the kidney sector."""
    x, y, z = _centres(_SUB)
    plane = _C[0] + 5.0
    lobes = [(_C + np.array([0.0, 7.0, 0.0]), 6.0), (_C - np.array([0.0, 7.0, 0.0]), 6.0)]

    def solid(px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
        inside = (px - _C[0]) ** 2 + (py - _C[1]) ** 2 + (pz - _C[2]) ** 2 <= _R_MM**2
        for centre, radius in lobes:
            inside |= ((px - centre[0]) ** 2 + (py - centre[1]) ** 2
                       + (pz - centre[2]) ** 2 <= radius**2)
        return inside

    scene = np.full(x.shape, -100.0, np.float32)
    scene[x > plane] = 165.0
    ramp = np.clip((x - (plane - 3.0)) / 3.0, 0.0, 1.0)
    scene = np.where(solid(x, y, z), 100.0 + 65.0 * ramp, scene)
    arr = scene.mean(axis=(3, 4, 5))
    arr += np.random.default_rng(seed).normal(0.0, 10.0, _SHAPE).astype(np.float32)
    xc, yc, zc = _centres(1)
    truth = solid(xc, yc, zc)[..., 0, 0, 0]
    image = Volume.from_geometry(arr, origin_lps=(0, 0, 0), spacing_mm=_SPACING, modality="CT")
    return image, truth


def test_completion_of_a_lobulated_tumour_stays_inside_its_border() -> None:
    """Lobes along the kidney widen the fat-facing outline: the whole fitted ellipsoid
    put 151 voxels more than 1 mm (up to 1.6 mm) outside the true border into the kidney
    and read +6.8 % volume (Dice 0.963). Trusted only 1 mm inside its surface, the
    completion stays within one voxel of the border (Dice 0.98, volume -3 %)."""
    from scipy import ndimage as ndi

    image, truth = _lobulated_scene()
    mask = segment_tumour(image, _C - np.array([5.0, 0.0, 0.0]), half_size_mm=30.0)
    got = mask.array.astype(bool)
    outside_mm = ndi.distance_transform_edt(~truth, sampling=np.asarray(_SPACING)[::-1])
    assert (outside_mm[got] > 1.01).sum() == 0  # nothing beyond one in-plane voxel
    assert abs(got.sum() / truth.sum() - 1.0) < 0.05
    assert dice(got, truth) >= 0.97


def _bright_sector_scene(lobe_hu: float, seed: int = 1) -> tuple[Volume, np.ndarray]:
    """:func:`_sphere_scene` with the kidney 6 mm from the centre and the sphere at 110 HU,
    its enhancement rising to ``lobe_hu`` over 3 mm from 3 mm past the centre along +y: a
    sector (a quarter of the tumour) facing fat and touching the kidney, as a clear-cell
    tumour's texture makes one (seed 79's clean_success tumour)."""
    return _sphere_scene(6.0, lambda x, y, z: 110.0 + (lobe_hu - 110.0)
                         * np.clip((y - _C[1] - 3.0) / 3.0, 0.0, 1.0), seed)


@pytest.mark.parametrize("lobe_hu", [184.0, 185.0, 210.0, 230.0])
def test_tumour_sector_brighter_than_the_parenchyma_is_completed(lobe_hu: float) -> None:
    """The sector above the parenchyma midpoint (138 HU) is left out of the region, whose
    surface then faces it, not fat, over almost half its area: under the 60 % of
    fat-facing surface the completion asks for, it was left alone (Dice 0.85, volume
    −26 %). What the completion would add reads brighter than the parenchyma, so it is
    tumour: completed, its border against fat re-placed and cleaned as the region's
    (Dice 0.985-0.987, volume −2.5 to −2.7 %), and nothing of the kidney beyond the
    sphere. A sector rising only to 185 HU (20 over the 165 HU kidney) reads 169.8 HU at
    its median, +5.0 over the parenchyma level (164.8; +5.0 to +6.0 over three noise
    draws), as held-out seed 239's read +5.7 HU (−38 % of volume): with a 10 HU bar over
    the old level (a 5 HU bin's centre, 162.5) it was left alone (Dice 0.857, volume
    −25 %). One rising to 184 HU reads +4.4: completed at the 3.5 HU bar, left alone at
    5 HU (Dice 0.860, volume −24.5 %)."""
    image, truth = _bright_sector_scene(lobe_hu)
    mask = segment_tumour(image, _C - np.array([0.0, 5.0, 0.0]), half_size_mm=30.0)
    got = mask.array.astype(bool)
    # 0.986 / −2.5 % measured, 0.85 / −26 % left alone; 0.96 and 4 % are the other
    # completion tests' floor here (the ellipsoid trusted 1 mm inside its surface)
    assert dice(got, truth) >= 0.96
    assert abs(got.sum() / truth.sum() - 1.0) < 0.04
    x = (np.arange(_SHAPE[2]) * _SPACING[0])[None, None, :]
    assert not (got & (x > _C[0] + _R_MM + 1.5)).any()  # no kidney beyond the sphere


def test_tumour_sector_at_the_parenchyma_level_is_not_completed_on_a_small_fat_share() -> None:
    """The same sector reading like the parenchyma (165 HU) could be kidney: under 60 % of
    fat-facing surface the completion stays off, and no kidney is taken (Dice 0.87,
    volume −23 %, as before: the limit of an intensity and outline rule)."""
    image, truth = _bright_sector_scene(165.0)
    seed = _C - np.array([0.0, 5.0, 0.0])
    with_completion = segment_tumour(image, seed, half_size_mm=30.0).array.astype(bool)
    smooth = _smoothed(image, sigma_mm=0.8)
    seed_kji = point_index_kji(image, seed)
    fat_hu, tumour_hu, _, paren_hu = tissue_levels_hu(smooth, seed_kji, image.spacing_mm)
    assert paren_hu is not None
    region = segment_tumour(image, seed, half_size_mm=30.0, convex_fill=False).array.astype(bool)
    completed = _complete_round_contour(region, smooth, image.spacing_mm, seed_kji,
                                        0.5 * (fat_hu + tumour_hu), brighter_than_hu=paren_hu)
    assert (completed & ~region).sum() == 0
    x = (np.arange(_SHAPE[2]) * _SPACING[0])[None, None, :]
    assert not (with_completion & (x > _C[0] + _R_MM + 1.5)).any()
    assert with_completion.sum() <= truth.sum()  # it reads −23 %: nothing was added


def _bright_majority_scene(seed: int = 1) -> tuple[Volume, np.ndarray]:
    """:func:`_sphere_scene` with the kidney 6 mm from the centre and the sphere at 110 HU
    up to 3 mm short of the centre along y, rising over 3 mm to 215 HU beyond: a tumour
    whose texture lifts most of it (70 %) above the parenchyma (165 HU), as a clear-cell
    tumour's in the corticomedullary phase (SYN1130000, SYN0890000)."""
    return _sphere_scene(6.0, lambda x, y, z: 110.0 + 105.0
                         * np.clip((y - _C[1] + 3.0) / 3.0, 0.0, 1.0), seed)


@pytest.mark.parametrize("seed", [1, 2])
def test_tumour_mostly_brighter_than_the_parenchyma_is_completed_to_its_round_mass(
        seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The window around the seed (in the 110 HU part) keeps the part below the
    parenchyma midpoint, a third of the tumour; the contour completion fitted to that
    fragment's fat-facing surface would add more than half of it, so it stays off (Dice
    0.5, volume −66 % without the round mass). Rays from the seed see the whole outline
    against fat: the fragment is completed to the fitted mass and its border re-placed
    (Dice ≥ 0.96), and nothing of the kidney beyond the sphere."""
    import segmentation.tumour as tumour

    image, truth = _bright_majority_scene(seed)
    point = _C - np.array([0.0, 7.0, 0.0])
    got = segment_tumour(image, point, half_size_mm=30.0).array.astype(bool)
    # 0.983-0.984 and −1.2 / −0.5 % measured; 0.96 and 5 % are the completion tests' floor
    assert dice(got, truth) >= 0.96
    assert abs(got.sum() / truth.sum() - 1.0) < 0.05
    x = (np.arange(_SHAPE[2]) * _SPACING[0])[None, None, :]
    assert not (got & (x > _C[0] + _R_MM + 1.5)).any()  # no kidney beyond the sphere
    # the round mass did it: without it the fragment is what is left (0.34 of the truth)
    monkeypatch.setattr(tumour, "_RAY_REGION_MAX_SHARE", 0.0)
    fragment = segment_tumour(image, point, half_size_mm=30.0).array.astype(bool)
    assert fragment.sum() < 0.6 * truth.sum()


def test_round_mass_is_found_from_a_seed_off_its_centre() -> None:
    """Rays from a seed 7 mm off the centre of the 11 mm sphere: the far side's exits lie
    up to 18 mm away, beyond 1.3 × the median seen from the seed, and the near cap alone
    gave an ellipsoid of 2.5 times the sphere's volume. Measured from the middle of the
    others (a sphere fitted to them), every side is kept: centre and semi-axes within
    0.5 mm (0.4 and 0.1-0.35 measured; the fit runs through the half level of a box
    partial volume smoothed at σ 0.8 mm)."""
    from segmentation.tumour import _round_mass

    image, _ = _bright_majority_scene()
    point = _C - np.array([0.0, 7.0, 0.0])
    smooth = _smoothed(image, sigma_mm=0.8)
    seed_kji = point_index_kji(image, point)
    mass = _round_mass(smooth, seed_kji, image.spacing_mm, 0.5 * (-100.0 + 110.0))
    assert mass is not None
    centre_kji, form, share = mass
    seed_lps = np.asarray(seed_kji[::-1], float) * np.asarray(_SPACING)
    assert np.allclose(seed_lps + centre_kji[::-1], _C, atol=0.5)
    assert np.allclose(1.0 / np.sqrt(np.linalg.eigvalsh(form)), _R_MM, atol=0.5)
    # 0.79 measured: the kidney side (a fifth of the directions) does not fit; 0.6 is
    # well above the 0.4 the rescue asks for
    assert share > 0.6


def test_tumour_inside_a_round_kidney_is_not_given_the_kidney_outline() -> None:
    """An endophytic tumour (7 mm, 90 HU) inside a round kidney (22 mm, 165 HU) in fat:
    rays from the seed see the kidney's outline, a round mass 30 times the tumour's
    volume. The region shares none of its surface with it, so nothing is added (without
    that check the whole kidney was taken)."""
    shape = (70, 90, 90)
    kidney_c = np.array([36.0, 36.0, 35.0])
    tumour_c = kidney_c + np.array([0.0, 9.0, 0.0])
    x, y, z = _centres(_SUB, shape)

    def inside(c: np.ndarray, r: float, px: np.ndarray, py: np.ndarray, pz: np.ndarray
               ) -> np.ndarray:
        return (px - c[0]) ** 2 + (py - c[1]) ** 2 + (pz - c[2]) ** 2 <= r**2

    scene = np.full(x.shape, -100.0, np.float32)
    scene[inside(kidney_c, 22.0, x, y, z)] = 165.0
    scene[inside(tumour_c, 7.0, x, y, z)] = 90.0
    arr = scene.mean(axis=(3, 4, 5))
    arr += np.random.default_rng(3).normal(0.0, 10.0, shape).astype(np.float32)
    image = Volume.from_geometry(arr, origin_lps=(0, 0, 0), spacing_mm=_SPACING, modality="CT")
    xc, yc, zc = _centres(1, shape)
    truth = inside(tumour_c, 7.0, xc, yc, zc)[..., 0, 0, 0]
    got = segment_tumour(image, tumour_c, half_size_mm=40.0).array.astype(bool)
    # 0.987 and 0.99 × the truth measured; the kidney taken reads 0.06 and 31 ×: the bars
    # leave a 7 mm sphere's border voxel all round
    assert dice(got, truth) >= 0.9
    assert got.sum() < 1.2 * truth.sum()


def _muscle_band_scene(band_mm: float, seed: int = 1) -> tuple[Volume, np.ndarray]:
    """:func:`_sphere_scene`'s 120 HU sphere with the kidney 8 mm from the centre on a
    muscle band ``band_mm`` thick, fat beyond: the body-wall muscle the synthetic
    "sphere" scenario's exophytic tumour rests on."""
    return _sphere_scene(8.0, lambda x, y, z: np.full(x.shape, 120.0, np.float32), seed,
                         muscle_band_mm=band_mm)


@pytest.mark.parametrize("band_mm", [3.0, 5.0])
def test_tumour_border_against_a_muscle_band_with_fat_beyond(band_mm: float) -> None:
    """The border against muscle lies at the tumour/muscle half level. Against a 3 mm
    band, the outside shell the border re-placement reads (1.5-3.5 mm out) averaged the
    muscle with the fat behind it and the border ran 1-2 mm into the band: Dice 0.977,
    +2.7 % volume, 3-D diameter +2.04 mm, voxels 1.8 mm into the band (the held-out
    sphere tumours of seeds 149 and 157). With the layer read on its own
    (segmentation._common._layer_side): 0.988, 0.0 %, +1.52 mm, one voxel into it. A
    5 mm band was always right: 0.993, −0.5 %, +0.61 mm (a voxelised sphere's own
    3-D diameter reads +0.6)."""
    image, truth = _muscle_band_scene(band_mm)
    got = segment_tumour(image, _C + np.array([1.0, -1.0, 0.5]), half_size_mm=30.0)
    mask = got.array.astype(bool)
    x = (np.arange(_SHAPE[2]) * _SPACING[0])[None, None, :]
    # bars between the code before (1.8 mm in, 0.977, +2.7 %, +2.04 mm) and after
    assert not (mask & (x < _C[0] - _R_MM - 1.5)).any()
    assert dice(mask, truth) >= 0.985
    assert abs(mask.sum() / truth.sum() - 1.0) < 0.015
    assert abs(max_3d_diameter_mm(got) - 2.0 * _R_MM) <= 1.8


def test_parenchyma_level_is_the_kidneys_own_not_a_bin_centre() -> None:
    """The parenchyma level the bright-sector bar is measured against is the kidney's own
    level: the histogram's 5 HU bins start at the pool's minimum, and their centre read
    162.5 HU for the scene's 165 HU kidney (2.5 HU, most of the bright-sector bar). The
    parabola through the peak bin and its neighbours reads it within 0.5 HU (164.8)."""
    image, _ = _bright_sector_scene(185.0)
    smooth = _smoothed(image, sigma_mm=0.8)
    seed_kji = point_index_kji(image, _C - np.array([0.0, 5.0, 0.0]))
    paren_hu = tissue_levels_hu(smooth, seed_kji, image.spacing_mm)[3]
    assert paren_hu is not None
    assert abs(paren_hu - 165.0) < 0.5


@pytest.mark.parametrize("level_hu", [165.0, 163.7, 187.3])
def test_brightest_mode_is_independent_of_the_bins_phase(level_hu: float) -> None:
    """A normal pool of 50,000 voxels (σ 12 HU) whose minimum moves the 5 HU bins through
    a whole bin reads its level within 0.3 HU at every phase (0.1 HU measured, the
    sample's own scatter; 0.35 on 20,000 voxels); the bin centre alone read up to 2.5 HU
    off. The three levels sit at different phases of the same bins."""
    rng = np.random.default_rng(7)
    for phase_hu in np.linspace(0.0, 5.0, 10, endpoint=False):
        values = rng.normal(level_hu, 12.0, 50_000)
        floor = 100.0 + phase_hu
        values = np.concatenate([values[values > floor], [floor]])
        assert abs(_brightest_mode(values) - level_hu) < 0.3
