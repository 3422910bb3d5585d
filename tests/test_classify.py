"""Series grouping/splitting and header classification rules, on header records."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.dicom.classify import apply_study_rules, describe_series, sop_class_reason
from pipeline.dicom.grouping import group_series
from pipeline.dicom.headers import decoder_available, read_header
from tests.test_index_helpers import ct_volume, series_info, write_ct


def _template() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        (path, *_) = write_ct(Path(tmp), ct_volume(1), series_info("tmpl", 1, "Abdomen"))
        return read_header(path)


_TEMPLATE = _template()


def _records(n: int, *, step_mm: float = 2.0, uid: str = "1.2.3", axis: int = 2,
             **changes: Any) -> list[dict[str, Any]]:
    """``n`` instances of one series, slice origins stepping along LPS ``axis``."""
    out = []
    for k in range(n):
        rec = dict(_TEMPLATE)
        ipp = [0.0, 0.0, 0.0]
        ipp[axis] = k * step_mm
        rec.update(series_instance_uid=uid, instance_number=k + 1, path=f"/x/{uid}/{k}",
                   ipp=tuple(ipp), sop_instance_uid=f"{uid}.{k}")
        rec.update(changes)
        out.append(rec)
    return out


def _describe(records: list[dict[str, Any]], **kw: Any) -> list[dict[str, Any]]:
    rows = [describe_series(g, **kw) for g in group_series(records)]
    apply_study_rules(rows)
    return rows


def test_template_header_is_complete() -> None:
    assert _TEMPLATE["modality"] == "CT" and _TEMPLATE["iop"] == (1, 0, 0, 0, 1, 0)
    assert _TEMPLATE["pixel_spacing_row_mm"] == pytest.approx(1.5)


def test_regular_series_is_usable() -> None:
    (row,) = _describe(_records(12))
    assert row["usable"] and row["reason"] == "" and row["preferred"]
    assert (row["orientation"], row["slice_spacing_mm"], row["n_slices"]) == ("axial", 2.0, 12)


def test_missing_series_uid_uses_a_stable_fallback_key() -> None:
    a = _records(12, uid="", series_description="A")
    b = _records(12, uid="", series_description="B")
    groups = group_series(a + b)
    assert len(groups) == 2
    assert all(g.series_key.startswith("nouid-") for g in groups)
    assert group_series(a)[0].series_key in {g.series_key for g in groups}


def test_repeated_acquisitions_are_split() -> None:
    first = _records(10, acquisition_number=1)
    second = _records(10, acquisition_number=2, sop_instance_uid="other")
    rows = _describe(first + second)
    assert [r["series_key"] for r in rows] == ["1.2.3", "1.2.3_2"]
    assert all("repeated acquisitions" in r["split_note"] and r["usable"] for r in rows)


def test_single_slices_at_one_position_are_not_split() -> None:
    recs = [dict(r, acquisition_number=k) for k, r in enumerate(_records(4, step_mm=0.0))]
    (row,) = _describe(recs, min_slices=2)
    assert "duplicate slice positions (3 of 4" in row["reason"]


def test_mixed_orientation_and_echo_split() -> None:
    axial = _records(10)
    coronal = _records(10, axis=1, iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
    rows = _describe(axial + coronal)
    assert sorted(r["orientation"] for r in rows) == ["axial", "coronal"]
    assert all("mixed orientations" in r["split_note"] for r in rows)
    echoes = _records(10, modality="MR", echo_number=1) + _records(10, modality="MR",
                                                                   echo_number=2)
    assert len(group_series(echoes)) == 2


def test_geometry_reasons() -> None:
    uneven = _records(12)
    uneven[-1]["ipp"] = (0.0, 0.0, 22.5)  # last step 2.5 mm instead of 2.0
    (row,) = _describe(uneven)
    assert "uneven slice spacing 2–2.5 mm" in row["reason"]
    gap = [r for k, r in enumerate(_records(12)) if k != 5]
    assert "slice gap: step 2 mm with gaps up to 4 mm (1 gaps)" in _describe(gap)[0]["reason"]
    no_spacing = _records(12, pixel_spacing_row_mm=None, pixel_spacing_col_mm=None)
    assert "missing PixelSpacing in 12/12" in _describe(no_spacing)[0]["reason"]
    assert "too few slices for a volume (5 < 10)" in _describe(_records(5))[0]["reason"]


def test_unsupported_transfer_syntax() -> None:
    assert decoder_available("1.2.840.10008.1.2.4.90")  # J2K via pylibjpeg-openjpeg
    assert not decoder_available("1.2.840.10008.1.2.4.100")  # MPEG2: video, no decoder
    assert not decoder_available("not-a-uid")
    (row,) = _describe(_records(12, transfer_syntax="1.2.840.10008.1.2.4.100"))
    assert "unsupported transfer syntax" in row["reason"] and not row["usable"]


def test_non_image_sop_classes() -> None:
    assert sop_class_reason("1.2.840.10008.5.1.4.1.1.88.67", "SR") == (
        "radiation dose structured report")
    assert "presentation state" in sop_class_reason("1.2.840.10008.5.1.4.1.1.11.1", "PR")
    assert "key object" in sop_class_reason("1.2.840.10008.5.1.4.1.1.88.59", "KO")
    assert "segmentation" in sop_class_reason("1.2.840.10008.5.1.4.1.1.66.4", "SEG")
    assert sop_class_reason("1.2.840.10008.5.1.4.1.1.2", "CT") == ""
    assert "only CT and MR" in sop_class_reason("1.2.840.10008.5.1.4.1.1.128", "PT")


def test_preferred_reconstruction_thickness_rule() -> None:
    thin = _records(40, uid="1.1", step_mm=0.625, slice_thickness_mm=0.625, series_number=2)
    mid = _records(20, uid="1.2", step_mm=1.25, slice_thickness_mm=1.25, series_number=3)
    thick = _records(10, uid="1.3", step_mm=5.0, slice_thickness_mm=5.0, series_number=4)
    rows = {r["series_key"]: r for r in _describe(thin + mid + thick)}
    assert [rows[k]["preferred"] for k in ("1.1", "1.2", "1.3")] == [False, True, False]
    assert all(r["usable"] for r in rows.values())
    rows = {r["series_key"]: r for r in _describe(thin + thick)}
    assert rows["1.1"]["preferred"] and not rows["1.3"]["preferred"]


def test_preferred_is_per_phase() -> None:
    pre = _records(12, uid="2.1", series_description="NATIV 1mm")
    art = _records(12, uid="2.2", series_description="arterial 1mm")
    rows = _describe(pre + art)
    assert sorted(r["phase"] for r in rows) == ["arterial", "non_contrast"]
    assert all(r["preferred"] for r in rows)


def test_reformat_needs_a_primary_axial_series() -> None:
    cor = _records(12, uid="3.2", axis=1, iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
                   image_type="DERIVED\\SECONDARY\\MPR", series_description="COR PV")
    (alone,) = _describe(cor)
    assert alone["usable"] and "no primary axial series" in alone["notes"]
    primary = _records(12, uid="3.1", series_description="PV 1mm")
    rows = {r["series_key"]: r for r in _describe(primary + cor)}
    assert rows["3.1"]["usable"] and not rows["3.2"]["usable"]
    assert "derived reformat" in rows["3.2"]["reason"]


def test_localizer_and_projection_and_dose_text() -> None:
    (scout,) = _describe(_records(12, image_type="ORIGINAL\\PRIMARY\\LOCALIZER"))
    assert "localizer/scout" in scout["reason"]
    (topo,) = _describe(_records(12, series_description="Topogram 0.6 T20f"))
    assert "localizer/scout" in topo["reason"]
    (mip,) = _describe(_records(12, image_type="DERIVED\\SECONDARY\\MIP"))
    assert "derived projection" in mip["reason"]
    (dose,) = _describe(_records(12, series_description="Patient Protocol"))
    assert "dose report page" in dose["reason"]


def test_three_plane_scout_without_localizer_image_type() -> None:
    recs = (_records(1, iop=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
            + _records(1, iop=(1.0, 0.0, 0.0, 0.0, 0.0, -1.0))
            + _records(1, iop=(0.0, 1.0, 0.0, 0.0, 0.0, -1.0)))
    rows = _describe(recs)
    assert sorted(r["orientation"] for r in rows) == ["axial", "coronal", "sagittal"]
    assert all("localizer/scout" in r["reason"] for r in rows)
