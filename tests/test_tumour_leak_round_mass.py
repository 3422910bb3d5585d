"""A textured exophytic tumour whose intensity window leaked into the kidney it sits on
(segmentation.tumour._leaked_past_round_mass).

Held-out seed 173's clear-cell tumour (14.5 ml, 31 mm, seed in its necrotic core) has a
texture that straddles the kidney's level (tumour 155 HU, kidney 187 HU, texture σ 30 HU):
the window kept the tumour's darker half and the kidney's darker voxels around its
pyramids, and the ellipsoid fitted to that region's fat-facing surface — a cap of the
tumour's outline — ran 25 mm deep into the kidney. The mask took the kidney's pole
(24.2 ml, Dice 0.75, 3-D diameter +20.9 mm, margin −0.46 mm for 7.01). Rays cast from
the seed see the whole outline against fat: the round mass they outline (77 % of rays
on it) bounds the region instead. Rays from a seed in a necrotic core (below the fat
boundary too) used to stop at once; each ray's exit is now its first crossing into fat
after the tumour's wall. Of 154 screened baseline tumours of 14 archives only that one
changed.
"""

from __future__ import annotations

import numpy as np
import pytest

from segmentation import segment_tumour
from segmentation._common import dice
from segmentation.tumour import _depth_mm, _leaked_past_round_mass, _round_mass

_SPACING_MM = np.array([0.8, 0.8, 1.0])  # i, j, k
_SHAPE = (60, 70, 70)
_CENTRE_KJI = (30, 35, 35)


def _radius_mm() -> np.ndarray:
    k, j, i = np.indices(_SHAPE)
    return np.sqrt(((k - _CENTRE_KJI[0]) * _SPACING_MM[2]) ** 2
                   + ((j - _CENTRE_KJI[1]) * _SPACING_MM[1]) ** 2
                   + ((i - _CENTRE_KJI[2]) * _SPACING_MM[0]) ** 2)


def _cored_ball(radius_mm: float = 12.0, core_mm: float = 5.0) -> np.ndarray:
    """A smoothed-image stand-in (k, j, i): a 150 HU ball of ``radius_mm`` with a 5 HU
    core (necrosis) in fat (−100 HU), the edges ramped over one voxel."""
    r = _radius_mm()
    wall = np.clip(radius_mm - r + 0.5, 0.0, 1.0)
    core = np.clip(core_mm - r + 0.5, 0.0, 1.0)
    return (-100.0 + 250.0 * wall - 145.0 * core).astype(np.float32)


def test_rays_from_a_necrotic_core_find_the_outline() -> None:
    """The seed in a 5 HU core, under the fat boundary (25 HU): every ray started below it
    and none found an exit (None before). Now the mass is the 12 mm ball."""
    smooth = _cored_ball()
    mass = _round_mass(smooth, _CENTRE_KJI, _SPACING_MM, fat_boundary_hu=25.0)
    assert mass is not None
    centre, form, share = mass
    semi_axes_mm = 1.0 / np.sqrt(np.linalg.eigvalsh(form))
    # the half level of a one-voxel ramp lies on the sphere; ± 0.3 mm is under half the
    # smallest voxel
    assert np.abs(centre).max() < 0.3
    assert semi_axes_mm == pytest.approx(12.0, abs=0.3)
    assert share > 0.95


def test_region_leaked_into_a_neighbour_is_bounded_by_the_mass() -> None:
    """The ball sits on a block of tissue at its level (a kidney the window did not
    separate). A region that runs on into the block is bounded by the ball outlined by
    fat; the ball's own region is left alone."""
    smooth = _cored_ball()
    block = np.zeros(_SHAPE, dtype=bool)
    block[:, :, 35 + 14:] = True  # from 11.2 mm beside the centre: shares a cap with the ball
    smooth = np.where(block, np.float32(150.0), smooth)
    ball = _radius_mm() <= 12.0
    leaked = ball | (block & (np.abs(np.indices(_SHAPE)[1] - 35) <= 15))
    mass = _round_mass(smooth, _CENTRE_KJI, _SPACING_MM, 25.0)
    envelope = _leaked_past_round_mass(leaked, mass, _SPACING_MM, _CENTRE_KJI)
    assert envelope is not None
    # the block faces the rays over a 0.8 mm-deep cap only: the mass is the ball to
    # within the fit's tolerance (Dice ≥ 0.95 on a 7 ml ball)
    assert dice(envelope, ball) > 0.95
    assert _leaked_past_round_mass(ball, mass, _SPACING_MM, _CENTRE_KJI) is None
    assert mass is not None
    centre, form, _ = mass
    depth = _depth_mm(_SHAPE, _CENTRE_KJI, _SPACING_MM, centre, form)
    assert (ball & (depth > 1.0)).sum() == 0


@pytest.fixture(scope="module")
def clean_success_173():  # type: ignore[no-untyped-def]
    from fixtures.phantom import phantom_case

    return phantom_case("clean_success", study="baseline", seed=173, index=0, small=False)


def test_rendered_textured_tumour_does_not_take_the_kidney_pole(clean_success_173) -> None:  # type: ignore[no-untyped-def]
    """Seed 173's clean-success tumour rendered at full resolution (0.69 × 0.69 × 1 mm,
    nephrographic): 14.5 ml, 3-D diameter 32.6 mm. The mask read 24.2 ml (Dice 0.745,
    3-D +20.9 mm) before; now Dice 0.973, +1.3 %, +1.3 mm."""
    _assert_segmented_within_targets(clean_success_173)


def _assert_segmented_within_targets(case) -> None:  # type: ignore[no-untyped-def]
    """The rendered case's tumour segmented from its truth centroid meets the project's
    targets: Dice 0.90 (0.95 here: neither case may keep kidney or lose a third of the
    tumour), volume 10 %, 3-D diameter 1.5 mm."""
    from measurements.size import max_3d_diameter

    seed = np.asarray(case.truth["timepoint"]["centroid_lps"])
    got = segment_tumour(case.image, seed)
    truth = case.masks["tumour"].array.astype(bool)
    mask = got.array.astype(bool)
    assert dice(mask, truth) > 0.95
    assert abs(mask.sum() / truth.sum() - 1.0) < 0.10
    error_mm = max_3d_diameter(got).diameter_mm - case.truth["timepoint"]["max_3d_diameter_mm"]
    assert abs(error_mm) < 1.5


@pytest.fixture(scope="module")
def residual_3mo_203():  # type: ignore[no-untyped-def]
    from fixtures.phantom import phantom_case

    return phantom_case("residual_3mo", study="baseline", seed=203, index=3, small=False)


def test_rays_leave_through_the_tumour_wall_not_a_core_at_the_fat_boundary(
        residual_3mo_203) -> None:  # type: ignore[no-untyped-def]
    """Held-out seed 203's residual-3-month tumour (8.0 ml, clear cell at 124 HU in the
    nephrographic phase, seed in its 19 HU necrotic core): the fat boundary, halfway from
    fat to the tumour, lies at 13 HU, just under the core, whose noise crosses it. With
    any voxel above the boundary for the tumour's wall, three rays in four left through
    the core 1-2 mm from the seed; the ellipsoid fitted to those exits (2.98 ml) was taken
    for the round mass the region had leaked past and cut the tumour to it: 2.79 ml,
    Dice 0.51, 3-D diameter −2.7 mm. A ray now leaves only after it met tissue halfway
    up from the boundary to the tumour's level: Dice 0.975, volume −3 %."""
    _assert_segmented_within_targets(residual_3mo_203)
