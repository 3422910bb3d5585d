"""A textured tumour's border against kidney that enhances only a little more than it
(segmentation._common._refine_in_box): where the brighter tissue's own level lies within
the 40 HU contrast bar of the tumour's, the border there is left where the window put
it. Before, the one outside level of the shell, which mixes that kidney with the fat
beside it, read darker than the tumour, and kidney voxels brighter than the tumour were
kept by the rule for a darker outside (the half level to that mix)."""

from __future__ import annotations

import numpy as np
import pytest

from measurements import max_3d_diameter_mm
from segmentation import segment_tumour
from segmentation._common import dice


@pytest.mark.slow
def test_rendered_textured_tumour_does_not_take_faintly_brighter_kidney() -> None:
    """Held-out seed 163's progression tumour (5.9 ml, clear-cell texture around
    140 HU on the σ 0.8 mm image, kidney 167 HU), rendered at full resolution: the
    border re-placement added 1-3 voxels of kidney at the tumour's lower pole (Dice
    0.951, volume +5.8 %, 3-D diameter +1.83 mm; carried into the ice-ball scan the
    margin read 4.13 mm for 5.47 and `technical_success` flipped). After that fix Dice
    0.958, +4.0 %, +0.87 mm; since session 31 reads the kidney's level between the
    histogram's bins (168.7 HU, not the 167.5 bin centre), the window's midpoint with it
    lies 0.6 HU higher and takes a little more of this faint border: Dice 0.955, +5.5 %,
    +1.09 mm (the 187-tumour screen as a whole came closer: see the validation log). The
    3-D diameter is what still tells the two apart."""
    from fixtures.phantom import phantom_case

    case = phantom_case("progression_12mo", study="baseline", seed=163, index=4, small=False)
    seed = np.asarray(case.truth["timepoint"]["centroid_lps"])
    mask = segment_tumour(case.image, seed)
    got = mask.array.astype(bool)
    truth = case.masks["tumour"].array.astype(bool)
    # bars between the code before the fix (0.951, +5.8 %, +1.83 mm) and now (0.955,
    # +5.5 %, +1.09 mm)
    assert dice(got, truth) >= 0.953
    assert abs(got.sum() / truth.sum() - 1.0) < 0.057
    truth_3d = case.truth["timepoint"]["max_3d_diameter_mm"]
    assert abs(max_3d_diameter_mm(mask) - truth_3d) < 1.3
