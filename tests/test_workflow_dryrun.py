"""The workflow parses, validates its configuration and plans its jobs (dry runs)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from pipeline.workflow.runner import snakemake_command

MANIFEST = (
    "patient_id,lesion_id,procedure_date,side,seed_x_mm,seed_y_mm,seed_z_mm,baseline_study_uid\n"
    "P1,L1,2024-03-01,R,1,2,3,\n"
)


def _dry_run(tmp_path: Path, config_yaml: str | None) -> subprocess.CompletedProcess[str]:
    archive = tmp_path / "archive"
    archive.mkdir(exist_ok=True)
    lesions = tmp_path / "lesions.csv"
    lesions.write_text(MANIFEST)
    config_file = None
    if config_yaml is not None:
        config_file = tmp_path / "config.yaml"
        config_file.write_text(config_yaml)
    cmd = snakemake_command(archive, lesions, tmp_path / "out", cores=1,
                            config_file=config_file, extra_args=["-n"])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize(
    ("config_yaml", "expected_jobs"),
    [
        (None, {"index", "tables", "registry", "report", "all"}),
        ("outputs: {dicom: false, report: false}\n", {"index", "tables", "registry", "all"}),
        ("criteria: {enhancing_hu: 25, size_reference: first_followup}\n"
         "loading: {gap_policy: resample}\n", {"index", "tables", "registry", "report", "all"}),
    ],
)
def test_dry_run_plans_jobs(tmp_path: Path, config_yaml: str | None,
                            expected_jobs: set[str]) -> None:
    proc = _dry_run(tmp_path, config_yaml)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = proc.stdout + proc.stderr
    table = text.split("Job stats:")[1]
    jobs = {m.group(1) for m in re.finditer(r"^(\w+)\s+\d+\s*$", table, flags=re.MULTILINE)}
    assert jobs - {"total"} == expected_jobs
    assert "checkpoint" in text  # the per-patient part is planned after indexing


@pytest.mark.parametrize(
    ("config_yaml", "message"),
    [
        ("loading: {gap_policy: fill}\n", "'fill' is not one of ['reject', 'resample']"),
        ("criteria: {enhancing_HU: 25}\n", "Additional properties are not allowed"),
        ("index: {workers: 0, content_check: true}\n", "0 is less than the minimum of 1"),
    ],
)
def test_bad_config_is_refused_before_anything_runs(tmp_path: Path, config_yaml: str,
                                                    message: str) -> None:
    proc = _dry_run(tmp_path, config_yaml)
    assert proc.returncode != 0
    assert message in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "index").exists()


def test_missing_inputs_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="archive not found"):
        snakemake_command(tmp_path / "nope", tmp_path / "l.csv", tmp_path / "out", cores=1)
