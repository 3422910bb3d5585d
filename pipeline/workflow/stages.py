"""Stage functions the Snakemake rules call (``python -m pipeline.workflow.stages STAGE``).

Each stage is a plain function taking the validated workflow configuration; the
``main`` entry point only parses ``--config`` (JSON) and the wildcard values. Tests call
the functions directly.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import __version__
from pipeline.analysis.results import collect_results
from pipeline.layout import OutputLayout, safe_id, write_json_atomic

__all__ = [
    "stage_index",
    "stage_tables",
    "stage_registry",
    "main",
]

log = logging.getLogger("cryotrack.stage")



# ----------------------------------------------------------------------------- index
def stage_index(config: dict[str, Any]) -> dict[str, Any]:
    """Index the archive and list which manifest patients it holds (``patients.json``)."""
    import pandas as pd

    from pipeline.analysis.manifest import read_manifest
    from pipeline.dicom.index import build_index

    layout = OutputLayout.from_config(config)
    lesions = read_manifest(Path(config["lesions"]))
    summary = build_index(
        Path(config["archive"]), layout.index_dir,
        workers=config["index"]["workers"], content_check=config["index"]["content_check"],
    )
    log.info("%s", summary.describe())
    series = pd.read_csv(layout.series_csv, dtype={"patient_id": str})
    in_archive = set(series["patient_id"].astype(str))
    found = {safe_id(les.patient_id): les.patient_id for les in lesions
             if les.patient_id in in_archive}
    missing = sorted({les.patient_id for les in lesions} - in_archive)
    for pid in missing:
        log.warning("patient %s of the manifest has no series in the archive", pid)
    payload = {"found": found, "missing": missing}
    write_json_atomic(layout.patients_json, payload)
    return payload


# ----------------------------------------------------------------------------- analysis
def stage_tables(config: dict[str, Any]) -> dict[str, Any]:
    """Assess every lesion and write the two registry tables and the cohort summary."""
    from dataclasses import asdict

    from pipeline.assessment import summarize_cohort
    from pipeline.outputs.tables import write_outcomes_csv, write_timepoints_csv

    layout = OutputLayout.from_config(config)
    _lesions, timepoints, outcomes = collect_results(config)
    write_timepoints_csv(layout.timepoints_csv, timepoints)
    write_outcomes_csv(layout.outcomes_csv, outcomes)
    cohort = summarize_cohort(outcomes)
    payload = {
        "describe": cohort.describe(),
        **{k: v for k, v in asdict(cohort).items() if k != "local_control"},
        "success_rate": cohort.success_rate,
        "technical_success_rate": cohort.technical_success_rate,
        "local_control": asdict(cohort.local_control) if cohort.local_control else None,
        "needs_review": [
            {"patient_id": o.patient_id, "lesion_id": o.lesion_id, "reasons": o.review_reasons}
            for o in outcomes if o.needs_review
        ],
    }
    write_json_atomic(layout.cohort_json, payload)
    log.info("%s", cohort.describe())
    return payload


# ----------------------------------------------------------------------------- registry
def stage_registry(config: dict[str, Any]) -> dict[str, Any]:
    """Write the run into the registry database (one transaction of upserts)."""
    import pandas as pd

    from pipeline.analysis.studies import parse_study_date
    from pipeline.outputs.registry import LesionRecord, Registry, RunInfo, SeriesRecord

    layout = OutputLayout.from_config(config)
    url = config.get("registry") or f"sqlite:///{layout.registry_sqlite}"
    lesions, timepoints, outcomes = collect_results(config)
    series = pd.read_csv(layout.series_csv, dtype=str, keep_default_na=False)
    wanted = {les.patient_id for les in lesions}
    series = series[series["patient_id"].isin(wanted)]
    records = [
        SeriesRecord(
            series_key=r["series_key"], series_instance_uid=r["series_instance_uid"],
            study_instance_uid=r["study_instance_uid"], patient_id=r["patient_id"],
            study_date=parse_study_date(r["study_date"]), modality=r["modality"] or None,
            series_description=r["series_description"] or None, phase=r["phase"] or None,
            usable=r["usable"].lower() == "true", reason=r["reason"] or None,
        )
        for r in series.to_dict("records")
    ]
    run = RunInfo(run_uid=uuid.uuid4().hex, version=__version__,
                  config={k: v for k, v in config.items() if k != "registry"},
                  archive=str(config["archive"]))
    registry = Registry(url)
    try:
        registry.record_run(
            run, series=records, timepoints=timepoints, outcomes=outcomes,
            lesions=[LesionRecord(les.patient_id, les.lesion_id, les.procedure_date, les.side,
                                  les.seed_lps_mm, les.tracking_uid) for les in lesions],
        )
    finally:
        registry.close()
    safe_url = url.split("@")[-1] if "@" in url else url
    payload = {"run_uid": run.run_uid, "registry": safe_url, "lesions": len(lesions),
               "timepoints": len(timepoints), "series": len(records)}
    write_json_atomic(layout.registry_done, payload)
    return payload


# ----------------------------------------------------------------------------- entry point
_STAGES = {
    "index": stage_index,
    "tables": stage_tables,
    "registry": stage_registry,
}


def _lazy_stage(name: str) -> Any:
    if name in _STAGES:
        return _STAGES[name]
    if name == "analyse":
        from pipeline.analysis.patient import stage_analyse

        return stage_analyse
    if name == "report":
        from pipeline.outputs.report_stage import stage_report

        return stage_report
    if name == "dicom":
        from pipeline.outputs.dicom_stage import stage_dicom

        return stage_dicom
    raise ValueError(f"unknown stage {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.workflow.stages")
    parser.add_argument("stage", choices=("index", "analyse", "tables", "registry", "report",
                                          "dicom"))
    parser.add_argument("--config", required=True, help="validated workflow config as JSON")
    parser.add_argument("--patient", help="safe patient id (per-patient stages)")
    parser.add_argument("--threads", type=int,
                        help="cores granted to this job (analyse: studies measured concurrently)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    config = json.loads(args.config)
    if args.threads is not None and "analysis" in config:
        config["analysis"]["threads"] = args.threads
    func = _lazy_stage(args.stage)
    started = time.perf_counter()
    log.info("stage %s starting (cryotrack %s)", args.stage, __version__)
    result = func(config, args.patient) if args.patient else func(config)
    log.info("stage %s done in %.1f s", args.stage, time.perf_counter() - started)
    if isinstance(result, dict):
        log.info("result: %s", json.dumps(result, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
