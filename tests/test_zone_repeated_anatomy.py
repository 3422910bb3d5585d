"""A nodule body at the ablation zone that the kidney repeats away from the zone (MR:
medullary pyramids after gadolinium) is anatomy, not residual tumour; one of a kind is
kept. Fast (< 1 s).

The end-to-end case is seed 195's 3-month MR zone (docs/validation-log.md, session 25): a
pyramid touching the zone read +99 % for the cortex's +136 %, passed the body test and
was reported as residual tumour; six bodies of its size read +103 to +106 % 14-46 mm
away. A binary-painted analytic scene does not reproduce it: a pyramid inside the cortex
reads within the 0.8 × parenchyma cap there and never becomes a body."""

from __future__ import annotations

import numpy as np
import pytest

from segmentation.ablation_zone import (
    _REPEATS_AWAY_MM,
    _REPEATS_LEVEL_FRACTION,
    _repeated_away_from_zone,
)

_SHAPE = (20, 60, 60)


def _bodies(away_levels, away_distance_mm=20.0, away_size=27, candidate_level=99.0):
    """Labels of a candidate body (label 1, 27 voxels, at the zone: 0 mm) and one body per
    entry of ``away_levels`` (labels 2…, ``away_size`` voxels each, ``away_distance_mm``
    from the zone), with their enhancement ``level`` (%) and the distance map (mm)."""
    labels = np.zeros(_SHAPE, np.int32)
    level = np.zeros(_SHAPE, np.float32)
    from_hull_mm = np.full(_SHAPE, away_distance_mm, np.float64)
    labels[0:3, 0:3, 0:3] = 1
    level[0:3, 0:3, 0:3] = candidate_level
    from_hull_mm[0:3, 0:3, 0:3] = 0.0
    side = round(away_size ** (1.0 / 3.0))
    for n, lvl in enumerate(away_levels):
        block = (slice(5, 5 + side), slice(10, 10 + side), slice(2 + 14 * n, 2 + 14 * n + side))
        labels[block] = n + 2
        level[block] = lvl
    return labels, level, from_hull_mm


def test_a_body_repeated_away_from_the_zone_is_anatomy() -> None:
    labels, level, dist = _bodies([104.1, 105.3, 104.3, 102.6])
    assert _repeated_away_from_zone(labels, np.array([1]), level, dist).tolist() == [1]


@pytest.mark.parametrize(
    ("away_levels", "kw", "why"),
    [
        ([104.1, 105.3], {}, "two look-alikes are not a pattern"),
        ([80.0, 81.0, 79.0, 80.5], {}, "a nodule (+80 %) is not a pyramid (+99 %)"),
        ([104.1, 105.3, 104.3, 102.6], {"away_size": 1000}, "organs, not bodies its size"),
        ([104.1, 105.3, 104.3, 102.6], {"away_distance_mm": 0.5 * _REPEATS_AWAY_MM},
         "look-alikes next to the zone may be the nodule's own parts"),
    ],
)
def test_a_body_of_its_own_kind_is_kept(away_levels, kw, why) -> None:
    labels, level, dist = _bodies(away_levels, **kw)
    assert _repeated_away_from_zone(labels, np.array([1]), level, dist).size == 0, why


def test_level_tolerance_is_relative_to_the_candidate() -> None:
    """Three look-alikes just inside and just outside the tolerance band."""
    inside = 99.0 * (1.0 + 0.9 * _REPEATS_LEVEL_FRACTION)
    outside = 99.0 * (1.0 + 1.1 * _REPEATS_LEVEL_FRACTION)
    labels, level, dist = _bodies([inside] * 3)
    assert _repeated_away_from_zone(labels, np.array([1]), level, dist).tolist() == [1]
    labels, level, dist = _bodies([outside] * 3)
    assert _repeated_away_from_zone(labels, np.array([1]), level, dist).size == 0
