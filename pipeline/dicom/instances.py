"""Look-ups in ``index/instances.parquet`` (one row per instance, written by the index)."""

from __future__ import annotations

import pandas as pd

__all__ = ["series_paths"]


def series_paths(instances: pd.DataFrame, series_key: str) -> list[str]:
    """Files of one series in slice order (``slice_index``); ValueError if unknown."""
    rows = instances[instances["series_key"] == series_key].sort_values("slice_index")
    if rows.empty:
        raise ValueError(f"series {series_key} not found in instances.parquet")
    return rows["path"].astype(str).drop_duplicates().tolist()
