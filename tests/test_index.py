"""`cryotrack index` end to end on a synthetic archive with every kind of series/problem."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MediaStorageDirectoryStorage

from fixtures.dicom_writer import write_localizer, write_secondary_capture, write_series
from pipeline.dicom.index import INSTANCE_COLUMNS, SERIES_COLUMNS, build_index, index_archive
from pipeline.image import Volume
from tests.test_index_helpers import (
    ct_volume,
    paint_abdomen,
    patient,
    series_info,
    study,
    uid,
    write_ct,
)

_BRIEF_COLUMNS = (
    "patient_id, study_instance_uid, study_date, series_instance_uid, series_key, "
    "series_number, series_description, modality, sop_class_uid, n_instances, rows, columns, "
    "pixel_spacing_mm, slice_thickness_mm, slice_spacing_mm, orientation, patient_position, "
    "image_type, contrast_agent_tag, contrast, phase, usable, reason"
).split(", ")


def _dicomdir(path: Path) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MediaStorageDirectoryStorage
    meta.MediaStorageSOPInstanceUID = uid("dicomdir")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.FileSetID = "TEST"
    ds.DirectoryRecordSequence = []
    ds.save_as(path, enforce_file_format=True)


def _tilted(n: int, tilt_deg: float) -> Volume:
    t = math.radians(tilt_deg)
    direction = np.array([[1, 0, 0], [0, 1, math.sin(t)], [0, 0, math.cos(t)]], float)
    return ct_volume(n, spacing_k_mm=2.0, direction=direction)


def _build_archive(root: Path) -> dict[str, object]:
    """Write the archive; return what the tests need to know about it."""
    s1 = root / "P1" / "study1"
    # Painted arterial abdomen, described as unenhanced: content must override the header.
    abdomen = paint_abdomen("corticomedullary", seed=0, n_slices=24, spacing_k_mm=1.5)
    thin = series_info("thin", 2, "Abdomen NATIV 1.0", slice_thickness_mm=1.0)
    write_ct(s1 / "thin", abdomen, thin)
    every2 = Volume(abdomen.array[::2], abdomen.affine_lps @ np.diag([1, 1, 2, 1]))
    thick = series_info("thick", 3, "Abdomen NATIV 5.0", slice_thickness_mm=5.0)
    write_ct(s1 / "thick", every2, thick)
    coronal = ct_volume(12, direction=np.array([[1, 0, 0], [0, 0, 1], [0, -1, 0]], float))
    write_ct(s1 / "cor", coronal, series_info("cor", 4, "COR MPR NATIV",
                                              image_type=("DERIVED", "SECONDARY", "MPR")))
    scout = Volume.from_geometry(np.zeros((1, 32, 32), np.float32), origin_lps=(0, 0, 0),
                                 spacing_mm=(1, 1, 1))
    write_localizer(scout, s1 / "scout", modality="CT", patient=patient("P1"),
                    study=study("P1"), series=series_info("scout", 1, "Topogram 0.6"))
    write_secondary_capture(s1 / "dose", patient=patient("P1"), study=study("P1"),
                            series=series_info("dose", 99, "Dose Report"))
    # one UID holding 12 slices of 16×16 and 3 slices of 20×20 → split in two
    split = series_info("split", 5, "Abdomen split")
    write_ct(s1 / "split", ct_volume(12), split)
    write_ct(s1 / "split", ct_volume(3, size=20, z0_mm=100.0), split,
             file_names=lambda k: f"odd{k}.dcm",
             extra={"SOPInstanceUID": lambda k: uid("split-odd", k)})
    gap = write_ct(s1 / "gap", ct_volume(14), series_info("gap", 6, "gap"))
    gap[6].unlink()
    dup_z = ct_volume(12).index_to_lps((0, 0, 4))
    write_ct(s1 / "dup", ct_volume(12), series_info("dup", 7, "dup"),
             extra={"ImagePositionPatient": lambda k: [f"{v:.4f}" for v in dup_z] if k == 5
                    else ct_volume(12).index_to_lps((0, 0, k)).round(4).tolist()})
    write_ct(s1 / "noipp", ct_volume(12), series_info("noipp", 8, "noipp"),
             extra={"ImagePositionPatient": None})
    write_ct(s1 / "tilt", _tilted(12, 20.0), series_info("tilt", 9, "tilted"))
    # flat, mixed: patient 2 with the same SeriesNumber 2 and MR pre/post
    write_ct(root, ct_volume(12), series_info("p2ct", 2, "Abdomen"), pid="P2",
             date="20240301", file_names=lambda k: f"p2ct_{k:03d}")
    for name, desc in (("pre", "T1 vibe fs pre"), ("post", "T1 vibe fs post")):
        vol = ct_volume(12, value_hu=300.0)
        write_series(vol, root / "mr", modality="MR", patient=patient("P2"),
                     study=study("P2", 1, "20240301"), series=series_info(name, 10, desc),
                     file_names=lambda k, n=name: f"{n}{k}")
    (root / "notes.txt").write_text("not an image\n")
    (root / "empty.dcm").write_bytes(b"")
    _dicomdir(root / "DICOMDIR")
    return {"n_files": sum(1 for p in root.rglob("*") if p.is_file())}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    root = tmp_path_factory.mktemp("archive")
    return root, _build_archive(root)


@pytest.fixture(scope="module")
def indexed(archive, tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    out = tmp_path_factory.mktemp("index")
    summary = build_index(archive[0], out, workers=1, content_check=True)
    assert summary.n_files == archive[1]["n_files"]
    return out, pd.read_parquet(out / "series.parquet")


def _row(series: pd.DataFrame, key: str) -> pd.Series:
    rows = series[series.series_key == key]
    assert len(rows) == 1, f"{key}: {len(rows)} rows"
    return rows.iloc[0]


def test_outputs_and_columns(indexed) -> None:
    out, series = indexed
    for name in ("series.csv", "series.parquet", "instances.parquet", "errors.csv"):
        assert (out / name).is_file(), name
    assert set(_BRIEF_COLUMNS) <= set(series.columns)
    assert list(series.columns) == list(SERIES_COLUMNS)
    assert list(pd.read_parquet(out / "instances.parquet").columns) == list(INSTANCE_COLUMNS)
    csv = pd.read_csv(out / "series.csv", dtype=str, keep_default_na=False)
    assert set(csv.usable) == {"true", "false"}
    assert len(csv) == len(series)


def test_every_file_is_a_series_instance_or_an_error(archive, indexed) -> None:
    root, _ = archive
    out, _ = indexed
    instances = pd.read_parquet(out / "instances.parquet")
    errors = pd.read_csv(out / "errors.csv")
    files = {str(p) for p in root.rglob("*") if p.is_file()}
    listed = list(instances.path) + list(errors.path)
    assert len(listed) == len(set(listed))
    assert set(listed) == files - {str(root / "DICOMDIR")}
    assert set(errors.path) == {str(root / "notes.txt"), str(root / "empty.dcm")}
    assert all(errors.reason.str.len() > 5)


def test_content_overrides_misleading_description(indexed) -> None:
    _, series = indexed
    thin, thick = _row(series, uid("series", "thin")), _row(series, uid("series", "thick"))
    for row in (thin, thick):
        assert row.header_phase == "non_contrast"
        assert (row.contrast, row.phase) == ("enhanced", "arterial"), row.contrast_basis
        assert row.contrast_basis.startswith("content overrides header")
        assert row.aorta_hu == pytest.approx(330, abs=25)
        assert row.usable
    assert thin.preferred and not thick.preferred
    assert thin.n_slices == 24 and thick.n_slices == 12
    assert thick.slice_spacing_mm == pytest.approx(3.0)


def test_unusable_reasons(indexed) -> None:
    _, series = indexed
    expect = {
        "cor": "derived reformat",
        "scout": "localizer",
        "dose": "secondary capture",
        "gap": "slice gap",
        "dup": "duplicate slice positions",
        "noipp": "missing ImagePositionPatient in 12/12",
    }
    for name, reason in expect.items():
        row = _row(series, uid("series", name))
        assert not row.usable, name
        assert reason in row.reason, (name, row.reason)
        assert not row.preferred
    assert _row(series, uid("series", "cor")).orientation == "coronal"


def test_split_series_keys(indexed) -> None:
    _, series = indexed
    base = uid("series", "split")
    main, odd = _row(series, base), _row(series, base + "_2")
    assert (main.n_instances, main.rows, main.usable) == (12, 16, True)
    assert (odd.n_instances, odd.rows, odd.usable) == (3, 20, False)
    assert "mixed image sizes" in main.split_note and "too few slices" in odd.reason
    assert main.series_instance_uid == odd.series_instance_uid == base


def test_tilt_is_recorded_and_usable(indexed) -> None:
    _, series = indexed
    row = _row(series, uid("series", "tilt"))
    assert row.usable, row.reason
    assert row.tilt_deg == pytest.approx(20.0, abs=0.1)
    assert "gantry tilt 20.0°" in row.notes


def test_grouping_by_uid_not_series_number_and_mr_phases(indexed) -> None:
    _, series = indexed
    p1 = _row(series, uid("series", "thin"))
    p2 = _row(series, uid("series", "p2ct"))
    assert p1.series_number == p2.series_number == 2
    assert (p1.patient_id, p2.patient_id) == ("P1", "P2")
    pre, post = _row(series, uid("series", "pre")), _row(series, uid("series", "post"))
    assert (pre.modality, pre.phase, post.phase) == ("MR", "mr_pre", "mr_post")
    assert pre.preferred and post.preferred  # different phases: one each


def test_instances_sorted_along_normal(indexed) -> None:
    out, _ = indexed
    inst = pd.read_parquet(out / "instances.parquet")
    thin = inst[inst.series_key == uid("series", "thin")]
    assert list(thin.slice_index) == list(range(24))
    assert np.all(np.diff(thin.position_mm.to_numpy()) == pytest.approx(1.5))


def test_summary_describe(archive, tmp_path: Path) -> None:
    summary = build_index(archive[0], tmp_path, workers=1, content_check=False)
    text = summary.describe()
    assert f"{summary.n_series} series" in text and "2 unreadable" in text
    assert "1 DICOMDIR skipped" in text
    assert summary.n_patients == 2


def test_parallel_equals_in_process(archive) -> None:
    cols = ["series_key", "n_instances", "usable", "reason", "phase", "preferred", "aorta_hu"]
    one = index_archive(archive[0], workers=1, content_check=True)
    two = index_archive(archive[0], workers=2, content_check=True)
    assert [[r[c] for c in cols] for r in one.series] == [[r[c] for c in cols]
                                                          for r in two.series]
    assert one.errors == two.errors
    assert [i["path"] for i in one.instances] == [i["path"] for i in two.instances]


def test_min_slices_and_bad_arguments(archive, tmp_path: Path) -> None:
    ix = index_archive(archive[0], workers=1, content_check=False, min_slices=30)
    assert not any(r["usable"] for r in ix.series)
    with pytest.raises(ValueError, match="workers"):
        build_index(archive[0], tmp_path, workers=0, content_check=False)
    with pytest.raises(FileNotFoundError, match="archive not found"):
        build_index(tmp_path / "nope", tmp_path, workers=1, content_check=False)


def test_cli_index(archive, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipeline.cli import main

    out = tmp_path / "cli"
    assert main(["index", str(archive[0]), "--out", str(out), "--workers", "1",
                 "--no-content-check"]) == 0
    text = capsys.readouterr().out
    assert "usable" in text and "NOT USED: localizer/scout" in text
    series = pd.read_csv(out / "series.csv")
    thin = series[series.series_key == uid("series", "thin")].iloc[0]
    assert thin.phase == "non_contrast"  # headers only: the description wins
