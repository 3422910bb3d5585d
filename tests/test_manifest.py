"""Lesion manifest parsing: valid rows and every kind of bad row, named by line."""

from __future__ import annotations

from datetime import date

import pytest

from pipeline.analysis.manifest import ManifestError, read_manifest

HEADER = "patient_id,lesion_id,procedure_date,side,seed_x_mm,seed_y_mm,seed_z_mm,baseline_study_uid"


def _write(tmp_path, *rows: str):
    path = tmp_path / "lesions.csv"
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_valid_manifest(tmp_path) -> None:
    lesions = read_manifest(_write(
        tmp_path,
        "P1,L1,2024-03-01,r,-70.5,12,-310,1.2.3",
        "P1,L2,20240301,,60,10.25,-300,",
        "",
    ))
    assert [les.lesion_id for les in lesions] == ["L1", "L2"]
    assert lesions[0].side == "R" and lesions[1].side is None
    assert lesions[1].procedure_date == date(2024, 3, 1)
    assert lesions[0].seed_lps_mm == (-70.5, 12.0, -310.0)
    assert lesions[0].baseline_study_uid == "1.2.3" and lesions[1].baseline_study_uid is None
    assert lesions[0].tracking_uid != lesions[1].tracking_uid
    assert lesions[0].tracking_uid == read_manifest(_write(
        tmp_path, "P1,L1,2024-03-01,r,-70.5,12,-310,1.2.3"))[0].tracking_uid
    assert len(lesions[0].tracking_uid) <= 64 and lesions[0].tracking_uid.startswith("2.25.")


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("P1,L1,2024-13-01,R,1,2,3,", r"lesions.csv:2: procedure_date"),
        ("P1,L1,2024-03-01,X,1,2,3,", r":2: side must be"),
        ("P1,L1,2024-03-01,R,1,abc,3,", r":2: seed coordinates must be numbers"),
        ("P1,L1,2024-03-01,R,1,nan,3,", r":2: seed coordinates must be finite"),
        (",L1,2024-03-01,R,1,2,3,", r":2: patient_id and lesion_id"),
    ],
)
def test_bad_rows_are_named(tmp_path, row: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        read_manifest(_write(tmp_path, row))


def test_duplicates_missing_columns_and_empty(tmp_path) -> None:
    with pytest.raises(ManifestError, match=r":3: duplicate lesion P1/L1"):
        read_manifest(_write(tmp_path, "P1,L1,2024-03-01,R,1,2,3,", "P1,L1,2024-03-01,R,1,2,3,"))
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,lesion_id\nP1,L1\n")
    with pytest.raises(ManifestError, match=r"missing columns \['procedure_date'"):
        read_manifest(bad)
    with pytest.raises(ManifestError, match="no lesions"):
        read_manifest(_write(tmp_path))
    with pytest.raises(ManifestError, match="not found"):
        read_manifest(tmp_path / "nope.csv")
