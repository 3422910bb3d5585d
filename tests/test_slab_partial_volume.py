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


def test_a_component_inside_the_zone_stays_and_a_pole_slab_over_zone_is_explained() -> None:
    """A component on a slice inside the zone has zone all around it and nothing beyond:
    no mixture to explain it, it stays. A component on two slices, the pole slab (60 %
    zone, 40 % cortex) and the zone slab beneath it, was kept before only because it spans
    two slices; it is dead zone and its mixture with the cortex on both phases (f ≈ 0.6-1:
    its median lies between the two slabs), with cortex beyond it: now explained."""
    pre, post = _phase(0, False, 4), _phase(1, False, 5)
    zone, _ = _masks(post)
    inner = np.zeros(zone.array.shape, np.uint8)
    inner[3][SPOT] = 1
    parts, explained = slab_partial_volume_parts(zone.with_array(inner), zone, pre, post)
    assert [p.is_partial_volume for p in parts] == [False]
    assert parts[0].post_fraction is None  # nothing brighter outside the zone around it
    assert not np.asarray(explained.array).any()
    two = np.zeros(zone.array.shape, np.uint8)
    two[2:4][(slice(None), *SPOT)] = 1
    parts, explained = slab_partial_volume_parts(zone.with_array(two), zone, pre, post)
    assert [p.is_partial_volume for p in parts] == [True]
    assert parts[0].slice_index is None
    assert parts[0].post_fraction is not None and 0.55 <= parts[0].post_fraction <= 1.0
    assert np.array_equal(np.asarray(explained.array, bool), two.astype(bool))


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


# --- oblique interface over two slices, and nodules of two slices at the zone's edge ---
# 1.5 x 1.5 x 5 mm voxels (the MR follow-up's grid). Tissue fractions by 6 x 6 x 10
# sub-voxel sampling of the continuous scene (the exact box filter to within 1/360).
FAT = (60.0, 64.0)
PIXEL_MM, OBL_SHAPE, SUB = 1.5, (8, 24, 30), (10, 6, 6)


def _sub_centres_mm() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sub-sample centres (z, y, x mm) of every voxel, shape (K, J, I, sk, sj, si)."""
    k, j, i = (np.arange(n) for n in OBL_SHAPE)
    dz, dy, dx = ((np.arange(n) + 0.5) / n for n in SUB)
    z = (k[:, None] + dz[None, :]) * SLICE_MM
    y = (j[:, None] + dy[None, :]) * PIXEL_MM
    x = (i[:, None] + dx[None, :]) * PIXEL_MM
    return (z[:, None, None, :, None, None], y[None, :, None, None, :, None],
            x[None, None, :, None, None, :])


def _oblique_scene(phase: int, seed: int) -> tuple[Volume, np.ndarray]:
    """A dead zone against renal cortex across a plane tilted 31 deg from the slice axis
    (x = 21 + 0.6 (z - 20) mm): each 5 mm slab holds a band 2 pixels wide mixing the
    two (75 and 25 % zone), shifted 2 pixels from slab to slab. Returns the image and
    the voxels' zone fractions."""
    z, _, x = _sub_centres_mm()
    inside = np.broadcast_to(x < 21.0 + 0.6 * (z - 20.0), (*OBL_SHAPE, *SUB))
    frac = inside.mean(axis=(3, 4, 5))
    arr = frac * ZONE[phase] + (1.0 - frac) * CORTEX[phase]
    arr = arr + np.random.default_rng(seed).normal(0.0, 12.0, arr.shape)
    vol = Volume.from_geometry(arr.astype(np.float32), origin_lps=(0.75, 0.75, 2.5),
                               spacing_mm=(PIXEL_MM, PIXEL_MM, SLICE_MM),
                               direction=np.eye(3), modality="MR")
    return vol, frac


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_oblique_interface_band_on_two_slices_is_partial_volume(seed: int) -> None:
    """The seed-29 MR follow-up at 3 months: where the zone's surface runs obliquely
    through the 5 mm slabs against the kidney, the mixture band (here 25 and 75 % zone
    on each slab, 26-connected across the two) enhances by +28-90 % on a dead zone and
    was found as a 2-slice nodule body. Its 3-D
    ring holds the zone on one side and brighter cortex on the other; one fraction
    reproduces both phases: explained (the old one-slice rule kept every 2-slice body)."""
    pre, frac = _oblique_scene(0, seed)
    post, _ = _oblique_scene(1, seed + 10)
    zone_arr = (frac > 0.5).astype(np.uint8)
    band = np.zeros(OBL_SHAPE, np.uint8)
    band[3:5, 8:16] = (frac[3:5, 8:16] >= 0.2) & (frac[3:5, 8:16] <= 0.8)
    assert np.count_nonzero(band[3]) and np.count_nonzero(band[4])
    zone = post.with_array(zone_arr, modality="")
    parts, explained = slab_partial_volume_parts(zone.with_array(band), zone, pre, post)
    assert len(parts) == 1 and parts[0].slice_index is None
    assert parts[0].is_partial_volume
    assert parts[0].post_fraction is not None and 0.3 <= parts[0].post_fraction <= 0.8
    assert np.array_equal(np.asarray(explained.array, bool), band.astype(bool))


def _nodule_scene(phase: int, seed: int, beyond: tuple[float, float]) -> Volume:
    """A dead zone (x < 21 mm, slices 1-6) in ``beyond``; a nodule box on slices 3-4 at
    its edge, 3 pixels inside and 2 outside the zone (pixel-aligned: no partial volume)."""
    arr = np.full(OBL_SHAPE, beyond[phase], np.float64)
    arr[1:7, :, :14] = ZONE[phase]
    arr[3:5, 8:14, 11:16] = NODULE[phase]
    arr += np.random.default_rng(seed).normal(0.0, 12.0, arr.shape)
    return Volume.from_geometry(arr.astype(np.float32), origin_lps=(0.75, 0.75, 2.5),
                                spacing_mm=(PIXEL_MM, PIXEL_MM, SLICE_MM),
                                direction=np.eye(3), modality="MR")


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("beyond", [CORTEX, MEDULLA, FAT], ids=["cortex", "medulla", "fat"])
def test_a_two_slice_nodule_at_the_zone_edge_stays_a_nodule(
        seed: int, beyond: tuple[float, float]) -> None:
    """A true MR nodule (380 -> 684) at the zone's edge: against cortex it misses the
    zone-cortex mixture that matches its post signal (f 0.63) by 21 % before contrast;
    against medulla it reads as 18 % zone, below the 0.3 a body at the zone's edge holds;
    in fat nothing around it is brighter, so there is no mixture at all. Kept in each."""
    pre, post = _nodule_scene(0, seed, beyond), _nodule_scene(1, seed + 10, beyond)
    zone_arr = np.zeros(OBL_SHAPE, np.uint8)
    zone_arr[1:7, :, :14] = 1
    nodule = np.zeros(OBL_SHAPE, np.uint8)
    nodule[3:5, 8:14, 11:16] = 1
    zone_arr[nodule > 0] = 0
    zone = post.with_array(zone_arr, modality="")
    parts, explained = slab_partial_volume_parts(zone.with_array(nodule), zone, pre, post)
    assert len(parts) == 1 and not parts[0].is_partial_volume
    assert not np.asarray(explained.array).any()
    if beyond is CORTEX:
        assert parts[0].post_fraction == pytest.approx(0.63, abs=0.08)
        assert parts[0].pre_mismatch_pct is not None and parts[0].pre_mismatch_pct > 15.0
    elif beyond is MEDULLA:
        assert parts[0].post_fraction is not None and parts[0].post_fraction < 0.3
    else:
        assert parts[0].post_fraction is None
