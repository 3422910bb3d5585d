"""Run every benchmark in this folder, one after the other (``make bench``).

Benchmarks report ratios against a reference measured in the same run (dcm2niix for
loading, one worker for indexing); they are not timed tests and never fail on speed.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    status = 0
    for script in sorted(HERE.glob("bench_*.py")):
        print(f"\n=== {script.name} ===", flush=True)
        status |= subprocess.run([sys.executable, str(script)], check=False).returncode
    return status


if __name__ == "__main__":
    sys.exit(main())
