"""The mask helpers that work on a bounding box give what the whole-array operation gives."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from segmentation._common import (
    ball_structure,
    bbox_slices,
    fill_holes_3d_and_slices,
    smooth_mask,
)

_SPACING = np.array([0.8, 0.8, 2.5])  # (i, j, k) mm


def _blobs(seed: int, shape: tuple[int, int, int] = (24, 60, 60)) -> np.ndarray:
    """Random blobs with cavities, some touching the array border."""
    rng = np.random.default_rng(seed)
    field = ndi.gaussian_filter(rng.normal(size=shape), (1.0, 3.0, 3.0))
    return np.asarray(field > np.percentile(field, 80))


def _fill_whole(mask: np.ndarray) -> np.ndarray:
    filled = ndi.binary_fill_holes(mask)
    return np.stack([ndi.binary_fill_holes(s) for s in filled])


def _smooth_whole(mask: np.ndarray, radius_mm: float) -> np.ndarray:
    ball = ball_structure(_SPACING, radius_mm)
    pad = max(ball.shape) // 2 + 1
    padded = np.pad(mask, pad)
    closed = ndi.binary_closing(ndi.binary_opening(padded, structure=ball), structure=ball)
    return closed[pad:-pad, pad:-pad, pad:-pad]


@pytest.mark.parametrize("seed", range(6))
def test_fill_holes_on_the_box_equals_the_whole_array(seed: int) -> None:
    mask = _blobs(seed)
    mask[:, :, :3] = False  # and one not touching a side
    assert np.array_equal(fill_holes_3d_and_slices(mask), _fill_whole(mask))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("radius_mm", [1.0, 2.5])
def test_smooth_mask_on_the_box_equals_the_whole_array(seed: int, radius_mm: float) -> None:
    mask = _blobs(seed)
    assert np.array_equal(smooth_mask(mask, _SPACING, radius_mm), _smooth_whole(mask, radius_mm))


def test_bbox_slices_margin_clip_and_include() -> None:
    mask = np.zeros((10, 20, 30), bool)
    mask[4:6, 5:9, 10:12] = True
    assert bbox_slices(mask, 2) == (slice(2, 8), slice(3, 11), slice(8, 14))
    assert bbox_slices(mask, (0, 10, 40)) == (slice(4, 6), slice(0, 19), slice(0, 30))
    assert bbox_slices(mask, 0, include=(0, 7, 29)) == (slice(0, 6), slice(5, 9),
                                                         slice(10, 30))
    assert bbox_slices(np.zeros((3, 3, 3), bool)) is None
    assert fill_holes_3d_and_slices(np.zeros((3, 3, 3), bool)).sum() == 0
