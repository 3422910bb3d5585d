"""Workflow stage ``report``: assemble the HTML review report from the per-patient results.

The overlays were rendered by the per-patient analysis jobs (in parallel); this stage only
reads their panel records, draws the cohort charts and writes the pages.
"""

from __future__ import annotations

import json
from typing import Any

from pipeline import __version__
from pipeline.analysis.results import collect_results, load_analysis
from pipeline.assessment import summarize_cohort
from pipeline.layout import OutputLayout
from pipeline.outputs.report import write_report
from pipeline.outputs.report_images import read_rendered_json

__all__ = ["stage_report"]


def stage_report(config: dict[str, Any]) -> dict[str, Any]:
    layout = OutputLayout.from_config(config)
    lesions, timepoints, outcomes = collect_results(config)
    patients = json.loads(layout.patients_json.read_text())
    panels = []
    for patient_id in sorted(set(patients["found"].values())):
        analysis = load_analysis(layout.analysis_json(patient_id))
        for entry in analysis["lesions"]:
            if entry.get("panels"):
                panels.extend(read_rendered_json(layout.patient_dir(patient_id)
                                                 / entry["panels"]))
    cohort = summarize_cohort(outcomes)
    run_info = {
        "cryotrack": __version__,
        "archive": str(config["archive"]),
        "lesion manifest": str(config["lesions"]),
        "lesions": str(len(lesions)),
    }
    index = write_report(layout.report_dir, outcomes=outcomes, timepoints=timepoints,
                         panels=panels, cohort=cohort, run_info=run_info)
    return {"report": str(index), "panels": len(panels), "lesions": len(lesions)}
