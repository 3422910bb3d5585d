"""Tumour envelope (the ellipsoid through the contour against fat) and border placement
on small analytic tumours with box-filter partial volume. Fast."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from pipeline.image import Volume
from segmentation._common import dice, fit_ellipsoid, regularised
from segmentation.tumour import _fat_envelope, segment_tumour


def test_fit_ellipsoid_recovers_an_ellipsoid_from_the_half_facing_fat() -> None:
    rng = np.random.default_rng(3)
    semi_mm = np.array([14.0, 12.0, 10.0])
    centre_mm = np.array([2.0, -3.0, 1.5])
    directions = rng.normal(size=(2000, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    cap = directions[directions[:, 0] > -0.2]  # the other side lies against parenchyma
    points = centre_mm + cap * semi_mm + rng.normal(scale=0.3, size=cap.shape)
    fit = fit_ellipsoid(points)
    assert fit is not None
    centre, form = fit
    assert np.allclose(centre, centre_mm, atol=0.8)
    assert np.allclose(np.sort(1.0 / np.sqrt(np.linalg.eigvalsh(form))), np.sort(semi_mm),
                       atol=1.0)


def test_fit_ellipsoid_rejects_a_hyperboloid() -> None:
    t, z = np.meshgrid(np.linspace(0, 2 * np.pi, 40), np.linspace(-8, 8, 20))
    radius = np.sqrt(100.0 + z**2)  # x² + y² − z² = 100
    points = np.stack([(radius * np.cos(t)).ravel(), (radius * np.sin(t)).ravel(), z.ravel()],
                      axis=1)
    assert fit_ellipsoid(points) is None


# ------------------------------------------------------- border placement (small tumours)
_SP_MM = np.array([0.75, 0.75, 1.0])  # i, j, k: the synthetic baselines' grid


def _box_pv_ellipsoid(semi_mm, n_ij: int = 56, n_k: int = 42, supersample: int = 5):
    """(Fraction of each voxel inside an ellipsoid centred off the voxel grid — the box
    filter of the generator's partial volume — and the voxel-centre truth mask), [k, j, i]."""
    centre = np.array([0.3, 0.2, 0.1])
    xs = (np.arange(n_ij) - n_ij / 2) * _SP_MM[0]
    zs = (np.arange(n_k) - n_k / 2) * _SP_MM[2]
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    frac = np.zeros((n_k, n_ij, n_ij), np.float32)

    def inside(z, y, x):
        return (((x - centre[0]) / semi_mm[0]) ** 2 + ((y - centre[1]) / semi_mm[1]) ** 2
                + ((z - centre[2]) / semi_mm[2]) ** 2) <= 1.0

    for a in sub:
        for b in sub:
            for c in sub:
                frac += inside(zs[:, None, None] + c * _SP_MM[2],
                               xs[None, :, None] + b * _SP_MM[1],
                               xs[None, None, :] + a * _SP_MM[0])
    frac /= supersample**3
    truth = inside(zs[:, None, None], xs[None, :, None], xs[None, None, :])
    origin = (xs[0], xs[0], zs[0])
    return frac, truth, origin, centre


def _ct(frac, outside_hu: float, tumour_hu: float, origin, seed: int = 0) -> Volume:
    rng = np.random.default_rng(seed)
    noise = ndi.gaussian_filter(rng.standard_normal(frac.shape).astype(np.float32),
                                (0.0, 1.2, 1.2))
    arr = outside_hu * (1.0 - frac) + tumour_hu * frac + 12.0 * noise / noise.std()
    return Volume.from_geometry(arr.astype(np.float32), origin_lps=origin,
                                spacing_mm=tuple(_SP_MM), modality="CT")


@pytest.mark.parametrize(("outside_hu", "tumour_hu"), [(-100.0, 125.0), (165.0, 75.0)])
def test_segment_tumour_small_sphere_keeps_its_volume(outside_hu: float, tumour_hu: float
                                                      ) -> None:
    """A 0.7 ml sphere (in fat; endophytic, in enhancing parenchyma) is segmented within
    5 % of its voxel-centre volume: the half level of the Gaussian-smoothed image sits
    σ²/R inside a convex border and the spur opening shaved the outline (old code
    −9 % in fat, −10 % in parenchyma)."""
    frac, truth, origin, centre = _box_pv_ellipsoid((5.5, 5.5, 5.5))
    got = segment_tumour(_ct(frac, outside_hu, tumour_hu, origin), centre).array > 0
    assert abs(got.sum() / truth.sum() - 1.0) < 0.05
    assert dice(got, truth) > 0.95


@pytest.mark.parametrize("fat_mm", [1.0, 1.5])
def test_segment_tumour_stops_at_its_surface_where_thin_fat_meets_air(fat_mm: float) -> None:
    """An 8 mm sphere (150 HU) in fat whose surface lies ``fat_mm`` from air (the skin or
    bowel gas: −1000 HU beyond a plane, box-filter partial volume). The border's outside
    shell (1.5-3.5 mm out) read air there, the fat/outside half level fell several hundred
    HU below fat, and a layer of fat voxels on the air side joined the tumour (held-out
    seed 227's baseline tumour, 3 mm from air: long axis +1.80 mm; here +9 % volume at
    1.0 mm of fat, +5 % at 1.5 mm, the first voxel centre beyond the surface, 0.55 mm out,
    kept). Air is read as a floor just below fat: no voxel centre beyond the surface on
    the air side is kept."""
    radius_mm = 8.0
    frac, truth, origin, centre = _box_pv_ellipsoid((radius_mm, radius_mm, radius_mm))
    ct = _ct(frac, -100.0, 150.0, origin, seed=3)
    x_mm = origin[0] + np.arange(frac.shape[2]) * _SP_MM[0]
    wall_mm = centre[0] - radius_mm - fat_mm  # air for x below it
    air = np.clip(0.5 - (x_mm - wall_mm) / _SP_MM[0], 0.0, 1.0)[None, None, :]
    arr = np.asarray(ct.array) + air * (1.0 - frac) * (-1000.0 + 100.0)
    got = segment_tumour(ct.with_array(arr.astype(np.float32)), centre).array > 0
    # how far the mask reaches towards the air, beyond the sphere's surface (mm)
    reach_mm = float(centre[0] - radius_mm - np.broadcast_to(x_mm, got.shape)[got].min())
    # −0.20 mm now (the last voxel centre inside); +0.55 mm before (the first one outside)
    assert reach_mm <= 0.0, reach_mm
    # +0.1 and −0.1 % now, +9.4 and +5.3 % before: 3 % is a third of the smaller error
    assert abs(got.sum() / truth.sum() - 1.0) < 0.03
    # 0.994 now, 0.950-0.97 before: the bar only guards the shape, the two above decide
    assert dice(got, truth) > 0.95


def test_regularised_removes_one_voxel_bumps_and_keeps_a_sphere() -> None:
    """Most one-voxel bumps and dents go (bumps lengthen calipers), and a clean sphere
    keeps its volume (the curvature term puts back what smoothing the distance map takes
    from a convex border). With the signed distance taken from voxel centres (each side
    half a voxel too deep) 4 of the 25 bumps and 17 of the 25 dents were left: the map's
    jump at the border removed bumps more readily and ate into the sphere."""
    _, truth, _, _ = _box_pv_ellipsoid((6.0, 6.0, 6.0), supersample=1)
    rng = np.random.default_rng(5)
    noisy = truth.copy()
    shell = ndi.binary_dilation(truth) & ~truth
    skin = truth & ~ndi.binary_erosion(truth)
    for sel, value in ((shell, True), (skin, False)):
        idx = np.argwhere(sel)
        pick = idx[rng.choice(len(idx), 25, replace=False)]
        noisy[tuple(pick.T)] = value
    out = regularised(noisy, _SP_MM, 0.7, 2.0)
    assert (out & ~truth).sum() <= 10 and (truth & ~out).sum() <= 10
    assert (out ^ truth).sum() <= 20  # of the 50 voxels flipped
    plain = regularised(truth, _SP_MM, 0.8, 0.0)
    assert plain.sum() < 0.98 * truth.sum()  # without the curvature term it shrinks
    assert abs(regularised(truth, _SP_MM, 0.8, 2.0).sum() / truth.sum() - 1.0) < 0.005


# ------------------------------------------- envelope against a leak into the kidney
def _tumour_leaking_into_kidney(leak_centre_mm):
    """(Smoothed image, region, seed, spacing, tumour, leak) on a 0.8 × 0.8 × 1 mm grid: a
    12 mm tumour (150 HU) half inside a 25 mm kidney (190 HU) in fat (−100 HU), and the
    region grown from it that ran into a 10 mm blob of the tumour's attenuation (a
    medullary pyramid) at ``leak_centre_mm`` (x, y, z)."""
    sp = np.array([0.8, 0.8, 1.0])
    shape = (60, 90, 110)  # k, j, i
    kk, jj, ii = np.ogrid[: shape[0], : shape[1], : shape[2]]
    z = (kk - 30) * sp[2]
    y = (jj - 45) * sp[1]
    x = (ii - 65) * sp[0]

    def ball(cx, cy, cz, r):
        return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r * r

    tumour = ball(0.0, 0.0, 0.0, 12.0)
    kidney = ball(-22.0, 0.0, 0.0, 25.0)
    leak = ball(*leak_centre_mm, 10.0) & ~tumour
    image = np.full(shape, -100.0, np.float32)
    image[kidney] = 190.0
    image[tumour | leak] = 150.0
    smooth = ndi.gaussian_filter(image, 0.8 / sp[::-1]).astype(np.float32)
    return smooth, tumour | leak, (30, 45, 65), sp, tumour, leak


def test_fat_envelope_cuts_a_leak_into_the_kidney_that_faces_no_fat() -> None:
    # 39 % of the region lies in the pyramid: the envelope used to be refused (< 70 % of
    # the body inside), leaving the leak in the tumour; the pyramid is enclosed by cortex
    smooth, region, seed, sp, tumour, leak = _tumour_leaking_into_kidney((-17.0, 0.0, 0.0))
    envelope = _fat_envelope(region, smooth, 25.0, sp, seed)
    assert envelope is not None
    assert (envelope & leak).sum() < 0.1 * leak.sum()
    assert dice(envelope & region, tumour) > 0.95


def test_fat_envelope_keeps_a_lobe_that_faces_fat() -> None:
    # the same lobe lying in fat beside the tumour is part of the tumour's border against
    # fat: the envelope passes through it (or is refused), it never cuts it like a leak
    smooth, region, seed, sp, _tumour, leak = _tumour_leaking_into_kidney((0.0, 19.0, 0.0))
    envelope = _fat_envelope(region, smooth, 25.0, sp, seed)
    assert envelope is None or (envelope & leak).sum() > 0.5 * leak.sum()
