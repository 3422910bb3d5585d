"""Study roles from dates, series choice per study, and what is noted when data is missing."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from pipeline.analysis.studies import parse_study_date, plan_studies
from pipeline.assessment import Role


def _row(study: str, day: str, key: str, phase: str, **kw: object) -> dict[str, object]:
    base = {"patient_id": "P1", "study_instance_uid": study, "study_date": day,
            "series_key": key, "modality": "CT", "usable": True, "phase": phase,
            "preferred": True, "slice_thickness_mm": 2.0, "n_instances": 100,
            "acquisition_time": "101500"}
    return {**base, **kw}


@pytest.fixture
def index() -> pd.DataFrame:
    return pd.DataFrame([
        _row("1.old", "20230101", "s0", "non_contrast"),
        _row("1.base", "20240210", "s1", "non_contrast"),
        _row("1.base", "20240210", "s2", "nephrographic", slice_thickness_mm=1.0,
             preferred=False),
        _row("1.base", "20240210", "s3", "nephrographic", slice_thickness_mm=5.0),
        _row("1.base", "20240210", "s4", "arterial"),
        _row("1.base", "20240210", "loc", "unknown", usable=False),
        _row("1.intra", "20240301", "i1", "non_contrast", acquisition_time="090000"),
        _row("1.intra", "20240301", "i2", "non_contrast", acquisition_time="093000"),
        _row("1.fu1", "20240605", "f1", "non_contrast"),
        _row("1.fu1", "20240605", "f2", "arterial"),
        _row("1.fu2", "20250301", "m1", "mr_pre", modality="MR"),
        _row("1.fu2", "20250301", "m2", "mr_post", modality="MR"),
        _row("1.fu3", "20260301", "g1", "nephrographic"),
        _row("2.other", "20240301", "x", "non_contrast", patient_id="P2"),
    ])


def test_roles_and_series_choice(index: pd.DataFrame) -> None:
    plans = plan_studies(index, "P1", date(2024, 3, 1))
    assert [(p.study_instance_uid, p.role) for p in plans] == [
        ("1.base", Role.BASELINE), ("1.intra", Role.INTRAPROCEDURAL),
        ("1.fu1", Role.FOLLOWUP), ("1.fu2", Role.FOLLOWUP), ("1.fu3", Role.FOLLOWUP)]
    base, intra, fu1, fu2, fu3 = plans
    assert base.days_since_procedure == -20
    # nephrographic preferred over arterial; the 'preferred' recon (5 mm) over the 1 mm one
    assert (base.unenhanced_key, base.contrast_key, base.contrast_phase) == (
        "s1", "s3", "nephrographic")
    assert intra.unenhanced_key == "i2" and intra.contrast_key is None  # latest scan
    assert intra.notes == []
    assert (fu1.contrast_key, fu1.contrast_phase) == ("f2", "arterial")
    assert fu2.modality == "MR" and (fu2.unenhanced_key, fu2.contrast_key) == ("m1", "m2")
    assert fu3.unenhanced_key is None
    assert "no unenhanced series: enhancement not assessable" in fu3.notes


def test_explicit_baseline_and_errors(index: pd.DataFrame) -> None:
    plans = plan_studies(index, "P1", date(2024, 3, 1), baseline_study_uid="1.old")
    assert plans[0].study_instance_uid == "1.old" and plans[0].role is Role.BASELINE
    with pytest.raises(ValueError, match=r"baseline_study_uid 1\.fu1"):
        plan_studies(index, "P1", date(2024, 3, 1), baseline_study_uid="1.fu1")
    with pytest.raises(ValueError, match="no series"):
        plan_studies(index, "P9", date(2024, 3, 1))


def test_parse_study_date() -> None:
    assert parse_study_date("20240301") == date(2024, 3, 1)
    assert parse_study_date("2024-03-01") == date(2024, 3, 1)
    assert parse_study_date(20240301) == date(2024, 3, 1)
    assert parse_study_date("") is None and parse_study_date(float("nan")) is None
