"""Shared test helpers.

Tests that need something outside the repo (``../shared/data``, a Debian package such as
dcm2niix, dciodvfy, chromium or postgres) skip with a clear reason on a machine that lacks
it. CI sets ``CRYOTRACK_REQUIRE_ALL=1``, which turns every such skip into a failure so CI
never skips silently.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


def _missing(reason: str) -> None:
    if os.environ.get("CRYOTRACK_REQUIRE_ALL") == "1":
        pytest.fail(f"required in CI but missing: {reason}", pytrace=False)
    pytest.skip(reason)


def shared_data(relative: str) -> Path:
    """Path into ../shared/data; skip (or fail in CI) when it is not there."""
    path = SHARED_DATA / relative
    if not path.exists():
        _missing(f"shared test data not found: {path}")
    return path


def require_tool(executable: str) -> str:
    """Full path of a system tool; skip (or fail in CI) when it is not installed."""
    found = shutil.which(executable)
    if found is None:
        _missing(f"system tool {executable!r} not installed (Debian package needed)")
    return str(found)
