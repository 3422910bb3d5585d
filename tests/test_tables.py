"""The two registry CSVs: exact column names and cell formats of the brief."""

from __future__ import annotations

import csv
from datetime import date

from pipeline.assessment import LesionTimepoint, Role, assess_lesion
from pipeline.outputs.tables import write_outcomes_csv, write_timepoints_csv

BRIEF_TIMEPOINT_COLUMNS = (
    "patient_id, lesion_id, study_instance_uid, study_date, days_since_procedure, role, "
    "modality, long_axis_mm, short_axis_mm, max_3d_diameter_mm, volume_ml, enhancement_hu, "
    "enhancement_pct, enhancing, iceball_long_axis_mm, iceball_short_axis_mm, "
    "iceball_volume_ml, min_margin_mm, tumour_coverage_pct, qc"
).split(", ")
BRIEF_OUTCOME_COLUMNS = (
    "patient_id, lesion_id, procedure_date, baseline_long_axis_mm, last_followup_days, "
    "last_followup_long_axis_mm, size_change_pct, no_enhancement, size_decrease, success, "
    "technical_success, min_margin_mm, iceball_long_axis_mm, residual_tumour, "
    "local_progression, needs_review"
).split(", ")


def test_tables_have_the_brief_columns_and_formats(tmp_path) -> None:
    proc = date(2023, 1, 10)
    tps = [
        LesionTimepoint("P2", "L1", "1.9", date(2023, 1, 1), -9, Role.BASELINE, "CT",
                        long_axis_mm=21.456, enhancing="yes", enhancement_hu=85.0),
        LesionTimepoint("P2", "L1", "1.10", date(2023, 4, 10), 90, Role.FOLLOWUP, "MR",
                        long_axis_mm=18.0, enhancing="no", enhancement_pct=3.0,
                        qc=["tilt resampled", "registration doubtful"]),
    ]
    t_path = write_timepoints_csv(tmp_path / "tables" / "lesion_timepoints.csv", reversed(tps))
    o_path = write_outcomes_csv(tmp_path / "tables" / "lesion_outcomes.csv",
                                [assess_lesion(tps, proc)])
    with t_path.open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == BRIEF_TIMEPOINT_COLUMNS
    assert [r["days_since_procedure"] for r in rows] == ["-9", "90"]
    assert rows[0]["long_axis_mm"] == "21.46" and rows[0]["iceball_volume_ml"] == ""
    assert rows[0]["role"] == "baseline" and rows[0]["study_date"] == "2023-01-01"
    assert rows[1]["qc"] == "tilt resampled; registration doubtful"
    with o_path.open() as fh:
        out = list(csv.DictReader(fh))
    assert list(out[0]) == BRIEF_OUTCOME_COLUMNS
    assert out[0]["no_enhancement"] == "true" and out[0]["size_decrease"] == "true"
    assert out[0]["technical_success"] == "" and out[0]["needs_review"] == "true"
    assert not list(tmp_path.joinpath("tables").glob(".*"))  # no temp files left behind
