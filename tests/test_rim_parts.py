"""A benign peripheral rim cut tangentially by thick slices vs a residual nodule
(:func:`measurements.rim_parts`), rendered with partial volume as in
``test_enhancement_slabs``: a 2.8 × 2.8 × 2 cm dead zone (30 HU, +2 with contrast),
fat beyond one side and above, enhancing parenchyma elsewhere, a 2 mm rim, 0.7 × 0.7 × 2.5 mm
voxels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from measurements import peripheral_rim, rim_parts
from pipeline.image import Volume
from tests.test_enhancement_slabs import CENTRE, _grid, _render

ZONE_AXES_MM = np.array([14.0, 14.0, 10.0])

NODULE_CENTRE = CENTRE + np.array([ZONE_AXES_MM[0], 0.0, 0.0])  # on the fat-side edge
NODULE_RADIUS_MM = 4.0


def _zone_inside(p: npt.NDArray[np.float64], shrink_mm: float = 0.0) -> npt.NDArray[np.bool_]:
    return np.sum(((p - CENTRE) / (ZONE_AXES_MM - shrink_mm)) ** 2, axis=1) <= 1.0


def _case(rim_hu: float, nodule_hu: float = 0.0) -> tuple[Volume, Volume, Volume, npt.NDArray]:
    def tissue(p: npt.NDArray[np.float64]) -> tuple[np.ndarray, np.ndarray]:
        fat = (p[:, 0] > CENTRE[0] + 8.0) | (p[:, 2] > CENTRE[2] + 8.0)
        zone = _zone_inside(p)
        pre = np.where(zone, 30.0, np.where(fat, -100.0, 30.0))
        post = np.where(zone, 32.0, np.where(fat, -100.0, 170.0))
        post = np.where(zone & ~_zone_inside(p, 2.0), 32.0 + rim_hu, post)
        if nodule_hu:
            nod = np.linalg.norm(p - NODULE_CENTRE, axis=1) <= NODULE_RADIUS_MM
            pre = np.where(nod, 35.0, pre)
            post = np.where(nod, 35.0 + nodule_hu, post)
        return pre, post

    g = _grid((0.7, 0.7, 2.5), 22.0)
    pre, post = _render(g, tissue, 0), _render(g, tissue, 1)
    k, j, i = np.meshgrid(*(np.arange(n) for n in g.array.shape), indexing="ij")
    centres = g.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    zone = _zone_inside(centres).reshape(g.array.shape)
    if nodule_hu:
        zone |= (np.linalg.norm(centres - NODULE_CENTRE, axis=1)
                 <= NODULE_RADIUS_MM).reshape(g.array.shape)
    return pre, post, g.with_array(zone, modality=""), zone


def _pole_disc(zone: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """The zone's top slice: where a 2.5 mm slice cuts the 2 mm rim tangentially (a disc
    ~1.5 cm wide, as thick in-plane as a nodule)."""
    top = int(np.flatnonzero(zone.any(axis=(1, 2))).max())
    disc = np.zeros_like(zone)
    disc[top] = zone[top]
    return disc


def test_tangential_rim_disc_is_part_of_the_rim() -> None:
    pre, post, mask, zone = _case(rim_hu=30.0)
    disc = _pole_disc(zone)
    assert np.count_nonzero(disc) * 0.7 * 0.7 * 2.5 > 100.0  # > 0.1 ml, nodule-sized
    rim = peripheral_rim(post, mask, pre, exclude_mask=mask.with_array(disc))
    assert rim.present and rim.band_delta_hu is not None
    parts, pieces = rim_parts(mask.with_array(disc), mask, pre, post, rim)
    assert len(parts) == 1 and parts[0].is_rim
    assert parts[0].above_rim_hu is not None and parts[0].above_rim_hu < 20.0
    assert np.array_equal(np.asarray(pieces.array), disc)


def test_same_disc_without_a_rim_stays_a_nodule() -> None:
    """Nothing benign to attribute it to: the decision stays with the segmentation."""
    pre, post, mask, zone = _case(rim_hu=0.0)
    disc = _pole_disc(zone)
    rim = peripheral_rim(post, mask, pre, exclude_mask=mask.with_array(disc))
    assert not rim.present
    parts, pieces = rim_parts(mask.with_array(disc), mask, pre, post, rim)
    assert len(parts) == 1 and not parts[0].is_rim
    assert not np.asarray(pieces.array).any()


def test_nodule_on_a_rim_enhancing_above_it_stays_a_nodule() -> None:
    """A nodule at the edge of a rimmed zone enhances against the rim it sits in."""
    pre, post, mask, zone = _case(rim_hu=30.0, nodule_hu=70.0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in zone.shape), indexing="ij")
    centres = mask.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    nodule = (np.linalg.norm(centres - NODULE_CENTRE, axis=1)
              <= NODULE_RADIUS_MM - 1.0).reshape(zone.shape)
    rim = peripheral_rim(post, mask, pre, exclude_mask=mask.with_array(nodule))
    assert rim.present
    parts, pieces = rim_parts(mask.with_array(nodule), mask, pre, post, rim)
    assert len(parts) == 1 and not parts[0].is_rim
    assert parts[0].above_rim_hu is not None and parts[0].above_rim_hu >= 20.0
    assert not np.asarray(pieces.array).any()


def test_component_deeper_than_the_rim_layer_stays_a_nodule() -> None:
    """Enhancing no more than the rim is not enough: a component reaching deeper into the
    zone than the rim layer (3 mm) cannot be the rim, whatever it reads."""
    pre, post, mask, zone = _case(rim_hu=30.0)
    k, j, i = np.meshgrid(*(np.arange(n) for n in zone.shape), indexing="ij")
    centres = mask.index_to_lps(np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    deep = (np.linalg.norm(centres - CENTRE, axis=1) <= 4.0).reshape(zone.shape)
    rim = peripheral_rim(post, mask, pre, exclude_mask=mask.with_array(deep))
    assert rim.present
    parts, pieces = rim_parts(mask.with_array(deep), mask, pre, post, rim)
    assert len(parts) == 1 and not parts[0].is_rim
    assert parts[0].above_rim_hu is not None and parts[0].above_rim_hu < 20.0  # ΔHU alone: rim
    assert not np.asarray(pieces.array).any()
