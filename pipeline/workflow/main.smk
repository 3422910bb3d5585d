# Main workflow: validate the configuration, then include the rule files.
import json
import shlex
import sys
from pathlib import Path

from snakemake.utils import min_version, validate

from pipeline.layout import OutputLayout

min_version("9.0")

import pipeline.workflow

# the package folder, whether this file is run directly or included from ../../Snakefile
WORKFLOW_DIR = Path(pipeline.workflow.__file__).resolve().parent
configfile: WORKFLOW_DIR / "config.default.yaml"
validate(config, WORKFLOW_DIR / "config.schema.json")

L = OutputLayout.from_config(config)
PY = shlex.quote(sys.executable)
CONFIG_ARG = shlex.quote(json.dumps(config, sort_keys=True))
STAGE = f"{PY} -m pipeline.workflow.stages"


include: "rules/index.smk"
include: "rules/analysis.smk"
include: "rules/outputs.smk"


rule all:
    input:
        L.timepoints_csv,
        L.outcomes_csv,
        L.registry_done,
        L.report_index if config["outputs"]["report"] else [],
        dicom_outputs if config["outputs"]["dicom"] else [],
    default_target: True
