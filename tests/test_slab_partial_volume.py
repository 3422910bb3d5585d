"""An enhancing component on one thick MR slice at the zone's edge: the partial volume of
the parenchyma beyond the zone's surface (not a nodule) or a nodule of its own.

Analytic scene along z (exact box-filter partial volume; in-plane the zone is a square on
the pixel grid): a dead zone (T1 pre 520, post 525) from z = 12 to 28 mm in renal cortex
(420 → 950), 5 mm slices centred at 2.5 + 5 k, so the zone's first slice [10, 15] holds
60 % zone and 40 % cortex and enhances by +45 % though nothing in it is alive. A nodule
(380 → 684, +80 %) filling the same slab is darker than both neighbours before contrast:
no mixture of them.
"""

from __future__ import annotations

import numpy as np
import pytest

from measurements import slab_partial_volume_parts
from pipeline.image import Volume

ZONE_Z_MM = (12.0, 28.0)
ZONE, CORTEX, NODULE = (520.0, 525.0), (420.0, 950.0), (380.0, 684.0)
MEDULLA = (330.0, 720.0)
N_XY, ZONE_XY, SPOT = 24, slice(4, 20), (slice(6, 12), slice(8, 14))
SLICE_MM, N_SLICES = 5.0, 8


def _phase(phase: int, nodule: bool, seed: int, beyond: tuple[float, float] = CORTEX
           ) -> Volume:
    arr = np.full((N_SLICES, N_XY, N_XY), beyond[phase], np.float64)
    for k in range(N_SLICES):
        lo = k * SLICE_MM
        f = max(0.0, min(lo + SLICE_MM, ZONE_Z_MM[1]) - max(lo, ZONE_Z_MM[0])) / SLICE_MM
        arr[k, ZONE_XY, ZONE_XY] = f * ZONE[phase] + (1.0 - f) * beyond[phase]
    if nodule:
        arr[2][SPOT] = NODULE[phase]
    arr += np.random.default_rng(seed).normal(0.0, 12.0, arr.shape)
    return Volume.from_geometry(arr.astype(np.float32), origin_lps=(0.5, 0.5, 2.5),
                                spacing_mm=(1.0, 1.0, SLICE_MM), direction=np.eye(3),
                                modality="MR")


def _masks(like: Volume) -> tuple[Volume, Volume]:
    centres = 2.5 + SLICE_MM * np.arange(N_SLICES)
    zone = np.zeros(like.array.shape, np.uint8)
    zone[(centres > ZONE_Z_MM[0]) & (centres < ZONE_Z_MM[1]), ZONE_XY, ZONE_XY] = 1
    spot = np.zeros_like(zone)
    spot[2][SPOT] = 1  # on the zone's first slice (centre 12.5 mm)
    return like.with_array(zone, modality=""), like.with_array(spot, modality="")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_pole_slab_partial_volume_is_not_a_nodule(seed: int) -> None:
    pre, post = _phase(0, False, seed), _phase(1, False, seed + 10)
    zone, spot = _masks(post)
    parts, explained = slab_partial_volume_parts(spot, zone, pre, post)
    assert len(parts) == 1 and parts[0].is_partial_volume
    assert parts[0].slice_index == 2
    assert parts[0].post_fraction == pytest.approx(0.6, abs=0.05)
    assert np.array_equal(np.asarray(explained.array, bool), np.asarray(spot.array, bool))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_nodule_on_the_same_slab_stays_a_nodule(seed: int) -> None:
    pre, post = _phase(0, True, seed), _phase(1, True, seed + 10)
    zone, spot = _masks(post)
    parts, explained = slab_partial_volume_parts(spot, zone, pre, post)
    assert len(parts) == 1 and not parts[0].is_partial_volume
    assert parts[0].pre_mismatch_pct is not None and parts[0].pre_mismatch_pct > 15.0
    assert not np.asarray(explained.array).any()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_nodule_reading_like_the_medulla_beyond_stays_a_nodule(seed: int) -> None:
    """Against medulla the nodule's two phases are nearly a mixture of 18 % zone and
    82 % medulla; a slab the zone mask holds is at least about half zone: kept."""
    pre = _phase(0, True, seed, beyond=MEDULLA)
    post = _phase(1, True, seed + 10, beyond=MEDULLA)
    zone, spot = _masks(post)
    parts, explained = slab_partial_volume_parts(spot, zone, pre, post)
    assert len(parts) == 1 and not parts[0].is_partial_volume
    assert parts[0].post_fraction is not None and parts[0].post_fraction < 0.3
    assert not np.asarray(explained.array).any()
    # the pole slab's own partial volume with medulla (60 % zone) is still explained
    pre, post = _phase(0, False, seed, beyond=MEDULLA), _phase(1, False, seed + 10,
                                                                 beyond=MEDULLA)
    parts, _ = slab_partial_volume_parts(spot, zone, pre, post)
    assert parts[0].is_partial_volume


def test_a_component_inside_the_zone_or_on_two_slices_stays() -> None:
    """Zone on both sides (a slice inside the zone) or a component on two slices: no
    slab mixture to explain it."""
    pre, post = _phase(0, False, 4), _phase(1, False, 5)
    zone, _ = _masks(post)
    inner = np.zeros(zone.array.shape, np.uint8)
    inner[3][SPOT] = 1
    two = np.zeros(zone.array.shape, np.uint8)
    two[2:4][(slice(None), *SPOT)] = 1
    for arr in (inner, two):
        parts, explained = slab_partial_volume_parts(zone.with_array(arr), zone, pre, post)
        assert [p.is_partial_volume for p in parts] == [False]
        assert not np.asarray(explained.array).any()


def test_mr_follow_up_drops_only_the_partial_volume_piece() -> None:
    """The MR follow-up keeps a component inside the zone and drops the pole-slab piece
    (one qc line saying why), so the zone is not called enhancing on the pole's partial
    volume."""
    from pipeline.analysis.lesion import _mr_nodules

    pre, post = _phase(0, False, 6), _phase(1, False, 7)
    zone, spot = _masks(post)
    both = np.asarray(spot.array).copy()
    both[3, 14:18, 14:18] = 1  # a component inside the zone (zone on both sides): kept
    qc: list[str] = []
    kept = _mr_nodules(spot.with_array(both.astype(bool)), zone, pre, post, qc)
    expected = both.astype(bool) & ~np.asarray(spot.array, bool)
    assert np.array_equal(np.asarray(kept.array, bool), expected)
    assert len(qc) == 1 and "partial volume" in qc[0]
