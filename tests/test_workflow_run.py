"""The real workflow on a synthetic archive: Snakemake runs every stage, the tables have
the brief's columns, a rerun changes nothing and the registry holds no duplicates.

The fast test uses one coarse (``--small``) patient: it proves the wiring, resumability
and idempotency. The slow test runs full-resolution patients and checks the numbers
against the truth (``cryotrack validate``)."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import pytest

from fixtures.compare import compare_run
from fixtures.synth import synthesize
from pipeline.workflow.runner import run_workflow
from tests.test_tables import BRIEF_OUTCOME_COLUMNS, BRIEF_TIMEPOINT_COLUMNS


def _mtimes(folder: Path) -> dict[str, float]:
    return {str(p.relative_to(folder)): p.stat().st_mtime for p in folder.rglob("*")
            if p.is_file() and ".snakemake" not in p.parts}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("e2e")
    synthesize(base / "syn", patients=1, seed=11, scenarios=["clean_success"], small=True)
    out = base / "out"
    result = run_workflow(base / "syn" / "archive", base / "syn" / "lesions.csv", out, cores=2)
    assert result.returncode == 0, (out / "logs").as_posix()
    return base, out


def test_every_stage_ran_and_tables_have_the_brief_columns(small_run: tuple[Path, Path]) -> None:
    _base, out = small_run
    with (out / "tables" / "lesion_timepoints.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == BRIEF_TIMEPOINT_COLUMNS
    assert [r["role"] for r in rows] == ["baseline", "intraprocedural", "followup",
                                         "followup", "followup"]
    with (out / "tables" / "lesion_outcomes.csv").open() as fh:
        outcomes = list(csv.DictReader(fh))
    assert list(outcomes[0]) == BRIEF_OUTCOME_COLUMNS and len(outcomes) == 1
    assert (out / "report" / "index.html").is_file()
    assert list((out / "report" / "img").glob("*.png"))
    dicom = json.loads(next((out / "dicom").glob("*/manifest.json")).read_text())
    assert dicom["written"], dicom
    for stage in ("index", "analyse", "tables", "registry", "report", "dicom"):
        assert list((out / "logs" / stage).glob("*.log")), stage
        assert list((out / "benchmarks" / stage).glob("*.tsv")), stage
    assert (out / "index" / "series.csv").is_file() and (out / "index" / "errors.csv").is_file()


def test_tables_match_the_truth_of_the_small_archive(small_run: tuple[Path, Path]) -> None:
    """Every study of the truth is one row with the truth's date, role, day and modality,
    and the baseline tumour is measured to within the coarse archive's resolution (3 mm
    pixels, 5 mm slices: two pixels on the long axis, 20 % in volume). Full-resolution
    accuracy is the slow test below and ``cryotrack validate``."""
    base, out = small_run
    truth = json.loads((base / "syn" / "truth.json").read_text())
    with (out / "tables" / "lesion_timepoints.csv").open() as fh:
        rows = {(r["patient_id"], r["lesion_id"], r["study_instance_uid"]): r
                for r in csv.DictReader(fh)}
    expected = [(p["patient_id"], les["lesion_id"], t) for p in truth["patients"]
                for les in p["lesions"] for t in les["timepoints"]]
    assert len(rows) == len(expected)
    for pid, lid, t in expected:
        row = rows[(pid, lid, t["study_instance_uid"])]
        assert (row["study_date"].replace("-", ""), row["role"],
                int(row["days_since_procedure"]),
                row["modality"]) == (t["study_date"], t["role"], t["days_since_procedure"],
                                     t["modality"])
        if t["role"] == "baseline":
            assert abs(float(row["long_axis_mm"]) - t["long_axis_mm"]) <= 6.0, row
            assert abs(float(row["volume_ml"]) / t["volume_ml"] - 1.0) <= 0.20, row
            assert row["enhancing"] == "yes"  # clear-cell RCC enhances


def test_mask_dice_against_the_truth_of_the_small_archive(
    small_run: tuple[Path, Path],
) -> None:
    """`cryotrack validate --masks`: every written mask is matched with its truth shape on
    its own grid. The baseline tumour measured above to 2 pixels overlaps its truth at
    Dice ≥ 0.7 at 3 mm pixels; a wrong study, series or placement would give ~0."""
    from fixtures.compare_masks import describe_mask_dice, mask_dice

    base, out = small_run
    table = mask_dice(out, base / "syn" / "truth.json")
    assert set(table["structure"]) >= {"tumour", "iceball", "ablation_zone"}
    baseline = table[(table["role"] == "baseline") & (table["structure"] == "tumour")]
    assert len(baseline) == 1 and float(baseline["dice"].iloc[0]) >= 0.7
    assert "lowest Dice" in describe_mask_dice(table)


def test_rerun_changes_nothing_and_registry_has_no_duplicates(
    small_run: tuple[Path, Path],
) -> None:
    base, out = small_run
    before = _mtimes(out)
    db = out / "registry.sqlite"
    with sqlite3.connect(db) as con:
        counts = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                  for t in ("lesions", "studies", "series", "measurements", "outcomes")}
    result = run_workflow(base / "syn" / "archive", base / "syn" / "lesions.csv", out, cores=2)
    assert result.returncode == 0
    assert _mtimes(out) == before  # nothing was rerun
    # forcing the registry stage again (a second run into the same database) adds a
    # pipeline_runs row but no duplicate lesions, studies or measurements
    (out / "logs" / "registry.done.json").unlink()
    result = run_workflow(base / "syn" / "archive", base / "syn" / "lesions.csv", out, cores=2)
    assert result.returncode == 0
    with sqlite3.connect(db) as con:
        again = {t: con.execute(f"select count(*) from {t}").fetchone()[0]
                 for t in counts}
        runs = con.execute("select count(*) from pipeline_runs").fetchone()[0]
    assert again == counts and runs == 2


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="accuracy targets not yet met on every patient "
                   "(README 'Accuracy and status'): on seed 7 the clean-success tumour's long "
                   "axis reads +2.1 mm, 3-D +2.2 mm, and its 12-month zone's 3-D +1.8 mm "
                   "(session 26)")
def test_full_resolution_numbers_match_truth(tmp_path: Path) -> None:
    """Full-resolution synthetic patients: every value and flag within the targets."""
    synthesize(tmp_path / "syn", patients=2, seed=7, scenarios=["sphere", "clean_success"],
               small=False)
    out = tmp_path / "out"
    result = run_workflow(tmp_path / "syn" / "archive", tmp_path / "syn" / "lesions.csv", out,
                          cores=2)
    assert result.returncode == 0
    report = compare_run(out / "tables", tmp_path / "syn" / "truth.json")
    assert report.ok, report.describe()


def test_concurrent_studies_give_the_same_analysis_as_sequential(
    small_run: tuple[Path, Path], tmp_path: Path,
) -> None:
    """The run measured the studies with 2 threads; one thread gives identical results."""
    import shutil

    import yaml

    from pipeline.analysis.patient import stage_analyse

    base, out = small_run
    default = Path(__file__).parents[1] / "pipeline" / "workflow" / "config.default.yaml"
    config = yaml.safe_load(default.read_text())
    again = tmp_path / "out"
    shutil.copytree(out / "index", again / "index")
    config.update(archive=str(base / "syn" / "archive"), lesions=str(base / "syn" / "lesions.csv"),
                  out=str(again))
    config["analysis"]["threads"] = 1
    (patient,) = [p.name for p in (out / "patients").iterdir()]
    stage_analyse(config, patient)
    first = json.loads((out / "patients" / patient / "analysis.json").read_text())
    second = json.loads((again / "patients" / patient / "analysis.json").read_text())
    assert [e["timepoints"] for e in first["lesions"]] == [
        e["timepoints"] for e in second["lesions"]]
    assert len(first["lesions"][0]["timepoints"]) >= 4
