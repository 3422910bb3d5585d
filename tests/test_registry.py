"""Registry database: idempotent upserts, all-or-nothing runs, SQLite and real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, timedelta

import pytest

from pipeline.assessment import LesionTimepoint, Role, assess_lesion
from pipeline.outputs.registry import LesionRecord, Registry, RunInfo, SeriesRecord, config_hash
from tests.conftest import _missing
from tests.pg_server import find_pg_bin, postgres_server

PROC = date(2024, 5, 2)


def _inputs(long_mm: float = 30.0) -> dict[str, list]:
    def tp(role: str, days: int, uid: str, **kw: object) -> LesionTimepoint:
        return LesionTimepoint("P1", "L1", uid, PROC + timedelta(days=days), days, Role(role),
                               "CT", **kw)  # type: ignore[arg-type]

    tps = [
        tp("baseline", -10, "1.2.1", long_axis_mm=long_mm, volume_ml=9.5),
        tp("intraprocedural", 0, "1.2.2", min_margin_mm=5.5, tumour_coverage_pct=100.0,
           iceball_long_axis_mm=48.0),
        tp("followup", 95, "1.2.3", long_axis_mm=27.0, enhancing="no",
           qc=["registration doubtful"]),
    ]
    series = [
        SeriesRecord(f"{uid}.1", f"{uid}.1", uid, "P1", t.study_date, "CT", "Abdomen", "x",
                     True, None)
        for uid, t in (("1.2.1", tps[0]), ("1.2.2", tps[1]), ("1.2.3", tps[2]))
    ]
    lesions = [LesionRecord("P1", "L1", PROC, "R", (10.0, 20.0, -100.0), "1.2.826.0.1.99")]
    return {"series": series, "lesions": lesions, "timepoints": tps,
            "outcomes": [assess_lesion(tps, PROC)]}


def _check_registry(url: str) -> None:
    reg = Registry(url)
    try:
        run = RunInfo("run-1", "0.1.0", {"a": 1}, "/archive")
        reg.record_run(run, **_inputs())
        counts = {t: reg.count(t) for t in ("patients", "lesions", "studies", "series",
                                            "measurements", "outcomes", "pipeline_runs")}
        # 2 + 3 + 1 measured quantities + 3 "enhancing" rows = 9 measurements
        assert counts == {"patients": 1, "lesions": 1, "studies": 3, "series": 3,
                          "measurements": 9, "outcomes": 1, "pipeline_runs": 1}
        # rerun with the same and then changed values: no duplicates, values updated
        reg.record_run(run, **_inputs())
        reg.record_run(RunInfo("run-2", "0.1.0", {"a": 2}, "/archive"), **_inputs(long_mm=33.0))
        assert {t: reg.count(t) for t in counts} == {**counts, "pipeline_runs": 2}
        long_axis = [r for r in reg.rows("measurements")
                     if r["quantity"] == "long_axis" and r["study_instance_uid"] == "1.2.1"]
        assert len(long_axis) == 1 and long_axis[0]["value"] == pytest.approx(33.0)
        assert long_axis[0]["run_uid"] == "run-2"
        outcome = reg.rows("outcomes")[0]
        assert outcome["needs_review"] is True and "registration doubtful" in (
            outcome["review_reasons"])
        # a failing write (a measurement for an unknown lesion breaks a foreign key)
        # rolls back entirely: the earlier rows stay as they were
        bad = _inputs(long_mm=99.0)
        bad["timepoints"][0].lesion_id = "L-unknown"
        with pytest.raises(Exception, match=r"(?i)foreign key"):
            reg.record_run(RunInfo("run-3", "0.1.0", {}, "/archive"), **bad)
        assert reg.count("pipeline_runs") == 2
        long_axis = [r for r in reg.rows("measurements")
                     if r["quantity"] == "long_axis" and r["study_instance_uid"] == "1.2.1"]
        assert [r["value"] for r in long_axis] == [pytest.approx(33.0)]
    finally:
        reg.close()


def test_sqlite_registry(tmp_path) -> None:
    _check_registry(f"sqlite:///{tmp_path / 'registry.sqlite'}")


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    pg_bin = find_pg_bin()
    if pg_bin is None:
        _missing("PostgreSQL server binaries not installed (Debian package postgresql)")
    with postgres_server(pg_bin) as url:
        yield url


@pytest.mark.needs_system
def test_postgresql_registry(postgres_url: str) -> None:
    _check_registry(postgres_url)


def test_bad_urls_and_config_hash() -> None:
    with pytest.raises(ValueError, match=r"registry URL"):
        Registry("registry.sqlite")
    with pytest.raises(ValueError, match="sqlite and postgresql"):
        Registry("mysql+pymysql://u@h/db")
    assert config_hash({"b": 1, "a": 2}) == config_hash({"a": 2, "b": 1})
    assert config_hash({"a": 1}) != config_hash({"a": 2})
