"""MR follow-up: the percent enhancement of a dead zone whose two series' receive
sensitivity differs (pipeline.analysis.lesion.measure_zone with
measurements.mr_fat_signal_ratio).

Held-out seed 207's MR patient, 12-month zone (4.0 ml, T1 fat-suppressed, 1.41 × 1.41 ×
5 mm; the phantom draws each series' coil profile on its own): the post-contrast series
read a fifth brighter than the pre-contrast one around the zone (the fat ×1.27), and the
dead zone (+1 %) read +24 %, "yes" — `no_enhancement`, `success` and `local_progression`
wrong. Read against the fat around it, −2 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from fixtures.phantom import make_patient, phantom_case
from pipeline.analysis.lesion import measure_zone
from pipeline.assessment.criteria import AssessmentCriteria


@pytest.fixture(scope="module")
def mr_followup_207():  # type: ignore[no-untyped-def]
    plan = make_patient("mr_followup", 207, index=6, small=False)
    pre_key = next(s.key for s in plan.study("fu2").series
                   if s.kind == "volume" and s.primary and not s.contrast)
    post = phantom_case("mr_followup", study="fu2", seed=207, index=6, small=False)
    pre = phantom_case("mr_followup", study="fu2", series=pre_key, seed=207, index=6,
                       small=False, with_truth=False)
    return post, pre


def test_dead_mr_zone_is_not_enhancing_when_the_series_sensitivities_differ(
        mr_followup_207) -> None:  # type: ignore[no-untyped-def]
    post, pre = mr_followup_207
    centre = np.asarray(post.truth["timepoint"]["centroid_lps"])
    m = measure_zone(post.image, pre.image, centre, AssessmentCriteria(), 60.0)
    assert post.truth["timepoint"]["enhancing"] == "no"
    # the raw ratio read +24.3 %; against the fat (−5.3 % for the phantom's dead zone in
    # its own fat, which rises 6.7 %) −2.2 %
    assert m.values["enhancing"] == "no"
    assert -8.0 < m.values["enhancement_pct"] < 4.0
    assert any("referenced to the fat" in q for q in m.qc)
