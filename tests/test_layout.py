"""Output layout helpers: paths from the config, atomic JSON, series file look-up."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipeline.dicom.instances import series_paths
from pipeline.layout import OutputLayout, safe_id, write_json_atomic


def test_layout_from_config_and_safe_ids(tmp_path: Path) -> None:
    layout = OutputLayout.from_config({"out": str(tmp_path / "o")})
    assert layout.out.is_absolute()
    assert layout.analysis_json("P 1/x") == tmp_path / "o" / "patients" / "P_1_x" / "analysis.json"
    assert safe_id("{patient}") == "{patient}"  # Snakemake wildcards pass through


def test_write_json_atomic_leaves_no_temp_file(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "a" / "b.json", {"x": 1})
    assert json.loads(path.read_text()) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_series_paths_in_slice_order() -> None:
    inst = pd.DataFrame({"series_key": ["s", "s", "t"], "slice_index": [1, 0, 0],
                         "path": ["b.dcm", "a.dcm", "c.dcm"]})
    assert series_paths(inst, "s") == ["a.dcm", "b.dcm"]
    with pytest.raises(ValueError, match="series u not found"):
        series_paths(inst, "u")
