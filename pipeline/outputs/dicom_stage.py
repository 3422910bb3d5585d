"""Workflow stage: DICOM SEG + SR TID 1500 for every lesion in every study of a patient.

Reads the patient's ``analysis.json`` (written by the analysis stage), the source series
headers (paths from ``index/instances.parquet``) and the masks (NIfTI on the source grid).
A lesion/study that cannot be written is recorded with the reason in
``dicom/<patient>/manifest.json``; the others are still written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pydicom

from pipeline.assessment.records import timepoint_from_dict
from pipeline.dicom.instances import series_paths
from pipeline.dicom.loader import load_series, read_nifti
from pipeline.layout import OutputLayout, write_json_atomic
from pipeline.outputs.dicom_seg import (
    DicomOutputError,
    EmptySegmentationError,
    write_lesion_seg,
)
from pipeline.outputs.dicom_sr import write_lesion_sr

__all__ = ["stage_dicom"]

log = logging.getLogger("cryotrack.dicom")


def _masks_on_grid(item: dict[str, Any], patient_dir: Path, source: Any) -> dict[str, Any]:
    masks = {}
    for structure, rel in item.get("masks", {}).items():
        vol = read_nifti(patient_dir / rel)
        if vol.array.shape != source.array.shape or not np.allclose(
            vol.affine_lps, source.affine_lps, atol=1e-2
        ):
            raise DicomOutputError(
                str(patient_dir / rel), "mask is not on the source series grid"
            )
        masks[structure] = source.with_array(np.asarray(vol.array) > 0, modality="")
    return masks


def stage_dicom(config: dict[str, Any], patient: str) -> dict[str, Any]:
    """Write SEG and SR for every lesion × study of one patient (safe id)."""
    layout = OutputLayout.from_config(config)
    analysis = json.loads(layout.analysis_json(patient).read_text())
    instances = pd.read_parquet(layout.index_dir / "instances.parquet")
    out_dir = layout.dicom_dir(patient)
    out_dir.mkdir(parents=True, exist_ok=True)
    patient_dir = layout.patient_dir(patient)
    written: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    for lesion in analysis["lesions"]:
        tps = {t["study_instance_uid"]: t for t in lesion["timepoints"]}
        for item in lesion.get("items", []):
            study = item["study_instance_uid"]
            name = f"{lesion['lesion_id']}_{study}"
            try:
                paths = series_paths(instances, item["series_key"])
                headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in paths]
                timepoint = timepoint_from_dict(tps[study])
                seg_ds = None
                if item.get("masks"):
                    source = load_series(paths, gap_policy=config["loading"]["gap_policy"])
                    masks = _masks_on_grid(item, patient_dir, source)
                    try:
                        seg = write_lesion_seg(
                            headers, masks, out_dir / f"{name}_SEG.dcm",
                            lesion_id=lesion["lesion_id"], tracking_uid=lesion["tracking_uid"],
                        )
                        seg_ds = pydicom.dcmread(seg)
                        written.append({"study": study, "lesion": lesion["lesion_id"],
                                        "file": str(Path(seg).relative_to(layout.out))})
                    except EmptySegmentationError as exc:
                        log.warning("%s: no SEG (%s)", name, exc.reason)
                sr = write_lesion_sr(
                    headers, seg_ds, timepoint, out_dir / f"{name}_SR.dcm",
                    tracking_uid=lesion["tracking_uid"], extra=item.get("extra") or None,
                )
                written.append({"study": study, "lesion": lesion["lesion_id"],
                                "file": str(sr.relative_to(layout.out))})
            except (DicomOutputError, ValueError, OSError) as exc:
                log.error("%s: DICOM outputs not written: %s", name, exc)
                failed.append({"study": study, "lesion": lesion["lesion_id"],
                               "reason": str(exc)})
    payload = {"written": written, "failed": failed}
    write_json_atomic(layout.dicom_done(patient), payload)
    return {"written": len(written), "failed": len(failed)}
