"""`cryotrack synth`: the written archive, manifest and truth, read back independently."""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pydicom
import pytest

from fixtures.phantom import lesion_mask, make_patient, render_series
from fixtures.synth import MANIFEST_COLUMNS, SCENARIOS, synthesize
from pipeline.cli import main

_ARGS = dict(patients=1, seed=5, scenarios=["sphere"], small=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "out"
    rc = main(["synth", str(out), "--patients", "1", "--seed", "5", "--scenario", "sphere",
               "--small"])
    assert rc == 0
    files = sorted(p for p in (out / "archive").rglob("*") if p.is_file())
    headers = {p: pydicom.dcmread(p) for p in files}
    truth = json.loads((out / "truth.json").read_text())
    return out, headers, truth


def _by_series(headers):
    groups = defaultdict(list)
    for path, ds in headers.items():
        groups[ds.SeriesInstanceUID].append((path, ds))
    return groups


def test_archive_files_read_back_and_match_truth(archive):
    out, headers, truth = archive
    assert len(headers) > 100
    assert {ds.PatientID for ds in headers.values()} == {truth["patients"][0]["patient_id"]}
    # PACS-like layout: nested folders, opaque names, one series spread over folders
    assert all(len(p.relative_to(out / "archive").parts) == 3 for p in headers)
    groups = _by_series(headers)
    patient = truth["patients"][0]
    truth_series = {s["series_instance_uid"]: s for st in patient["studies"] for s in st["series"]}
    assert set(groups) == set(truth_series)
    for uid, members in groups.items():
        entry = truth_series[uid]
        if entry["kind"] in ("volume", "reformat"):
            assert len(members) == entry["shape_kji"][0]
            assert len({p.parent for p, _ in members}) > 1
        else:
            assert len(members) == 1
        ds = members[0][1]
        assert ds.Modality == entry["modality"]
        assert int(ds.SeriesNumber) == entry["series_number"]
        if entry["kind"] == "volume" and entry["modality"] == "CT":
            assert int(ds.PixelRepresentation) == (1 if entry["storage"] == "signed" else 0)
            assert float(ds.RescaleIntercept) == (0.0 if entry["storage"] == "signed" else -1024)
            assert ("ContrastBolusAgent" in ds) is (entry["contrast_agent_header"] is not None)
            assert ds.file_meta.TransferSyntaxUID == {
                "explicit_le": pydicom.uid.ExplicitVRLittleEndian,
                "implicit_le": pydicom.uid.ImplicitVRLittleEndian,
                "rle": pydicom.uid.RLELossless}[entry["transfer_syntax"]]
            position = "HFP" if entry["role"] == "intraprocedural" else "HFS"
            assert ds.PatientPosition == position
            iop = [float(v) for v in ds.ImageOrientationPatient]
            assert iop == ([-1, 0, 0, 0, -1, 0] if position == "HFP" else [1, 0, 0, 0, 1, 0])
            assert ds.Manufacturer and ds.KVP and ds.ConvolutionKernel and ds.SeriesDescription
    kinds = {truth_series[u]["decoy"] for u in groups}
    assert {"localizer", "dose_report", "reformat", "thick_duplicate"} <= kinds
    types = {tuple(ds.ImageType) for ds in headers.values()}
    assert ("DERIVED", "SECONDARY", "REFORMATTED") in types
    assert ("ORIGINAL", "PRIMARY", "LOCALIZER") in types
    syntaxes = {ds.file_meta.TransferSyntaxUID for ds in headers.values()}
    assert pydicom.uid.RLELossless in syntaxes
    # studies: distinct UIDs, dates ordered by role, one frame of reference per study
    studies = {ds.StudyInstanceUID for ds in headers.values()}
    assert len(studies) == len(patient["studies"]) >= 4
    for st in patient["studies"]:
        fors = {ds.FrameOfReferenceUID for ds in headers.values()
                if ds.StudyInstanceUID == st["study_instance_uid"] and "FrameOfReferenceUID" in ds}
        assert fors == {st["frame_of_reference_uid"]}


def test_manifest_seed_is_inside_the_tumour_and_pixels_equal_the_render(archive):
    out, headers, truth = archive
    with open(out / "lesions.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == 2
    row = dict(zip(rows[0], rows[1], strict=True))
    lesion = truth["patients"][0]["lesions"][0]
    assert row["baseline_study_uid"] == lesion["baseline_study_uid"]
    assert row["side"] in ("L", "R") and row["lesion_id"] == "L1"
    seed = np.array([float(row[f"seed_{a}_mm"]) for a in "xyz"])
    # rebuild the seed series' geometry from the DICOM headers alone
    members = _by_series(headers)[lesion["seed_series_uid"]]
    members.sort(key=lambda m: float(m[1].ImagePositionPatient[2]))
    ds0 = members[0][1]
    row_dir = np.array(ds0.ImageOrientationPatient[:3], float)
    col_dir = np.array(ds0.ImageOrientationPatient[3:], float)
    positions = np.array([m[1].ImagePositionPatient for m in members], float)
    dr, dc = (float(v) for v in ds0.PixelSpacing)
    step = positions[1] - positions[0]
    affine = np.eye(4)
    affine[:3, 0], affine[:3, 1], affine[:3, 2] = row_dir * dc, col_dir * dr, step
    affine[:3, 3] = positions[0]
    ijk = np.linalg.solve(affine, [*seed, 1.0])[:3]
    i, j, k = (int(np.rint(v)) for v in ijk)
    # the truth mask of the same series (analytic, from the plan) contains the seed voxel
    plan = make_patient("sphere", seed=5, index=0, small=True)
    key = next(s["key"] for st in truth["patients"][0]["studies"] for s in st["series"]
               if s["series_instance_uid"] == lesion["seed_series_uid"])
    mask = lesion_mask(plan, key, "tumour")
    np.testing.assert_allclose(mask.affine_lps, affine, atol=1e-3)
    assert mask.array[k, j, i]
    # stored pixels (through the rescale) equal the in-memory render, rounded (float32
    # rounding of the −1024 offset may move an exact .5 by one unit)
    stored = np.stack([m[1].pixel_array.astype(np.float32) * float(m[1].RescaleSlope)
                       + float(m[1].RescaleIntercept) for m in members])
    expected = np.clip(np.round(render_series(plan, key).array), -1024, 3071)
    assert stored.shape == expected.shape
    diff = np.abs(stored - expected)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-4


def test_truth_document_schema(archive):
    _, _, truth = archive
    assert truth["schema_version"] == 1 and truth["small"] is True and truth["seed"] == 5
    patient = truth["patients"][0]
    assert patient["scenario"] == "sphere"
    roles = [st["role"] for st in patient["studies"]]
    assert roles[:2] == ["baseline", "intraprocedural"] and set(roles[2:]) == {"followup"}
    lesion = patient["lesions"][0]
    for tp in lesion["timepoints"]:
        assert tp["study_instance_uid"] in {st["study_instance_uid"] for st in patient["studies"]}
        if tp["role"] == "intraprocedural":
            assert {"iceball", "min_margin_mm", "tumour_coverage_pct", "probes"} <= set(tp)
        else:
            assert {"long_axis_mm", "short_axis_mm", "max_3d_diameter_mm", "volume_ml",
                    "enhancing"} <= set(tp)
    assert set(lesion["outcome"]) >= {"no_enhancement", "size_decrease", "success",
                                      "technical_success", "residual_tumour",
                                      "local_progression", "min_margin_mm",
                                      "iceball_long_axis_mm", "baseline_long_axis_mm"}


def _tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes(archive, tmp_path):
    out, _, _ = archive
    again = synthesize(tmp_path / "again", **_ARGS)
    assert again.n_files == len(_tree_digest(out / "archive"))
    assert _tree_digest(tmp_path / "again") == _tree_digest(out)


def test_other_seed_other_uids_and_errors(tmp_path):
    a, b = make_patient("sphere", seed=5), make_patient("sphere", seed=6)
    assert a.studies[0].uid != b.studies[0].uid
    assert a.patient_id != b.patient_id
    with pytest.raises(ValueError, match="unknown scenario"):
        synthesize(tmp_path / "x", patients=1, seed=0, scenarios=["nope"], small=True)
    with pytest.raises(ValueError, match="patients"):
        synthesize(tmp_path / "y", patients=0, seed=0, small=True)
    (tmp_path / "z" / "archive").mkdir(parents=True)
    (tmp_path / "z" / "archive" / "f").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        synthesize(tmp_path / "z", patients=1, seed=0, small=True)


def test_picked_patients_are_those_of_their_seeds_archives(archive, tmp_path, capsys):
    """``--pick scenario:seed:index`` writes the very patient of that seed's archive (same
    files, byte for byte, same manifest row and truth), beside patients of other seeds."""
    out, _, truth = archive
    rc = main(["synth", str(tmp_path / "picked"), "--pick", "sphere:5:0",
               "--pick", "growing_zone:6:1", "--small"])
    assert rc == 0
    assert "(picked, small)" in capsys.readouterr().out
    picked = _tree_digest(tmp_path / "picked" / "archive")
    original = _tree_digest(out / "archive")
    assert original.items() <= picked.items()
    assert len(picked) > len(original)
    doc = json.loads((tmp_path / "picked" / "truth.json").read_text())
    assert doc["seed"] is None
    assert doc["patients"][0] == truth["patients"][0]
    assert [(p["scenario"], p["seed"], p["index"]) for p in doc["patients"]] == [
        ("sphere", 5, 0), ("growing_zone", 6, 1)]
    rows = (tmp_path / "picked" / "lesions.csv").read_text().splitlines()
    assert rows[1] == (out / "lesions.csv").read_text().splitlines()[1]
    assert len(rows) == 3


def test_bad_picks_are_refused(tmp_path):
    from fixtures.synth import parse_pick

    with pytest.raises(ValueError, match="scenario:seed:index"):
        parse_pick("sphere:5")
    with pytest.raises(ValueError, match="integers"):
        parse_pick("sphere:five:0")
    with pytest.raises(ValueError, match="unknown scenario"):
        parse_pick("nope:5:0")
    with pytest.raises(ValueError, match="same patient ID"):
        synthesize(tmp_path / "x", patients=1, seed=0, small=True,
                   picks=[("sphere", 5, 0), ("clean_success", 5, 0)])
    with pytest.raises(ValueError, match="no patients picked"):
        synthesize(tmp_path / "y", patients=1, seed=0, small=True, picks=[])
    assert not (tmp_path / "x").exists()


def test_archive_is_indexed_by_the_pipeline(archive):
    out, _, truth = archive
    index_mod = pytest.importorskip("pipeline.dicom.index")
    index = index_mod.index_archive(out / "archive", workers=1)
    assert index.n_files == sum(1 for p in (out / "archive").rglob("*") if p.is_file())
    listed = {row["series_instance_uid"] for row in index.series}
    volumes = {s["series_instance_uid"] for st in truth["patients"][0]["studies"]
               for s in st["series"] if s["kind"] == "volume"}
    assert volumes <= listed


@pytest.mark.slow
def test_full_resolution_patient(tmp_path):
    summary = synthesize(tmp_path / "full", patients=1, seed=11, scenarios=["clean_success"],
                         small=False)
    truth = json.loads((tmp_path / "full" / "truth.json").read_text())
    volumes = [s for st in truth["patients"][0]["studies"] for s in st["series"]
               if s["kind"] == "volume" and s["modality"] == "CT"]
    for s in volumes:
        assert s["shape_kji"][1:] == [512, 512]
        assert 0.68 <= s["spacing_mm"][0] <= 0.85
        z_extent = s["spacing_mm"][2] * (s["shape_kji"][0] - 1)
        assert 150 <= z_extent <= 300
    assert summary.n_files > 800
    print(summary.describe())


def test_cli_lists_every_scenario(capsys):
    assert main(["synth", "unused", "--list-scenarios"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == list(SCENARIOS)
    assert all(len(line.split()) > 3 for line in lines)  # each has a description
