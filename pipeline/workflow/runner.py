"""Run the Snakemake workflow from Python (``cryotrack run`` / ``cryotrack demo``).

Snakemake is started as a subprocess of the same interpreter (its CLI is its stable
interface), with ``--directory OUT`` so that its state (``OUT/.snakemake``) lives with the
results: an interrupted run resumes where it stopped, and a finished run reruns nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.layout import OutputLayout

__all__ = ["RunResult", "WORKFLOW_DIR", "run_workflow", "snakemake_command"]

WORKFLOW_DIR = Path(__file__).resolve().parent
MAIN_SMK = WORKFLOW_DIR / "main.smk"


@dataclass(frozen=True)
class RunResult:
    returncode: int
    seconds: float
    layout: OutputLayout

    def describe(self) -> str:
        lines = []
        cohort_path = self.layout.cohort_json
        if cohort_path.exists():
            cohort = json.loads(cohort_path.read_text())
            lines.append(f"cohort: {cohort['describe']}")
            for item in cohort.get("needs_review", [])[:10]:
                reasons = "; ".join(item["reasons"][:3])
                lines.append(f"  review {item['patient_id']}/{item['lesion_id']}: {reasons}")
        lines.append(f"tables:   {self.layout.tables_dir}")
        if self.layout.report_index.exists():
            lines.append(f"report:   {self.layout.report_index}")
        lines.append(f"logs:     {self.layout.out / 'logs'}")
        status = "finished" if self.returncode == 0 else f"FAILED (exit {self.returncode})"
        lines.insert(0, f"cryotrack run {status} in {self.seconds:.1f} s")
        return "\n".join(lines)


def snakemake_command(
    archive: Path,
    lesions: Path,
    out: Path,
    *,
    cores: int,
    config_file: Path | None = None,
    registry: str | None = None,
    profile: Path | None = None,
    extra_args: list[str] | None = None,
) -> list[str]:
    """The snakemake command line of a run (absolute paths; config overrides last)."""
    for path, what in ((archive, "archive"), (lesions, "lesion manifest")):
        if not Path(path).exists():
            raise FileNotFoundError(f"{what} not found: {path}")
    out = Path(out).resolve()
    cmd = [
        sys.executable, "-m", "snakemake",
        "--snakefile", str(MAIN_SMK),
        "--directory", str(out),
        "--cores", str(cores),
        "--rerun-incomplete",
        "--printshellcmds" if os.environ.get("CRYOTRACK_DEBUG") else "--quiet", "rules",
    ]
    if config_file is not None:
        if not Path(config_file).is_file():
            raise FileNotFoundError(f"config file not found: {config_file}")
        yaml.safe_load(Path(config_file).read_text())  # fail early on YAML syntax errors
        cmd += ["--configfile", str(Path(config_file).resolve())]
    if profile is not None:
        cmd += ["--profile", str(Path(profile).resolve())]
    overrides = [
        f"archive={Path(archive).resolve()}",
        f"lesions={Path(lesions).resolve()}",
        f"out={out}",
    ]
    if registry:
        overrides.append(f"registry={registry}")
    cmd += ["--config", *overrides]
    cmd += list(extra_args or [])
    return cmd


def run_workflow(
    archive: Path,
    lesions: Path,
    out: Path,
    *,
    cores: int = 2,
    config_file: Path | None = None,
    registry: str | None = None,
    profile: Path | None = None,
    extra_args: list[str] | None = None,
) -> RunResult:
    """Run (or resume) the whole workflow; Snakemake's progress goes to the terminal."""
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    cmd = snakemake_command(archive, lesions, out, cores=cores, config_file=config_file,
                            registry=registry, profile=profile, extra_args=extra_args)
    env = dict(os.environ)
    # the rules import this package: make sure the worker interpreter finds it even when
    # cryotrack runs from a source checkout without installation
    repo_root = str(WORKFLOW_DIR.parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (repo_root, env.get("PYTHONPATH")) if p)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, check=False)
    return RunResult(proc.returncode, time.perf_counter() - started, OutputLayout(out))
