"""The ``cryotrack`` command line.

Argument parsing only: every subcommand calls an importable, tested function. Heavy
modules are imported inside the handlers so that ``cryotrack --help`` stays instant.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pipeline import __version__

__all__ = ["main", "build_parser"]

_DESCRIPTION = """\
cryotrack turns an archive of DICOM CT/MRI of renal-tumour cryoablation patients into
per-lesion measurements and outcome flags.

typical use:
  cryotrack index ARCHIVE --out OUT/index          list every series, classify it, say why unusable
  cryotrack convert ARCHIVE --series UID --out series.nii.gz
  cryotrack synth OUT --patients 3 --seed 1        make a synthetic archive with ground truth
"""


def _workers(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--workers must be ≥ 1")
    return n


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cryotrack",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"cryotrack {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "index",
        help="scan an archive (headers only) and write series.csv / errors.csv",
        description="Scan any folder tree of DICOM files, group instances into series, "
        "classify each series (modality, orientation, contrast phase) and say why any series "
        "is not usable. Writes OUT/series.csv, OUT/series.parquet, OUT/instances.parquet "
        "and OUT/errors.csv.",
    )
    p.add_argument("archive", type=Path, help="folder tree holding DICOM files")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--workers", type=_workers, default=os.cpu_count() or 1,
        help="parallel header readers (default: all cores)",
    )
    p.add_argument(
        "--no-content-check", action="store_true",
        help="decide contrast from headers only (skip sampling aorta/kidney attenuation)",
    )
    p.set_defaults(handler=_cmd_index)

    p = sub.add_parser(
        "convert",
        help="load one series (sorted, tilt-corrected) and write NIfTI",
        description="Load one series from an archive into a volume (slices sorted along the "
        "normal, HU for CT, gantry tilt resampled) and write it as NIfTI with a RAS affine.",
    )
    p.add_argument("archive", type=Path, help="folder tree holding DICOM files")
    p.add_argument(
        "--series", required=True, help="SeriesInstanceUID (or series_key from series.csv)"
    )
    p.add_argument("--out", type=Path, required=True, help="output .nii or .nii.gz")
    p.add_argument(
        "--gaps", choices=("reject", "resample"), default="reject",
        help="what to do with missing or uneven slices (default: reject)",
    )
    p.set_defaults(handler=_cmd_convert)

    p = sub.add_parser(
        "synth",
        help="write a synthetic cryoablation archive with ground truth",
        description="Render realistic synthetic renal cryoablation archives (baseline, "
        "intra-procedural and follow-up CT/MR) with a lesion manifest and analytic truth.",
    )
    p.add_argument("out", type=Path, help="output folder (archive/, lesions.csv, truth.json)")
    p.add_argument("--patients", type=int, default=3, help="number of patients (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (deterministic output)")
    p.add_argument(
        "--scenario", action="append", dest="scenarios", metavar="NAME",
        help="scenario name (repeatable); default: cycle through all scenarios",
    )
    p.add_argument("--small", action="store_true", help="coarse matrices for fast tests")
    p.add_argument("--list-scenarios", action="store_true", help="print the scenarios and exit")
    p.set_defaults(handler=_cmd_synth)
    return parser


def _cmd_index(args: argparse.Namespace) -> int:
    from pipeline.dicom.index import build_index

    summary = build_index(
        args.archive, args.out, workers=args.workers, content_check=not args.no_content_check
    )
    print(summary.describe())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from pipeline.dicom.convert import convert_series

    path = convert_series(args.archive, args.series, args.out, gap_policy=args.gaps)
    print(f"wrote {path}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from fixtures.synth import SCENARIOS, synthesize

    if args.list_scenarios:
        for name, scenario in SCENARIOS.items():
            print(f"{name:28s} {scenario.description}")
        return 0
    summary = synthesize(
        args.out, patients=args.patients, seed=args.seed, scenarios=args.scenarios,
        small=args.small,
    )
    print(summary.describe())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    try:
        return int(args.handler(args) or 0)
    except (FileNotFoundError, ValueError) as exc:
        print(f"cryotrack {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
