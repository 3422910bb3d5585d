"""User-supplied masks: the CSV is validated line by line, paths resolve beside it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.analysis.patient import read_external_masks
from pipeline.dicom.loader import write_nifti
from pipeline.image import Volume


def test_external_masks_csv(tmp_path: Path) -> None:
    mask = Volume.from_geometry(np.ones((4, 5, 6), dtype=np.uint8), origin_lps=[0, 0, 0],
                                spacing_mm=[1, 1, 2])
    write_nifti(mask, tmp_path / "t.nii.gz")
    csv = tmp_path / "masks.csv"
    csv.write_text("patient_id,lesion_id,study_instance_uid,structure,path\n"
                   "P1,L1,1.2.3,tumour,t.nii.gz\n"
                   f"P1,L1,1.2.4,ablation_zone,{tmp_path / 't.nii.gz'}\n")
    got = read_external_masks(str(csv))
    assert got == {("P1", "L1"): {("1.2.3", "tumour"): tmp_path / "t.nii.gz",
                                  ("1.2.4", "ablation_zone"): tmp_path / "t.nii.gz"}}
    assert read_external_masks(None) == {}

    csv.write_text("patient_id,lesion_id,study_instance_uid,structure,path\n"
                   "P1,L1,1.2.3,kidney,t.nii.gz\n")
    with pytest.raises(ValueError, match=r"masks.csv:2: structure must be one of"):
        read_external_masks(str(csv))
    csv.write_text("patient_id,lesion_id,study_instance_uid,structure,path\n"
                   "P1,L1,1.2.3,tumour,missing.nii.gz\n")
    with pytest.raises(FileNotFoundError, match=r"masks.csv:2: mask file not found"):
        read_external_masks(str(csv))
    csv.write_text("patient_id,lesion_id,path\nP1,L1,t.nii.gz\n")
    with pytest.raises(ValueError, match="missing columns"):
        read_external_masks(str(csv))
    with pytest.raises(FileNotFoundError, match="external masks CSV not found"):
        read_external_masks(str(tmp_path / "nope.csv"))
