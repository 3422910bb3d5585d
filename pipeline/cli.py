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
  cryotrack run ARCHIVE --lesions lesions.csv --out OUT   the whole pipeline
  cryotrack demo                                   synthetic archive → full report in demo-out/
"""


# a clean success, a technical failure with residual tumour, a benign rim and an MR
# follow-up: the demo shows every kind of page a radiologist will meet
_DEMO_SCENARIOS = ("clean_success", "undercoverage", "benign_rim", "mr_followup")


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
    p.add_argument("--min-slices", type=_workers, default=10,
                   help="fewer slices than this is not a volume (default 10)")
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
    p.add_argument("out", type=Path, nargs="?",
                   help="output folder (archive/, lesions.csv, truth.json)")
    p.add_argument("--patients", type=int, default=3, help="number of patients (default 3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (deterministic output)")
    p.add_argument(
        "--scenario", action="append", dest="scenarios", metavar="NAME",
        help="scenario name (repeatable); default: cycle through all scenarios",
    )
    p.add_argument(
        "--pick", action="append", dest="picks", metavar="SCENARIO:SEED:INDEX",
        help="write exactly this patient (repeatable; the same patient as in that seed's "
        "archive): a validation archive gathered from several seeds; replaces --patients, "
        "--seed and --scenario",
    )
    p.add_argument("--small", action="store_true", help="coarse matrices for fast tests")
    p.add_argument("--list-scenarios", action="store_true", help="print the scenarios and exit")
    p.set_defaults(handler=_cmd_synth)

    p = sub.add_parser(
        "validate",
        help="compare a run's tables with a synthetic archive's truth.json",
        description="Per-scenario accuracy of a run on a synthetic archive: diameter, volume "
        "and margin errors and outcome-flag agreement (targets: 1.5 mm, 10 %, 1.5 mm, all "
        "flags). Exit status 1 when anything is outside the targets.",
    )
    p.add_argument("out", type=Path, help="the run's output folder (with tables/)")
    p.add_argument("--truth", type=Path, required=True, help="truth.json of the archive")
    p.add_argument("--masks", action="store_true",
                   help="also compare every written mask with the analytic truth (Dice, "
                   "volume, centroid distance per structure and study)")
    p.set_defaults(handler=_cmd_validate)

    p = sub.add_parser(
        "run",
        help="run the whole pipeline (Snakemake) on an archive and a lesion manifest",
        description="Index the archive, analyse every manifest lesion in every study, and write "
        "tables, the registry database, DICOM SEG/SR and the HTML review report under OUT. "
        "Resumable: rerunning continues an interrupted run; a finished run reruns nothing.",
    )
    p.add_argument("archive", type=Path, help="folder tree holding DICOM files")
    p.add_argument("--lesions", type=Path, required=True, help="lesion manifest CSV")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--cores", type=_workers, default=os.cpu_count() or 1,
                   help="CPU cores for Snakemake (default: all)")
    p.add_argument("--config", type=Path, dest="config_file",
                   help="YAML overriding pipeline/workflow/config.default.yaml")
    p.add_argument("--registry", help="SQLAlchemy URL (default sqlite:///OUT/registry.sqlite)")
    p.add_argument("--profile", type=Path,
                   help="Snakemake profile folder (e.g. a SLURM executor profile)")
    p.set_defaults(handler=_cmd_run)

    p = sub.add_parser(
        "demo",
        help="synthesise a small archive and run the whole pipeline on it",
        description="Write a synthetic archive (several clinical scenarios, known truth) to "
        "OUT/synthetic and run the pipeline on it into OUT; prints the report path.",
    )
    p.add_argument("--out", type=Path, default=Path("demo-out"), help="default: demo-out")
    p.add_argument("--patients", type=int, default=4, help="synthetic patients (default 4)")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--cores", type=_workers, default=os.cpu_count() or 1)
    p.add_argument("--small", action="store_true", help="coarse matrices (fast)")
    p.add_argument(
        "--scenario", action="append", dest="scenarios", metavar="NAME",
        help="scenario (repeatable); default: " + ", ".join(_DEMO_SCENARIOS),
    )
    p.set_defaults(handler=_cmd_demo)
    return parser


def _cmd_index(args: argparse.Namespace) -> int:
    from pipeline.dicom.index import build_index

    summary = build_index(
        args.archive, args.out, workers=args.workers, content_check=not args.no_content_check,
        min_slices=args.min_slices,
    )
    print(summary.describe())
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from pipeline.dicom.convert import convert_series

    path = convert_series(args.archive, args.series, args.out, gap_policy=args.gaps)
    print(f"wrote {path}")
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from fixtures.synth import SCENARIOS, parse_pick, synthesize

    if args.list_scenarios:
        for name, scenario in SCENARIOS.items():
            print(f"{name:28s} {scenario.description}")
        return 0
    if args.out is None:
        raise ValueError("synth needs an output folder (or --list-scenarios)")
    summary = synthesize(
        args.out, patients=args.patients, seed=args.seed, scenarios=args.scenarios,
        small=args.small,
        picks=[parse_pick(spec) for spec in args.picks] if args.picks else None,
    )
    print(summary.describe())
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from fixtures.compare import compare_run

    report = compare_run(args.out / "tables", args.truth)
    print(report.describe())
    if args.masks:
        from fixtures.compare_masks import describe_mask_dice, mask_dice

        print()
        print(describe_mask_dice(mask_dice(args.out, args.truth)))
    return 0 if report.ok else 1


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.workflow.runner import run_workflow

    result = run_workflow(
        args.archive, args.lesions, args.out, cores=args.cores, config_file=args.config_file,
        registry=args.registry, profile=args.profile,
    )
    print(result.describe())
    return result.returncode


def _cmd_demo(args: argparse.Namespace) -> int:
    from fixtures.synth import synthesize
    from pipeline.workflow.runner import run_workflow

    synthetic = args.out / "synthetic"
    if not (synthetic / "lesions.csv").exists():
        summary = synthesize(synthetic, patients=args.patients, seed=args.seed,
                             scenarios=args.scenarios or list(_DEMO_SCENARIOS),
                             small=args.small)
        print(summary.describe())
    result = run_workflow(synthetic / "archive", synthetic / "lesions.csv", args.out,
                          cores=args.cores)
    print(result.describe())
    if result.returncode == 0:
        print(f"\nopen the review report: {result.layout.report_index.resolve()}")
    return result.returncode


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
