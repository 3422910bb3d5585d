"""``cryotrack convert``: one series of an archive → NIfTI.

The archive is indexed in-process (headers only, no content check), ``series`` is resolved
to one series, its files (sorted along the slice normal by the index) are loaded with
:func:`pipeline.dicom.loader.load_series` and written with
:func:`pipeline.dicom.loader.write_nifti`.

Resolution of ``series``: an exact ``series_key`` match first (a split UID's largest part
has the plain UID as key, the others ``UID_2``, ``UID_3``...), else a unique
SeriesInstanceUID match.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pipeline.dicom.errors import DicomInputError
from pipeline.dicom.index import ArchiveIndex, index_archive

__all__ = ["GAP_POLICIES", "SeriesNotFoundError", "resolve_series", "convert_series"]

log = logging.getLogger(__name__)

GAP_POLICIES = ("reject", "resample")
# Unusable for the pipeline, but the loader decides (gap policy) or can still stack them.
_LOADER_DECIDES = ("slice gap", "uneven slice spacing", "too few slices")


class SeriesNotFoundError(DicomInputError):
    """The requested series is not in the archive."""


def resolve_series(index: ArchiveIndex, series: str, archive: Path | str = "") -> dict[str, Any]:
    """The ``series.csv`` row of ``series`` (a series_key or SeriesInstanceUID).

    Raises:
        SeriesNotFoundError: no series matches; the message says how many exist.
    """
    wanted = series.strip()
    rows = [r for r in index.series if r["series_key"] == wanted]
    if not rows:
        rows = [r for r in index.series if r["series_instance_uid"] == wanted]
    if len(rows) == 1:
        return rows[0]
    where = str(archive) or "archive"
    if not rows:
        usable = sum(1 for r in index.series if r["usable"])
        raise SeriesNotFoundError(
            where, f"series {wanted!r} not found: the archive holds {len(index.series)} series "
            f"({usable} usable); list them with `cryotrack index`")
    keys = ", ".join(r["series_key"] for r in rows)
    raise SeriesNotFoundError(where, f"series {wanted!r} is split into parts: {keys}; "
                              "pass one series_key")


def convert_series(
    archive: Path, series: str, out_file: Path, gap_policy: str = "reject"
) -> Path:
    """Load one series of ``archive`` and write it as NIfTI (RAS affine) to ``out_file``.

    Args:
        archive: folder tree of DICOM files.
        series: SeriesInstanceUID or series_key (from series.csv).
        out_file: ``.nii`` or ``.nii.gz`` path (parent folders are created).
        gap_policy: "reject" (missing/uneven slices are an error) or "resample".

    Raises:
        ValueError: bad ``gap_policy``.
        SeriesNotFoundError: unknown series.
        DicomInputError: the series cannot be a volume (e.g. a dose report), or the loader
            refused it.
    """
    if gap_policy not in GAP_POLICIES:
        raise ValueError(f"gap_policy must be one of {GAP_POLICIES}, got {gap_policy!r}")
    out_file = Path(out_file)
    if not out_file.name.endswith((".nii", ".nii.gz")):
        raise ValueError(f"out_file must end with .nii or .nii.gz, got {out_file}")
    index = index_archive(Path(archive), workers=1, content_check=False)
    row = resolve_series(index, series, archive)
    if not row["usable"]:
        blocking = [r for r in row["reason"].split("; ") if not r.startswith(_LOADER_DECIDES)]
        if blocking:
            raise DicomInputError(row["series_key"], "not a convertible volume: "
                                  + "; ".join(blocking))
        log.warning("series %s: %s (loader decides, gap_policy=%s)", row["series_key"],
                    row["reason"], gap_policy)
    paths = [i["path"] for i in index.instances if i["series_key"] == row["series_key"]]
    from pipeline.dicom.loader import load_series, write_nifti

    volume = load_series(paths, gap_policy=gap_policy)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    write_nifti(volume, out_file)
    return out_file
