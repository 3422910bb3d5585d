"""Gather the per-patient analyses of a run into timepoints and assessed outcomes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipeline.layout import OutputLayout

__all__ = ["collect_results", "load_analysis"]



def load_analysis(path: Path) -> dict[str, Any]:
    with Path(path).open() as fh:
        return json.load(fh)


def collect_results(config: dict[str, Any]) -> tuple[list[Any], list[Any], list[Any]]:
    """(manifest lesions, timepoints, outcomes) over all patients of the run."""
    from pipeline.analysis.manifest import read_manifest
    from pipeline.assessment import AssessmentCriteria, assess_lesion
    from pipeline.assessment.records import LesionOutcome, timepoint_from_dict

    layout = OutputLayout.from_config(config)
    criteria = AssessmentCriteria.from_mapping(config.get("criteria"))
    lesions = read_manifest(Path(config["lesions"]))
    patients = load_analysis(layout.patients_json)
    timepoints, outcomes = [], []
    for les in lesions:
        tps = []
        errors: list[str] = []
        if les.patient_id in patients["missing"]:
            errors.append("patient not found in the archive")
        else:
            analysis = load_analysis(layout.analysis_json(les.patient_id))
            entry = next((e for e in analysis["lesions"] if e["lesion_id"] == les.lesion_id),
                         None)
            if entry is None:
                errors.append("lesion missing from the patient's analysis")
            else:
                tps = [timepoint_from_dict(t) for t in entry["timepoints"]]
                errors.extend(entry.get("errors", []))
        timepoints.extend(tps)
        if tps:
            outcome = assess_lesion(tps, les.procedure_date, criteria)
            outcome.review_reasons.extend(errors)
            outcome.needs_review = outcome.needs_review or bool(errors)
        else:
            outcome = LesionOutcome(
                les.patient_id, les.lesion_id, les.procedure_date, None, None, None, None,
                None, None, None, None, None, None, None, None, True,
                errors or ["no study could be measured"],
            )
        outcomes.append(outcome)
    return lesions, timepoints, outcomes
